/**
 * Hugging Face BERT checkpoints as DistilBERT: config.json and weights of a `BertModel` (or
 * `BertForSequenceClassification`, `BertForMaskedLM`, `BertForPreTraining`) mapped exactly onto the
 * module tree of DistilBertForSequenceClassification, which the native shim computes.
 *
 * Why this works: a DistilBERT layer is a BERT layer under other names. Both are post-LayerNorm encoder
 * blocks (self-attention, residual, LayerNorm, GELU feed-forward, residual, LayerNorm) with the same shapes;
 * DistilBERT only has no token-type embeddings and no pooler. The token-type difference is folded into the
 * position embeddings (see {@link bertStateDictToDistilBert}), so for single-segment input (token_type_ids
 * all 0, which is how a classifier sees one text) the mapped model computes BERT's hidden states exactly.
 * What cannot be computed the same way (another activation, LayerNorm epsilon, position scheme, a decoder)
 * is refused, never approximated. Exactness is about the forward pass in eval mode: in training the two
 * differ by one dropout site (BERT drops out the attention output before its residual, DistilBERT does not).
 *
 * The BERT pooler and task heads are dropped: DistilBERT's classification head reads [CLS]'s hidden state
 * through pre_classifier → ReLU → classifier, a different head, so the caller starts it fresh.
 * @module
 */

import { type DistilBertConfig, parseId2Label, validateConfig } from "../model/config.ts";
import type { RawTensor, StateDict } from "../model/tensor.ts";
import { numel } from "../model/tensor.ts";

/** transformers' BertConfig defaults (bert-base-uncased), used for fields a config.json leaves out. */
const BERT_DEFAULTS = {
  vocab_size: 30522,
  hidden_size: 768,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  intermediate_size: 3072,
  hidden_act: "gelu",
  hidden_dropout_prob: 0.1,
  attention_probs_dropout_prob: 0.1,
  max_position_embeddings: 512,
  initializer_range: 0.02,
  layer_norm_eps: 1e-12,
  pad_token_id: 0,
  position_embedding_type: "absolute",
} as const;

/**
 * Whether parsed config.json contents describe a BERT model: `model_type` "bert", or, in old configs
 * without `model_type`, an architecture whose name starts with "Bert" (BertModel, BertForMaskedLM, ...).
 */
export function isBertConfig(json: Record<string, unknown>): boolean {
  if (json.model_type !== undefined) return json.model_type === "bert";
  const architectures = json.architectures;
  return Array.isArray(architectures) &&
    architectures.some((a) => typeof a === "string" && a.startsWith("Bert"));
}

/**
 * Translates a BERT config.json into the DistilBertConfig that computes the same encoder, field by field.
 * Missing fields take BertConfig's defaults. Anything the native DistilBERT would compute differently is
 * refused with an Error naming the field, its value and what is supported.
 * @param json parsed config.json contents.
 * @param source a name for error messages, usually the file path.
 * @param id2label class names for the new head; by default those of the config (as parseConfig reads
 *   them), else LABEL_0, LABEL_1.
 */
export function bertConfigToDistilBert(
  json: Record<string, unknown>,
  source: string,
  id2label?: string[],
): DistilBertConfig {
  if (!isBertConfig(json)) {
    throw new Error(
      `${source}: model_type is ${JSON.stringify(json.model_type)}, expected "bert" ` +
        `(or, without model_type, an architecture named Bert...)`,
    );
  }
  const field = <K extends keyof typeof BERT_DEFAULTS>(key: K): unknown => json[key] ?? BERT_DEFAULTS[key];
  const refuse = (key: string, value: unknown, supported: string): never => {
    throw new Error(
      `${source}: ${key}=${JSON.stringify(value)} is not supported: ${supported}`,
    );
  };

  // The shim's FFN uses the exact erf GELU, which is what BERT's "gelu" means. "gelu_new" and
  // "gelu_pytorch_tanh" are the tanh approximation, which differs by up to ~1e-3 per activation.
  const act = field("hidden_act");
  if (act !== "gelu") refuse("hidden_act", act, `only "gelu" (exact erf GELU), as DistilBERT computes`);
  // DistilBERT hard-codes LayerNorm's epsilon as 1e-12 (kLayerNormEps in ffi/shim/distilbert.h).
  const eps = field("layer_norm_eps");
  if (eps !== 1e-12) refuse("layer_norm_eps", eps, "only 1e-12, the epsilon DistilBERT's LayerNorms use");
  // relative_key(_query) adds learned distance embeddings inside attention; DistilBERT has none.
  // (transformers 5 dropped the field; older config.json files still carry it.)
  const positions = field("position_embedding_type");
  if (positions !== "absolute") {
    refuse("position_embedding_type", positions, `only "absolute" (learned position embeddings)`);
  }
  // A decoder masks attention causally, cross-attention adds modules: neither is DistilBERT's encoder.
  if (json.is_decoder === true) refuse("is_decoder", true, "only encoders (is_decoder false)");
  if (json.add_cross_attention === true) {
    refuse("add_cross_attention", true, "only self-attention (add_cross_attention false)");
  }

  const hiddenDropout = field("hidden_dropout_prob");
  const config = {
    vocab_size: field("vocab_size"),
    max_position_embeddings: field("max_position_embeddings"),
    dim: field("hidden_size"),
    n_layers: field("num_hidden_layers"),
    n_heads: field("num_attention_heads"),
    hidden_dim: field("intermediate_size"),
    dropout: hiddenDropout,
    attention_dropout: field("attention_probs_dropout_prob"),
    // BertForSequenceClassification drops out its pooled output with `classifier_dropout`, or
    // `hidden_dropout_prob` when that is null; DistilBERT's seq_classif_dropout is the same dropout before
    // the classifier, so a BERT fine-tuned here is regularised as transformers would regularise it.
    seq_classif_dropout: json.classifier_dropout ?? hiddenDropout,
    initializer_range: field("initializer_range"),
    // null (no padding token) also becomes 0: it only decides which embedding row gets no gradient.
    pad_token_id: field("pad_token_id"),
    id2label: id2label ? [...id2label] : parseId2Label(json, source),
  } as DistilBertConfig;
  return validateConfig(config, source);
}

