// `train.ts --trace` as users run it: real processes through the launcher (2 CPU ranks over Gloo) and alone,
// real data files (committed fixtures), the merged Chrome trace checked against what DDP must do, and
// `deno task trace:svg` drawing it.
import assert from "node:assert/strict";
import { join } from "node:path";
import { exists } from "../../util/fs.ts";
import type { ChromeTrace, TraceEvent } from "../../training/trace.ts";
import { fixtureDataDir, pythonJson, ROOT, tempDir } from "../helpers.ts";

function run(args: string[], env: Record<string, string> = {}) {
  return new Deno.Command(Deno.execPath(), { args, cwd: ROOT, stdout: "piped", stderr: "piped", env });
}

const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/**
 * A small DistilBERT whose gradients need two buckets once the Reducer has rebuilt them: 4 layers of width
 * 128 (about 200,000 parameters each) and the real vocabulary (3.9M embedding parameters). The first
 * bucket (1 MiB) fills with the classifier, the last layer and part of the one before, so its all-reduce
 * starts with two and a half layers and the embeddings still to go in backward: overlap is certain, not a
 * matter of timing. (The tiny test config's gradients, mostly embeddings, all land in one bucket, which can
 * only start when backward ends.)
 */
const OVERLAP_CONFIG = {
  model_type: "distilbert",
  vocab_size: 30522,
  max_position_embeddings: 64,
  dim: 128,
  n_layers: 4,
  n_heads: 4,
  hidden_dim: 512,
  dropout: 0.1,
  attention_dropout: 0.1,
  seq_classif_dropout: 0.2,
  initializer_range: 0.02,
  pad_token_id: 0,
  id2label: { "0": "World", "1": "Sports", "2": "Business", "3": "Sci/Tech" },
};

/** DistilBertForSequenceClassification's parameter count, from its shapes (what the Reducer reduces). */
function parameterCount(c: typeof OVERLAP_CONFIG): number {
  const { vocab_size: v, max_position_embeddings: p, dim: d, n_layers: n, hidden_dim: h } = c;
  const labels = Object.keys(c.id2label).length;
  const layer = 4 * (d * d + d) + 2 * d + (d * h + h) + (h * d + d) + 2 * d;
  return v * d + p * d + 2 * d + n * layer + (d * d + d) + (d * labels + labels);
}

const spans = (t: ChromeTrace) => t.traceEvents.filter((e) => e.ph === "X");
const end = (e: TraceEvent) => e.ts! + e.dur!;

/** Parses an SVG as XML (Python's parser: Deno has none) and counts the rank lanes. */
async function svgLanes(path: string): Promise<number[]> {
  return await pythonJson(
    `
import json, sys
import xml.etree.ElementTree as ET
root = ET.parse(json.load(sys.stdin)).getroot()
ns = "{http://www.w3.org/2000/svg}"
assert root.tag == ns + "svg", root.tag
print(json.dumps([int(g.get("data-rank")) for g in root.iter(ns + "g") if g.get("class") == "rank"]))
`,
    path,
  ) as number[];
}

