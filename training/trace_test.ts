// The trace's arithmetic and files without processes: the --trace flag and per-rank files, clock calibration, barrier offsets
// with drift, spans of a step (nesting, overlapping buckets), merging ranks onto one clock, the SVG, and the
// per-epoch time breakdown.
import assert from "node:assert/strict";
import { UsageError } from "../cli/args.ts";
import { parseTrainOptions, TRAIN_USAGE } from "./options.ts";
import {
  barrierOffsets,
  calibrateClock,
  type ChromeTrace,
  clockOffset,
  COMM_TID,
  LOOP_TID,
  mergeTraces,
  rankTracePath,
  type StepInfo,
  syncClocks,
  TraceRecorder,
} from "./trace.ts";
import { renderTraceSvg, traceSteps } from "./trace_svg.ts";
import { TimeBreakdown } from "./trace_breakdown.ts";
import type { StepTiming } from "../ffi/model.ts";

Deno.test("--trace FILE is one of train's flags; each rank writes its own part beside FILE", () => {
  assert.equal(parseTrainOptions(["--epochs", "1", "--trace", "t.json"])?.trace, "t.json");
  assert.equal(parseTrainOptions(["--trace=a/b.json"])?.trace, "a/b.json");
  assert.equal(parseTrainOptions(["--epochs", "2"])?.trace, undefined);
  assert.throws(() => parseTrainOptions(["--trace"]), UsageError);
  assert.match(TRAIN_USAGE, /--trace FILE +record the run as a timeline/);
  assert.equal(rankTracePath("runs/t.json", 1), "runs/t.rank1.json");
});

Deno.test("calibration maps performance.now() onto the native clock, keeping the tightest bracket", () => {
  // performance.now() runs 5 ms behind the native clock; reading the native clock takes 40 µs, once 2 µs.
  let perfMs = 100;
  const gaps = [0.04, 0.04, 0.002, 0.04];
  let call = 0;
  const now = () => perfMs;
  const native = () => {
    const gap = gaps[call++ % gaps.length];
    perfMs += gap / 2;
    const ns = (perfMs + 5) * 1e6;
    perfMs += gap / 2;
    return ns;
  };
  const c = calibrateClock(native, now, 4);
  assert.ok(Math.abs(c.offsetUs - 5000) < 1e-6, `offset ${c.offsetUs}`);
  assert.ok(Math.abs(c.uncertaintyUs - 1) < 1e-6, `uncertainty ${c.uncertaintyUs}`);
});

Deno.test("barrier offsets: a median over rounds, interpolated from the start's to the end's", () => {
  // Rank 1's clock is 100 µs ahead at the start (one noisy round) and 160 µs at the end: drift.
  const start = [[0, 100], [1000, 1100], [2000, 2400], [3000, 3100], [4000, 4100]];
  const end = [[1_000_000, 1_000_160], [1_001_000, 1_001_160], [1_002_000, 1_002_160]];
  assert.deepEqual(barrierOffsets(start), { offsetUs: [0, 100], spreadUs: [0, 300] });
  const offset = clockOffset(start, end);
  assert.equal(offset(0, 12345), 0);
  // Interpolated along rank 1's own clock, between its median readings at the start and at the end.
  assert.equal(offset(1, 2400 - 5000), 100, "before the start: the start's offset");
  assert.equal(offset(1, 2400), 100);
  assert.equal(offset(1, 1_001_160), 160);
  assert.equal(offset(1, 5_000_000), 160, "after the end: the end's offset");
  const middle = (2400 + 1_001_160) / 2;
  assert.ok(Math.abs(offset(1, middle) - 130) < 1e-9);
  // Without end readings the start's offset holds throughout.
  assert.equal(clockOffset(start, [])(1, 1e9), 100);
});

/** Ranks in one process: collectives meet when every rank has called them. */
function fakeWorld(worldSize: number, clocksNs: number[][]) {
  let waiting: { values: Float64Array; resolve: (v: Float64Array) => void }[] = [];
  const rounds = Array(worldSize).fill(0);
  return Array.from({ length: worldSize }, (_, rank) => ({
    rank,
    worldSize,
    barrierClock: () => Promise.resolve(clocksNs[rank][rounds[rank]++]),
    allReduceSum: (values: Float64Array) =>
      new Promise<Float64Array>((resolve) => {
        waiting.push({ values, resolve });
        if (waiting.length < worldSize) return;
        const sum = new Float64Array(values.length);
        for (const w of waiting) w.values.forEach((v, i) => sum[i] += v);
        const all = waiting;
        waiting = [];
        for (const w of all) w.resolve(Float64Array.from(sum));
      }),
  }));
}

