// Our evaluation against transformers' on the same checkpoint and the same rows: every row's predicted
// label equal, hence the same accuracy, and the same mean loss.
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadAgNewsCsv } from "../data/ag_news.ts";
import { BertTokenizer } from "../data/tokenizer.ts";
import { TokenizedDataset } from "../data/dataset.ts";
import { loadModel } from "../weights/checkpoint.ts";
import { evaluate, evaluationRows } from "./evaluate.ts";
import { makeReferenceModel, pythonJson, ROOT, tempDir, tinyConfig } from "../tests/helpers.ts";

// transformers tokenizes the texts itself (BertTokenizerFast on our vocab), pads each batch of 64 to its
// longest, and scores in eval mode: what a user of the Trainer's predict() gets.
const HF_EVAL = `
import json, sys, torch
from transformers import BertTokenizerFast, DistilBertForSequenceClassification
from transformers.models.bert.tokenization_bert import load_vocab
a = json.load(sys.stdin)
model = DistilBertForSequenceClassification.from_pretrained(a["model"]).eval()
tok = BertTokenizerFast(vocab=load_vocab(a["vocab"]), do_lower_case=True)
preds, margins, loss = [], [], 0.0
with torch.no_grad():
    for i in range(0, len(a["texts"]), 64):
        enc = tok(a["texts"][i:i + 64], truncation=True, max_length=128, padding=True, return_tensors="pt",
                  return_token_type_ids=False)
        logits = model(**enc).logits.double()
        labels = torch.tensor(a["labels"][i:i + 64])
        loss += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        top = logits.topk(2, dim=1).values
        margins += (top[:, 0] - top[:, 1]).tolist()
        preds += logits.argmax(1).tolist()
print(json.dumps({"predictions": preds, "loss": loss / len(a["texts"]), "min_margin": min(margins)}))
`;

Deno.test("evaluation equals transformers': every row's prediction, the accuracy and the loss", async () => {
  await using tmp = await tempDir();
  // A wide initialisation spreads the logits, so no row's top two classes are within rounding of each other.
  await makeReferenceModel(
    tmp.path,
    tinyConfig({ initializer_range: 0.3, max_position_embeddings: 128, vocab_size: 30522 }),
    11,
  );
  const dir = join(tmp.path, "hf");
  const records = await loadAgNewsCsv(join(ROOT, "data", "fixtures", "ag_news", "test_sample.csv"));
  const tokenizer = await BertTokenizer.bundled();
  const dataset = await TokenizedDataset.build(records, tokenizer, {
    maxLength: 128,
    cacheDir: join(tmp.path, "cache"),
  });
  const { model } = await loadModel(dir, { device: "cpu" });
  using _ = model;
  const ours = await evaluate(model, dataset, { batchSize: 64 });
  const hf = await pythonJson(HF_EVAL, {
    model: dir,
    vocab: join(ROOT, "data", "vocab", "bert-base-uncased-vocab.txt"),
    texts: records.map((r) => r.text),
    labels: records.map((r) => r.label),
  }) as { predictions: number[]; loss: number; min_margin: number };
  assert.ok(hf.min_margin > 1e-4, `a near-tie (${hf.min_margin}) would make the comparison meaningless`);
  assert.deepEqual(Array.from(ours.rows), records.map((_, i) => i), "one rank scores every row");
  assert.deepEqual(Array.from(ours.predictions), hf.predictions, "per-row predictions");
  const hfAccuracy = hf.predictions.filter((p, i) => p === records[i].label).length / records.length;
  assert.equal(ours.report.accuracy, hfAccuracy);
  assert.ok(Math.abs(ours.loss - hf.loss) < 1e-5, `loss ${ours.loss} vs ${hf.loss}`);
  assert.equal(ours.confusion.total, records.length);
});

Deno.test("evaluationRows: ranks take disjoint slices that cover every row once", () => {
  for (const [n, world] of [[10, 1], [10, 3], [7, 4], [2, 4], [0, 2]]) {
    const all = Array.from({ length: world }, (_, r) => Array.from(evaluationRows(n, r, world))).flat();
    assert.deepEqual(
      all.sort((a, b) => a - b),
      Array.from({ length: n }, (_, i) => i),
      `n=${n} world=${world}`,
    );
  }
});