Deno.test("train --trace under DDP: buckets cover the gradients, overlap backward, skip no_sync micro-steps", async () => {
  await using tmp = await tempDir();
  const data = await fixtureDataDir(tmp.path);
  const model = join(tmp.path, "config.json");
  await Deno.writeTextFile(model, JSON.stringify(OVERLAP_CONFIG));
  const trace = join(tmp.path, "traces", "run.json");
  const flags = [
    "--data",
    data,
    "--model",
    model,
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--grad-accum",
    "2",
    "--output",
    join(tmp.path, "ckpt"),
    "--trace",
    trace,
  ];
  const out = await run(["run", "-A", "launch.ts", "--gpus", "2", "--cpu", "--", ...flags], {
    DISTRINEWS_CACHE: join(tmp.path, "cache"),
  }).output();
  const stdout = decode(out.stdout);
  assert.equal(out.code, 0, decode(out.stderr));
  // The epoch line says where the time went; rank 0 says where the trace is.
  assert.match(stdout, /\[rank 0\] epoch 1: .*\| compute [\d.]+ s, comm wait [\d.]+ s, data [\d.]+ s, other/);
  assert.match(stdout, /\[rank 0\] trace: .*run\.json \(\d+ spans, 2 rank\(s\)\); clocks aligned by barrier/);
  assert.ok(!await exists(join(tmp.path, "traces", "run.rank0.json")), "the per-rank files are merged away");

  const t = JSON.parse(await Deno.readTextFile(trace)) as ChromeTrace;
  const gradientBytes = 4 * parameterCount(OVERLAP_CONFIG);
  assert.equal(t.otherData.gradientBytes, gradientBytes);
  assert.deepEqual(
    t.traceEvents.filter((e) => e.ph === "M" && e.name === "process_name").map((e) => e.args?.name),
    ["rank 0", "rank 1"],
  );
  // Alignment: on one machine every rank reads the same clock, so the barrier estimate is its own error.
  const a = t.otherData.alignment!;
  assert.equal(a.sharedClock, true);
  assert.ok(a.measuredErrorUs! < 20_000, `alignment error ${a.measuredErrorUs} µs`);

  // 120 rows, 60 per rank, batches of 8: 8 micro-steps per rank, 4 optimizer steps of 2 micro-steps.
  const expected = [1, 2, 3, 4].flatMap((s) => [`${s}.0`, `${s}.1`]);
  for (const rank of [0, 1]) {
    const mine = spans(t).filter((e) => e.pid === rank);
    const steps = mine.filter((e) => e.cat === "step");
    assert.deepEqual(steps.map((e) => `${e.args!.step}.${e.args!.micro}`), expected, `rank ${rank}'s steps`);
    let overlapped = 0;
    for (const s of steps) {
      const inside = (e: TraceEvent) => e.tid === 1 && e.ts! >= s.ts! && end(e) <= end(s) + 1e-3;
      const phases = mine.filter((e) => e !== s && inside(e)).map((e) => e.name);
      const buckets = mine.filter((e) =>
        e.cat === "comm" && e.args!.step === s.args!.step && e.args!.micro === s.args!.micro
      );
      if (!s.args!.sync) {
        // no_sync: gradients accumulate locally; there is nothing to all-reduce and nothing to wait for.
        assert.deepEqual(phases, ["data", "stage batch", "forward", "backward"], `step ${s.name}`);
        assert.equal(buckets.length, 0, `${s.name} all-reduced something`);
        continue;
      }
      assert.deepEqual(phases, [
        "data",
        "stage batch",
        "forward",
        "backward",
        "wait for all-reduce",
        "optimizer",
      ]);
      assert.equal(buckets.reduce((sum, b) => sum + Number(b.args!.bytes), 0), gradientBytes, s.name);
      assert.equal(buckets.length, s.args!.step === 1 ? 1 : 2, `${s.name}: buckets`);
      const backward = mine.find((e) => e.name === "backward" && inside(e))!;
      if (buckets.some((b) => b.ts! < end(backward))) overlapped++;
    }
    // Every step after the first (when the Reducer has its ready-order buckets) overlaps backward.
    assert.ok(overlapped >= 3, `rank ${rank}: ${overlapped} steps overlapped communication with backward`);
    for (const name of ["evaluate", "save training state", "barrier", "shuffle shard"]) {
      assert.ok(mine.some((e) => e.name === name), `rank ${rank} has no ${name} span`);
    }
  }

  // deno task trace:svg draws it: well-formed XML, one lane per rank.
  const svg = join(tmp.path, "run.svg");
  const drawn = await run(["task", "trace:svg", trace, "--steps", "2", "--out", svg]).output();
  assert.equal(drawn.code, 0, decode(drawn.stderr));
  assert.deepEqual(await svgLanes(svg), [0, 1]);
  assert.match(await Deno.readTextFile(svg), /b0 · 1\.0 MiB|all-reduce bucket 0/);
});

Deno.test("train --trace in one process: steps without buckets; the breakdown reaches TensorBoard", async () => {
  await using tmp = await tempDir();
  const data = await fixtureDataDir(tmp.path);
  const output = join(tmp.path, "ckpt");
  const trace = join(tmp.path, "one.json");
  const flags = ["--data", data, "--model", join(ROOT, "tests", "fixtures", "tiny_config.json")];
  const out = await run(
    [
      "run",
      "-A",
      "train.ts",
      ...flags,
      "--epochs",
      "1",
      "--batch-size",
      "8",
      "--output",
      output,
      "--trace",
      trace,
    ],
    { DISTRINEWS_CACHE: join(tmp.path, "cache") },
  ).output();
  const stdout = decode(out.stdout);
  assert.equal(out.code, 0, decode(out.stderr));
  assert.match(
    stdout,
    /epoch 1: .*\| compute [\d.]+ s, comm wait 0\.00 s, data [\d.]+ s, other [\d.]+ s \| eval/,
  );
  assert.match(stdout, /trace: .*one\.json \(\d+ spans, 1 rank\(s\)\)/);
  const t = JSON.parse(await Deno.readTextFile(trace)) as ChromeTrace;
  const steps = spans(t).filter((e) => e.cat === "step");
  assert.deepEqual(steps.map((e) => e.args!.step), Array.from({ length: 15 }, (_, i) => i + 1));
  assert.equal(spans(t).filter((e) => e.cat === "comm" || e.cat === "wait").length, 0);
  assert.ok(spans(t).some((e) => e.name === "save checkpoint"));
  const svg = join(tmp.path, "one.svg");
  const drawn = await run(["run", "-A", "training/trace_svg.ts", trace, "--out", svg]).output();
  assert.equal(drawn.code, 0, decode(drawn.stderr));
  assert.deepEqual(await svgLanes(svg), [0]);

  const board = await pythonJson(
    `
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(json.load(sys.stdin), size_guidance={"scalars": 0})
acc.Reload()
print(json.dumps({t: [e.value for e in acc.Scalars(t)] for t in acc.Tags()["scalars"] if t.startswith("train/time_")}))
`,
    `${output}-logs`,
  ) as Record<string, number[]>;
  assert.deepEqual(Object.keys(board).sort(), [
    "train/time_comm_wait_s",
    "train/time_compute_s",
    "train/time_data_s",
  ]);
  assert.ok(board["train/time_compute_s"][0] > 0);
  assert.equal(board["train/time_comm_wait_s"][0], 0);
});
