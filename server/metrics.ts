/**
 * A small Prometheus registry: counters, gauges and histograms with labels, rendered in the text
 * exposition format (version 0.0.4) that every Prometheus-compatible scraper reads.
 * @module
 */

type Labels = Record<string, string>;

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

/** Series key: the same label set gives the same series, whatever the order its keys were written in. */
function seriesKey(labels: Labels): string {
  return JSON.stringify(Object.keys(labels).sort().map((k) => [k, labels[k]]));
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function labelText(labels: Labels, extra: Labels = {}): string {
  const all = { ...labels, ...extra };
  const keys = Object.keys(all);
  return keys.length ? `{${keys.map((k) => `${k}="${escapeLabel(all[k])}"`).join(",")}}` : "";
}

function formatNumber(x: number): string {
  if (x === Infinity) return "+Inf";
  if (x === -Infinity) return "-Inf";
  return Number.isNaN(x) ? "NaN" : String(x);
}

interface Metric {
  render(): string;
}

/** A monotonically increasing count, per label set. */
export class Counter implements Metric {
  #values = new Map<string, { labels: Labels; value: number }>();
  constructor(readonly name: string, readonly help: string) {}

  /** Adds `by` (default 1) to the series of `labels`. */
  inc(labels: Labels = {}, by = 1): void {
    const key = seriesKey(labels);
    const series = this.#values.get(key) ?? { labels, value: 0 };
    series.value += by;
    this.#values.set(key, series);
  }

  /** The current value of one series (0 when never incremented). */
  get(labels: Labels = {}): number {
    return this.#values.get(seriesKey(labels))?.value ?? 0;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} counter`];
    for (const { labels, value } of this.#values.values()) {
      lines.push(`${this.name}${labelText(labels)} ${formatNumber(value)}`);
    }
    return lines.join("\n");
  }
}

/** A value read when scraped (queue depth, uptime). */
export class Gauge implements Metric {
  constructor(readonly name: string, readonly help: string, private readonly read: () => number) {}

  render(): string {
    return `# HELP ${this.name} ${escapeHelp(this.help)}\n# TYPE ${this.name} gauge\n${this.name} ${
      formatNumber(this.read())
    }`;
  }
}

/** Observations counted into cumulative buckets, per label set. */
export class Histogram implements Metric {
  #series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();
  readonly buckets: readonly number[];

  constructor(readonly name: string, readonly help: string, buckets: readonly number[]) {
    // +Inf is always added; every listed bound must be finite and larger than the one before.
    if (buckets.some((b, i) => !Number.isFinite(b) || (i > 0 && !(b > buckets[i - 1])))) {
      throw new Error(`${name}: buckets must be finite and must increase`);
    }
    this.buckets = buckets;
  }

  /** Records one observation. */
  observe(value: number, labels: Labels = {}): void {
    const key = seriesKey(labels);
    let s = this.#series.get(key);
    if (!s) this.#series.set(key, s = { labels, counts: this.buckets.map(() => 0), sum: 0, count: 0 });
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]) s.counts[i]++;
    s.sum += value;
    s.count++;
  }

  /** How many observations one series holds. */
  count(labels: Labels = {}): number {
    return this.#series.get(seriesKey(labels))?.count ?? 0;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} histogram`];
    for (const { labels, counts, sum, count } of this.#series.values()) {
      this.buckets.forEach((b, i) =>
        lines.push(`${this.name}_bucket${labelText(labels, { le: formatNumber(b) })} ${counts[i]}`)
      );
      lines.push(`${this.name}_bucket${labelText(labels, { le: "+Inf" })} ${count}`);
      lines.push(`${this.name}_sum${labelText(labels)} ${formatNumber(sum)}`);
      lines.push(`${this.name}_count${labelText(labels)} ${count}`);
    }
    return lines.join("\n");
  }
}

/** The metrics one server exposes. */
export class ServerMetrics {
  readonly requests = new Counter(
    "distrinews_http_requests_total",
    "HTTP requests by route, method and status.",
  );
  readonly latency = new Histogram(
    "distrinews_http_request_duration_seconds",
    "Time from request to response, by route.",
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  );
  readonly batchSize = new Histogram(
    "distrinews_batch_size",
    "Texts per forward pass (dynamic batching).",
    [1, 2, 4, 8, 16, 32, 64, 128, 256],
  );
  readonly forwardSeconds = new Histogram(
    "distrinews_forward_duration_seconds",
    "Time of one batch's forward pass.",
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  );
  readonly texts = new Counter("distrinews_predictions_total", "Texts classified.");
  readonly #gauges: Gauge[] = [];

  /** Adds a gauge read at scrape time. */
  gauge(name: string, help: string, read: () => number): void {
    this.#gauges.push(new Gauge(name, help, read));
  }

  /** Everything, in Prometheus text format. */
  render(): string {
    const all: Metric[] = [
      this.requests,
      this.latency,
      this.batchSize,
      this.forwardSeconds,
      this.texts,
      ...this.#gauges,
    ];
    return all.map((m) => m.render()).join("\n") + "\n";
  }
}