Deno.test("syncClocks gives every rank the whole table of barrier readings and boot ids", async () => {
  const world = fakeWorld(2, [[1e6, 2e6], [1.5e6, 2.5e6]]);
  const [a, b] = await Promise.all([syncClocks(world[0], 2, 7), syncClocks(world[1], 2, 7)]);
  assert.deepEqual(a, { readings: [[1000, 1500], [2000, 2500]], bootIds: [7, 7] });
  assert.deepEqual(b, a);
});

const timing = (at: number): StepTiming => ({
  startNs: at * 1e6,
  forwardNs: (at + 1) * 1e6,
  backwardNs: (at + 5) * 1e6,
  gradsReadyNs: (at + 12) * 1e6,
  backwardEndNs: (at + 14) * 1e6,
  endNs: (at + 16) * 1e6,
});

/**
 * A rank's trace of two micro-steps of one optimizer step (no_sync, then sync with two buckets), on a clock
 * `skews[rank]` µs ahead of rank 0's; `bootIds` are the ranks' machines.
 */
function rankTrace(rank: number, skews: number[], bootIds = [9, 9]): ChromeTrace {
  const skewUs = skews[rank];
  // Calibrated so that performance.now() ms * 1000 is the native clock in µs.
  const recorder = new TraceRecorder({
    rank,
    worldSize: 2,
    parameters: 250,
    calibration: { offsetUs: 0, uncertaintyUs: 1 },
  });
  const skewMs = skewUs / 1000;
  const info = (micro: number, sync: boolean): StepInfo => ({
    epoch: 1,
    step: 1,
    micro,
    sync,
    rows: 4,
    seqLen: 8,
  });
  const shifted = (t: StepTiming) =>
    Object.fromEntries(Object.entries(t).map(([k, v]) => [k, v + skewUs * 1000])) as unknown as StepTiming;
  recorder.step(info(0, false), 9.5 + skewMs, 10 + skewMs, shifted(timing(10)), []);
  const ns = (ms: number) => (ms + skewMs) * 1e6;
  recorder.step(info(1, true), 29 + skewMs, 30 + skewMs, shifted(timing(30)), [
    { bucket: 0, startNs: ns(38), endNs: ns(43), bytes: 400, params: 3 },
    { bucket: 1, startNs: ns(42), endNs: ns(44), bytes: 600, params: 2 },
  ]);
  recorder.span("evaluate", "eval", 50 + skewMs, 60 + skewMs);
  const trace = recorder.toTrace();
  // The ranks left each barrier together: each one's readings are its skew ahead of rank 0's.
  const readings = [0, 1, 2].map((i) => skews.map((skew) => i * 1000 + skew));
  trace.otherData.clockSync = { start: readings, end: readings, bootIds };
  return trace;
}

Deno.test("a step's spans nest in its step span; overlapping buckets take another lane", () => {
  const t = rankTrace(0, [0, 0]);
  const x = t.traceEvents.filter((e) => e.ph === "X");
  const names = x.filter((e) => e.tid === LOOP_TID).map((e) => e.name);
  assert.deepEqual(names, [
    "step 1 micro 1 (no_sync)",
    "data",
    "stage batch",
    "forward",
    "backward",
    "step 1",
    "data",
    "stage batch",
    "forward",
    "backward",
    "wait for all-reduce",
    "optimizer",
    "evaluate",
  ]);
  const step = x.find((e) => e.name === "step 1")!;
  assert.deepEqual([step.ts, step.dur], [29_000, 17_000], "from the batch's construction to the call's end");
  const wait = x.find((e) => e.name === "wait for all-reduce")!;
  assert.deepEqual([wait.ts, wait.dur], [42_000, 2_000]);
  const buckets = x.filter((e) => e.cat === "comm");
  assert.deepEqual(
    buckets.map((e) => e.tid),
    [COMM_TID, COMM_TID + 1],
    "bucket 1 starts before bucket 0 ends",
  );
  assert.deepEqual(buckets[0].args, { bucket: 0, bytes: 400, params: 3, step: 1, micro: 1 });
  const meta = t.traceEvents.filter((e) => e.ph === "M" && e.name === "thread_name").map((e) => e.tid);
  assert.deepEqual(meta, [LOOP_TID, COMM_TID, COMM_TID + 1]);
});

