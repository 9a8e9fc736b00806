/**
 * `train.ts --trace FILE`: a timeline of a DDP run, one process per rank, as Chrome trace-event JSON (open
 * it in https://ui.perfetto.dev or chrome://tracing; `deno task trace:svg FILE` draws a few steps of it).
 *
 * What the picture shows, per rank, on its "training loop" track (one span per training micro-step, with
 * its phases nested inside):
 *
 * - data: TypeScript building the batch (shuffled shard, collation);
 * - stage batch, forward, backward: the native step's compute;
 * - wait for all-reduce: backward's end, when the last gradient is ready but the Reducer still waits for the
 *   buckets' all-reduces it could not hide behind backward's compute (it starts with copying the last
 *   gradients into their bucket, which is why the last bucket's all-reduce begins a little after it);
 * - optimizer: clipping and AdamW, on the micro-step that applies them;
 * - evaluate, save checkpoint, save training state, barrier: the epoch's end.
 *
 * and on its "all-reduce" track, one span per gradient bucket from launch to completion (args: bucket index,
 * bytes, parameter tensors). Things to look for:
 *
 * - Buckets go out in gradient-ready order: backward produces the last layers' gradients first, and from
 *   the second step on the Reducer has rebuilt its buckets in that order, so bucket 0 holds the classifier
 *   and the last layers, and the word embeddings (the largest tensor) come last. (The first step has a
 *   single bucket holding everything, launched only when backward ends: the Reducer had not yet seen the
 *   order.)
 * - Bucket 0 is small (1 MiB, the rest up to 25 MiB): it fills, and its all-reduce starts, early in backward.
 * - The all-reduce spans start while that rank's backward is still running: the overlap DDP exists for.
 * - The wait at the end of backward is the part of communication that compute did not hide: the last bucket
 *   can only start when the last gradient is ready.
 * - With --grad-accum N, the first N-1 micro-steps of each optimizer step have no all-reduce at all: like
 *   DDP's no_sync(), they only accumulate local gradients; the last one averages the sum once.
 *
 * Where the times come from. A training step is one native call, so forward, backward and the optimizer are
 * timed inside it (dn_step_result's clock readings, taken on every step), and each bucket's all-reduce is
 * timed by a communication hook on c10d's Reducer (ffi/shim/ddp.cpp), installed only on a tracing model;
 * those events are drained after each step. TypeScript times what it does itself with performance.now(),
 * mapped onto the native clock by {@link calibrateClock}. Everything in a rank's file is in microseconds of
 * the native monotonic clock (CLOCK_MONOTONIC).
 *
 * One clock for all ranks. Each rank writes its own file (`FILE` with `.rank<R>.json`); at the end rank 0
 * merges them into FILE on rank 0's clock. The offsets come from barriers (see {@link syncClocks}): every
 * rank reads its clock the moment a barrier releases it, and the readings are exchanged with one sum
 * all-reduce; rank r's offset is the median over rounds of (its reading - rank 0's). This is done at the
 * start and at the end of the run, and the offset is interpolated linearly in between, which also corrects
 * a steady drift between machines' clocks. The error left is how unevenly a barrier releases the ranks: one
 * message and one thread wake-up, tens of microseconds on one machine (there, all ranks share
 * CLOCK_MONOTONIC, so the true offset is exactly 0 and the estimate is its own error: the merged file's
 * `otherData.alignment` reports it). Spans of a few milliseconds and up compare reliably across ranks. Rank 0
 * reads the other ranks' files, so across machines FILE must be on a shared file system. The files are
 * written when the run ends cleanly (a run stopped by a signal or a failure leaves none).
 * @module
 */

import { basename, dirname, join } from "node:path";
import type { BucketEvent, StepTiming } from "../ffi/model.ts";
import { writeFileAtomic } from "../util/fs.ts";

/** One Chrome trace event: "X" (a complete span, `ts`/`dur` in microseconds) or "M" (metadata). */
export interface TraceEvent {
  name: string;
  ph: "X" | "M";
  pid: number;
  tid: number;
  ts?: number;
  dur?: number;
  cat?: string;
  args?: Record<string, unknown>;
}

