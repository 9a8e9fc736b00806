// Checkpoint round trips with the Python ecosystem, and what happens to broken checkpoints.
import assert from "node:assert/strict";
import { join } from "node:path";
import { DistilBertClassifier, setNumThreads } from "../ffi/model.ts";
import { AG_NEWS_LABELS } from "../model/labels.ts";
import type { StateDict } from "../model/tensor.ts";
import { loadModel, loadStateDictFile, locateCheckpoint, PT_FILE, saveCheckpoint } from "./checkpoint.ts";
import { detectFormat } from "./format.ts";
import { loadPretrained } from "./pretrained.ts";
import { resolvePretrained } from "./pretrained_sources.ts";
import {
  assertClose,
  hfConfigJson,
  makeBatch,
  makeReferenceModel,
  pythonJson,
  readLogits,
  reference,
  referenceLogits,
  tempDir,
  tinyConfig,
  venvPython,
  writeBatchJson,
} from "../tests/helpers.ts";

await setNumThreads(2);

Deno.test("our checkpoint → torch.load(weights_only=True) → load_state_dict(strict=True) → same logits", async () => {
  await using tmp = await tempDir();
  const config = tinyConfig();
  using model = await DistilBertClassifier.create(config, { device: "cpu", seed: 31 });
  // Train a little so the weights are not just the initialisation.
  const batch = makeBatch(config, 4, 12, 8);
  for (let i = 0; i < 3; i++) model.trainStep(batch, { lr: 1e-2 });
  const dir = join(tmp.path, "ckpt");
  await saveCheckpoint(dir, model);
  await writeBatchJson(join(tmp.path, "batch.json"), batch);
  const ours = model.predict(batch).logits;
  // The .pt state_dict, read by torch.load with weights_only=True and loaded strictly.
  await reference(
    "load-pt",
    "--pt",
    join(dir, PT_FILE),
    "--config",
    dir,
    "--batch",
    join(tmp.path, "batch.json"),
    "--out",
    join(tmp.path, "pt.json"),
  );
  assertClose(ours, await readLogits(join(tmp.path, "pt.json")), 1e-5, "logits via .pt");
  // The whole directory through transformers' from_pretrained (safetensors + config.json).
  assertClose(
    ours,
    await referenceLogits(dir, join(tmp.path, "batch.json")),
    1e-5,
    "logits via from_pretrained",
  );
  // And back into DistriNews from each weights file: bit-identical.
  for (const file of ["model.safetensors", PT_FILE]) {
    const loaded = await loadModel(join(dir, file), { device: "cpu" });
    using again = loaded.model;
    assert.deepEqual(again.predict(batch).logits, ours, file);
  }
});

Deno.test("transformers' save_pretrained (safetensors and pytorch_model.bin) → our load → same logits", async () => {
  await using tmp = await tempDir();
  const config = tinyConfig();
  await makeReferenceModel(tmp.path, config, 4);
  const batch = makeBatch(config, 3, 10, 2);
  await writeBatchJson(join(tmp.path, "batch.json"), batch);
  const expected = await referenceLogits(join(tmp.path, "hf"), join(tmp.path, "batch.json"));
  const loaded = await loadModel(join(tmp.path, "hf"), { device: "cpu" });
  using model = loaded.model;
  assert.match(loaded.files.weightsPath, /model\.safetensors$/);
  assertClose(model.predict(batch).logits, expected, 1e-5, "from safetensors");
  // The same weights as a torch.save'd OrderedDict (HF's .bin): libtorch's C++ unpickler cannot read
  // those, our TypeScript reader can.
  const py = [
    "import sys, torch",
    "from transformers import DistilBertForSequenceClassification as M",
    "m = M.from_pretrained(sys.argv[1])",
    "torch.save(m.state_dict(), sys.argv[2])",
  ].join("\n");
  const bin = join(tmp.path, "hf", "pytorch_model.bin");
  const out = await new Deno.Command(venvPython(), {
    args: ["-c", py, join(tmp.path, "hf"), bin],
    stderr: "piped",
  })
    .output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const fromBin = await loadModel(bin, { device: "cpu" });
  using binModel = fromBin.model;
  assertClose(binModel.predict(batch).logits, expected, 1e-5, "from pytorch_model.bin");
});

/**
 * A random tiny DistilBERT classifier saved as Hugging Face's folder of old: config.json beside a
 * pytorch_model.bin written by torch.save in its legacy (pre-zip) format. Prints its float32 weights (hex)
 * and its eval-mode logits on the batch given, so the loaders are checked against torch itself.
 */
