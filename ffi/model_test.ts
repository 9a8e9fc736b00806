// The native model against transformers' DistilBertForSequenceClassification (the venv's Python is the
// reference), plus determinism, overfitting and bad input.
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { DISTILBERT_BASE_UNCASED } from "../model/config.ts";
import { DistilBertClassifier, setNumThreads, trimHostMemory } from "./model.ts";
import type { LabeledBatch } from "../model/batch.ts";
import { NativeError } from "./lib.ts";
import { loadSafetensors, writeSafetensors } from "../weights/safetensors.ts";
import {
  assertClose,
  makeBatch,
  makeReferenceModel,
  reference,
  referenceLogits,
  tempDir,
  tinyConfig,
  writeBatchJson,
} from "../tests/helpers.ts";

// Fixed threads keep CPU results reproducible run to run.
await setNumThreads(2);

async function parityCase(config: ReturnType<typeof tinyConfig>, batch: LabeledBatch, tol: number) {
  await using tmp = await tempDir();
  await makeReferenceModel(tmp.path, config);
  await writeBatchJson(join(tmp.path, "batch.json"), batch);
  const expected = await referenceLogits(join(tmp.path, "hf"), join(tmp.path, "batch.json"));
  using model = await DistilBertClassifier.create(config, { device: "cpu" });
  model.loadStateDict(await loadSafetensors(join(tmp.path, "hf", "model.safetensors")));
  const ours = model.predict(batch);
  assertClose(ours.logits, expected, tol, "logits vs transformers");
  // Probabilities are the softmax of the logits, rows summing to 1.
  for (let r = 0; r < batch.batchSize; r++) {
    const row = ours.probabilities.subarray(r * 4, r * 4 + 4);
    assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-5);
  }
}

Deno.test("parity with transformers on a tiny config, padded batch (fp32, eval)", async () => {
  const config = tinyConfig();
  await parityCase(config, makeBatch(config, 5, 17, 7), 1e-5);
});

Deno.test("parity with transformers when a row's position 0 is padding (the padded path, not the unpadded)", async () => {
  // predict runs its matrix products on real tokens only and reads [CLS] at position 0; a left-padded row
  // breaks that assumption, so the shim must fall back to the padded forward and still agree.
  const config = tinyConfig();
  const batch = makeBatch(config, 4, 15, 9);
  batch.attentionMask.fill(0, 0, 3);
  batch.attentionMask.fill(1, 3, 15);
  await parityCase(config, batch, 1e-5);
});

Deno.test("parity with transformers when a mask has holes after a real [CLS] (the unpadded path)", async () => {
  // Positions come from each token's place in the padded row, holes and all, exactly as in transformers.
  const config = tinyConfig();
  const batch = makeBatch(config, 3, 14, 12);
  batch.attentionMask.fill(1);
  for (let i = 0; i < batch.inputIds.length; i++) batch.inputIds[i] ||= 7;
  for (const hole of [4, 5, 9]) batch.attentionMask[hole] = 0; // row 0: holes in the middle
  batch.attentionMask.fill(0, 14 + 10, 28); // row 1: right padding
  await parityCase(config, batch, 1e-5);
});

Deno.test("bf16 inference on the CPU stays within bf16 rounding of fp32, padded or not", async () => {
  // bf16 keeps 8 bits of mantissa: logits move by ~1e-2 of their size, not more. A wide initialisation
  // gives logits of order 1, so a broken cast (or none at all) would show as a large or a zero difference.
  const config = tinyConfig({ initializer_range: 0.3 });
  using model = await DistilBertClassifier.create(config, { device: "cpu", seed: 5 });
  for (const batch of [makeBatch(config, 6, 20, 3), makeBatch(config, 1, 9, 4)]) {
    const fp32 = model.predict(batch), bf16 = model.predict(batch, { bf16: true });
    const scale = Math.max(...fp32.logits.map(Math.abs));
    let diff = 0;
    fp32.logits.forEach((x, i) => diff = Math.max(diff, Math.abs(x - bf16.logits[i])));
    assert.ok(scale > 0.1, `logits too small to compare: ${scale}`);
    assert.ok(diff > 0, "bf16 gave bit-identical logits: autocast did not run");
    assert.ok(diff < 0.05 * scale, `bf16 logits differ by ${diff} (fp32 scale ${scale})`);
  }
});