/** The clock alignment of a merged trace, in its `otherData`. */
export interface AlignmentInfo {
  method: "barrier";
  /** Barrier rounds at the start and at the end of the run. */
  rounds: number;
  /** Per rank, what was subtracted from its clock at the start and at the end (µs; rank 0: 0). */
  startOffsetUs: number[];
  endOffsetUs: number[];
  /** Per rank, the spread (max - min) of the per-round offset estimates (µs): how noisy the barriers were. */
  spreadUs: number[];
  /** Whether every rank read the same clock (same machine: same Linux boot id), so the true offsets are 0. */
  sharedClock: boolean;
  /** With a shared clock: the largest |offset| applied, i.e. the measured error of the alignment (µs). */
  measuredErrorUs?: number;
  /** Per rank, the uncertainty of mapping performance.now() onto the native clock (µs). */
  calibrationUs: number[];
}

/** What a trace file says about itself (Chrome's `otherData`: shown by Perfetto as metadata). */
export interface TraceInfo {
  format: "distrinews-trace/1";
  /** The rank that wrote it (per-rank files only). */
  rank?: number;
  worldSize: number;
  /** Trainable parameters; what the Reducer all-reduces per synchronising step is 4 bytes x this. */
  parameters: number;
  gradientBytes: number;
  clock: string;
  /** Per-rank files: every rank's barrier readings (µs), rounds x ranks, at the start and the end. */
  clockSync?: { start: number[][]; end: number[][]; bootIds: number[] };
  /** Per-rank files: this rank's calibration uncertainty (µs). */
  calibrationUs?: number;
  /** Merged files: how the ranks' clocks were put on rank 0's; times are µs since the merged trace's origin. */
  alignment?: AlignmentInfo;
  /** Merged files: the origin (ts 0) on rank 0's native clock, µs. */
  originUs?: number;
}

/** The JSON Object Format of Chrome's trace viewer, which Perfetto reads too. */
export interface ChromeTrace {
  traceEvents: TraceEvent[];
  displayTimeUnit: "ms";
  otherData: TraceInfo;
}

/** Thread ids in each rank's process: the training loop, then as many all-reduce lanes as overlap needs. */
export const LOOP_TID = 1;
export const COMM_TID = 2;

/** Categories: the SVG and the tests group spans by them. */
export type SpanCategory = "step" | "data" | "compute" | "wait" | "comm" | "eval" | "io" | "sync";

/** The flag train.ts adds to training/options.ts's table. */
/** Where rank `rank` writes its own part of the trace `path`. */
export function rankTracePath(path: string, rank: number): string {
  const name = basename(path).replace(/\.json$/i, "");
  return join(dirname(path), `${name}.rank${rank}.json`);
}

/** How performance.now() (ms) maps onto the native clock (µs): `native = ms * 1000 + offsetUs`. */
export interface ClockCalibration {
  offsetUs: number;
  /** Half the shortest round trip of the calibration: the most the mapping can be off by (µs). */
  uncertaintyUs: number;
}

/**
 * Maps performance.now() onto the native clock: reads the native clock between two performance.now()
 * calls, `rounds` times, and keeps the tightest bracket (both are CLOCK_MONOTONIC underneath, so they do not
 * drift apart; only their origins differ).
 */
export function calibrateClock(
  nativeNs: () => number,
  now: () => number = () => performance.now(),
  rounds = 32,
): ClockCalibration {
  let best: ClockCalibration = { offsetUs: 0, uncertaintyUs: Infinity };
  for (let i = 0; i < rounds; i++) {
    const before = now();
    const native = nativeNs();
    const after = now();
    const halfGapUs = (after - before) * 500;
    if (halfGapUs < best.uncertaintyUs) {
      best = { offsetUs: native / 1000 - (before + after) * 500, uncertaintyUs: halfGapUs };
    }
  }
  return best;
}

/** What {@link syncClocks} needs of a process group. */
export interface ClockSyncGroup {
  rank: number;
  worldSize: number;
  barrierClock(): Promise<number>;
  allReduceSum(values: Float64Array): Promise<Float64Array>;
}