const LEGACY_FOLDER = String.raw`
import json, sys, zipfile
import torch
from transformers import DistilBertConfig, DistilBertForSequenceClassification

a = json.load(sys.stdin)
torch.manual_seed(7)
model = DistilBertForSequenceClassification(DistilBertConfig(**a["config"])).eval()
with torch.no_grad():
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.05)  # non-zero biases and LayerNorm shifts
model.config.save_pretrained(a["dir"])
bin_path = a["dir"] + "/pytorch_model.bin"
torch.save(model.state_dict(), bin_path, _use_new_zipfile_serialization=False)
assert not zipfile.is_zipfile(bin_path)
with torch.no_grad():
    logits = model(input_ids=torch.tensor(a["input_ids"]), attention_mask=torch.tensor(a["mask"])).logits
json.dump({
    "weights": {k: v.detach().float().contiguous().numpy().tobytes().hex() for k, v in model.state_dict().items()},
    "logits": logits.flatten().tolist(),
}, sys.stdout)
`;

/** Asserts every tensor of `state` is, bit for bit, the float32 weight Python printed under its name. */
function assertWeights(state: StateDict, expected: Record<string, string>, what: string): void {
  const names = Object.keys(expected).filter((k) => !k.endsWith("position_ids"));
  assert.deepEqual([...state.keys()].sort(), names.sort(), `${what}: names`);
  for (const [name, tensor] of state) {
    assert.equal(tensor.dtype, "F32", `${what}: ${name}`);
    const hex = Array.from(tensor.data, (b) => b.toString(16).padStart(2, "0")).join("");
    assert.ok(hex === expected[name], `${what}: ${name} differs from Python's`);
  }
}

Deno.test("a legacy torch.save pytorch_model.bin loads through predict/serve's and --pretrained's paths", async () => {
  await using tmp = await tempDir();
  const config = tinyConfig();
  const dir = join(tmp.path, "legacy-hf");
  await Deno.mkdir(dir);
  const batch = makeBatch(config, 3, 10, 5);
  const rows = (a: ArrayLike<number>) =>
    Array.from({ length: batch.batchSize }, (_, i) => Array.from(a).slice(i * 10, (i + 1) * 10));
  const python = await pythonJson(LEGACY_FOLDER, {
    config: hfConfigJson(config),
    dir,
    input_ids: rows(batch.inputIds),
    mask: rows(batch.attentionMask),
  }) as { weights: Record<string, string>; logits: number[] };
  const bin = join(dir, "pytorch_model.bin");
  assert.deepEqual(detectFormat(await Deno.readFile(bin)), { format: "torch-legacy" });

  // serve and predict: TextClassifier.load resolves the folder, then loads the weights file it found.
  const source = await resolvePretrained(dir);
  assert.equal(source.weightsPath, bin);
  for (const path of [source.weightsPath, dir]) {
    const loaded = await loadModel(path, { device: "cpu" });
    using model = loaded.model;
    assert.equal(loaded.files.weightsPath, bin);
    assertWeights(model.stateDict(), python.weights, `loadModel(${path})`);
    assertClose(model.predict(batch).logits, Float32Array.from(python.logits), 1e-5, `logits via ${path}`);
  }
  // train --pretrained: the same weights, head kept (as many classes).
  const pretrained = await loadPretrained(dir, { id2label: [...AG_NEWS_LABELS] });
  assert.equal(pretrained.family, "distilbert");
  assert.equal(pretrained.keptHead, true);
  assertWeights(pretrained.state, python.weights, "loadPretrained");
  // And the bare file reader.
  assertWeights(await loadStateDictFile(bin), python.weights, "loadStateDictFile");
});