Deno.test("parity with transformers on a batch without padding (the unmasked attention path)", async () => {
  const config = tinyConfig();
  const batch = makeBatch(config, 3, 12, 21);
  batch.attentionMask.fill(1);
  for (let i = 0; i < batch.inputIds.length; i++) batch.inputIds[i] ||= 5;
  await parityCase(config, batch, 1e-5);
});

Deno.test("parity with transformers on the full distilbert-base-uncased config", async () => {
  const config = { ...DISTILBERT_BASE_UNCASED, id2label: [...DISTILBERT_BASE_UNCASED.id2label] };
  await parityCase(config, makeBatch(config, 2, 24, 11), 1e-5);
});

Deno.test("training steps match PyTorch AdamW + clipping + decay groups, parameter by parameter", async () => {
  // Dropout off so both sides compute the same function; everything else as in real training.
  const config = tinyConfig({ dropout: 0, attention_dropout: 0, seq_classif_dropout: 0 });
  await using tmp = await tempDir();
  await makeReferenceModel(tmp.path, config);
  const batch = makeBatch(config, 6, 12, 5);
  await writeBatchJson(join(tmp.path, "batch.json"), batch);
  const steps = 4, lr = 3e-3, weightDecay = 0.05, maxGradNorm = 0.2;
  await reference(
    "train",
    "--model",
    join(tmp.path, "hf"),
    "--batch",
    join(tmp.path, "batch.json"),
    "--steps",
    String(steps),
    "--lr",
    String(lr),
    "--weight-decay",
    String(weightDecay),
    "--max-grad-norm",
    String(maxGradNorm),
    "--out",
    join(tmp.path, "trained"),
  );
  // Both of our paths: the default computes on real tokens only (and [CLS] only in the last layer), the
  // baseline on the padded layout; both must be PyTorch's training step.
  assert.ok(batch.attentionMask.includes(0), "the batch must be padded for the unpadded path to matter");
  for (const padded of [false, true]) await checkTrainingParity(tmp.path, padded);
  async function checkTrainingParity(dir: string, padded: boolean) {
    using model = await DistilBertClassifier.create(config, { device: "cpu" });
    model.loadStateDict(await loadSafetensors(join(dir, "hf", "model.safetensors")));
    model.configureOptimizer({ weightDecay });
    const losses = [];
    const norms = [];
    for (let i = 0; i < steps; i++) {
      const step = model.trainStep(batch, { lr, maxGradNorm, padded });
      losses.push(step.loss);
      norms.push(step.gradNorm);
    }
    // Clipping really acted on these steps, so the comparison covers it.
    assert.ok(norms.every((n) => n > maxGradNorm), `gradient norms ${norms}`);
    const refLosses = JSON.parse(await Deno.readTextFile(join(tmp.path, "trained", "losses.json")));
    assertClose(losses, refLosses, 1e-5, "losses");
    const expected = await loadSafetensors(join(tmp.path, "trained", "model.safetensors"));
    const ours = model.stateDict();
    let compared = 0;
    for (const [name, t] of ours) {
      const ref = expected.get(name);
      assert.ok(ref, `reference lacks ${name}`);
      const a = new Float32Array(t.data.slice().buffer), b = new Float32Array(ref.data.slice().buffer);
      assertClose(a, b, 1e-5, name);
      compared++;
    }
    assert.equal(compared, expected.size);
    // The padding row of the word embeddings never moves (padding_idx): no gradient flows into it.
    const before = await loadSafetensors(join(tmp.path, "hf", "model.safetensors"));
    const emb = (s: typeof ours) =>
      new Float32Array(s.get("distilbert.embeddings.word_embeddings.weight")!.data.slice().buffer).subarray(
        0,
        32,
      );
    assert.deepEqual(emb(ours), emb(before));
  }
});

