// loadPretrained on DistilBERT checkpoints: which head survives, and checkpoints whose layers disagree with
// their config.
import assert from "node:assert/strict";
import { join } from "node:path";
import { AG_NEWS_LABELS } from "../model/labels.ts";
import { DistilBertClassifier } from "../ffi/model.ts";
import { saveCheckpoint } from "./checkpoint.ts";
import { loadPretrained, pretrainedTokenizer } from "./pretrained.ts";
import { tempDir, tinyConfig } from "../tests/helpers.ts";

const HEAD = ["pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias"];

async function checkpoint(dir: string, labels: string[]): Promise<void> {
  using model = await DistilBertClassifier.create(tinyConfig({ id2label: labels }), {
    device: "cpu",
    seed: 1,
  });
  await saveCheckpoint(dir, model);
}

Deno.test("a DistilBERT classifier's head is kept for as many classes, dropped and reported for others", async () => {
  await using tmp = await tempDir();
  await checkpoint(join(tmp.path, "four"), [...AG_NEWS_LABELS]);
  await checkpoint(join(tmp.path, "two"), ["NEGATIVE", "POSITIVE"]);
  const four = await loadPretrained(join(tmp.path, "four"), { id2label: [...AG_NEWS_LABELS] });
  assert.equal(four.keptHead, true);
  assert.deepEqual(four.dropped, []);
  assert.ok(HEAD.every((k) => four.state.has(k)));
  const two = await loadPretrained(join(tmp.path, "two"), { id2label: [...AG_NEWS_LABELS] });
  assert.equal(two.keptHead, false);
  assert.deepEqual(two.dropped.toSorted(), HEAD.toSorted());
  assert.ok(HEAD.every((k) => !two.state.has(k)));
  assert.deepEqual(two.config.id2label, [...AG_NEWS_LABELS]);
  // The 2-class backbone loads into a 4-class model, the head reported as new.
  using model = await DistilBertClassifier.create(two.config, { device: "cpu" });
  assert.deepEqual(model.loadStateDict(two.state, { strict: false }).missing, HEAD);
});

Deno.test("a checkpoint whose layers disagree with its config's n_layers is refused", async () => {
  await using tmp = await tempDir();
  const dir = join(tmp.path, "ckpt");
  await checkpoint(dir, [...AG_NEWS_LABELS]);
  const config = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify({ ...config, n_layers: 3 }));
  await assert.rejects(
    () => loadPretrained(dir),
    /holds transformer layers 0, 1 but its config says n_layers 3/,
  );
});

Deno.test("tokenizer: a folder's own vocab.txt, the bundled one with a note, tokenizer.json alone refused", async () => {
  await using tmp = await tempDir();
  const notes: string[] = [];
  const config = tinyConfig({ vocab_size: 30522 });
  const bare = await pretrainedTokenizer(tmp.path, config, (m) => notes.push(m));
  assert.equal(bare.vocabSize, 30522);
  assert.match(notes[0], /has no tokenizer files; using the bundled BERT uncased vocabulary/);
  await Deno.writeTextFile(join(tmp.path, "tokenizer.json"), "{}");
  await assert.rejects(() => pretrainedTokenizer(tmp.path, config), /tokenizer\.json but no vocab\.txt/);
});
