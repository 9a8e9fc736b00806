/**
 * DistriNews: fine-tune DistilBERT for AG News topic classification with libtorch behind a thin C ABI,
 * on one device or many (DistributedDataParallel), and serve it over HTTP.
 *
 * This module is the public API; it only re-exports.
 * @module
 */

export { AG_NEWS_LABELS } from "./model/labels.ts";
export {
  configToJson,
  DISTILBERT_BASE_UNCASED,
  DISTILBERT_SMALL,
  type DistilBertConfig,
  parseConfig,
  PRESETS,
  validateConfig,
} from "./model/config.ts";
export { type Batch, type LabeledBatch } from "./model/batch.ts";
export {
  cudaDeviceCount,
  type DeviceSpec,
  DistilBertClassifier,
  getNumThreads,
  type LoadReport,
  manualSeed,
  type OptimizerOptions,
  type ParamInfo,
  type Prediction,
  randperm,
  setNumThreads,
  type StepOptions,
  type StepResult,
  torchVersion,
} from "./ffi/model.ts";
export { NativeError } from "./ffi/lib.ts";
export { type BuildResult, buildShim, findLibtorch, type Libtorch } from "./ffi/build.ts";
export { type DType, type RawTensor, type StateDict } from "./model/tensor.ts";
export {
  loadSafetensors,
  readSafetensors,
  writeSafetensors,
  writeSafetensorsFile,
} from "./weights/safetensors.ts";
export { bertConfigToDistilBert, bertStateDictToDistilBert, isBertConfig } from "./weights/bert.ts";
export { loadPretrained, type PretrainedWeights } from "./weights/pretrained.ts";
export {
  type PretrainedSource,
  PretrainedSourceError,
  PYPI_MODELS,
  type ResolveOptions,
  resolvePretrained,
  type WheelModel,
} from "./weights/pretrained_sources.ts";
export { evaluate, type EvaluateOptions, type EvaluationResult } from "./training/evaluate.ts";
export {
  loadTorchCheckpoint,
  readTorchCheckpoint,
  TorchCheckpointError,
} from "./weights/torch_checkpoint.ts";
export {
  detectFormat,
  type FormatDetection,
  type WeightsFormat,
  WeightsFormatError,
} from "./weights/format.ts";
export {
  loadConfig,
  loadModel,
  loadStateDictFile,
  locateCheckpoint,
  PT_FILE,
  saveCheckpoint,
} from "./weights/checkpoint.ts";
export { BertTokenizer, type EncodeOptions, type Encoding } from "./data/tokenizer.ts";
export { collate, type CollateOptions } from "./data/collate.ts";
export {
  AgNewsFormatError,
  type AgNewsSplit,
  classCounts,
  loadAgNews,
  loadAgNewsCsv,
  loadAgNewsFromHub,
  loadAgNewsParquet,
  type NewsRecord,
  subset,
  type SubsetSpec,
} from "./data/ag_news.ts";
export { hubDownload, HubError } from "./data/hf_hub.ts";
export { DistributedSampler, type DistributedSamplerOptions } from "./data/sampler.ts";
export { defaultCacheDir, type TextRecord, TokenizedDataset } from "./data/dataset.ts";
export {
  batchIndices,
  collateBatch,
  type IndexedBatch,
  lengthGroupedIndices,
  shardBatches,
  type ShardBatchOptions,
} from "./data/batches.ts";
export { type ClassifyOptions, TextClassifier, type TopicPrediction } from "./inference/text_classifier.ts";
