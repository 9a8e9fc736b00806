/**
 * Training and evaluation metrics: a running loss/accuracy accumulator, a confusion matrix, per-class
 * precision/recall/F1 with sklearn's definitions, and the JSONL metrics log.
 *
 * The accumulator and the confusion matrix both flatten to a Float64Array and back, so that DDP ranks can
 * sum their local counts with a single all-reduce and then every rank (or rank 0) derives the same global
 * metrics. Float64 holds integer counts exactly up to 2^53, far beyond any dataset here.
 * @module
 */

/** What one training or evaluation batch contributes; `StepResult` from ffi/model.ts fits. */
export interface BatchOutcome {
  /** Mean loss over the batch's rows. */
  loss: number;
  /** Rows whose prediction matched the label. */
  correct: number;
  /** Rows in the batch. */
  count: number;
}

/**
 * Sums of (loss × rows, correct rows, rows) over an epoch or an evaluation.
 *
 * The mean loss is weighted by rows, so a short last batch counts for what it holds. (The Trainer's logged
 * `loss` is a mean of per-step means instead; the two agree when all batches are the same size.)
 */
export class RunningMetrics {
  /** Sum over batches of mean loss × rows. */
  lossSum = 0;
  /** Rows predicted correctly. */
  correct = 0;
  /** Rows seen. */
  count = 0;

  /** Length of {@link toArray}'s result. */
  static readonly LENGTH = 3;

  /** Adds one batch. */
  add(batch: BatchOutcome): this {
    if (!(batch.count >= 0) || !(batch.correct >= 0) || batch.correct > batch.count) {
      throw new RangeError(`bad batch outcome: correct ${batch.correct}, count ${batch.count}`);
    }
    // A 0-row batch (a rank with nothing left) must not turn the sum into NaN through 0 * NaN.
    if (batch.count > 0) this.lossSum += batch.loss * batch.count;
    this.correct += batch.correct;
    this.count += batch.count;
    return this;
  }

  /** Adds another accumulator's sums (what an all-reduce does across ranks). */
  merge(other: RunningMetrics): this {
    this.lossSum += other.lossSum;
    this.correct += other.correct;
    this.count += other.count;
    return this;
  }

  /** Row-weighted mean loss; NaN before any row. */
  get meanLoss(): number {
    return this.count > 0 ? this.lossSum / this.count : NaN;
  }

  /** Fraction of rows predicted correctly; NaN before any row. */
  get accuracy(): number {
    return this.count > 0 ? this.correct / this.count : NaN;
  }

  /** Back to zero, for the next epoch. */
  reset(): this {
    this.lossSum = this.correct = this.count = 0;
    return this;
  }

  /** `[lossSum, correct, count]`, ready for one sum all-reduce. */
  toArray(): Float64Array {
    return Float64Array.of(this.lossSum, this.correct, this.count);
  }

  /** The accumulator of a (summed) {@link toArray} result. */
  static fromArray(a: ArrayLike<number>): RunningMetrics {
    if (a.length !== RunningMetrics.LENGTH) {
      throw new RangeError(`expected ${RunningMetrics.LENGTH} values, got ${a.length}`);
    }
    const m = new RunningMetrics();
    [m.lossSum, m.correct, m.count] = [a[0], a[1], a[2]];
    return m;
  }
}

/**
 * Counts of (true label, predicted label) pairs. Row = true label, column = prediction, as sklearn's
 * `confusion_matrix`.
 */
export class ConfusionMatrix {
  /** Number of classes. */
  readonly numLabels: number;
  /** Row-major [numLabels, numLabels] counts. */
  readonly counts: Float64Array;

  /** An all-zero matrix for `numLabels` classes. */
  constructor(numLabels: number) {
    if (!Number.isInteger(numLabels) || numLabels < 1) throw new RangeError(`bad numLabels ${numLabels}`);
    this.numLabels = numLabels;
    this.counts = new Float64Array(numLabels * numLabels);
  }