Deno.test("bf16 training on the CPU: fp32 master weights, steps within bf16 rounding of fp32", async () => {
  // bf16 keeps 8 mantissa bits, so a step's loss moves by ~1e-2 relative, not more; the weights stay fp32
  // (AdamW updates them in fp32), so after a few steps both runs are still close.
  const config = tinyConfig({ dropout: 0, attention_dropout: 0, seq_classif_dropout: 0 });
  const batch = makeBatch(config, 8, 16, 4);
  const run = async (bf16: boolean) => {
    using model = await DistilBertClassifier.create(config, { device: "cpu", seed: 77 });
    const losses = Array.from({ length: 5 }, () => model.trainStep(batch, { lr: 1e-3, bf16 }).loss);
    const state = model.stateDict();
    return { losses, state };
  };
  const fp32 = await run(false), bf16 = await run(true);
  assert.notDeepEqual(bf16.losses, fp32.losses, "bit-identical losses: autocast did not run");
  fp32.losses.forEach((l, i) => {
    assert.ok(Math.abs(l - bf16.losses[i]) < 2e-2 * l, `step ${i}: fp32 ${l} vs bf16 ${bf16.losses[i]}`);
  });
  for (const [name, t] of bf16.state) {
    assert.equal(t.dtype, "F32", `${name} stays fp32`);
    const a = new Float32Array(t.data.slice().buffer);
    const b = new Float32Array(fp32.state.get(name)!.data.slice().buffer);
    // 5 AdamW steps of lr 1e-3 move a weight by at most ~5e-3; bf16 may change the direction of a few.
    assertClose(a, b, 1.2e-2, name);
  }
});

Deno.test("a tiny model overfits a tiny batch; the same seed gives bitwise-identical losses", async () => {
  const config = tinyConfig();
  const batch = makeBatch(config, 8, 10, 3);
  const run = async () => {
    using model = await DistilBertClassifier.create(config, { device: "cpu", seed: 123 });
    const losses: number[] = [];
    for (let i = 0; i < 20; i++) losses.push(model.trainStep(batch, { lr: 5e-3 }).loss);
    let last;
    for (let i = 0; i < 60; i++) last = model.trainStep(batch, { lr: 5e-3 });
    return { losses, last: last! };
  };
  const a = await run(), b = await run();
  assert.deepEqual(a.losses, b.losses, "same seed, same losses, bit for bit");
  assert.ok(a.losses[0] > 1.2, `initial loss ${a.losses[0]} should be near ln 4`);
  assert.ok(a.last.loss < 0.05, `after 80 steps the loss is ${a.last.loss}`);
  assert.equal(a.last.correct, 8);
  // A different seed starts elsewhere.
  using other = await DistilBertClassifier.create(config, { device: "cpu", seed: 124 });
  assert.notEqual(other.trainStep(batch, { lr: 5e-3 }).loss, a.losses[0]);
});

Deno.test("gradient accumulation: two half batches with lossScale 1/2 equal one full batch", async () => {
  const config = tinyConfig({ dropout: 0, attention_dropout: 0, seq_classif_dropout: 0 });
  const full = makeBatch(config, 4, 8, 9);
  const half = (i: number): LabeledBatch => ({
    inputIds: full.inputIds.slice(i * 16, i * 16 + 16),
    attentionMask: full.attentionMask.slice(i * 16, i * 16 + 16),
    labels: full.labels.slice(i * 2, i * 2 + 2),
    batchSize: 2,
    seqLen: 8,
  });
  using a = await DistilBertClassifier.create(config, { device: "cpu", seed: 5 });
  using b = await DistilBertClassifier.create(config, { device: "cpu", seed: 5 });
  a.trainStep(full, { lr: 1e-2 });
  b.trainStep(half(0), { lr: 1e-2, lossScale: 0.5, apply: false });
  b.trainStep(half(1), { lr: 1e-2, lossScale: 0.5 });
  for (const [name, t] of a.stateDict()) {
    const u = b.stateDict().get(name)!;
    // Float rounding only: the unpadded path packs 4 rows or 2 into its matrix products, so sums run in
    // another order, and AdamW's first step (a sign-like update of size lr) magnifies that on tiny gradients.
    assertClose(new Float32Array(t.data.buffer), new Float32Array(u.data.buffer), 1e-5, name);
  }
});

Deno.test("nonblocking steps and predictions equal blocking ones and leave the event loop free", async () => {
  const config = tinyConfig();
  const batch = makeBatch(config, 4, 16, 2);
  using a = await DistilBertClassifier.create(config, { device: "cpu", seed: 9 });
  using b = await DistilBertClassifier.create(config, { device: "cpu", seed: 9 });
  let ticks = 0;
  const timer = setInterval(() => ticks++, 0);
  const viaWorker = [];
  for (let i = 0; i < 5; i++) viaWorker.push((await a.trainStepAsync(batch, { lr: 1e-3 })).loss);
  const predicted = await a.predictAsync(batch);
  clearInterval(timer);
  const blocking = [];
  for (let i = 0; i < 5; i++) blocking.push(b.trainStep(batch, { lr: 1e-3 }).loss);
  assert.deepEqual(viaWorker, blocking);
  assert.deepEqual(predicted.logits, b.predict(batch).logits);
  assert.ok(ticks > 0, "timers ran while native steps were in flight");
});

