// The training entry point as users run it: real processes, real data files (committed fixtures), a tiny
// model; single-process and DDP over Gloo through the launcher.
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadModel } from "../../weights/checkpoint.ts";
import { readMetrics } from "../../training/metrics.ts";
import { exists } from "../../util/fs.ts";
import { loadSafetensors } from "../../weights/safetensors.ts";
import { collate } from "../../data/collate.ts";
import { BertTokenizer } from "../../data/tokenizer.ts";
import {
  assertClose,
  fixtureDataDir,
  pythonJson,
  referenceLogits,
  ROOT,
  tempDir,
  writeBatchJson,
} from "../helpers.ts";

const TINY = join(ROOT, "tests", "fixtures", "tiny_config.json");

function run(args: string[], env: Record<string, string> = {}) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env,
  });
}

const decode = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("train: one process writes a Hugging Face checkpoint, metrics per epoch and a chart", async () => {
  await using tmp = await tempDir();
  const data = await fixtureDataDir(tmp.path);
  const output = join(tmp.path, "ckpt");
  const args = [
    "train.ts",
    "--data",
    data,
    "--model",
    TINY,
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--lr",
    "1e-3",
  ];
  const out = await run([...args, "--output", output], { DISTRINEWS_CACHE: join(tmp.path, "cache") })
    .output();
  assert.equal(out.code, 0, decode(out.stderr));
  const stdout = decode(out.stdout);
  assert.match(stdout, /training from scratch/);
  assert.match(stdout, /epoch 1: train loss [\d.]+ acc [\d.]+%.*eval loss [\d.]+ acc [\d.]+% macro-F1/);
  const records = await readMetrics(join(`${output}-logs`, "metrics.jsonl"));
  assert.deepEqual(records.map((r) => `${r.event}${r.epoch}`), ["epoch1", "eval1", "epoch2", "eval2"]);
  const evalRecord = records[1] as { samples: number; eval_f1_per_class: Record<string, number> };
  assert.equal(evalRecord.samples, 120, "every test row evaluated once");
  assert.deepEqual(Object.keys(evalRecord.eval_f1_per_class), ["World", "Sports", "Business", "Sci/Tech"]);
  assert.match(
    await Deno.readTextFile(join(`${output}-logs`, "training_curves.svg")),
    /^<svg[\s\S]*<\/svg>\s*$/,
  );
  // TensorBoard's event file beside metrics.jsonl, read back by TensorBoard's own reader.
  const board = await pythonJson(
    `
import glob, json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
logdir = json.load(sys.stdin)
files = glob.glob(logdir + "/events.out.tfevents.*")
acc = EventAccumulator(logdir, size_guidance={"scalars": 0, "tensors": 0})
acc.Reload()
tags = acc.Tags()
out = {"files": len(files), "scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]},
       "text": [t for t in tags["tensors"]]}
print(json.dumps(out))
`,
    `${output}-logs`,
  ) as { files: number; scalars: Record<string, [number, number][]>; text: string[] };
  assert.equal(board.files, 1);
  const evals = records.filter((r) => r.event === "eval") as { step: number; eval_accuracy: number }[];
  const lastStep = evals[1].step;
  assert.deepEqual(
    board.scalars["train/loss"].map(([step]) => step),
    Array.from({ length: lastStep }, (_, i) => i + 1),
  );
  for (const tag of ["train/accuracy", "train/lr", "train/samples_per_s", "train/grad_norm"]) {
    assert.equal(board.scalars[tag].length, lastStep, tag);
  }
  assert.deepEqual(board.scalars["eval/accuracy"].map(([step]) => step), evals.map((r) => r.step));
  board.scalars["eval/accuracy"].forEach(([, v], i) =>
    assertClose([v], [evals[i].eval_accuracy], 1e-6, "eval/accuracy")
  );
  for (const label of ["World", "Sports", "Business", "Sci/Tech"]) {
    assert.ok(board.scalars[`eval/f1_${label}`]);
  }
  assert.ok(board.scalars["eval/macro_f1"] && board.scalars["eval/loss"]);
  assert.deepEqual(board.text, ["run/flags"]);
  // The checkpoint loads strictly in transformers and gives our logits.
  const tokenizer = await BertTokenizer.bundled();
  const batch = {
    ...collate(["Oil prices climb", "Late goal wins the derby"].map((t) => tokenizer.encode(t).ids)),
    labels: new Int32Array([2, 1]),
  };
  await writeBatchJson(join(tmp.path, "batch.json"), batch);
  const loaded = await loadModel(output, { device: "cpu" });
  using model = loaded.model;
  assertClose(
    model.predict(batch).logits,
    await referenceLogits(output, join(tmp.path, "batch.json")),
    1e-5,
    "logits",
  );
});