  /** Adds one row per (label, prediction) pair; every id must be in [0, numLabels). */
  add(labels: ArrayLike<number>, predictions: ArrayLike<number>): this {
    if (labels.length !== predictions.length) {
      throw new RangeError(`${labels.length} labels but ${predictions.length} predictions`);
    }
    const k = this.numLabels;
    // Check everything first so a bad id leaves the matrix untouched.
    for (let i = 0; i < labels.length; i++) {
      for (const [what, v] of [["label", labels[i]], ["prediction", predictions[i]]] as const) {
        if (!Number.isInteger(v) || v < 0 || v >= k) {
          throw new RangeError(`${what} ${v} at row ${i} not in [0, ${k})`);
        }
      }
    }
    for (let i = 0; i < labels.length; i++) this.counts[labels[i] * k + predictions[i]]++;
    return this;
  }

  /** Count of rows with true label `label` predicted as `predicted`. */
  get(label: number, predicted: number): number {
    return this.counts[label * this.numLabels + predicted];
  }

  /** Adds another matrix's counts (what an all-reduce does across ranks). */
  merge(other: ConfusionMatrix): this {
    if (other.numLabels !== this.numLabels) {
      throw new RangeError(`${other.numLabels} vs ${this.numLabels} labels`);
    }
    for (let i = 0; i < this.counts.length; i++) this.counts[i] += other.counts[i];
    return this;
  }

  /** A copy of the counts, ready for one sum all-reduce. */
  toArray(): Float64Array {
    return this.counts.slice();
  }

  /** The matrix of a (summed) {@link toArray} result; the length must be a square. */
  static fromArray(a: ArrayLike<number>): ConfusionMatrix {
    const k = Math.round(Math.sqrt(a.length));
    if (k < 1 || k * k !== a.length) throw new RangeError(`${a.length} values are not a square matrix`);
    const m = new ConfusionMatrix(k);
    m.counts.set(Array.from(a));
    return m;
  }

  /** Rows counted. */
  get total(): number {
    return this.counts.reduce((s, v) => s + v, 0);
  }

  /** Fraction of rows on the diagonal; NaN when empty. */
  get accuracy(): number {
    let diag = 0;
    for (let c = 0; c < this.numLabels; c++) diag += this.get(c, c);
    const total = this.total;
    return total > 0 ? diag / total : NaN;
  }
}

/** One class's scores; see {@link classificationReport}. */
export interface ClassScores {
  /** tp / (tp + fp), 0 when nothing was predicted as this class. */
  precision: number;
  /** tp / (tp + fn), 0 when the class has no true rows. */
  recall: number;
  /** 2tp / (2tp + fp + fn), 0 when that denominator is 0. */
  f1: number;
  /** Rows whose true label is this class. */
  support: number;
  /** Rows predicted as this class. */
  predicted: number;
}

/** Per-class scores and their macro averages. */
export interface ClassificationReport {
  /** One entry per class id, including classes absent from both labels and predictions (all zeros). */
  perClass: ClassScores[];
  /** Class ids the macro averages run over (see {@link ReportOptions.labels}). */
  labels: number[];
  /** Unweighted mean of F1 over `labels`; NaN when `labels` is empty. */
  macroF1: number;
  /** Unweighted mean of precision over `labels`. */
  macroPrecision: number;
  /** Unweighted mean of recall over `labels`. */
  macroRecall: number;
  /** Fraction of rows predicted correctly; NaN when empty. */
  accuracy: number;
  /** Rows counted. */
  total: number;
}

/** Options of {@link classificationReport}. */
export interface ReportOptions {
  /**
   * Classes to average over. "present" (default) is sklearn's behaviour without `labels=`: only classes seen
   * in the labels or the predictions. "all" is sklearn with `labels=range(numLabels)`: an absent class counts
   * as F1 0 and pulls the macro average down. On AG News evaluation sets the two agree.
   */
  labels?: "present" | "all" | readonly number[];
}

/** sklearn's `_prf_divide` with zero_division=0. */
function divide(num: number, den: number): number {
  return den === 0 ? 0 : num / den;
}

function mean(values: number[]): number {
  // np.average adds left to right; keep that order so macro scores match to the last bit.
  let s = 0;
  for (const v of values) s += v;
  return values.length > 0 ? s / values.length : NaN;
}

