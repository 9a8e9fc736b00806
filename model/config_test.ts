import assert from "node:assert/strict";
import { configToJson, DISTILBERT_BASE_UNCASED, parseConfig } from "./config.ts";

Deno.test("config.json round trip keeps every field and the label names in order", () => {
  const parsed = parseConfig(JSON.parse(JSON.stringify(configToJson(DISTILBERT_BASE_UNCASED))));
  assert.deepEqual(parsed, DISTILBERT_BASE_UNCASED);
});

Deno.test("the hub's distilbert-base-uncased config.json parses with transformers' default labels", () => {
  // Fields as in the hub file (no id2label: transformers then assumes 2 labels).
  const hub = {
    activation: "gelu",
    attention_dropout: 0.1,
    dim: 768,
    dropout: 0.1,
    hidden_dim: 3072,
    max_position_embeddings: 512,
    model_type: "distilbert",
    n_heads: 12,
    n_layers: 6,
    pad_token_id: 0,
    seq_classif_dropout: 0.2,
    sinusoidal_pos_embds: false,
    vocab_size: 30522,
  };
  assert.deepEqual(parseConfig(hub).id2label, ["LABEL_0", "LABEL_1"]);
  assert.equal(parseConfig({ ...hub, num_labels: 4 }).id2label.length, 4);
});

Deno.test("invalid configs are refused with every problem listed", () => {
  assert.throws(
    () => parseConfig({ dim: 100, n_heads: 3, dropout: 1.5, vocab_size: -1 }),
    /vocab_size must be a positive integer \(got -1\)[\s\S]*n_heads \(3\) must divide dim \(100\)[\s\S]*dropout must be in \[0, 1\) \(got 1\.5\)/,
  );
  assert.throws(
    () => parseConfig({ sinusoidal_pos_embds: true }),
    /sinusoidal_pos_embds=true is not supported/,
  );
  assert.throws(() => parseConfig({ activation: "relu" }), /activation "relu" is not supported/);
  assert.throws(() => parseConfig([]), /expected a JSON object/);
  assert.throws(() => parseConfig({ id2label: { "0": "only" } }), /at least two class names/);
  assert.throws(() => parseConfig({ id2label: { "0": "a", "5": "b" } }), /id2label must map 0\.\.1/);
});
