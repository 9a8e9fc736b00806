// The Prometheus registry renders valid text exposition format 0.0.4: every line is a well-formed HELP,
// TYPE or sample line (checked by a strict parser below), label values are escaped, and histograms have
// cumulative buckets ending in +Inf == _count, plus _sum.
import assert from "node:assert/strict";
import { Counter, Gauge, Histogram, ServerMetrics } from "./metrics.ts";

const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const LABEL_NAME = "[a-zA-Z_][a-zA-Z0-9_]*";
// Inside quotes: anything but a raw quote, backslash or newline, or one of the three escapes.
const LABEL_VALUE = String.raw`"(?:[^"\\\n]|\\[\\"n])*"`;
const LABEL = `${LABEL_NAME}=${LABEL_VALUE}`;
// A Go ParseFloat value as Prometheus writes and reads it.
const VALUE = String.raw`(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN)`;
const SAMPLE_LINE = new RegExp(`^(${NAME})(?:\\{(${LABEL}(?:,${LABEL})*)\\})? (${VALUE})$`);
// HELP text: escaped backslashes and newlines only.
const HELP_LINE = new RegExp(String.raw`^# HELP (${NAME}) ((?:[^\\\n]|\\[\\n])*)$`);
const TYPE_LINE = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`);
const LABEL_GLOBAL = new RegExp(`(${LABEL_NAME})=(${LABEL_VALUE})`, "g");

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
interface Family {
  help: string;
  type: string;
  samples: Sample[];
}

function unescapeLabel(quoted: string): string {
  return quoted.slice(1, -1).replace(/\\([\\"n])/g, (_, c: string) => (c === "n" ? "\n" : c));
}

function parseValue(text: string): number {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  return Number(text);
}

/**
 * A strict reader of the text format: the text ends with a newline, has no blank lines, every line is a
 * HELP, TYPE or sample line; each family has exactly one HELP then one TYPE before its samples, and its
 * samples follow it (histograms: _bucket, _sum, _count); no series appears twice.
 */
function parseExposition(text: string): Map<string, Family> {
  assert.ok(text.endsWith("\n"), "the exposition ends with a newline");
  const families = new Map<string, Family>();
  const series = new Set<string>();
  let current: { name: string; family: Family } | undefined;
  let pendingHelp: { name: string; help: string } | undefined;
  for (const [n, line] of text.slice(0, -1).split("\n").entries()) {
    const where = `line ${n + 1}: ${JSON.stringify(line)}`;
    let m: RegExpMatchArray | null;
    if ((m = line.match(HELP_LINE))) {
      assert.equal(pendingHelp, undefined, `${where}: two HELP lines in a row`);
      assert.ok(!families.has(m[1]), `${where}: second HELP for ${m[1]}`);
      pendingHelp = { name: m[1], help: m[2] };
    } else if ((m = line.match(TYPE_LINE))) {
      assert.equal(pendingHelp?.name, m[1], `${where}: TYPE without its HELP right before it`);
      assert.ok(!families.has(m[1]), `${where}: second TYPE for ${m[1]}`);
      const family: Family = { help: pendingHelp!.help, type: m[2], samples: [] };
      families.set(m[1], family);
      current = { name: m[1], family };
      pendingHelp = undefined;
    } else if ((m = line.match(SAMPLE_LINE))) {
      assert.equal(pendingHelp, undefined, `${where}: sample between HELP and TYPE`);
      assert.ok(current, `${where}: sample before any TYPE`);
      const [, name, labelText, valueText] = m;
      const allowed = current.family.type === "histogram"
        ? ["_bucket", "_sum", "_count"].map((s) => current!.name + s)
        : [current.name];
      assert.ok(allowed.includes(name), `${where}: sample ${name} under family ${current.name}`);
      const labels: Record<string, string> = {};
      for (const [, key, quoted] of (labelText ?? "").matchAll(LABEL_GLOBAL)) {
        assert.ok(!(key in labels), `${where}: label ${key} twice`);
        labels[key] = unescapeLabel(quoted);
      }
      const id = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
      assert.ok(!series.has(id), `${where}: duplicate series`);
      series.add(id);
      current.family.samples.push({ name, labels, value: parseValue(valueText) });
    } else {
      assert.fail(`${where}: not a valid exposition line`);
    }
  }
  assert.equal(pendingHelp, undefined, "HELP without TYPE at the end");
  return families;
}

/** One family from a single metric's render() (which has no final newline). */
function parseOne(rendered: string): [string, Family] {
  const families = parseExposition(rendered + "\n");
  assert.equal(families.size, 1);
  return [...families][0];
}

/**
 * Per label set of a histogram: le values strictly increase and end with +Inf, bucket counts never
 * decrease, the +Inf bucket equals _count, and there is a _sum. Returns the series by label set.
 */
function checkHistogram(name: string, family: Family) {
  assert.equal(family.type, "histogram");
  const bySet = new Map<string, { le: number[]; counts: number[]; sum?: number; count?: number }>();
  for (const s of family.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const h = bySet.get(key) ?? { le: [], counts: [] };
    bySet.set(key, h);
    if (s.name === `${name}_bucket`) {
      assert.ok(le !== undefined, "a bucket has an le label");
      h.le.push(parseValue(le));
      h.counts.push(s.value);
    } else {
      assert.equal(le, undefined, "only buckets have le");
      if (s.name === `${name}_sum`) h.sum = s.value;
      else h.count = s.value;
    }
  }
  for (const [key, h] of bySet) {
    assert.equal(h.le.at(-1), Infinity, `${key}: the last bucket is +Inf`);
    for (let i = 1; i < h.le.length; i++) assert.ok(h.le[i] > h.le[i - 1], `${key}: le increases`);
    for (let i = 1; i < h.counts.length; i++) assert.ok(h.counts[i] >= h.counts[i - 1], `${key}: cumulative`);
    assert.equal(h.counts.at(-1), h.count, `${key}: +Inf bucket == _count`);
    assert.ok(h.sum !== undefined, `${key}: has _sum`);
  }
  return bySet;
}

Deno.test("metrics: the strict parser itself rejects malformed lines", () => {
  // The checks below are only as good as this parser; show it refuses what it should.
  const bad = [
    '# HELP m h\n# TYPE m counter\nm{a="x} 1\n', // unterminated label value
    '# HELP m h\n# TYPE m counter\nm{a="x\ny"} 1\n', // raw newline in a label value
    '# HELP m h\n# TYPE m counter\nm{a="x"y"} 1\n', // raw quote in a label value
    '# HELP m h\n# TYPE m counter\nm{a="x\\q"} 1\n', // unknown escape
    "# HELP m h\n# TYPE m counter\nm 1,5\n", // bad number
    "# HELP m h\n# TYPE m counter\nm Infinity\n", // JS spelling, not Prometheus'
    "# HELP m h\n# TYPE m counter\nm 1", // no final newline
    "# HELP m h\n# TYPE m counter\n\nm 1\n", // blank line
    "# HELP m h\n# TYPE m thing\nm 1\n", // unknown type
    "# TYPE m counter\nm 1\n", // no HELP
    "# HELP m h\n# TYPE m counter\nother 1\n", // sample outside its family
    "# HELP m h\n# TYPE m counter\nm 1\nm 2\n", // duplicate series
    '# HELP m h\n# TYPE m counter\nm{a="1",b="2"} 1\nm{b="2",a="1"} 2\n', // same series, labels reordered
  ];
  for (const text of bad) assert.throws(() => parseExposition(text), JSON.stringify(text));
  const good = '# HELP m h\n# TYPE m counter\nm{a="x\\\\y\\"z\\n"} 1.5e-7\nm{a="w"} +Inf\n';
  assert.deepEqual(parseExposition(good).get("m")!.samples[0].labels, { a: 'x\\y"z\n' });
});

Deno.test("metrics: a counter renders HELP, TYPE and one sample per label set", () => {
  const c = new Counter("app_events_total", "Events seen.");
  // Never incremented: HELP and TYPE only (still valid).
  assert.equal(c.render(), "# HELP app_events_total Events seen.\n# TYPE app_events_total counter");
  parseOne(c.render());
  c.inc();
  c.inc({ kind: "a" });
  c.inc({ kind: "a" }, 2);
  c.inc({ kind: "b" }, 0.5);
  assert.equal(c.get(), 1);
  assert.equal(c.get({ kind: "a" }), 3);
  assert.equal(c.get({ kind: "b" }), 0.5);
  assert.equal(c.get({ kind: "never" }), 0);
  assert.equal(
    c.render(),
    [
      "# HELP app_events_total Events seen.",
      "# TYPE app_events_total counter",
      "app_events_total 1",
      'app_events_total{kind="a"} 3',
      'app_events_total{kind="b"} 0.5',
    ].join("\n"),
  );
  const [name, family] = parseOne(c.render());
  assert.equal(name, "app_events_total");
  assert.equal(family.type, "counter");
  assert.equal(family.help, "Events seen.");
  assert.deepEqual(family.samples.map((s) => [s.labels, s.value]), [[{}, 1], [{ kind: "a" }, 3], [
    { kind: "b" },
    0.5,
  ]]);
});

Deno.test("metrics: several labels render comma-separated, in the order given", () => {
  const c = new Counter("http_requests_total", "Requests.");
  c.inc({ route: "/predict", method: "POST", status: "200" });
  assert.match(c.render(), /^http_requests_total\{route="\/predict",method="POST",status="200"\} 1$/m);
  const [, family] = parseOne(c.render());
  assert.deepEqual(family.samples[0].labels, { route: "/predict", method: "POST", status: "200" });
});

Deno.test("metrics: label values escape backslash, double quote and newline", () => {
  const c = new Counter("escapes_total", "Escaping.");
  const nasty = 'back\\slash "quoted" new\nline';
  const literalBackslashN = "not a newline: \\n"; // backslash + n: must stay distinct from a real newline
  const realNewline = "not a newline: \n";
  c.inc({ v: nasty });
  c.inc({ v: literalBackslashN });
  c.inc({ v: realNewline });
  c.inc({ v: '\\"' }); // backslash then quote: escaped as \\ then \"
  const lines = c.render().split("\n");
  assert.equal(lines.length, 2 + 4, "an escaped newline does not split the sample line");
  assert.equal(lines[2], String.raw`escapes_total{v="back\\slash \"quoted\" new\nline"} 1`);
  assert.equal(lines[3], String.raw`escapes_total{v="not a newline: \\n"} 1`);
  assert.equal(lines[4], String.raw`escapes_total{v="not a newline: \n"} 1`);
  assert.equal(lines[5], String.raw`escapes_total{v="\\\""} 1`);
  // And the strict parser reads every value back exactly.
  const [, family] = parseOne(c.render());
  assert.deepEqual(family.samples.map((s) => s.labels.v), [nasty, literalBackslashN, realNewline, '\\"']);
});

Deno.test("metrics: unusual label values (empty, unicode, braces, commas) stay well-formed", () => {
  const c = new Counter("odd_total", "Odd values.");
  const values = ["", "ünïcødé ✓", "a,b=c", "{}", "tab\there", '}" 1\n# HELP injected x'];
  for (const v of values) c.inc({ v });
  const [, family] = parseOne(c.render());
  assert.deepEqual(family.samples.map((s) => s.labels.v), values);
});

Deno.test("metrics: numbers render in a format Prometheus parses", () => {
  const c = new Counter("numbers_total", "Numbers.");
  c.inc({ k: "tiny" }, 1.5e-7);
  c.inc({ k: "huge" }, 1e21);
  c.inc({ k: "frac" }, 0.1);
  c.inc({ k: "frac" }, 0.2);
  c.inc({ k: "inf" }, Infinity);
  const [, family] = parseOne(c.render());
  assert.deepEqual(family.samples.map((s) => s.value), [1.5e-7, 1e21, 0.1 + 0.2, Infinity]);
  assert.match(c.render(), /^numbers_total\{k="inf"\} \+Inf$/m);
});

Deno.test("metrics: a gauge is read when rendered", () => {
  let depth = 3;
  const g = new Gauge("queue_depth", "Items waiting.", () => depth);
  assert.equal(g.render(), "# HELP queue_depth Items waiting.\n# TYPE queue_depth gauge\nqueue_depth 3");
  depth = 7;
  const [, family] = parseOne(g.render());
  assert.equal(family.type, "gauge");
  assert.deepEqual(family.samples, [{ name: "queue_depth", labels: {}, value: 7 }]);
  // Non-finite readings use Prometheus' spellings.
  for (
    const [value, text] of [[NaN, "NaN"], [Infinity, "+Inf"], [-Infinity, "-Inf"], [-2.5, "-2.5"]] as const
  ) {
    depth = value;
    assert.ok(g.render().endsWith(`\nqueue_depth ${text}`), text);
    parseOne(g.render());
  }
});

Deno.test("metrics: histogram buckets are cumulative, inclusive, and +Inf equals the count", () => {
  const h = new Histogram("latency_seconds", "Latency.", [0.1, 0.5, 1]);
  for (const v of [0.05, 0.1, 0.3, 0.5, 0.7, 1, 2, 30]) h.observe(v);
  assert.equal(h.count(), 8);
  assert.equal(
    h.render(),
    [
      "# HELP latency_seconds Latency.",
      "# TYPE latency_seconds histogram",
      'latency_seconds_bucket{le="0.1"} 2', // 0.05, 0.1 (le is inclusive)
      'latency_seconds_bucket{le="0.5"} 4', // + 0.3, 0.5
      'latency_seconds_bucket{le="1"} 6', // + 0.7, 1
      'latency_seconds_bucket{le="+Inf"} 8', // + 2, 30
      `latency_seconds_sum ${0.05 + 0.1 + 0.3 + 0.5 + 0.7 + 1 + 2 + 30}`,
      "latency_seconds_count 8",
    ].join("\n"),
  );
  const [name, family] = parseOne(h.render());
  const series = checkHistogram(name, family);
  const only = [...series.values()][0];
  assert.deepEqual(only.le, [0.1, 0.5, 1, Infinity]);
  assert.deepEqual(only.counts, [2, 4, 6, 8]);
  assert.equal(only.count, 8);
  assert.ok(Math.abs(only.sum! - 34.65) < 1e-9);
});

Deno.test("metrics: histogram series are kept per label set; le comes after the other labels", () => {
  const h = new Histogram("req_seconds", "Per route.", [1, 2]);
  h.observe(0.5, { route: "/a" });
  h.observe(1.5, { route: "/a" });
  h.observe(3, { route: "/b" });
  assert.equal(h.count({ route: "/a" }), 2);
  assert.equal(h.count({ route: "/b" }), 1);
  assert.equal(h.count(), 0);
  assert.match(h.render(), /^req_seconds_bucket\{route="\/a",le="1"\} 1$/m);
  assert.match(h.render(), /^req_seconds_sum\{route="\/a"\} 2$/m);
  assert.match(h.render(), /^req_seconds_count\{route="\/b"\} 1$/m);
  const [name, family] = parseOne(h.render());
  const series = checkHistogram(name, family);
  assert.equal(series.size, 2);
  assert.deepEqual([...series.values()].map((s) => s.counts), [[1, 2, 2], [0, 0, 1]]);
});

Deno.test("metrics: a histogram without observations renders HELP and TYPE only", () => {
  const h = new Histogram("empty_seconds", "Nothing yet.", [1]);
  assert.equal(h.render(), "# HELP empty_seconds Nothing yet.\n# TYPE empty_seconds histogram");
  parseOne(h.render());
});

Deno.test("metrics: a histogram with no finite buckets still has +Inf, _sum and _count", () => {
  const h = new Histogram("plain", "Just count and sum.", []);
  h.observe(4);
  h.observe(-1);
  const [name, family] = parseOne(h.render());
  const only = [...checkHistogram(name, family).values()][0];
  assert.deepEqual(only.counts, [2]);
  assert.equal(only.sum, 3);
});

Deno.test("metrics: histogram buckets must increase, or the constructor throws", () => {
  for (const buckets of [[1, 1], [2, 1], [0.1, 0.5, 0.5, 1], [1, 2, 3, 0]]) {
    assert.throws(
      () => new Histogram("bad", "Bad.", buckets),
      /bad: buckets must be finite and must increase/,
      String(buckets),
    );
  }
  for (const buckets of [[], [1], [-1, 0, 1e-9, 1]]) new Histogram("ok", "Ok.", buckets);
});

Deno.test("metrics: buckets containing NaN do not increase, so the constructor throws", () => {
  // A check written as `b <= previous` would be false for every comparison with NaN and accept [1, NaN, 2];
  // no observation would ever count in the NaN bucket (le="NaN" 0 after le="1" 1: not cumulative).
  assert.throws(
    () => new Histogram("nan", "NaN bucket.", [1, NaN, 2]),
    /buckets must be finite and must increase/,
  );
});

Deno.test("metrics: ServerMetrics renders a complete, valid exposition", () => {
  const m = new ServerMetrics();
  let queued = 2;
  m.gauge("distrinews_queue_depth", "Texts waiting for a batch.", () => queued);
  m.gauge("distrinews_uptime_seconds", "Seconds since the server started.", () => 12.5);
  // What app.ts and serve.ts record.
  m.requests.inc({ route: "/predict", method: "POST", status: "200" });
  m.requests.inc({ route: "/predict", method: "POST", status: "200" });
  m.requests.inc({ route: "unmatched", method: "GET", status: "404" });
  m.latency.observe(0.012, { route: "/predict" });
  m.latency.observe(0.2, { route: "/predict" });
  m.latency.observe(0.001, { route: "unmatched" });
  m.batchSize.observe(3);
  m.forwardSeconds.observe(0.04);
  m.forwardSeconds.observe(7); // beyond the last finite bucket: only in +Inf
  m.texts.inc({}, 3);
  queued = 5; // gauges are read at render time

  const text = m.render();
  assert.ok(text.endsWith("\n") && !text.endsWith("\n\n"), "exactly one final newline");
  const families = parseExposition(text);
  assert.deepEqual(
    [...families].map(([name, f]) => [name, f.type]),
    [
      ["distrinews_http_requests_total", "counter"],
      ["distrinews_http_request_duration_seconds", "histogram"],
      ["distrinews_batch_size", "histogram"],
      ["distrinews_forward_duration_seconds", "histogram"],
      ["distrinews_predictions_total", "counter"],
      ["distrinews_queue_depth", "gauge"],
      ["distrinews_uptime_seconds", "gauge"],
    ],
  );
  for (const [name, family] of families) {
    assert.ok(family.help.length > 0, `${name} has help text`);
    if (family.type === "histogram") checkHistogram(name, family);
  }
  const requests = families.get("distrinews_http_requests_total")!.samples;
  assert.deepEqual(requests.map((s) => [s.labels.status, s.value]), [["200", 2], ["404", 1]]);
  const latency = checkHistogram(
    "distrinews_http_request_duration_seconds",
    families.get("distrinews_http_request_duration_seconds")!,
  );
  assert.deepEqual([...latency.values()].map((s) => s.count), [2, 1]);
  const forward = [
    ...checkHistogram(
      "distrinews_forward_duration_seconds",
      families.get("distrinews_forward_duration_seconds")!,
    ).values(),
  ][0];
  assert.equal(forward.counts.at(-2), 1, "7 s is above the 5 s bucket");
  assert.equal(forward.counts.at(-1), 2);
  assert.equal(families.get("distrinews_predictions_total")!.samples[0].value, 3);
  assert.equal(families.get("distrinews_queue_depth")!.samples[0].value, 5);
  assert.equal(families.get("distrinews_uptime_seconds")!.samples[0].value, 12.5);
});

Deno.test("metrics: a fresh ServerMetrics renders valid text with no samples", () => {
  const text = new ServerMetrics().render();
  const families = parseExposition(text);
  assert.equal(families.size, 5);
  for (const family of families.values()) assert.deepEqual(family.samples, []);
});