/**
 * Precision, recall and F1 per class and macro-averaged, equal to sklearn's
 * `precision_recall_fscore_support` / `f1_score(average=None | "macro", zero_division=0)`. F1 is computed as
 * sklearn ≥ 1.3 does, from counts (2tp / (support + predicted)), not from rounded precision and recall.
 */
export function classificationReport(cm: ConfusionMatrix, options: ReportOptions = {}): ClassificationReport {
  const k = cm.numLabels;
  const perClass: ClassScores[] = [];
  for (let c = 0; c < k; c++) {
    const tp = cm.get(c, c);
    let support = 0;
    let predicted = 0;
    for (let j = 0; j < k; j++) {
      support += cm.get(c, j);
      predicted += cm.get(j, c);
    }
    perClass.push({
      precision: divide(tp, predicted),
      recall: divide(tp, support),
      f1: divide(2 * tp, support + predicted),
      support,
      predicted,
    });
  }
  const which = options.labels ?? "present";
  let labels: number[];
  if (which === "present") labels = perClass.flatMap((s, c) => s.support + s.predicted > 0 ? [c] : []);
  else if (which === "all") labels = perClass.map((_, c) => c);
  else {
    for (const c of which) {
      if (!Number.isInteger(c) || c < 0 || c >= k) throw new RangeError(`label ${c} not in [0, ${k})`);
    }
    labels = [...which];
  }
  return {
    perClass,
    labels,
    macroF1: mean(labels.map((c) => perClass[c].f1)),
    macroPrecision: mean(labels.map((c) => perClass[c].precision)),
    macroRecall: mean(labels.map((c) => perClass[c].recall)),
    accuracy: cm.accuracy,
    total: cm.total,
  };
}

/**
 * sklearn's `f1_score(yTrue, yPred, average="macro", zero_division=0)` for integer class ids in
 * [0, numLabels): the mean F1 over the classes present in either array.
 */
export function f1Score(
  yTrue: ArrayLike<number>,
  yPred: ArrayLike<number>,
  numLabels: number,
  average: "macro",
): number;
/**
 * sklearn's `f1_score(yTrue, yPred, average=None, zero_division=0)`: F1 per class present in either array,
 * in id order.
 */
export function f1Score(
  yTrue: ArrayLike<number>,
  yPred: ArrayLike<number>,
  numLabels: number,
  average: null,
): number[];
export function f1Score(
  yTrue: ArrayLike<number>,
  yPred: ArrayLike<number>,
  numLabels: number,
  average: "macro" | null,
): number | number[] {
  const report = classificationReport(new ConfusionMatrix(numLabels).add(yTrue, yPred));
  return average === "macro" ? report.macroF1 : report.labels.map((c) => report.perClass[c].f1);
}

// ---------------------------------------------------------------------------------------------------------
// JSONL metrics log

/** Fields every record carries. */
export interface RecordBase {
  /** 1-based epoch the record belongs to. */
  epoch: number;
  /** Optimizer steps completed so far in the whole run (the x of a loss-vs-step plot). */
  step: number;
  /** ISO-8601 wall-clock time; the writer stamps it when absent. */
  time?: string;
}

/** A training step (or every Nth step), logged as it happens. */
export interface StepRecord extends RecordBase {
  /** Discriminant. */
  event: "step";
  /** Loss of this step (mean over its rows; across ranks if the caller reduced it). */
  loss: number;
  /** Learning rate this step's update used. */
  lr: number;
  /** Total gradient norm before clipping, when known. */
  grad_norm?: number;
  /** Throughput over the recent window, all ranks together, when known. */
  samples_per_s?: number;
}

/** End of a training epoch: row-weighted means over the whole epoch and all ranks. */
export interface EpochRecord extends RecordBase {
  /** Discriminant. */
  event: "epoch";
  /** Row-weighted mean training loss of the epoch. */
  train_loss: number;
  /** Fraction of training rows predicted correctly during the epoch (dropout on, weights moving). */
  train_accuracy: number;
  /** Training rows in the epoch, all ranks together. */
  samples: number;
  /** Wall-clock seconds the epoch took. */
  seconds: number;
  /** Rank 0's peak resident memory so far, in bytes (Linux; absent elsewhere). */
  peak_rss_bytes?: number;
}

