/**
 * Text in, topic out: a checkpoint's model and tokenizer together. Used by `deno task predict` and by the
 * server. Texts are tokenized in TypeScript, padded to the batch's longest, and classified in one native
 * call per batch.
 * @module
 */

import { join } from "node:path";
import { BertTokenizer } from "../data/tokenizer.ts";
import { collate } from "../data/collate.ts";
import type { DeviceSpec, DistilBertClassifier } from "../ffi/model.ts";
import { type CheckpointFiles, loadModel } from "../weights/checkpoint.ts";
import { PYPI_MODELS, resolvePretrained } from "../weights/pretrained_sources.ts";
import { isBertConfig } from "../weights/bert.ts";
import { exists } from "../util/fs.ts";
import { argmaxRows } from "../util/argmax.ts";

/** One text's prediction, in the shape the CLI and the API print. */
export interface TopicPrediction {
  label: string;
  label_id: number;
  confidence: number;
  probabilities: Record<string, number>;
}

/** Options of {@link TextClassifier.classify}. */
export interface ClassifyOptions {
  /** Tokens per text including [CLS] and [SEP]; longer texts are truncated (default 128). */
  maxLength?: number;
  /** Texts per native call (default 32). */
  batchSize?: number;
}

/** A loaded checkpoint ready to classify text. Dispose it to free the native model. */
export class TextClassifier implements Disposable {
  /** Where the model came from. */
  readonly files: CheckpointFiles;
  /** True when the checkpoint had no vocab.txt and the bundled BERT uncased vocab is used. */
  readonly bundledTokenizer: boolean;

  private constructor(
    readonly model: DistilBertClassifier,
    readonly tokenizer: BertTokenizer,
    files: CheckpointFiles,
    bundledTokenizer: boolean,
  ) {
    this.files = files;
    this.bundledTokenizer = bundledTokenizer;
  }

  /**
   * Loads a fine-tuned checkpoint and its tokenizer: a directory (or weights file with config.json beside
   * it), or a Hugging Face model id (downloaded once into the Hub cache).
   */
  static async load(spec: string, options: { device?: DeviceSpec | string } = {}): Promise<TextClassifier> {
    if (Object.hasOwn(PYPI_MODELS, spec.replace(/^pypi:/, ""))) {
      throw new Error(
        `${spec} is a pretrained encoder, not a fine-tuned classifier: fine-tune it first, e.g. ` +
          `deno task train --pretrained ${spec} (./setup.sh does that)`,
      );
    }
    const source = await resolvePretrained(spec);
    const config = JSON.parse(await Deno.readTextFile(source.configPath).catch(() => "null"));
    if (config && typeof config === "object" && isBertConfig(config)) {
      throw new Error(
        `${spec} is a BERT encoder (${source.description}), not a fine-tuned DistilBERT classifier: ` +
          `fine-tune it first, e.g. deno task train --pretrained ${spec}`,
      );
    }
    const { model, files } = await loadModel(source.weightsPath, { device: options.device });
    try {
      const hasVocab = await exists(join(files.dir, "vocab.txt"));
      const tokenizer = hasVocab
        ? await BertTokenizer.fromHuggingFaceDir(files.dir)
        : await BertTokenizer.bundled();
      if (tokenizer.vocabSize > model.config.vocab_size) {
        throw new Error(
          `tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${model.config.vocab_size}`,
        );
      }
      return new TextClassifier(model, tokenizer, files, !hasVocab);
    } catch (err) {
      model.dispose();
      throw err;
    }
  }

  /** Class names by label id. */
  get labels(): readonly string[] {
    return this.model.config.id2label;
  }

  /**
   * Token ids of one text, [CLS] and [SEP] included, truncated to `maxLength` (and to the model's
   * position limit). Two ids means the text had nothing left after cleaning.
   */
  encode(text: string, maxLength = 128): number[] {
    const limit = Math.min(maxLength, this.model.config.max_position_embeddings);
    return this.tokenizer.encode(text, { maxLength: limit }).ids;
  }

  #encode(texts: readonly string[], maxLength: number) {
    return collate(texts.map((t) => this.encode(t, maxLength)));
  }

  #results(probabilities: Float32Array, count: number): TopicPrediction[] {
    const labels = this.labels, k = labels.length;
    const predicted = argmaxRows(probabilities.subarray(0, count * k), k);
    return Array.from(predicted, (best, row) => {
      const p = probabilities.subarray(row * k, row * k + k);
      return {
        label: labels[best],
        label_id: best,
        confidence: p[best],
        probabilities: Object.fromEntries(labels.map((name, j) => [name, p[j]])),
      };
    });
  }

  /** Classifies texts in order, blocking this thread during each native call. */
  classify(texts: readonly string[], options: ClassifyOptions = {}): TopicPrediction[] {
    const { maxLength = 128, batchSize = 32 } = options;
    const out: TopicPrediction[] = [];
    for (let i = 0; i < texts.length; i += batchSize) {
      const chunk = texts.slice(i, i + batchSize);
      out.push(
        ...this.#results(this.model.predict(this.#encode(chunk, maxLength)).probabilities, chunk.length),
      );
    }
    return out;
  }

  /** {@link classify} with the native work on a worker thread (one batch: the caller batches). */
  async classifyAsync(
    texts: readonly string[],
    options: { maxLength?: number } = {},
  ): Promise<TopicPrediction[]> {
    const prediction = await this.model.predictAsync(this.#encode(texts, options.maxLength ?? 128));
    return this.#results(prediction.probabilities, texts.length);
  }

  /**
   * Classifies already-encoded texts (from {@link encode}) in one native call on a worker thread,
   * padded to the longest. The server's batcher uses this: it groups texts itself.
   */
  async classifyIdsAsync(
    ids: readonly (readonly number[])[],
    options: { bf16?: boolean } = {},
  ): Promise<TopicPrediction[]> {
    const prediction = await this.model.predictAsync(collate(ids), options);
    return this.#results(prediction.probabilities, ids.length);
  }

  dispose(): void {
    this.model.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
