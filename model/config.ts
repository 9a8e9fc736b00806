/**
 * DistilBertConfig with Hugging Face's field names: parsing config.json, validation, presets, and the
 * config.json DistriNews writes next to its checkpoints.
 * @module
 */

import { AG_NEWS_LABELS } from "./labels.ts";

/** The model's shape and regularisation, named as in transformers' DistilBertConfig. */
export interface DistilBertConfig {
  vocab_size: number;
  max_position_embeddings: number;
  dim: number;
  n_layers: number;
  n_heads: number;
  hidden_dim: number;
  dropout: number;
  attention_dropout: number;
  seq_classif_dropout: number;
  initializer_range: number;
  pad_token_id: number;
  /** Class names by label id; its length is the number of labels. */
  id2label: string[];
}

/** distilbert-base-uncased (66M parameters) with a 4-class AG News head. */
export const DISTILBERT_BASE_UNCASED: Readonly<DistilBertConfig> = Object.freeze({
  vocab_size: 30522,
  max_position_embeddings: 512,
  dim: 768,
  n_layers: 6,
  n_heads: 12,
  hidden_dim: 3072,
  dropout: 0.1,
  attention_dropout: 0.1,
  seq_classif_dropout: 0.2,
  initializer_range: 0.02,
  pad_token_id: 0,
  id2label: [...AG_NEWS_LABELS],
});

/**
 * A small model for CPUs, demos and tests: the full vocabulary (so the real tokenizer works), 4 layers of
 * width 256. About 11M parameters, most of them the word embeddings.
 */
export const DISTILBERT_SMALL: Readonly<DistilBertConfig> = Object.freeze({
  ...DISTILBERT_BASE_UNCASED,
  dim: 256,
  n_layers: 4,
  n_heads: 4,
  hidden_dim: 1024,
  max_position_embeddings: 512,
  id2label: [...AG_NEWS_LABELS],
});

/** Named presets accepted wherever a model size is asked for. */
export const PRESETS: Readonly<Record<string, Readonly<DistilBertConfig>>> = {
  "distilbert-base-uncased": DISTILBERT_BASE_UNCASED,
  "distilbert-small": DISTILBERT_SMALL,
};

/** The fields that make two configs the same network (dropouts and labels may differ). */
export const SHAPE_FIELDS = [
  "vocab_size",
  "max_position_embeddings",
  "dim",
  "n_layers",
  "n_heads",
  "hidden_dim",
] as const;

function isPositiveInt(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v > 0;
}

function isProbability(v: unknown): v is number {
  return typeof v === "number" && v >= 0 && v < 1;
}

/** Throws an Error listing every problem of `c`, or returns it unchanged. */
export function validateConfig(c: DistilBertConfig, source = "config"): DistilBertConfig {
  const problems: string[] = [];
  for (const key of SHAPE_FIELDS) {
    if (!isPositiveInt(c[key])) {
      problems.push(`${key} must be a positive integer (got ${JSON.stringify(c[key])})`);
    }
  }
  if (isPositiveInt(c.dim) && isPositiveInt(c.n_heads) && c.dim % c.n_heads !== 0) {
    problems.push(`n_heads (${c.n_heads}) must divide dim (${c.dim})`);
  }
  for (const key of ["dropout", "attention_dropout", "seq_classif_dropout"] as const) {
    if (!isProbability(c[key])) problems.push(`${key} must be in [0, 1) (got ${JSON.stringify(c[key])})`);
  }
  if (!(typeof c.initializer_range === "number" && c.initializer_range > 0)) {
    problems.push("initializer_range must be > 0");
  }
  if (!(Number.isInteger(c.pad_token_id) && c.pad_token_id >= 0 && c.pad_token_id < c.vocab_size)) {
    problems.push("pad_token_id must be in [0, vocab_size)");
  }
  if (
    !Array.isArray(c.id2label) || c.id2label.length < 2 || c.id2label.some((l) => typeof l !== "string")
  ) {
    // One label would make transformers train a regression (MSE loss); this model is a classifier.
    problems.push("id2label must list at least two class names");
  }
  if (problems.length) throw new Error(`invalid DistilBERT ${source}:\n  - ${problems.join("\n  - ")}`);
  return c;
}

