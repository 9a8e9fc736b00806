/**
 * Training progress on stderr: a redrawn bar with throughput and ETA on a terminal, plain periodic lines
 * (no ANSI, no carriage returns) when stderr is a file or a pipe, so CI logs and `nohup` files stay readable.
 *
 * Clock, writer, terminal detection and width are injectable, so tests drive it without a TTY or real time.
 * @module
 */

/** What the caller knows after a step; counts are cumulative within this bar, not increments. */
export interface ProgressUpdate {
  /** Steps done so far (1 after the first step). */
  step: number;
  /** Samples done so far; enables the samples/s throughput. Without it the rate is shown in steps/s. */
  samples?: number;
  /** Latest loss, shown as is (the caller decides whether it is smoothed). */
  loss?: number;
  /** Learning rate of the latest step. */
  lr?: number;
}

/** Options of {@link Progress}. */
export interface ProgressOptions {
  /** Steps in this bar, e.g. optimizer steps in the epoch. */
  total: number;
  /** Prefix such as "epoch 1/3". */
  label?: string;
  /** Draw a bar (true) or print plain lines (false). Default: `Deno.stderr.isTerminal()`. */
  isTerminal?: boolean;
  /** Where text goes. Default: stderr, synchronously. */
  write?: (text: string) => void;
  /** Milliseconds clock. Default: `performance.now`. */
  now?: () => number;
  /** Terminal width for the bar. Default: `Deno.consoleSize().columns`, else 100. */
  columns?: number;
  /** Plain mode: print a line at least every this many steps. Default: a tenth of `total`. */
  everySteps?: number;
  /** Plain mode: print a line when this many seconds passed since the last one. Default 10. */
  everySeconds?: number;
  /** Terminal mode: redraw at most this often, so a fast loop does not spend its time on the terminal. */
  redrawMs?: number;
  /**
   * Seconds of history the rates are measured over. A window, not the whole run, so that the slow first
   * steps (allocator warmup, CUDA kernels loading) stop skewing the ETA after a while. Default 30.
   */
  windowSeconds?: number;
  /** Where this bar starts, for a resumed epoch. Default 0 steps, 0 samples. */
  initial?: { step: number; samples?: number };
}

interface Point {
  t: number;
  step: number;
  samples: number;
}

// Erase to end of line: the new text may be shorter than the old one.
const CLEAR_LINE = "\x1b[K";
// Eighths of a cell, so the bar moves smoothly on a narrow terminal.
const PARTIAL = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];

/** "mm:ss", or "h:mm:ss" from an hour on; "--:--" when unknown. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, "0");
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function formatRate(rate: number): string {
  if (!Number.isFinite(rate)) return "?";
  return rate >= 1000 ? rate.toFixed(0) : rate >= 10 ? rate.toFixed(1) : rate.toFixed(2);
}

function defaultWrite(text: string): void {
  const bytes = new TextEncoder().encode(text);
  for (let off = 0; off < bytes.length;) off += Deno.stderr.writeSync(bytes.subarray(off));
}

function defaultColumns(): number {
  try {
    return Deno.consoleSize().columns;
  } catch {
    return 100; // not a terminal after all, or no permission to ask
  }
}

/**
 * A progress display for one loop (usually one epoch). Call {@link update} after each step and
 * {@link finish} at the end; use {@link log} for other messages so they do not tear the bar.
 */
export class Progress {
  readonly #total: number;
  readonly #label: string;
  readonly #tty: boolean;
  readonly #write: (text: string) => void;
  readonly #now: () => number;
  readonly #columns: number;
  readonly #everySteps: number;
  readonly #everyMs: number;
  readonly #redrawMs: number;
  readonly #windowMs: number;
  readonly #start: Point;
  #window: Point[];
  #last: ProgressUpdate & { samples: number };
  #hasSamples = false;
  #lastEmit: { t: number; step: number };
  #line = ""; // what the terminal currently shows, for log() to restore
  #finished = false;

  /** Starts the clock; nothing is written until the first update. */
  constructor(options: ProgressOptions) {
    if (!Number.isInteger(options.total) || options.total < 0) {
      throw new RangeError(`total must be a non-negative integer, got ${options.total}`);
    }
    this.#total = options.total;
    this.#label = options.label ?? "";
    this.#tty = options.isTerminal ?? Deno.stderr.isTerminal();
    this.#write = options.write ?? defaultWrite;
    this.#now = options.now ?? (() => performance.now());
    this.#columns = options.columns ?? (this.#tty ? defaultColumns() : 100);
    this.#everySteps = Math.max(1, Math.floor(options.everySteps ?? Math.ceil(this.#total / 10)));
    this.#everyMs = (options.everySeconds ?? 10) * 1000;
    this.#redrawMs = options.redrawMs ?? 100;
    this.#windowMs = (options.windowSeconds ?? 30) * 1000;
    const initial = options.initial ?? { step: 0 };
    this.#start = { t: this.#now(), step: initial.step, samples: initial.samples ?? 0 };
    this.#window = [this.#start];
    this.#last = { step: initial.step, samples: initial.samples ?? 0 };
    this.#lastEmit = { t: this.#start.t, step: initial.step };
  }