/** An evaluation pass. */
export interface EvalRecord extends RecordBase {
  /** Discriminant. */
  event: "eval";
  /** Row-weighted mean loss over the evaluation set. */
  eval_loss: number;
  /** Fraction of evaluation rows predicted correctly. */
  eval_accuracy: number;
  /** sklearn's macro F1 (zero_division=0) over the classes present; see {@link classificationReport}. */
  eval_macro_f1: number;
  /** F1 per class name, e.g. {"World": 0.91, ...}. */
  eval_f1_per_class?: Record<string, number>;
  /** Evaluation rows. */
  samples: number;
  /** Confusion matrix, rows = true label, columns = prediction. */
  confusion?: number[][];
  /** Wall-clock seconds the evaluation took. */
  seconds?: number;
}

/**
 * One line of the metrics log. Every line is one JSON object with `event`, `epoch` and `step`; the other
 * fields depend on `event`. Non-finite numbers (a NaN loss) are written as null, as JSON.stringify does.
 * Readers should ignore fields they do not know, so later versions can add some.
 */
export type MetricsRecord = StepRecord | EpochRecord | EvalRecord;

/** Options of {@link MetricsWriter.open}. */
export interface MetricsWriterOptions {
  /** Keep existing lines (resuming a run). Default false: truncate. */
  append?: boolean;
  /** Clock for the `time` stamp, in ms since the epoch; tests inject a fixed one. */
  now?: () => number;
}

/**
 * Appends {@link MetricsRecord}s to a JSONL file, one object per line. Each record goes to the OS in its own
 * write before `write` returns, so a crash loses nothing already logged and `tail -f` sees every line as it
 * comes. Writes are synchronous on purpose: ordering is then guaranteed without a queue, and a ~200-byte
 * line costs microseconds next to a training step. Only rank 0 should open one; that is the caller's call.
 */
export class MetricsWriter implements Disposable {
  #file: Deno.FsFile | undefined;
  readonly #now: () => number;
  readonly #encoder = new TextEncoder();
  /** The log's path. */
  readonly path: string;

  private constructor(path: string, file: Deno.FsFile, now: () => number) {
    this.path = path;
    this.#file = file;
    this.#now = now;
  }

  /** Opens (creating, and truncating unless `append`) the log at `path`. */
  static async open(path: string, options: MetricsWriterOptions = {}): Promise<MetricsWriter> {
    const append = options.append ?? false;
    const file = await Deno.open(path, { create: true, write: true, append, truncate: !append });
    return new MetricsWriter(path, file, options.now ?? Date.now);
  }

  /** Writes one record as one line and hands it to the OS before returning. */
  write(record: MetricsRecord): void {
    if (!this.#file) throw new Error(`metrics log ${this.path} is closed`);
    if (!["step", "epoch", "eval"].includes(record.event)) {
      throw new RangeError(`unknown event ${record.event}`);
    }
    const line = JSON.stringify({ ...record, time: record.time ?? new Date(this.#now()).toISOString() }) +
      "\n";
    const bytes = this.#encoder.encode(line);
    // writeSync may write fewer bytes than asked; loop so a line is never cut.
    for (let off = 0; off < bytes.length;) off += this.#file.writeSync(bytes.subarray(off));
  }

  /** Closes the file; further writes throw. Idempotent. */
  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Parses a metrics log. Blank lines are skipped; a torn last line (a crash mid-write) is dropped, while a bad
 * line anywhere else throws with its line number.
 */
export function parseMetrics(text: string): MetricsRecord[] {
  const lines = text.split("\n");
  const out: MetricsRecord[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === "") return;
    try {
      out.push(JSON.parse(line) as MetricsRecord);
    } catch (e) {
      const isLast = lines.slice(i + 1).every((l) => l.trim() === "");
      if (!isLast || text.endsWith("\n")) {
        throw new SyntaxError(`metrics line ${i + 1}: ${(e as Error).message}`);
      }
    }
  });
  return out;
}

/** Reads and parses the metrics log at `path`; see {@link parseMetrics}. */
export async function readMetrics(path: string): Promise<MetricsRecord[]> {
  return parseMetrics(await Deno.readTextFile(path));
}