/**
 * Reads a DistilBertConfig from parsed config.json contents (Hugging Face's format). Missing fields take
 * DistilBertConfig's defaults; unsupported variants (sinusoidal positions, another activation or model
 * type) are refused rather than silently computed differently.
 */
export function parseConfig(json: unknown, source = "config.json"): DistilBertConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new Error(`${source}: expected a JSON object`);
  }
  const raw = json as Record<string, unknown>;
  if (raw.model_type !== undefined && raw.model_type !== "distilbert") {
    throw new Error(
      `${source}: model_type is ${JSON.stringify(raw.model_type)}, only "distilbert" is supported`,
    );
  }
  if (raw.sinusoidal_pos_embds === true) {
    throw new Error(`${source}: sinusoidal_pos_embds=true is not supported (learned positions only)`);
  }
  if (raw.activation !== undefined && raw.activation !== "gelu") {
    throw new Error(`${source}: activation ${JSON.stringify(raw.activation)} is not supported (gelu only)`);
  }
  const base = DISTILBERT_BASE_UNCASED;
  const pick = <K extends keyof DistilBertConfig>(key: K): DistilBertConfig[K] =>
    (raw[key] ?? base[key]) as DistilBertConfig[K];
  const config: DistilBertConfig = {
    vocab_size: pick("vocab_size"),
    max_position_embeddings: pick("max_position_embeddings"),
    dim: pick("dim"),
    n_layers: pick("n_layers"),
    n_heads: pick("n_heads"),
    hidden_dim: pick("hidden_dim"),
    dropout: pick("dropout"),
    attention_dropout: pick("attention_dropout"),
    seq_classif_dropout: pick("seq_classif_dropout"),
    initializer_range: pick("initializer_range"),
    pad_token_id: pick("pad_token_id"),
    id2label: parseId2Label(raw, source),
  };
  return validateConfig(config, source);
}

/**
 * id2label of parsed config.json contents as a list: the map's names by id, or transformers' default for a
 * config without labels (LABEL_0 .. LABEL_{num_labels-1}, num_labels defaulting to 2).
 */
export function parseId2Label(raw: Record<string, unknown>, source: string): string[] {
  const map = raw.id2label;
  if (map === undefined) {
    // transformers' default for a config without labels is num_labels=2 (LABEL_0, LABEL_1).
    const n = typeof raw.num_labels === "number" ? raw.num_labels : 2;
    return Array.from({ length: n }, (_, i) => `LABEL_${i}`);
  }
  if (typeof map !== "object" || map === null) throw new Error(`${source}: id2label must be an object`);
  const entries = Object.entries(map as Record<string, unknown>);
  const labels: string[] = new Array(entries.length);
  for (const [key, value] of entries) {
    const id = Number(key);
    if (!Number.isInteger(id) || id < 0 || id >= entries.length || typeof value !== "string") {
      throw new Error(`${source}: id2label must map 0..${entries.length - 1} to names (bad entry ${key})`);
    }
    labels[id] = value;
  }
  return labels;
}

/** config.json contents in transformers' format for DistilBertForSequenceClassification. */
export function configToJson(c: DistilBertConfig): Record<string, unknown> {
  const id2label = Object.fromEntries(c.id2label.map((name, i) => [String(i), name]));
  const label2id = Object.fromEntries(c.id2label.map((name, i) => [name, i]));
  return {
    activation: "gelu",
    architectures: ["DistilBertForSequenceClassification"],
    attention_dropout: c.attention_dropout,
    dim: c.dim,
    dropout: c.dropout,
    hidden_dim: c.hidden_dim,
    id2label,
    initializer_range: c.initializer_range,
    label2id,
    max_position_embeddings: c.max_position_embeddings,
    model_type: "distilbert",
    n_heads: c.n_heads,
    n_layers: c.n_layers,
    pad_token_id: c.pad_token_id,
    qa_dropout: 0.1,
    seq_classif_dropout: c.seq_classif_dropout,
    sinusoidal_pos_embds: false,
    tie_weights_: true,
    vocab_size: c.vocab_size,
  };
}