Deno.test("broken checkpoints fail with a clear message and nothing crashes", async () => {
  await using tmp = await tempDir();
  const config = tinyConfig();
  using model = await DistilBertClassifier.create(config, { device: "cpu" });
  const dir = join(tmp.path, "ok");
  await saveCheckpoint(dir, model);
  const corrupt = async (name: string, mutate: (bytes: Uint8Array) => Uint8Array) => {
    const bad = join(tmp.path, name);
    await Deno.mkdir(bad);
    await Deno.copyFile(join(dir, "config.json"), join(bad, "config.json"));
    for (const file of ["model.safetensors", PT_FILE]) {
      await Deno.writeFile(join(bad, file), mutate(await Deno.readFile(join(dir, file))));
    }
    return bad;
  };
  const truncated = await corrupt("truncated", (b) => b.subarray(0, Math.floor(b.length / 2)));
  await assert.rejects(() => loadModel(truncated), /truncated|exceeds the file|past the file/);
  await assert.rejects(() => loadModel(join(truncated, PT_FILE)), new RegExp(PT_FILE));
  const garbage = await corrupt("garbage", (b) => b.map((_, i) => (i * 131) & 0xff));
  await assert.rejects(() => loadModel(garbage), /not a valid safetensors file/);
  await assert.rejects(() => loadModel(join(tmp.path, "missing")), /checkpoint not found/);
  await assert.rejects(() => locateCheckpoint(tmp.path), /no config\.json/);
  // Wrong architecture: weights of another shape are named, with both shapes.
  const wide = await DistilBertClassifier.create(tinyConfig({ dim: 64, n_heads: 4 }), { device: "cpu" });
  const wideDir = join(tmp.path, "wide");
  await saveCheckpoint(wideDir, wide);
  wide.dispose();
  await Deno.copyFile(join(dir, "config.json"), join(wideDir, "config.json"));
  await assert.rejects(
    () => loadModel(wideDir),
    /pre_classifier\.weight: shape \[64,64\] in .*, \[32,32\] in the model/,
  );
  // A config that is not DistilBERT.
  await Deno.writeTextFile(join(wideDir, "config.json"), JSON.stringify({ model_type: "bert" }));
  await assert.rejects(() => loadModel(wideDir), /only "distilbert" is supported/);
  await Deno.writeTextFile(join(wideDir, "config.json"), "{not json");
  await assert.rejects(() => loadModel(wideDir), /not valid JSON/);
  // The process is still fine.
  assert.equal(model.predict(makeBatch(config, 1, 4)).logits.length, 4);
});

Deno.test("saveCheckpoint replaces an existing directory whole and leaves no temporary files", async () => {
  await using tmp = await tempDir();
  const dir = join(tmp.path, "ckpt");
  using a = await DistilBertClassifier.create(tinyConfig(), { device: "cpu", seed: 1 });
  using b = await DistilBertClassifier.create(tinyConfig(), { device: "cpu", seed: 2 });
  await saveCheckpoint(dir, a);
  await Deno.writeTextFile(join(dir, "stale.txt"), "from an older run");
  await saveCheckpoint(dir, b);
  const names = [];
  for await (const e of Deno.readDir(tmp.path)) names.push(e.name);
  assert.deepEqual(names, ["ckpt"]);
  const files = [];
  for await (const e of Deno.readDir(dir)) files.push(e.name);
  assert.deepEqual(files.sort(), ["config.json", "distilbert_agnews.pt", "model.safetensors"]);
  const batch = makeBatch(tinyConfig(), 2, 6);
  const loaded = await loadModel(dir, { device: "cpu" });
  using reloaded = loaded.model;
  assert.deepEqual(reloaded.predict(batch).logits, b.predict(batch).logits);
});

Deno.test("a save that fails half-way keeps the previous checkpoint and leaves nothing behind", async () => {
  await using tmp = await tempDir();
  const dir = join(tmp.path, "ckpt");
  using a = await DistilBertClassifier.create(tinyConfig(), { device: "cpu", seed: 1 });
  using b = await DistilBertClassifier.create(tinyConfig(), { device: "cpu", seed: 2 });
  await saveCheckpoint(dir, a);
  const failingTokenizer = { saveHuggingFace: () => Promise.reject(new Error("disk full")) };
  await assert.rejects(() => saveCheckpoint(dir, b, { tokenizer: failingTokenizer }), /disk full/);
  const names = [];
  for await (const e of Deno.readDir(tmp.path)) names.push(e.name);
  assert.deepEqual(names, ["ckpt"]);
  const batch = makeBatch(tinyConfig(), 2, 6);
  const loaded = await loadModel(dir, { device: "cpu" });
  using reloaded = loaded.model;
  assert.deepEqual(reloaded.predict(batch).logits, a.predict(batch).logits);
  // Saving while a nonblocking step runs would mix two states in one checkpoint: refused.
  const step = a.trainStepAsync(makeBatch(tinyConfig(), 2, 6), { lr: 1e-3 });
  await assert.rejects(() => saveCheckpoint(dir, a), /nonblocking step is running/);
  await step;
});

Deno.test("a checkpoint lost between the two renames is reported with where both copies are", async () => {
  await using tmp = await tempDir();
  await Deno.mkdir(join(tmp.path, ".ckpt.1234abcd.staging"));
  await Deno.mkdir(join(tmp.path, ".ckpt.1234abcd.old"));
  await assert.rejects(
    () => locateCheckpoint(join(tmp.path, "ckpt")),
    /interrupted save left .*\.ckpt\.1234abcd\.old and .*\.ckpt\.1234abcd\.staging/,
  );
});
