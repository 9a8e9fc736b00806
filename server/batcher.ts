/**
 * Dynamic batching: requests that arrive close together share one forward pass. One batch runs at a time:
 * the model is one resource, and queueing here (rather than in the native mutex) is what lets the next
 * batch grow while the current one computes.
 *
 * When to start a batch. A full one (`maxBatchSize`) goes at once. A lone client (the last batch held one
 * request's items and nothing else arrived while it ran) gains nothing from waiting for company that will
 * not come: its items go as soon as the submitting code is done.
 * Otherwise clients are competing, and a batch waits up to `maxWaitMs` for company, counted from when the
 * model became free (or from the oldest item's arrival, if later): clients answered by the last batch are
 * typically about to send their next request, and catching them keeps batches full.
 * @module
 */

/** Limits of a {@link DynamicBatcher}. */
export interface BatcherOptions {
  /** The most items in one batch. 1 turns batching off (each item runs alone, in arrival order). */
  maxBatchSize: number;
  /**
   * How long a batch may wait for company once the model is free, in milliseconds, counted from then or
   * from its oldest item's arrival, whichever is later (items that arrive while a batch runs wait for it).
   */
  maxWaitMs: number;
  /** The most items waiting (not yet running); beyond it {@link DynamicBatcher.submit} refuses. */
  maxQueue: number;
}

/** What a batcher runs: the work for one batch, outputs in the order of the items. */
export type BatchRunner<I, O> = (items: I[]) => Promise<O[]>;

/** What the batcher reports, for metrics. */
export interface BatchObserver {
  /** After each batch (answered or failed): how many items it held and how long the runner took. */
  onBatch?(size: number, durationMs: number): void;
}

/** Thrown by submit when the queue is full: the server answers 503 and the client retries later. */
export class QueueFullError extends Error {
  constructor(readonly limit: number) {
    super(`the inference queue is full (${limit} waiting)`);
  }
}

/** Thrown by submit after close(): the server is shutting down. */
export class BatcherClosedError extends Error {
  constructor() {
    super("the server is shutting down");
  }
}

interface Job<I, O> {
  item: I;
  /** Which submitMany call (request) it came with: a lone client is one request at a time. */
  request: number;
  enqueuedAt: number;
  resolve(out: O): void;
  reject(err: unknown): void;
}

/** Coalesces concurrent {@link submit} calls into batches for a {@link BatchRunner}. */
export class DynamicBatcher<I, O> {
  #queue: Job<I, O>[] = [];
  #running = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #flushQueued = false;
  #closed = false;
  #flushing = false;
  #requests = 0;
  #idle: (() => void)[] = [];
  #inFlight = 0;
  #loneClient = true;
  #freeSince = -Infinity;

  constructor(
    private readonly runner: BatchRunner<I, O>,
    readonly options: BatcherOptions,
    private readonly observer: BatchObserver = {},
  ) {
    const { maxBatchSize, maxWaitMs, maxQueue } = options;
    if (!Number.isInteger(maxBatchSize) || maxBatchSize < 1) {
      throw new Error(`maxBatchSize must be a positive integer, got ${maxBatchSize}`);
    }
    if (!(maxWaitMs >= 0) || !Number.isFinite(maxWaitMs)) {
      throw new Error(`maxWaitMs must be >= 0, got ${maxWaitMs}`);
    }
    if (!Number.isInteger(maxQueue) || maxQueue < 1) throw new Error(`maxQueue must be a positive integer`);
  }

  /** Items waiting for a batch. */
  get queued(): number {
    return this.#queue.length;
  }

  /** Items accepted and not yet answered (waiting or running). */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Queues one item; resolves with its output once its batch has run. */
  submit(item: I): Promise<O> {
    return this.submitMany([item])[0];
  }

  /**
   * Queues the items of one request together: all or none (a request is never half accepted, computed and
   * then refused), in one batch when they fit. One promise per item, in order.
   */
  submitMany(items: readonly I[]): Promise<O>[] {
    if (this.#closed) return items.map(() => Promise.reject(new BatcherClosedError()));
    if (this.#queue.length + items.length > this.options.maxQueue) {
      return items.map(() => Promise.reject(new QueueFullError(this.options.maxQueue)));
    }
    const request = this.#requests++;
    const promises = items.map((item) => {
      this.#inFlight++;
      const done = new Promise<O>((resolve, reject) => {
        this.#queue.push({ item, request, enqueuedAt: performance.now(), resolve, reject });
      });
      return done.finally(() => {
        if (--this.#inFlight === 0 && this.#closed) this.#idle.splice(0).forEach((wake) => wake());
      });
    });
    this.#schedule();
    return promises;
  }

  /**
   * From now on, run what is queued without waiting for company (nothing more is expected), but keep
   * accepting: requests already being read when shutdown began still get answered. close() comes after.
   */
  flushFromNowOn(): void {
    this.#flushing = true;
    this.#schedule();
  }

  /** Stops accepting items and resolves once every accepted item has been answered. */
  close(): Promise<void> {
    this.#closed = true;
    this.#schedule();
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  #schedule(): void {
    if (this.#running || this.#queue.length === 0) return;
    if (this.#queue.length >= this.options.maxBatchSize) {
      this.#clearTimer();
      void this.#runBatch();
      return;
    }
    // Closing or draining: nothing more is expected, so waiting for company only delays the answers.
    // A lone client has no company coming. And once the wait is over, the batch starts as soon as the
    // submitting code is done rather than inside it, so that one request's texts are never split.
    const due = this.#closed || this.#flushing || this.#loneClient
      ? -Infinity
      : Math.max(this.#queue[0].enqueuedAt, this.#freeSince) + this.options.maxWaitMs;
    const now = performance.now();
    if (now >= due) {
      this.#clearTimer();
      // A microtask, not a timer: no clamping, no trip through the event loop.
      if (!this.#flushQueued) {
        this.#flushQueued = true;
        queueMicrotask(() => {
          this.#flushQueued = false;
          if (!this.#running && this.#queue.length > 0) void this.#runBatch();
        });
      }
      return;
    }
    // Waiting for company: a flush already due will take this item too. (Checked because Deno's first
    // setTimeout in a process has been seen to run pending microtasks, so their order is not a given.)
    if (this.#flushQueued || this.#timer !== undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (!this.#running && this.#queue.length > 0) void this.#runBatch();
    }, due - now);
  }

  /** Observers are metrics: their failure must never strand the callers of a batch. */
  #observe(report: () => void): void {
    try {
      report();
    } catch (err) {
      console.error(`batch observer failed: ${err instanceof Error ? err.message : err}`);
    }
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  async #runBatch(): Promise<void> {
    this.#running = true;
    this.#clearTimer(); // whatever it was waiting for is in this batch; #schedule re-arms afterwards
    const jobs = this.#queue.splice(0, this.options.maxBatchSize);
    const started = performance.now();
    try {
      const outputs = await this.runner(jobs.map((j) => j.item));
      if (outputs.length !== jobs.length) {
        throw new Error(`batch runner returned ${outputs.length} outputs for ${jobs.length} items`);
      }
      jobs.forEach((job, i) => job.resolve(outputs[i]));
    } catch (err) {
      jobs.forEach((job) => job.reject(err));
    } finally {
      this.#observe(() => this.observer.onBatch?.(jobs.length, performance.now() - started));
      // One request in the batch, and nothing from anyone else waiting: a lone client.
      const request = jobs[0].request;
      this.#loneClient = jobs.every((j) => j.request === request) &&
        this.#queue.every((j) => j.request === request);
      this.#freeSince = performance.now();
      this.#running = false;
      this.#schedule();
    }
  }
}
