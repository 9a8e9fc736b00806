/**
 * Where an epoch's time went, always on: computing, waiting on communication, and building batches. The
 * question it answers is the one to ask before adding ranks: does scaling still pay? With more ranks each
 * computes less per step, but the gradients to average stay the same size, so at some point the wait for the
 * all-reduce stops hiding behind backward and grows instead; and a data pipeline that cannot keep up shows
 * as data time.
 *
 * Definitions, per training micro-step, from the clock readings the native step takes anyway
 * ({@link StepTiming}; no extra work, no extra native call):
 *
 * - compute: staging the batch, forward, backward up to the last gradient, and (on optimizer steps)
 *   clipping and AdamW: `(gradsReady - start) + (end - backwardEnd)`.
 * - comm wait: from the last gradient being ready to backward returning, `backwardEnd - gradsReady`. Under
 *   DDP this is the Reducer in finalize_backward waiting for the buckets' all-reduces that backward's compute
 *   did not hide, plus two memory copies it cannot avoid: the last gradients into their bucket before its
 *   all-reduce can start, and the averaged buckets back into `.grad` after. The all-reduce time
 *   that overlapped backward is not in it: it cost nothing. It also absorbs imbalance: a rank that finished
 *   backward early waits here for the slowest one. Zero for a single process and on no_sync micro-steps.
 * - data: the time TypeScript spent producing each batch (the shard's permutation, collation), measured
 *   around the batch iterator.
 *
 * Whatever is left of the epoch's wall time (the foreign-call hop, TensorBoard, progress, memory trims) is
 * "other". Epoch figures are means over ranks (one sum all-reduce, folded into the one the epoch already does).
 * @module
 */

import type { StepTiming } from "../ffi/model.ts";

/** Seconds of an epoch spent computing, waiting for gradients' all-reduce, and building batches. */
export class TimeBreakdown {
  computeS = 0;
  commWaitS = 0;
  dataS = 0;

  /** Length of {@link toArray}'s result. */
  static readonly LENGTH = 3;

  /** Adds the time a batch took to build, in milliseconds (performance.now() differences). */
  addDataMs(ms: number): this {
    this.dataS += ms / 1000;
    return this;
  }

  /** Adds one native step's compute and communication wait. */
  addStep(t: StepTiming): this {
    const compute = (t.gradsReadyNs - t.startNs) + (t.endNs - t.backwardEndNs);
    this.computeS += compute / 1e9;
    this.commWaitS += (t.backwardEndNs - t.gradsReadyNs) / 1e9;
    return this;
  }

  /** Each figure times `factor` (1 / world size turns all-reduced sums into rank means). */
  scaled(factor: number): TimeBreakdown {
    return TimeBreakdown.fromArray(this.toArray().map((x) => x * factor));
  }

  /** `[computeS, commWaitS, dataS]`, ready for a sum all-reduce. */
  toArray(): Float64Array {
    return Float64Array.of(this.computeS, this.commWaitS, this.dataS);
  }

  /** The breakdown of a {@link toArray} result. */
  static fromArray(a: ArrayLike<number>): TimeBreakdown {
    if (a.length !== TimeBreakdown.LENGTH) {
      throw new RangeError(`a time breakdown has ${TimeBreakdown.LENGTH} numbers, got ${a.length}`);
    }
    const b = new TimeBreakdown();
    [b.computeS, b.commWaitS, b.dataS] = [a[0], a[1], a[2]];
    return b;
  }

  /** "compute 3.1 s, comm wait 0.9 s, data 0.2 s, other 0.1 s" for an epoch of `seconds`. */
  format(seconds: number): string {
    const other = Math.max(0, seconds - this.computeS - this.commWaitS - this.dataS);
    const s = (x: number) => `${x.toFixed(x < 10 ? 2 : 1)} s`;
    return `compute ${s(this.computeS)}, comm wait ${s(this.commWaitS)}, data ${s(this.dataS)}, other ${
      s(other)
    }`;
  }
}