/** A number naming this machine's boot (Linux's boot id): equal boot ids mean one shared CLOCK_MONOTONIC. */
export async function bootId(): Promise<number> {
  const text = await Deno.readTextFile("/proc/sys/kernel/random/boot_id").catch(() => "");
  if (!text.trim()) return 0;
  // FNV-1a, 32 bits: exact in a double, so it survives a sum all-reduce in its own slot.
  let h = 0x811c9dc5;
  for (const c of text.trim()) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
  return h || 1;
}

/**
 * Barrier clock readings of every rank: `rounds` times, a barrier (each rank reads its native clock the
 * moment it is released, inside the native call) and one sum all-reduce in which each rank fills its own
 * slot, so every rank ends with the whole table (rounds x ranks, µs) and the ranks' boot ids.
 */
export async function syncClocks(
  group: ClockSyncGroup,
  rounds = 7,
  boot?: number,
): Promise<{ readings: number[][]; bootIds: number[] }> {
  const { rank, worldSize } = group;
  const id = boot ?? await bootId();
  const readings: number[][] = [];
  let bootIds: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const clockUs = (await group.barrierClock()) / 1000;
    const slots = new Float64Array(2 * worldSize);
    slots[rank] = clockUs;
    slots[worldSize + rank] = id;
    const all = await group.allReduceSum(slots);
    readings.push(Array.from(all.subarray(0, worldSize)));
    bootIds = Array.from(all.subarray(worldSize));
  }
  return { readings, bootIds };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Per rank, the median over rounds of (its barrier reading - rank 0's), and the spread of those (µs). */
export function barrierOffsets(readings: number[][]): { offsetUs: number[]; spreadUs: number[] } {
  const ranks = readings[0]?.length ?? 0;
  const offsetUs: number[] = [], spreadUs: number[] = [];
  for (let r = 0; r < ranks; r++) {
    const d = readings.map((round) => round[r] - round[0]);
    offsetUs.push(median(d));
    spreadUs.push(Math.max(...d) - Math.min(...d));
  }
  return { offsetUs, spreadUs };
}

/**
 * Rank r's clock minus rank 0's at rank r's time `us`: the offset measured at the start, moving linearly to
 * the one measured at the end (a steady drift between two machines' clocks), held constant outside.
 * Subtracting it puts a time of rank r on rank 0's clock.
 */
export function clockOffset(start: number[][], end: number[][]): (rank: number, us: number) => number {
  const last = end.length ? end : start;
  const a = barrierOffsets(start), b = barrierOffsets(last);
  const at = (readings: number[][], r: number) => median(readings.map((round) => round[r]));
  return (rank, us) => {
    if (rank === 0) return 0;
    const t0 = at(start, rank), t1 = at(last, rank);
    const f = t1 > t0 ? Math.min(1, Math.max(0, (us - t0) / (t1 - t0))) : 0;
    return a.offsetUs[rank] + f * (b.offsetUs[rank] - a.offsetUs[rank]);
  };
}

/** Where a training micro-step belongs. */
export interface StepInfo {
  epoch: number;
  /** The optimizer step (1-based, over the whole run) this micro-batch contributes to. */
  step: number;
  /** Its index among that step's micro-batches (0-based). */
  micro: number;
  /** Whether it synchronised gradients and applied the optimizer (the last micro-batch of a step). */
  sync: boolean;
  rows: number;
  seqLen: number;
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

/**
 * One rank's trace while the run goes: spans on the native clock (µs), kept in memory and written once at the
 * end (a step adds about ten events).
 */
export class TraceRecorder {
  readonly rank: number;
  readonly worldSize: number;
  readonly calibration: ClockCalibration;
  readonly parameters: number;
  #events: TraceEvent[] = [];
  /** End time of the last span on each all-reduce lane (overlapping buckets take the next lane). */
  #laneEnds: number[] = [];
  #start: { readings: number[][]; bootIds: number[] } = { readings: [], bootIds: [] };
  #end: { readings: number[][]; bootIds: number[] } = { readings: [], bootIds: [] };

  constructor(
    options: { rank: number; worldSize: number; parameters: number; calibration: ClockCalibration },
  ) {
    this.rank = options.rank;
    this.worldSize = options.worldSize;
    this.parameters = options.parameters;
    this.calibration = options.calibration;
  }

  /** Calibrates the clock and, with peers, takes the start-of-run barrier readings. */
  static async start(options: {
    rank: number;
    worldSize: number;
    parameters: number;
    nativeNs: () => number;
    group?: ClockSyncGroup;
  }): Promise<TraceRecorder> {
    const recorder = new TraceRecorder({ ...options, calibration: calibrateClock(options.nativeNs) });
    if (options.group) recorder.#start = await syncClocks(options.group);
    return recorder;
  }

  /** The spans recorded so far (X events). */
  get events(): readonly TraceEvent[] {
    return this.#events;
  }

  /** A performance.now() reading (ms) on the native clock (µs). */
  nativeUs(ms: number): number {
    return ms * 1000 + this.calibration.offsetUs;
  }

  #span(
    name: string,
    cat: SpanCategory,
    startUs: number,
    endUs: number,
    args?: Record<string, unknown>,
    tid = LOOP_TID,
  ): void {
    const ts = round3(startUs);
    this.#events.push({
      name,
      cat,
      ph: "X",
      pid: this.rank,
      tid,
      ts,
      dur: round3(Math.max(0, round3(endUs) - ts)),
      ...(args ? { args } : {}),
    });
  }

  /** A span TypeScript timed with performance.now() (ms), on the training-loop track. */
  span(
    name: string,
    cat: SpanCategory,
    startMs: number,
    endMs: number,
    args?: Record<string, unknown>,
  ): void {
    this.#span(name, cat, this.nativeUs(startMs), this.nativeUs(endMs), args);
  }

  /** Runs `body` and records it as a span. */
  async time<T>(name: string, cat: SpanCategory, body: () => Promise<T> | T): Promise<T> {
    const started = performance.now();
    try {
      return await body();
    } finally {
      this.span(name, cat, started, performance.now());
    }
  }

  /**
   * One training micro-step: the batch's construction (performance.now() readings), the native step's
   * phases and its buckets' all-reduces.
   */
  step(info: StepInfo, dataStartMs: number, dataEndMs: number, t: StepTiming, buckets: BucketEvent[]): void {
    const us = (ns: number) => ns / 1000;
    const args = { ...info };
    // The native clock decides; the batch's span (mapped from performance.now(), off by up to the
    // calibration's uncertainty) is clamped so that it ends where the native call starts: siblings must
    // not overlap, or trace viewers nest them wrongly.
    const start = Math.min(this.nativeUs(dataStartMs), us(t.startNs));
    const label = info.sync ? `step ${info.step}` : `step ${info.step} micro ${info.micro + 1} (no_sync)`;
    this.#span(label, "step", start, us(t.endNs), args);
    this.#span("data", "data", start, Math.min(this.nativeUs(dataEndMs), us(t.startNs)), args);
    this.#span("stage batch", "compute", us(t.startNs), us(t.forwardNs), args);
    this.#span("forward", "compute", us(t.forwardNs), us(t.backwardNs), args);
    this.#span("backward", "compute", us(t.backwardNs), us(t.gradsReadyNs), args);
    if (info.sync && this.worldSize > 1) {
      this.#span("wait for all-reduce", "wait", us(t.gradsReadyNs), us(t.backwardEndNs), args);
    }
    if (info.sync) this.#span("optimizer", "compute", us(t.backwardEndNs), us(t.endNs), args);
    for (const b of buckets) {
      let lane = this.#laneEnds.findIndex((end) => end <= b.startNs);
      if (lane < 0) lane = this.#laneEnds.push(0) - 1;
      this.#laneEnds[lane] = b.endNs;
      this.#span(`all-reduce bucket ${b.bucket}`, "comm", us(b.startNs), us(b.endNs), {
        bucket: b.bucket,
        bytes: b.bytes,
        params: b.params,
        step: info.step,
        micro: info.micro,
      }, COMM_TID + lane);
    }
  }

  /** Takes the end-of-run barrier readings (every rank together). */
  async syncEnd(group: ClockSyncGroup): Promise<void> {
    this.#end = await syncClocks(group);
  }

  /** This rank's trace: its events on its own native clock (µs), and what the merge needs. */
  toTrace(): ChromeTrace {
    return {
      traceEvents: [...metadataEvents(this.rank, this.#laneEnds.length), ...this.#events],
      displayTimeUnit: "ms",
      otherData: {
        format: "distrinews-trace/1",
        rank: this.rank,
        worldSize: this.worldSize,
        parameters: this.parameters,
        gradientBytes: 4 * this.parameters,
        clock: "native monotonic clock (dn_clock_ns: CLOCK_MONOTONIC), microseconds",
        clockSync: { start: this.#start.readings, end: this.#end.readings, bootIds: this.#start.bootIds },
        calibrationUs: this.calibration.uncertaintyUs,
      },
    };
  }
}

/** The "M" events naming rank `rank`'s process and tracks. */
export function metadataEvents(rank: number, commLanes: number): TraceEvent[] {
  const m = (name: string, tid: number, args: Record<string, unknown>): TraceEvent => ({
    name,
    ph: "M",
    pid: rank,
    tid,
    args,
  });
  const events = [
    m("process_name", 0, { name: `rank ${rank}` }),
    m("process_sort_index", 0, { sort_index: rank }),
    m("thread_name", LOOP_TID, { name: "training loop (data, compute, waits)" }),
    m("thread_sort_index", LOOP_TID, { sort_index: LOOP_TID }),
  ];
  for (let lane = 0; lane < commLanes; lane++) {
    const tid = COMM_TID + lane;
    events.push(
      m("thread_name", tid, { name: lane ? `all-reduce (overlapping, ${lane + 1})` : "all-reduce" }),
      m("thread_sort_index", tid, { sort_index: tid }),
    );
  }
  return events;
}

/**
 * Merges the ranks' traces onto rank 0's clock (see the module's description): every rank's spans are
 * shifted by its barrier offset, then all times are made relative to the earliest span.
 */
export function mergeTraces(ranks: ChromeTrace[]): ChromeTrace {
  const sorted = [...ranks].sort((a, b) => (a.otherData.rank ?? 0) - (b.otherData.rank ?? 0));
  const first = sorted[0]?.otherData;
  if (!first) throw new Error("no rank traces to merge");
  const sync = first.clockSync ?? { start: [], end: [], bootIds: [] };
  const worldSize = sorted.length;
  const offset = sync.start.length ? clockOffset(sync.start, sync.end) : () => 0;
  // One offset per micro-step, taken at the step's start, for the step and everything in it (its phases and
  // buckets carry its step and micro numbers): with drift correction the offset changes, a little, along
  // the run, and a span and the spans nested in it must move together or they would stop nesting.
  const stepKey = (e: TraceEvent) =>
    e.args?.step !== undefined && e.args?.micro !== undefined
      ? `${e.pid}:${e.args.step}.${e.args.micro}`
      : "";
  const anchors = new Map<string, number>();
  for (const t of sorted) {
    for (const e of t.traceEvents) if (e.ph === "X" && e.cat === "step") anchors.set(stepKey(e), e.ts ?? 0);
  }
  const spans = sorted.flatMap((t) => t.traceEvents.filter((e) => e.ph === "X")).map((e) => {
    const shift = offset(e.pid, anchors.get(stepKey(e)) ?? e.ts ?? 0);
    return { ...e, ts: (e.ts ?? 0) - shift, end: (e.ts ?? 0) + (e.dur ?? 0) - shift };
  });
  const origin = spans.reduce((min, e) => Math.min(min, e.ts), spans.length ? Infinity : 0);
  const shifted: TraceEvent[] = spans.map(({ end, ...e }) => {
    const ts = round3(e.ts - origin);
    return { ...e, ts, dur: round3(Math.max(0, round3(end - origin) - ts)) };
  });
  const events = [...sorted.flatMap((t) => t.traceEvents.filter((e) => e.ph === "M")), ...shifted];
  const a = sync.start.length ? barrierOffsets(sync.start) : { offsetUs: [0], spreadUs: [0] };
  const b = sync.end.length ? barrierOffsets(sync.end) : a;
  const sharedClock = sync.bootIds.length === worldSize &&
    sync.bootIds.every((id) => id && id === sync.bootIds[0]);
  const applied = [...a.offsetUs, ...b.offsetUs].map(Math.abs);
  const alignment: AlignmentInfo = {
    method: "barrier",
    rounds: sync.start.length,
    startOffsetUs: a.offsetUs.map(round3),
    endOffsetUs: b.offsetUs.map(round3),
    spreadUs: a.spreadUs.map((s, r) => round3(Math.max(s, b.spreadUs[r] ?? 0))),
    sharedClock,
    ...(sharedClock ? { measuredErrorUs: round3(Math.max(...applied)) } : {}),
    calibrationUs: sorted.map((t) => round3(t.otherData.calibrationUs ?? 0)),
  };
  return {
    traceEvents: [
      ...events.filter((e) => e.ph === "M"),
      ...shifted.sort((x, y) =>
        x.pid - y.pid || x.tid - y.tid || x.ts! - y.ts! || (y.dur ?? 0) - (x.dur ?? 0)
      ),
    ],
    displayTimeUnit: "ms",
    otherData: {
      format: "distrinews-trace/1",
      worldSize,
      parameters: first.parameters,
      gradientBytes: first.gradientBytes,
      clock: "rank 0's native monotonic clock (CLOCK_MONOTONIC), microseconds since originUs; other ranks " +
        "aligned by barrier offsets",
      alignment,
      originUs: round3(origin),
    },
  };
}

/** What {@link finishTrace} needs of a process group. */
export interface TraceGroup extends ClockSyncGroup {
  barrier(): Promise<void>;
}

/**
 * The end of a traced run, on every rank together: the end-of-run barrier readings, each rank's file, a
 * barrier (every file is complete), then rank 0 merges them into `path` and removes them. Returns the merged
 * trace on rank 0.
 */
export async function finishTrace(
  recorder: TraceRecorder,
  path: string,
  group?: TraceGroup,
): Promise<ChromeTrace | undefined> {
  if (group) await recorder.syncEnd(group);
  const own = rankTracePath(path, recorder.rank);
  await Deno.mkdir(dirname(path) || ".", { recursive: true });
  await writeFileAtomic(own, JSON.stringify(recorder.toTrace()));
  await group?.barrier();
  if (recorder.rank !== 0) return undefined;
  const paths = Array.from({ length: recorder.worldSize }, (_, r) => rankTracePath(path, r));
  const parts = await Promise.all(
    paths.map(async (p) => JSON.parse(await Deno.readTextFile(p)) as ChromeTrace),
  );
  const merged = mergeTraces(parts);
  await writeFileAtomic(path, JSON.stringify(merged));
  await Promise.all(paths.map((p) => Deno.remove(p)));
  return merged;
}

/** One line for the log: where the trace went and how well the clocks were aligned. */
export function describeTrace(path: string, trace: ChromeTrace): string {
  const spans = trace.traceEvents.filter((e) => e.ph === "X").length;
  const a = trace.otherData.alignment;
  const ranks = trace.otherData.worldSize;
  let clocks = "";
  if (a && ranks > 1) {
    const offsets = a.startOffsetUs.slice(1).map((o) => `${o.toFixed(0)} µs`).join(", ");
    clocks = `; clocks aligned by barrier (offsets to rank 0: ${offsets}` +
      (a.measuredErrorUs !== undefined
        ? `; the ranks share one clock, so that is the alignment's error, ${
          a.measuredErrorUs.toFixed(0)
        } µs at most)`
        : `; spread ${Math.max(...a.spreadUs).toFixed(0)} µs)`);
  }
  return `trace: ${path} (${spans} spans, ${ranks} rank(s))${clocks}; draw it with deno task trace:svg ${path}`;
}

/** Runs `body` as a span of `recorder`, or just runs it when not tracing. */
export async function traced<T>(
  recorder: TraceRecorder | undefined,
  name: string,
  cat: SpanCategory,
  body: () => Promise<T> | T,
): Promise<T> {
  return recorder ? await recorder.time(name, cat, body) : await body();
}