/**
 * One encoder layer, BERT's module names → DistilBERT's, below `encoder.layer.N.` and
 * `distilbert.transformer.layer.N.`. Every module has a weight and a bias.
 */
const BERT_LAYER_MODULES: ReadonlyArray<readonly [bert: string, distilbert: string]> = [
  ["attention.self.query", "attention.q_lin"],
  ["attention.self.key", "attention.k_lin"],
  ["attention.self.value", "attention.v_lin"],
  ["attention.output.dense", "attention.out_lin"],
  // BERT's "add & norm" after attention and after the feed-forward block.
  ["attention.output.LayerNorm", "sa_layer_norm"],
  ["intermediate.dense", "ffn.lin1"],
  ["output.dense", "ffn.lin2"],
  ["output.LayerNorm", "output_layer_norm"],
];

/** Keys of the BERT checkpoint that have no counterpart in DistilBERT and are dropped (after `bert.`). */
const DROPPED = [
  /^pooler\./, // tanh(dense([CLS])): DistilBERT's head reads [CLS] directly, through its own layers
  /^cls\./, // BertForMaskedLM / BertForPreTraining heads (masked LM, next sentence prediction)
  /^classifier\./, // BertForSequenceClassification's head, which sits on the pooler
  /^embeddings\.(position_ids|token_type_ids)$/, // index buffers, not weights
];

/**
 * Maps a BERT state_dict (BertModel, BertForSequenceClassification, BertForMaskedLM or BertForPreTraining,
 * with or without the `bert.` prefix) onto DistilBertForSequenceClassification's names.
 *
 * - BERT adds `token_type_embeddings[token_type_id]` to every token. DistilBERT has no token types, but for
 *   type 0 that is one fixed vector added at every position, so `position_embeddings + token_type row 0`
 *   (summed in float32) becomes DistilBERT's position table, which is exact. Without token-type
 *   embeddings nothing is folded.
 * - Old TensorFlow-converted checkpoints name LayerNorm parameters gamma/beta; they become weight/bias.
 * - The pooler, `cls.*` and `classifier.*` heads and the index buffers are dropped and listed in
 *   `dropped` (original key names). Any other key is an error: nothing is ignored silently.
 *
 * Tensors keep their dtype (F32, F16, BF16; the model converts to float32 when loading), except the folded
 * position table, which is F32. The result has no pre_classifier/classifier: load it non-strict and the
 * new head stays freshly initialised.
 * @param source a name for error messages, usually the file path.
 */
