/**
 * A small closed-loop HTTP load generator: N workers, each sending a POST as soon as its previous response
 * has been read, over kept-alive connections. Closed loop means the offered load adapts to the server (a
 * slow server gets fewer requests), so throughput is the server's capacity at that concurrency and latency
 * is what one of N busy clients sees.
 * @module
 */

/** Options of {@link runLoad}. */
export interface LoadOptions {
  /** Where to POST. */
  url: string;
  /** Number of workers, i.e. requests in flight at any moment. */
  concurrency: number;
  /** Length of the measured window, after the warm-up. */
  durationMs: number;
  /** Load sent before the measured window and not counted (lets caches, pools and batches settle). */
  warmupMs: number;
  /** Request bodies, sent in turn; worker `w` starts at `floor(w * bodies.length / concurrency)`. */
  bodies: readonly string[];
  /** Content type of the bodies (default `application/json`). */
  contentType?: string;
  /**
   * How long to wait, after the window closes, for requests still in flight before aborting them
   * (default 60 000 ms). They never count; waiting only keeps them from running into the next measurement.
   */
  drainTimeoutMs?: number;
}

/** What {@link runLoad} measured in its window. Latencies are milliseconds; NaN when nothing succeeded. */
export interface LoadResult {
  /** Successful (2xx) requests that both started and finished inside the window: the latency samples. */
  requests: number;
  /** Failed requests (non-2xx status or network error) that started and finished inside the window. */
  errors: number;
  /** The first of those failures, e.g. `HTTP 500: ...` or the network error's message. */
  firstError?: string;
  /**
   * Successful responses completed inside the window, per second. Unlike `requests` this includes requests
   * sent during the warm-up: counting only those that also started inside would undercount throughput by
   * about latency / window, which would penalise the slower server most.
   */
  rps: number;
  p50: number;
  p95: number;
  p99: number;
  mean: number;
}

/** The `q`-quantile (0..1) of ascending `sorted` by the nearest-rank method; NaN for an empty list. */
export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil(q * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

function checkOptions(o: LoadOptions): void {
  if (!Number.isInteger(o.concurrency) || o.concurrency < 1) {
    throw new Error(`concurrency must be a positive integer, got ${o.concurrency}`);
  }
  if (!(o.durationMs > 0)) throw new Error(`durationMs must be positive, got ${o.durationMs}`);
  if (!(o.warmupMs >= 0)) throw new Error(`warmupMs must be 0 or more, got ${o.warmupMs}`);
  if (o.bodies.length === 0) throw new Error("bodies must not be empty");
}

/**
 * Runs a closed-loop load against `url` for `warmupMs + durationMs` and reports the measured window.
 * Every worker reads each response body in full (so its connection can be reused) and stops sending when
 * the window closes; the call returns once all workers have stopped. Uses its own HTTP client, so
 * connections are neither shared with other callers nor left open afterwards.
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  checkOptions(options);
  const { url, concurrency, bodies } = options;
  const headers = { "content-type": options.contentType ?? "application/json" };
  // One pooled connection per worker; they stay open between requests (HTTP/1.1 keep-alive).
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: concurrency });
  const abort = new AbortController();
  const start = performance.now();
  const windowStart = start + options.warmupMs;
  const windowEnd = windowStart + options.durationMs;
  const latencies: number[] = [];
  let completedInWindow = 0;
  let errors = 0;
  let firstError: string | undefined;

  async function worker(w: number): Promise<void> {
    let next = Math.floor(w * bodies.length / concurrency);
    while (performance.now() < windowEnd) {
      const body = bodies[next];
      next = (next + 1) % bodies.length;
      const t0 = performance.now();
      let failure: string | undefined;
      try {
        const res = await fetch(url, { method: "POST", headers, body, client, signal: abort.signal });
        const text = await res.text();
        if (!res.ok) failure = `HTTP ${res.status}: ${text.slice(0, 200)}`;
      } catch (err) {
        if (abort.signal.aborted) return;
        failure = err instanceof Error ? err.message : String(err);
      }
      const t1 = performance.now();
      if (t1 > windowEnd) continue; // finished after the window: counts nowhere
      if (failure === undefined && t1 >= windowStart) completedInWindow++;
      if (t0 < windowStart) continue; // started during the warm-up: no latency sample, no error count
      if (failure === undefined) {
        latencies.push(t1 - t0);
      } else {
        errors++;
        firstError ??= failure;
      }
    }
  }

  const drain = options.drainTimeoutMs ?? 60_000;
  const timer = setTimeout(() => abort.abort(), Math.max(0, windowEnd - start) + drain);
  try {
    await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  } finally {
    clearTimeout(timer);
    client.close();
  }
  latencies.sort((a, b) => a - b);
  const mean = latencies.length ? latencies.reduce((s, x) => s + x, 0) / latencies.length : NaN;
  return {
    requests: latencies.length,
    errors,
    ...(firstError === undefined ? {} : { firstError }),
    rps: completedInWindow / (options.durationMs / 1000),
    p50: percentile(latencies, 0.5),
    p95: percentile(latencies, 0.95),
    p99: percentile(latencies, 0.99),
    mean,
  };
}