  /** Records a step and redraws or prints when due. */
  update(u: ProgressUpdate): void {
    if (this.#finished) throw new Error("progress already finished");
    const t = this.#now();
    if (u.samples !== undefined) this.#hasSamples = true;
    this.#last = { ...u, samples: u.samples ?? this.#last.samples };
    this.#window.push({ t, step: u.step, samples: this.#last.samples });
    // Keep the window at least windowMs long: drop the oldest point only while the next one still spans it.
    while (this.#window.length > 2 && t - this.#window[1].t >= this.#windowMs) this.#window.shift();
    const done = u.step >= this.#total;
    if (this.#tty) {
      // The first step draws at once, so a slow step shows up as a bar rather than as silence.
      if (done || !this.#line || t - this.#lastEmit.t >= this.#redrawMs) this.#draw(t);
    } else if (
      done || u.step - this.#lastEmit.step >= this.#everySteps ||
      (t - this.#lastEmit.t >= this.#everyMs && u.step > this.#lastEmit.step)
    ) {
      this.#print(t);
    }
  }

  /** Prints `message` on its own line; on a terminal the bar is erased first and redrawn below it. */
  log(message: string): void {
    if (this.#tty && this.#line) this.#write(`\r${CLEAR_LINE}${message}\n${this.#line}`);
    else this.#write(`${message}\n`);
  }

  /** Shows the final state and ends the line; later updates throw. Idempotent. */
  finish(): void {
    if (this.#finished) return;
    const t = this.#now();
    if (this.#tty) {
      this.#draw(t);
      this.#write("\n");
    } else if (this.#lastEmit.step !== this.#last.step || this.#lastEmit.t === this.#start.t) {
      this.#print(t);
    }
    this.#finished = true;
  }

  /** Steps (or samples, when given) per second over the recent window, and the ETA in seconds. */
  rates(): { stepsPerSecond: number; samplesPerSecond: number; etaSeconds: number; elapsedSeconds: number } {
    const first = this.#window[0];
    const last = this.#window[this.#window.length - 1];
    const dt = (last.t - first.t) / 1000;
    const stepsPerSecond = dt > 0 ? (last.step - first.step) / dt : NaN;
    const samplesPerSecond = dt > 0 && this.#hasSamples ? (last.samples - first.samples) / dt : NaN;
    const remaining = Math.max(0, this.#total - this.#last.step);
    const etaSeconds = remaining === 0 ? 0 : stepsPerSecond > 0 ? remaining / stepsPerSecond : NaN;
    return {
      stepsPerSecond,
      samplesPerSecond,
      etaSeconds,
      elapsedSeconds: (this.#now() - this.#start.t) / 1000,
    };
  }

  #fields(): { r: ReturnType<Progress["rates"]>; rate: string; extras: string[]; fraction: number } {
    const r = this.rates();
    const rate = this.#hasSamples
      ? `${formatRate(r.samplesPerSecond)} samples/s`
      : `${formatRate(r.stepsPerSecond)} steps/s`;
    const extras: string[] = [];
    if (this.#last.loss !== undefined) extras.push(`loss ${this.#last.loss.toFixed(4)}`);
    if (this.#last.lr !== undefined) extras.push(`lr ${this.#last.lr.toExponential(2)}`);
    const fraction = this.#total > 0 ? Math.min(1, this.#last.step / this.#total) : 1;
    return { r, rate, extras, fraction };
  }

  #draw(t: number): void {
    const { r, rate, extras, fraction } = this.#fields();
    const pct = `${Math.floor(fraction * 100)}%`.padStart(4);
    const count = `${this.#last.step}/${this.#total}`;
    const time = `${formatDuration(r.elapsedSeconds)}<${formatDuration(r.etaSeconds)}`;
    const head = this.#label ? `${this.#label} ` : "";
    // A line longer than the terminal wraps, and \r then only returns to the start of the last row: the
    // bar would scroll. So the bar takes what is left; lr, then loss, give way to a bar of at least 10
    // cells; and the whole line is cut to the width in the end.
    const kept = [...extras];
    const tailOf = () => ` ${count}  ${rate}  ${[...kept, time].join("  ")}`;
    const roomOf = () => this.#columns - 1 - head.length - pct.length - tailOf().length - 3;
    while (roomOf() < 10 && kept.length > 0) kept.pop();
    if (roomOf() < 10) kept.push(...extras); // no bar either way: show the numbers instead
    const tail = tailOf();
    const room = roomOf();
    let bar = "";
    if (room >= 10) {
      const width = Math.min(room, 40);
      const eighths = Math.round(fraction * width * 8);
      const full = Math.floor(eighths / 8);
      bar = ` [${"█".repeat(full)}${PARTIAL[eighths % 8]}`;
      bar += " ".repeat(width - full - (eighths % 8 ? 1 : 0)) + "]";
    }
    this.#line = Array.from(`${head}${pct}${bar}${tail}`).slice(0, Math.max(1, this.#columns - 1)).join("");
    this.#write(`\r${this.#line}${CLEAR_LINE}`);
    this.#lastEmit = { t, step: this.#last.step };
  }

  #print(t: number): void {
    const { r, rate, extras, fraction } = this.#fields();
    const parts = [
      `${this.#label ? `${this.#label} ` : ""}step ${this.#last.step}/${this.#total} (${
        (fraction * 100).toFixed(1)
      }%)`,
      rate,
      ...extras,
      `elapsed ${formatDuration(r.elapsedSeconds)}`,
      `eta ${formatDuration(r.etaSeconds)}`,
    ];
    this.#write(parts.join(" | ") + "\n");
    this.#lastEmit = { t, step: this.#last.step };
  }
}