Deno.test("train under DDP: 2 CPU ranks through the launcher; only rank 0 prints and writes", async () => {
  await using tmp = await tempDir();
  const data = await fixtureDataDir(tmp.path);
  const output = join(tmp.path, "ddp");
  const flags = ["--data", data, "--model", TINY, "--epochs", "1", "--batch-size", "8", "--output", output];
  const out = await run(["launch.ts", "--gpus", "2", "--", ...flags], {
    DISTRINEWS_CACHE: join(tmp.path, "cache"),
  })
    .output();
  const stdout = decode(out.stdout), stderr = decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  assert.match(stdout, /\[rank 0\] model: [\d,]+ parameters on cpu, 2 process\(es\)/);
  assert.match(stdout, /\[rank 0\] epoch 1: .* eval loss/);
  assert.doesNotMatch(stdout, /\[rank 1\]/, "rank 1 prints nothing");
  const records = await readMetrics(join(`${output}-logs`, "metrics.jsonl"));
  assert.equal((records[0] as { samples: number }).samples, 120, "train metrics are global: both shards");
  assert.equal(
    (records[1] as { samples: number }).samples,
    120,
    "eval covers the test set once across ranks",
  );
  // One TensorBoard event file, rank 0's (the rank-0 guard: two writers would interleave two runs).
  const events = [...Deno.readDirSync(`${output}-logs`)].filter((e) =>
    e.name.startsWith("events.out.tfevents.")
  );
  assert.equal(events.length, 1);
  const loaded = await loadModel(output, { device: "cpu" });
  loaded.model.dispose();
});

Deno.test("train under DDP: a rank that dies mid-epoch stops the job within 10 s, nothing left behind", async () => {
  await using tmp = await tempDir();
  const data = await fixtureDataDir(tmp.path);
  const output = join(tmp.path, "crash");
  // Many tiny epochs keep the ranks busy long enough to kill one of them in the middle.
  const flags = ["--data", data, "--model", TINY, "--epochs", "200", "--batch-size", "4", "--output", output];
  const launcher = run(["launch.ts", "--gpus", "2", "--", ...flags], {
    DISTRINEWS_CACHE: join(tmp.path, "cache"),
  })
    .spawn();
  const pattern = `train.ts.*--output ${output}`;
  let victim: number | undefined;
  for (let i = 0; i < 300 && victim === undefined; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const ps = await new Deno.Command("pgrep", { args: ["-f", pattern], stdout: "piped" }).output();
    const pids = decode(ps.stdout).trim().split("\n").filter(Boolean).map(Number);
    if (pids.length === 2 && await exists(`${output}-logs/metrics.jsonl`)) victim = Math.max(...pids);
  }
  assert.ok(victim, "both ranks started training");
  const killedAt = performance.now();
  Deno.kill(victim, "SIGKILL");
  const status = await launcher.output();
  const seconds = (performance.now() - killedAt) / 1000;
  assert.notEqual(status.code, 0);
  assert.ok(seconds < 10, `the launcher took ${seconds.toFixed(1)} s to stop`);
  assert.match(decode(status.stderr), /FAILED: rank \d failed first/);
  const left = await new Deno.Command("pgrep", { args: ["-f", pattern], stdout: "piped" }).output();
  assert.equal(decode(left.stdout).trim(), "", "no rank process left");
});

Deno.test("train: bad flags exit 2 with the usage; a missing data source exits 1 with a message", async () => {
  const flag = await run(["train.ts", "--epochs", "zero"]).output();
  assert.equal(flag.code, 2);
  assert.match(decode(flag.stderr), /--epochs must be a positive integer[\s\S]*Usage: deno task train/);
  const model = await run(["train.ts", "--model", "gpt-5"]).output();
  assert.equal(model.code, 2);
  assert.match(decode(model.stderr), /--model must be one of/);
  const data = await run(["train.ts", "--data", "/nonexistent/agnews", "--model", TINY]).output();
  assert.equal(data.code, 1);
  assert.doesNotMatch(decode(data.stderr), / {4}at /, "no stack trace");
});