export function bertStateDictToDistilBert(
  state: StateDict,
  source: string,
): { state: StateDict; dropped: string[] } {
  const dropped: string[] = [];
  const unknown: string[] = [];
  // DistilBERT name → [original BERT key, tensor].
  const mapped = new Map<string, [string, RawTensor]>();
  let positions: [string, RawTensor] | undefined;
  let tokenTypes: [string, RawTensor] | undefined;
  let layers = 0;
  const put = (name: string, key: string, tensor: RawTensor) => {
    const previous = mapped.get(name);
    if (previous) throw new Error(`${source}: ${previous[0]} and ${key} both give ${name}`);
    mapped.set(name, [key, tensor]);
  };

  for (const [key, tensor] of state) {
    const name = key.startsWith("bert.") ? key.slice("bert.".length) : key;
    if (DROPPED.some((re) => re.test(name))) {
      dropped.push(key);
      continue;
    }
    if (name === "embeddings.position_embeddings.weight") {
      if (positions) throw new Error(`${source}: ${positions[0]} and ${key} are the same parameter`);
      positions = [key, tensor];
      continue;
    }
    if (name === "embeddings.token_type_embeddings.weight") {
      if (tokenTypes) throw new Error(`${source}: ${tokenTypes[0]} and ${key} are the same parameter`);
      tokenTypes = [key, tensor];
      continue;
    }
    // Split "module.path.param"; LayerNorm's TF-era gamma/beta are its weight/bias.
    const dot = name.lastIndexOf(".");
    const module = name.slice(0, dot);
    let param = name.slice(dot + 1);
    if (module.endsWith("LayerNorm")) param = ({ gamma: "weight", beta: "bias" } as const)[param] ?? param;
    let target: string | undefined;
    if (module === "embeddings.word_embeddings" && param === "weight") {
      target = "distilbert.embeddings.word_embeddings.weight";
    } else if (module === "embeddings.LayerNorm" && (param === "weight" || param === "bias")) {
      target = `distilbert.embeddings.LayerNorm.${param}`;
    } else {
      const layer = /^encoder\.layer\.(\d+)\.(.+)$/.exec(module);
      const row = layer && BERT_LAYER_MODULES.find(([bert]) => bert === layer[2]);
      if (layer && row && (param === "weight" || param === "bias")) {
        const n = Number(layer[1]);
        layers = Math.max(layers, n + 1);
        target = `distilbert.transformer.layer.${n}.${row[1]}.${param}`;
      }
    }
    if (target) put(target, key, tensor);
    else unknown.push(key);
  }
  if (unknown.length) {
    throw new Error(
      `${source}: ${unknown.length} key(s) with no DistilBERT counterpart (not a plain BERT encoder?): ` +
        unknown.join(", "),
    );
  }
  if (positions) {
    put(
      "distilbert.embeddings.position_embeddings.weight",
      positions[0],
      tokenTypes ? foldTokenType(positions[1], tokenTypes[1], source) : positions[1],
    );
  }

  // Everything the encoder needs must be there: a partial backbone would load "non-strict" without a word.
  const expected = [
    "distilbert.embeddings.word_embeddings.weight",
    "distilbert.embeddings.position_embeddings.weight",
    "distilbert.embeddings.LayerNorm.weight",
    "distilbert.embeddings.LayerNorm.bias",
  ];
  for (let n = 0; n < layers; n++) {
    for (const [, module] of BERT_LAYER_MODULES) {
      expected.push(`distilbert.transformer.layer.${n}.${module}.weight`);
      expected.push(`distilbert.transformer.layer.${n}.${module}.bias`);
    }
  }
  const missing = expected.filter((name) => !mapped.has(name));
  if (layers === 0) missing.push("encoder.layer.0.*");
  if (missing.length) {
    throw new Error(`${source}: incomplete BERT encoder, nothing for: ${missing.join(", ")}`);
  }
  // DistilBERT's state_dict order (embeddings, then layer by layer), like a checkpoint of its own.
  return { state: new Map(expected.map((name) => [name, mapped.get(name)![1]])), dropped };
}

/** position_embeddings + token_type_embeddings[0] broadcast over positions, as a new F32 tensor. */
function foldTokenType(positions: RawTensor, tokenTypes: RawTensor, source: string): RawTensor {
  const [rows, dim] = positions.shape;
  if (positions.shape.length !== 2 || tokenTypes.shape.length !== 2 || tokenTypes.shape[1] !== dim) {
    throw new Error(
      `${source}: position embeddings [${positions.shape}] and token-type embeddings ` +
        `[${tokenTypes.shape}] must be [positions, hidden] and [types, hidden]`,
    );
  }
  if (tokenTypes.shape[0] < 1) throw new Error(`${source}: token-type embeddings have no rows`);
  const pos = toFloat32(positions, "position embeddings", source);
  const type0 = toFloat32(tokenTypes, "token-type embeddings", source).subarray(0, dim);
  const out = new Float32Array(rows * dim);
  // Float32Array stores round each sum to float32, as torch's float32 addition would.
  for (let p = 0; p < rows; p++) {
    for (let j = 0; j < dim; j++) out[p * dim + j] = pos[p * dim + j] + type0[j];
  }
  return { dtype: "F32", shape: [rows, dim], data: new Uint8Array(out.buffer) };
}

/** A floating tensor's values as float32 (exact for F16 and BF16, rounded for F64). */
function toFloat32(t: RawTensor, what: string, source: string): Float32Array {
  const n = numel(t.shape);
  // A DataView reads little-endian at any byte offset (tensor data are views into a file's bytes).
  const view = new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  const out = new Float32Array(n);
  switch (t.dtype) {
    case "F32":
      for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * i, true);
      return out;
    case "F64":
      for (let i = 0; i < n; i++) out[i] = view.getFloat64(8 * i, true);
      return out;
    case "BF16": {
      // bfloat16 is the top half of a float32: shift its bits back into place.
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = view.getUint16(2 * i, true) << 16 >>> 0;
      return out;
    }
    case "F16":
      for (let i = 0; i < n; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
      return out;
    default:
      throw new Error(`${source}: ${what} have dtype ${t.dtype}, expected a floating type`);
  }
}

/** IEEE 754 half precision bits → number (every half is exactly a float32). */
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24; // zero and subnormals
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}