Deno.test("bad input raises a clear Error and the process keeps working", async () => {
  const config = tinyConfig();
  using model = await DistilBertClassifier.create(config, { device: "cpu" });
  const good = makeBatch(config, 2, 8, 4);
  const expectError = (fn: () => unknown, pattern: RegExp) =>
    assert.throws(fn, (err: unknown) => {
      assert.ok(err instanceof Error, "an Error");
      assert.match(err.message, pattern);
      return true;
    });
  const ids = good.inputIds.slice();
  ids[3] = config.vocab_size;
  expectError(() => model.predict({ ...good, inputIds: ids }), /token ids must be in \[0, 120\)/);
  ids[3] = -1;
  expectError(() => model.trainStep({ ...good, inputIds: ids }, { lr: 1e-3 }), /token ids must be in/);
  const long = makeBatch(tinyConfig({ max_position_embeddings: 64 }), 1, 40);
  expectError(() => model.predict(long), /exceeds the model's max_position_embeddings \(32\)/);
  expectError(() => model.predict({ ...good, seqLen: 9 }), /inputIds must be an Int32Array of 18 ids/);
  expectError(() => model.predict({ ...good, attentionMask: new Uint8Array(3) }), /attentionMask must be/);
  expectError(
    () => model.trainStep({ ...good, labels: new Int32Array([0, 7]) }, { lr: 1e-3 }),
    /labels must be in \[0, 4\)/,
  );
  expectError(() => model.trainStep({ ...good, labels: new Int32Array(1) }, { lr: 1e-3 }), /labels must be/);
  const badMask = good.attentionMask.slice();
  badMask[0] = 2;
  expectError(
    () => model.predict({ ...good, attentionMask: badMask }),
    /attention_mask values must be 0 or 1/,
  );
  expectError(() => model.predict({ ...good, attentionMask: new Uint8Array(16) }), /at least one unmasked/);
  expectError(() => model.predict({ ...good, batchSize: 0 }), /positive integers/);
  expectError(() => model.trainStep(good, { lr: -1 }), /learning rate must be >= 0/);
  expectError(() => model.configureOptimizer({ beta1: 1 }), /betas must be in \[0, 1\)/);
  // Errors raised in C++ arrive as NativeError with the libtorch-side message, no backtrace.
  try {
    model.predict({ ...good, inputIds: ids });
  } catch (err) {
    assert.ok(err instanceof NativeError);
    assert.equal(err.call, "dn_predict");
    assert.doesNotMatch(err.message, /Exception raised from|frame #/);
  }
  await assert.rejects(
    () => DistilBertClassifier.create({ ...config, n_heads: 5 }, { device: "cpu" }),
    /n_heads \(5\) must divide dim \(32\)/,
  );
  await assert.rejects(() => DistilBertClassifier.create(config, { device: "cuda:7" }), /cuda:7 requested/);
  // Loading weights with wrong keys or shapes names them all.
  const sd = model.stateDict();
  const bad = new Map(sd);
  bad.delete("classifier.bias");
  bad.set("classifier.extra", sd.get("classifier.weight")!);
  bad.set("pre_classifier.bias", { dtype: "F32", shape: [31], data: new Uint8Array(124) });
  expectError(
    () => model.loadStateDict(bad),
    /pre_classifier\.bias: shape \[31\][\s\S]*missing keys \(1\): classifier\.bias[\s\S]*unexpected keys \(1\): classifier\.extra/,
  );
  // Still alive and correct after all of that.
  const after = model.predict(good);
  assert.equal(after.logits.length, 8);
  assert.ok(after.logits.every(Number.isFinite));
  model.dispose();
  expectError(() => model.predict(good), /disposed/);
});

Deno.test("a state_dict survives our safetensors writer and reader bit for bit", async () => {
  using model = await DistilBertClassifier.create(tinyConfig(), { device: "cpu", seed: 77 });
  await using tmp = await tempDir();
  const path = join(tmp.path, "model.safetensors");
  await Deno.writeFile(path, writeSafetensors(model.stateDict()));
  using copy = await DistilBertClassifier.create(tinyConfig(), { device: "cpu", seed: 78 });
  copy.loadStateDict(await loadSafetensors(path));
  const batch = makeBatch(tinyConfig(), 3, 9);
  assert.deepEqual(copy.predict(batch).logits, model.predict(batch).logits);
});

Deno.test("non-strict loading takes a bare DistilBertModel backbone and reports what it skipped", async () => {
  const config = tinyConfig();
  using source = await DistilBertClassifier.create(config, { device: "cpu", seed: 10 });
  // A pretrained backbone as the hub ships it: no "distilbert." prefix, no classifier, an LM head instead.
  const backbone = new Map();
  for (const [name, t] of source.stateDict()) {
    if (name.startsWith("distilbert.")) backbone.set(name.slice("distilbert.".length), t);
  }
  backbone.set("vocab_transform.weight", source.stateDict().get("pre_classifier.weight")!);
  backbone.set("embeddings.position_ids", { dtype: "I64", shape: [1, 32], data: new Uint8Array(256) });
  using target = await DistilBertClassifier.create(config, { device: "cpu", seed: 11 });
  assert.throws(() => target.loadStateDict(backbone), /missing keys \(40\)[\s\S]*unexpected keys \(37\)/);
  const report = target.loadStateDict(backbone, { strict: false });
  assert.deepEqual(report.missing, [
    "pre_classifier.weight",
    "pre_classifier.bias",
    "classifier.weight",
    "classifier.bias",
  ]);
  assert.deepEqual(report.unexpected, ["vocab_transform.weight"]);
  const a = source.stateDict(), b = target.stateDict();
  for (const [name, t] of b) {
    const equal = Buffer.from(t.data).equals(Buffer.from(a.get(name)!.data));
    // The backbone came over; the freshly initialised head kept its own (non-zero) weights.
    if (name.startsWith("distilbert.")) assert.ok(equal, name);
    else if (name.endsWith(".weight")) assert.ok(!equal, name);
  }
});

Deno.test("disposing during a nonblocking call frees the model only after the call returns", async () => {
  const config = tinyConfig();
  const model = await DistilBertClassifier.create(config, { device: "cpu" });
  const batch = makeBatch(config, 8, 32, 6);
  const pending = [model.predictAsync(batch), model.trainStepAsync(batch, { lr: 1e-3 })];
  model.dispose();
  const [prediction, step] = await Promise.all(pending);
  assert.equal((prediction as { logits: Float32Array }).logits.length, 32);
  assert.ok(Number.isFinite((step as { loss: number }).loss));
  assert.throws(() => model.predict(batch), /disposed/);
  await assert.rejects(() => model.predictAsync(batch), /disposed/);
});

Deno.test("concurrent nonblocking steps each get their own result", async () => {
  const config = tinyConfig();
  using model = await DistilBertClassifier.create(config, { device: "cpu" });
  const results = await Promise.all(
    [2, 3, 4, 5].map((n) => model.trainStepAsync(makeBatch(config, n, 8, n), { lr: 1e-3 })),
  );
  assert.deepEqual(results.map((r) => r.count), [2, 3, 4, 5]);
});

Deno.test("trimHostMemory returns the allocator's free pages to the OS: the resident set drops", async () => {
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))![1]) * 1024;
  await trimHostMemory(); // start from a trimmed heap
  {
    // A model a few times the tiny one, trained on batches of changing lengths: gigabytes come and go.
    const config = { ...tinyConfig(), dim: 256, hidden_dim: 1024, max_position_embeddings: 128 };
    using model = await DistilBertClassifier.create(config, { device: "cpu", seed: 1 });
    for (const seqLen of [96, 17, 128, 33, 64]) {
      const batch = makeBatch(config, 32, seqLen, seqLen);
      model.trainStep(batch, { lr: 1e-3, maxGradNorm: 1 });
    }
  }
  const before = rss();
  assert.equal(await trimHostMemory(), true, "freed tensors left something to return");
  const after = rss();
  assert.ok(
    after < before - 4 * 2 ** 20,
    `resident set ${before} -> ${after} bytes: expected a drop of > 4 MiB`,
  );
  assert.equal(typeof (await trimHostMemory()), "boolean");
});