Deno.test("train --resume after a kill mid-run ends with the same parameters as an uninterrupted run", async () => {
  await using tmp = await tempDir();
  const data = await fixtureDataDir(tmp.path);
  const env = { DISTRINEWS_CACHE: join(tmp.path, "cache") };
  // Dropout stays on: the resumed run must also continue the same random stream.
  const flags = (output: string) => [
    "train.ts",
    "--data",
    data,
    "--model",
    TINY,
    "--epochs",
    "5",
    "--batch-size",
    "4",
    "--lr",
    "1e-3",
    "--output",
    output,
  ];
  const straight = await run(flags(join(tmp.path, "straight")), env).output();
  assert.equal(straight.code, 0, decode(straight.stderr));

  const output = join(tmp.path, "resumed");
  const first = run(flags(output), env).spawn();
  // Kill it as soon as the first epoch's training state exists (it is then somewhere in epoch 2..5).
  const statePath = join(`${output}-logs`, "train_state", "rank0.safetensors");
  while (!await exists(statePath)) await new Promise((r) => setTimeout(r, 20));
  first.kill("SIGKILL");
  await first.output();
  const resumed = await run([...flags(output), "--resume"], env).output();
  assert.equal(resumed.code, 0, decode(resumed.stderr));
  // Resumed from a middle epoch, so the test really exercises restoring the state.
  assert.match(decode(resumed.stdout), /resuming after epoch [1-4] /);

  const load = async (
    dir: string,
  ) => (await loadSafetensors(join(`${dir}-logs`, "train_state", "rank0.safetensors")));
  const a = await load(join(tmp.path, "straight")), b = await load(output);
  for (const [name, t] of a) {
    if (!name.startsWith("model.")) continue;
    assert.deepEqual(b.get(name)!.data, t.data, `${name} differs after resuming`);
  }
  const records = await readMetrics(join(`${output}-logs`, "metrics.jsonl"));
  assert.deepEqual(records.filter((r) => r.event === "eval").map((r) => r.epoch), [1, 2, 3, 4, 5]);
});

/** A random tiny transformers BertModel saved with save_pretrained into `dir` (our vocabulary's size). */
async function tinyBert(dir: string, overrides: Record<string, unknown> = {}): Promise<void> {
  await pythonJson(
    `
import json, sys, torch
from transformers import BertConfig, BertModel
a = json.load(sys.stdin)
torch.manual_seed(0)
cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=64, **a["overrides"])
BertModel(cfg).save_pretrained(a["out"])
print("{}")
`,
    { out: dir, overrides },
  );
}

Deno.test("train --pretrained: a BERT encoder gives the architecture, its weights and a DistilBERT checkpoint", async () => {
  await using tmp = await tempDir();
  const data = await fixtureDataDir(tmp.path);
  const bert = join(tmp.path, "bert");
  await tinyBert(bert);
  const output = join(tmp.path, "ckpt");
  const flags = [
    "--data",
    data,
    "--pretrained",
    bert,
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--output",
    output,
    "--no-tensorboard",
  ];
  const out = await run(["train.ts", ...flags], { DISTRINEWS_CACHE: join(tmp.path, "cache") }).output();
  const stdout = decode(out.stdout);
  assert.equal(out.code, 0, decode(out.stderr));
  assert.ok(
    ![...Deno.readDirSync(`${output}-logs`)].some((e) => e.name.startsWith("events.out.tfevents.")),
    "--no-tensorboard writes no event file",
  );
  assert.match(stdout, /BERT weights mapped onto DistilBERT/);
  assert.match(stdout, /newly initialised: pre_classifier.weight, pre_classifier.bias, classifier.weight/);
  assert.match(stdout, /pooler\.dense\.weight/, "the dropped pooler is reported");
  // No --model: the network is the BERT's shape (width 32, 2 layers, FFN 64), saved as DistilBERT.
  const config = JSON.parse(await Deno.readTextFile(join(output, "config.json")));
  assert.deepEqual(
    [
      config.model_type,
      config.dim,
      config.n_layers,
      config.n_heads,
      config.hidden_dim,
      config.max_position_embeddings,
    ],
    ["distilbert", 32, 2, 4, 64, 64],
  );
  assert.deepEqual(Object.values(config.id2label), ["World", "Sports", "Business", "Sci/Tech"]);
  // The encoder started from the BERT's weights: the mapped word embeddings moved only by training.
  const before = await loadSafetensors(join(bert, "model.safetensors"));
  const after = await loadSafetensors(join(output, "model.safetensors"));
  const a = new Float32Array(before.get("embeddings.word_embeddings.weight")!.data.slice().buffer);
  const b = new Float32Array(after.get("distilbert.embeddings.word_embeddings.weight")!.data.slice().buffer);
  assertClose(
    a.subarray(0, 32 * 50),
    b.subarray(0, 32 * 50),
    1e-3,
    "unused tokens' embeddings after one epoch",
  );
});

