/**
 * Learning-rate schedules, numerically identical to transformers' `get_*_schedule*` driven by PyTorch's
 * `LambdaLR`.
 *
 * A schedule here is a plain function from the 0-based optimizer step to the learning rate that step uses.
 * `LambdaLR` evaluates its lambda once at construction (`last_epoch` 0) and again after each
 * `scheduler.step()`, so the update made by optimizer step k uses `baseLr * lambda(k)`: the first update of a
 * warmup runs at lr 0, and the last of a linear decay at `baseLr / (total - warmup)`. We reproduce exactly
 * that, off-by-one included, so a DistriNews run and a Trainer run with the same arguments take the same
 * steps.
 * @module
 */

/** Maps a 0-based optimizer step to the learning rate of that step's update. */
export type Schedule = (step: number) => number;

/** Arguments shared by the warmup schedules. */
export interface WarmupScheduleOptions {
  /** Peak learning rate (the optimizer's `lr`). */
  baseLr: number;
  /** Steps of linear warmup from 0 to `baseLr`; see {@link warmupSteps} to derive it from a ratio. */
  warmupSteps: number;
  /** Optimizer steps in the whole run (after gradient accumulation, across all epochs). */
  totalSteps: number;
}

/** Arguments of {@link cosineScheduleWithWarmup}. */
export interface CosineScheduleOptions extends WarmupScheduleOptions {
  /** Cosine periods over the decay phase; 0.5 (the default) is half a period, from `baseLr` down to 0. */
  numCycles?: number;
}

/** Schedule names as in TrainingArguments' `lr_scheduler_type`. */
export type ScheduleName = "linear" | "cosine" | "constant" | "constant_with_warmup";

/** The schedule names {@link makeSchedule} accepts. */
export const SCHEDULE_NAMES: readonly ScheduleName[] = [
  "linear",
  "cosine",
  "constant",
  "constant_with_warmup",
];

function checkNonNegativeInt(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0) throw new RangeError(`${name} must be a non-negative integer, got ${v}`);
}

function checkOptions(o: WarmupScheduleOptions): void {
  if (!Number.isFinite(o.baseLr) || o.baseLr < 0) {
    throw new RangeError(`baseLr must be a finite number >= 0, got ${o.baseLr}`);
  }
  checkNonNegativeInt("warmupSteps", o.warmupSteps);
  checkNonNegativeInt("totalSteps", o.totalSteps);
}

function checkStep(step: number): void {
  // LambdaLR only ever sees integer steps; a fractional one is a caller bug, not an interpolation request.
  if (!Number.isInteger(step) || step < 0) {
    throw new RangeError(`step must be a non-negative integer, got ${step}`);
  }
}

/**
 * Warmup steps as TrainingArguments' `get_warmup_steps`: a value >= 1 is a step count (truncated to an
 * integer), a value in [0, 1) is a ratio of `totalSteps`, rounded up (`ceil(total * ratio)`). This also
 * covers transformers 4's `warmup_ratio`, which version 5 folded into `warmup_steps`.
 */
export function warmupSteps(totalSteps: number, warmup: number): number {
  checkNonNegativeInt("totalSteps", totalSteps);
  if (!Number.isFinite(warmup) || warmup < 0) throw new RangeError(`warmup must be >= 0, got ${warmup}`);
  return warmup >= 1 ? Math.trunc(warmup) : Math.ceil(totalSteps * warmup);
}

/**
 * The multiplier of the warmup phase, or undefined past it. Same float operations as transformers:
 * `float(step) / float(max(1, warmup))`.
 */
function warmupFactor(step: number, warmup: number): number | undefined {
  return step < warmup ? step / Math.max(1, warmup) : undefined;
}

/**
 * transformers' `get_linear_schedule_with_warmup`: linear from 0 to `baseLr` over `warmupSteps`, then linear
 * down to 0 at `totalSteps`, and 0 after it.
 */
export function linearScheduleWithWarmup(options: WarmupScheduleOptions): Schedule {
  checkOptions(options);
  const { baseLr, warmupSteps: warmup, totalSteps: total } = options;
  return (step) => {
    checkStep(step);
    const factor = warmupFactor(step, warmup) ??
      Math.max(0, (total - step) / Math.max(1, total - warmup));
    return baseLr * factor;
  };
}

/**
 * transformers' `get_cosine_schedule_with_warmup`: linear warmup, then `0.5 * (1 + cos(2π · cycles ·
 * progress))`, floored at 0. Like transformers, progress is not clamped, so steps past `totalSteps` climb
 * back up the next half period (0 remains the floor only within `numCycles` = 0.5).
 */
export function cosineScheduleWithWarmup(options: CosineScheduleOptions): Schedule {
  checkOptions(options);
  const { baseLr, warmupSteps: warmup, totalSteps: total, numCycles = 0.5 } = options;
  if (!Number.isFinite(numCycles)) throw new RangeError(`numCycles must be finite, got ${numCycles}`);
  return (step) => {
    checkStep(step);
    let factor = warmupFactor(step, warmup);
    if (factor === undefined) {
      const progress = (step - warmup) / Math.max(1, total - warmup);
      factor = Math.max(0, 0.5 * (1 + Math.cos(Math.PI * numCycles * 2 * progress)));
    }
    return baseLr * factor;
  };
}

/**
 * transformers' `get_constant_schedule_with_warmup`: linear warmup, then `baseLr`. With `warmupSteps` 0 this
 * is `get_constant_schedule`.
 */
export function constantScheduleWithWarmup(options: Omit<WarmupScheduleOptions, "totalSteps">): Schedule {
  checkOptions({ ...options, totalSteps: 0 });
  const { baseLr, warmupSteps: warmup } = options;
  return (step) => {
    checkStep(step);
    return baseLr * (warmupFactor(step, warmup) ?? 1);
  };
}

/**
 * A schedule by TrainingArguments' name. "constant" ignores `warmupSteps`, as transformers'
 * `get_scheduler("constant")` does.
 */
export function makeSchedule(name: ScheduleName, options: CosineScheduleOptions): Schedule {
  switch (name) {
    case "linear":
      return linearScheduleWithWarmup(options);
    case "cosine":
      return cosineScheduleWithWarmup(options);
    case "constant":
      return constantScheduleWithWarmup({ ...options, warmupSteps: 0 });
    case "constant_with_warmup":
      return constantScheduleWithWarmup(options);
    default:
      throw new RangeError(
        `unknown schedule ${JSON.stringify(name)}; expected one of ${SCHEDULE_NAMES.join(", ")}`,
      );
  }
}
