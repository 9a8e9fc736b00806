// Tracing in the native core, with real processes over Gloo: the Reducer's recording hook leaves training
// bit-identical (2 ranks, and 3, where dividing by the world size and multiplying by its reciprocal round
// differently), bucket events cover every gradient once per synchronising step and none on no_sync
// micro-steps, and every step's clock readings are in order.
import assert from "node:assert/strict";
import { join } from "node:path";
import { DistilBertClassifier, monotonicNs } from "./model.ts";
import { makeBatch, runRankScripts, tempDir, tinyConfig } from "../tests/helpers.ts";
import type { BucketEvent, StepTiming } from "./model.ts";

interface RankReport {
  parameters: number;
  lateEnable: string;
  micro: { step: number; micro: number; sync: boolean; timing: StepTiming; buckets: BucketEvent[] }[];
}

async function trainBoth(tmp: string, worldSize: number, accumulate: number) {
  const spec = { steps: 3, perRank: 2, seqLen: 10, lr: 5e-3, accumulate };
  const runs: Record<string, { weights: Uint8Array[]; reports: RankReport[] }> = {};
  for (const trace of [false, true]) {
    const out = join(tmp, `${trace ? "on" : "off"}-${worldSize}`);
    await runRankScripts("trace_rank.ts", worldSize, { ...spec, trace, out }, { OMP_NUM_THREADS: "1" });
    const ranks = Array.from({ length: worldSize }, (_, r) => r);
    runs[trace ? "on" : "off"] = {
      weights: await Promise.all(ranks.map((r) => Deno.readFile(`${out}.rank${r}.safetensors`))),
      reports: await Promise.all(
        ranks.map(async (r) => JSON.parse(await Deno.readTextFile(`${out}.rank${r}.json`)) as RankReport),
      ),
    };
  }
  return runs;
}

/** The first byte where two files differ (-1: identical), so a failure does not print megabytes of diff. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  return a.findIndex((x, i) => x !== b[i]);
}

function checkTiming(t: StepTiming): void {
  const order = [t.startNs, t.forwardNs, t.backwardNs, t.gradsReadyNs, t.backwardEndNs, t.endNs];
  for (let i = 1; i < order.length; i++) assert.ok(order[i - 1] <= order[i], `timing out of order: ${order}`);
}

for (const worldSize of [2, 3]) {
  Deno.test(`tracing DDP over ${worldSize} ranks changes no bit of training; buckets cover the gradients`, async () => {
    await using tmp = await tempDir();
    const { off, on } = await trainBoth(tmp.path, worldSize, 2);
    for (let r = 0; r < worldSize; r++) {
      assert.equal(
        firstDifference(on.weights[r], off.weights[r]),
        -1,
        `rank ${r}: traced and untraced differ`,
      );
      assert.equal(firstDifference(on.weights[r], on.weights[0]), -1, `rank ${r} differs from rank 0`);
    }
    assert.equal(off.reports[0].micro.flatMap((m) => m.buckets).length, 0, "no events without tracing");
    assert.match(off.reports[0].lateEnable, /enable tracing before attaching DDP/);
    for (const report of on.reports) {
      const gradientBytes = 4 * report.parameters;
      for (const m of report.micro) {
        checkTiming(m.timing);
        if (!m.sync) {
          assert.equal(m.buckets.length, 0, "an accumulation micro-step (no_sync) all-reduces nothing");
          assert.equal(m.timing.gradsReadyNs, m.timing.backwardEndNs, "nothing to wait for without sync");
          continue;
        }
        assert.equal(m.buckets.reduce((s, b) => s + b.bytes, 0), gradientBytes, `step ${m.step}`);
        assert.deepEqual(m.buckets.map((b) => b.bucket), m.buckets.map((_, i) => i), "launched in order");
        for (const b of m.buckets) {
          assert.ok(b.params >= 1 && b.startNs <= b.endNs);
          // Launched during backward; completed before backward returned (the Reducer waited on it).
          assert.ok(b.startNs >= m.timing.backwardNs && b.startNs <= m.timing.backwardEndNs);
          assert.ok(b.endNs <= m.timing.backwardEndNs, "completion recorded before backward returned");
        }
      }
      // After the first step the Reducer has rebuilt its buckets to the 10 KiB / 40 KiB caps: several.
      assert.equal(report.micro.find((m) => m.sync)!.buckets.length, 1, "the first step: one bucket");
      assert.ok(report.micro.filter((m) => m.sync).at(-1)!.buckets.length > 2);
    }
  });
}

Deno.test("a single process: step timings are in order, tracing records nothing without DDP", async () => {
  const config = tinyConfig();
  using model = await DistilBertClassifier.create(config, { device: "cpu", seed: 1 });
  model.enableTracing();
  const before = monotonicNs();
  const result = await model.trainStepAsync(makeBatch(config, 4, 8), { lr: 1e-3 });
  const after = monotonicNs();
  checkTiming(result.timing);
  assert.ok(before <= result.timing.startNs && result.timing.endNs <= after, "one clock for both");
  assert.equal(result.timing.gradsReadyNs, result.timing.backwardEndNs);
  assert.deepEqual(model.drainTrace(), []);
  model.enableTracing(false);
});