Deno.test("deno task ddp --pretrained: the launcher fetches the weights once, both ranks start from them", async () => {
  await using tmp = await tempDir();
  const data = await fixtureDataDir(tmp.path);
  const bert = join(tmp.path, "bert");
  await tinyBert(bert);
  const output = join(tmp.path, "ddp");
  const flags = [
    "--data",
    data,
    "--pretrained",
    bert,
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--output",
    output,
  ];
  const out = await run(["launch.ts", "--gpus", "2", "--cpu", "--", ...flags], {
    DISTRINEWS_CACHE: join(tmp.path, "cache"),
  }).output();
  const stdout = decode(out.stdout), stderr = decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  assert.match(stderr, /\[launcher\] pretrained weights ready for every rank: local .*bert/);
  assert.match(stdout, /\[rank 0\] weights: local .*BERT weights mapped onto DistilBERT/);
  const config = JSON.parse(await Deno.readTextFile(join(output, "config.json")));
  assert.equal(config.dim, 32);
});

Deno.test("train --pretrained refuses what it cannot use: another shape, another activation, no weights", async () => {
  await using tmp = await tempDir();
  const data = await fixtureDataDir(tmp.path);
  const bert = join(tmp.path, "bert");
  await tinyBert(bert);
  const common = ["--data", data, "--epochs", "1", "--output", join(tmp.path, "out")];
  const shape = await run(["train.ts", ...common, "--pretrained", bert, "--model", "distilbert-small"])
    .output();
  assert.equal(shape.code, 1);
  assert.match(decode(shape.stderr), /do not fit --model:\n\s+--model: .*dim \d+[\s\S]*pretrained: .*dim 32/);
  const relu = join(tmp.path, "relu");
  await tinyBert(relu, { hidden_act: "relu" });
  const act = await run(["train.ts", ...common, "--pretrained", relu]).output();
  assert.equal(act.code, 1);
  assert.match(decode(act.stderr), /hidden_act="relu" is not supported/);
  const empty = join(tmp.path, "empty");
  await Deno.mkdir(empty);
  await Deno.copyFile(join(bert, "config.json"), join(empty, "config.json"));
  const none = await run(["train.ts", ...common, "--pretrained", empty]).output();
  assert.equal(none.code, 1);
  assert.match(decode(none.stderr), /has no weights/);
  for (const r of [shape, act, none]) assert.doesNotMatch(decode(r.stderr), / {4}at /, "no stack trace");
});

Deno.test("train --bf16 on a CPU runs where it multiplies bf16 natively; elsewhere it says why and exits 2", async () => {
  await using tmp = await tempDir();
  const data = await fixtureDataDir(tmp.path);
  const flags = ["--data", data, "--model", TINY, "--epochs", "1", "--device", "cpu", "--bf16"];
  const train = (extra: string[], cpuFlags: string) =>
    run(["train.ts", ...flags, ...extra, "--output", join(tmp.path, crypto.randomUUID())], {
      DISTRINEWS_CACHE: join(tmp.path, "cache"),
      DISTRINEWS_CPU_FLAGS: cpuFlags,
    }).output();
  // A CPU without bf16 instructions (AVX-512 alone): refused before anything is loaded.
  const plain = await train([], "sse4_2 avx2 avx512f");
  assert.equal(plain.code, 2);
  assert.match(
    decode(plain.stderr),
    /--bf16 would make training slower on this CPU.*no native bf16 instructions/,
  );
  // Forced there, or on a CPU with AVX-512-BF16 or AMX, it trains (in bf16 autocast, fp32 weights). The
  // kernels are this machine's either way: the flags only decide whether the run is allowed.
  for (
    const [extra, cpu] of [[["--force-bf16"], "avx512f"], [[], "avx512f avx512_bf16"], [
      [],
      "amx_tile amx_bf16",
    ]]
  ) {
    const out = await train(extra as string[], cpu as string);
    assert.equal(out.code, 0, `${cpu}: ${decode(out.stderr)}`);
  }
});

Deno.test("train --resume refuses a training state saved for another network, naming both", async () => {
  await using tmp = await tempDir();
  const data = await fixtureDataDir(tmp.path);
  const output = join(tmp.path, "ckpt");
  const common = ["--data", data, "--epochs", "1", "--batch-size", "32", "--output", output];
  const env = { DISTRINEWS_CACHE: join(tmp.path, "cache") };
  const first = await run(["train.ts", ...common, "--model", TINY], env).output();
  assert.equal(first.code, 0, decode(first.stderr));
  const resumed = await run(["train.ts", ...common, "--model", "distilbert-small", "--resume"], env).output();
  assert.equal(resumed.code, 1);
  assert.match(
    decode(resumed.stderr),
    /was saved for another network \(.*dim 32.*\); this run builds .*dim 256/,
  );
});