Deno.test("merging puts every rank on rank 0's clock and reports the alignment", () => {
  // Rank 1's clock reads 700 µs more than rank 0's; the events happened at the same instants.
  const merged = mergeTraces([rankTrace(1, [0, 700]), rankTrace(0, [0, 700])]);
  const x = merged.traceEvents.filter((e) => e.ph === "X");
  for (const name of ["step 1", "backward", "all-reduce bucket 1", "evaluate"]) {
    const [r0, r1] = [0, 1].map((pid) => x.find((e) => e.pid === pid && e.name === name)!);
    assert.equal(r1.ts, r0.ts, name);
    assert.equal(r1.dur, r0.dur, name);
  }
  assert.equal(Math.min(...x.map((e) => e.ts!)), 0, "times from the trace's origin");
  assert.equal(merged.otherData.originUs, 9_500);
  assert.deepEqual(merged.otherData.alignment?.startOffsetUs, [0, 700]);
  assert.equal(merged.otherData.alignment?.sharedClock, true);
  assert.equal(merged.otherData.alignment?.measuredErrorUs, 700);
  assert.deepEqual(
    merged.traceEvents.filter((e) => e.ph === "M" && e.name === "process_name").map((e) => e.args?.name),
    ["rank 0", "rank 1"],
  );
  // Different machines: no claim about the error.
  const apart = mergeTraces([rankTrace(0, [0, 700], [3, 9]), rankTrace(1, [0, 700], [3, 9])]);
  assert.equal(apart.otherData.alignment?.sharedClock, false);
  assert.equal(apart.otherData.alignment?.measuredErrorUs, undefined);
});

Deno.test("the SVG draws one lane per rank with labelled buckets, escaped text", () => {
  const merged = mergeTraces([rankTrace(0, [0, 250]), rankTrace(1, [0, 250])]);
  assert.deepEqual(traceSteps(merged), [1]);
  merged.traceEvents.push({
    name: "a <b> & 'c'",
    cat: "io",
    ph: "X",
    pid: 0,
    tid: LOOP_TID,
    ts: 21_000,
    dur: 1000,
  });
  const svg = renderTraceSvg(merged, { source: "run & co.json" });
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[^]*<\/svg>\n$/);
  assert.equal(svg.match(/<g class="rank"/g)?.length, 2);
  assert.match(svg, /b0 · 0 KiB|all-reduce bucket 0: 0 KiB/);
  assert.match(svg, /a &lt;b&gt; &amp; &apos;c&apos;/);
  assert.match(svg, /run &amp; co\.json/);
  assert.doesNotMatch(svg.replace(/&(lt|gt|amp|quot|apos);/g, ""), /&/);
  assert.throws(() => renderTraceSvg(merged, { firstStep: 5 }), /no step 5/);
});

Deno.test("the time breakdown: compute, communication wait and data from a step's clock readings", () => {
  const b = new TimeBreakdown();
  b.addStep(timing(0)).addStep(timing(100)).addDataMs(3);
  // compute = (gradsReady - start) + (end - backwardEnd) = 12 + 2 ms; wait = 2 ms; per step.
  assert.ok(Math.abs(b.computeS - 0.028) < 1e-12);
  assert.ok(Math.abs(b.commWaitS - 0.004) < 1e-12);
  assert.equal(b.dataS, 0.003);
  const mean = TimeBreakdown.fromArray(Float64Array.of(2, 1, 0.5)).scaled(0.5);
  assert.deepEqual([...mean.toArray()], [1, 0.5, 0.25]);
  assert.equal(mean.format(2), "compute 1.00 s, comm wait 0.50 s, data 0.25 s, other 0.25 s");
  assert.throws(() => TimeBreakdown.fromArray([1, 2]), RangeError);
});
