import assert from "node:assert/strict";
import { join } from "node:path";
import { AG_NEWS_LABELS } from "../model/labels.ts";
import { pythonJson as python, rng, tempDir } from "../tests/helpers.ts";
import {
  classificationReport,
  ConfusionMatrix,
  f1Score,
  type MetricsRecord,
  MetricsWriter,
  parseMetrics,
  readMetrics,
  RunningMetrics,
} from "./metrics.ts";

// sklearn is not installed, so this is sklearn 1.3+'s precision_recall_fscore_support transcribed to numpy:
// labels = unique_labels(y_true, y_pred) unless given; per-class tp/pred/true sums by bincount; _prf_divide
// with zero_division=0; F = (1 + b²)·tp / (b²·true + pred); macro = np.average over the labels.
const SKLEARN_REFERENCE = `
import json, sys
import numpy as np
def prf_divide(num, den):
    num = np.asarray(num, dtype=np.float64); den = np.asarray(den, dtype=np.float64).copy()
    mask = den == 0.0
    den[mask] = 1
    out = num / den
    out[mask] = 0.0
    return out
def prfs(y_true, y_pred, labels=None, beta=1.0):
    y_true = np.asarray(y_true, dtype=np.int64); y_pred = np.asarray(y_pred, dtype=np.int64)
    if labels is None:
        labels = np.unique(np.concatenate([y_true, y_pred]))
    labels = np.asarray(labels, dtype=np.int64)
    n = int(max(labels.max(initial=0), y_true.max(initial=0), y_pred.max(initial=0))) + 1
    tp = np.bincount(y_true[y_true == y_pred], minlength=n)[labels]
    pred = np.bincount(y_pred, minlength=n)[labels]
    true = np.bincount(y_true, minlength=n)[labels]
    b2 = beta * beta
    precision = prf_divide(tp, pred)
    recall = prf_divide(tp, true)
    f = prf_divide((1 + b2) * tp, b2 * true + pred)
    return precision, recall, f, true
out = []
for case in json.load(sys.stdin):
    p, r, f, s = prfs(case["y_true"], case["y_pred"], case.get("labels"))
    out.append({"precision": p.tolist(), "recall": r.tolist(), "f1": f.tolist(), "support": s.tolist(),
                "macro_f1": float(np.average(f)), "macro_p": float(np.average(p)), "macro_r": float(np.average(r))})
print(json.dumps(out))
`;

interface F1Case {
  k: number;
  y_true: number[];
  y_pred: number[];
  labels?: number[];
}

function randomCase(seed: number, k: number, n: number, skill: number, absent: number[] = []): F1Case {
  const rand = rng(seed);
  const allowed = Array.from({ length: k }, (_, c) => c).filter((c) => !absent.includes(c));
  const pick = () => allowed[Math.floor(rand() * allowed.length)];
  const y_true = Array.from({ length: n }, pick);
  const y_pred = y_true.map((y) => rand() < skill ? y : pick());
  return { k, y_true, y_pred };
}

const F1_CASES: F1Case[] = [
  randomCase(1, 4, 1000, 0.9),
  randomCase(2, 4, 37, 0.5),
  randomCase(3, 4, 200, 0.0),
  randomCase(4, 4, 50, 0.7, [2]), // class 2 in neither array: sklearn drops it from the macro average
  { ...randomCase(4, 4, 50, 0.7, [2]), labels: [0, 1, 2, 3] }, // ... unless labels= names it: F1 0
  randomCase(5, 11, 3000, 0.6),
  randomCase(6, 17, 500, 0.3, [0, 5, 16]),
  { k: 4, y_true: [0, 0, 0], y_pred: [1, 1, 1] }, // class 0 never predicted, class 1 never true
  { k: 4, y_true: [3, 3], y_pred: [3, 3] },
  { k: 4, y_true: [0, 1, 2, 3], y_pred: [0, 1, 2, 3] },
  { k: 4, y_true: [0, 1, 2, 3, 1], y_pred: [1, 2, 3, 0, 1], labels: [3, 1] },
];

Deno.test("precision/recall/F1 per class and macro equal sklearn's formulas (numpy reference)", async () => {
  const ref = await python(SKLEARN_REFERENCE, F1_CASES) as {
    precision: number[];
    recall: number[];
    f1: number[];
    support: number[];
    macro_f1: number;
    macro_p: number;
    macro_r: number;
  }[];
  F1_CASES.forEach((c, i) => {
    const cm = new ConfusionMatrix(c.k).add(c.y_true, c.y_pred);
    const report = classificationReport(cm, { labels: c.labels ?? "present" });
    const pick = (f: (s: (typeof report.perClass)[number]) => number) =>
      report.labels.map((l) => f(report.perClass[l]));
    const what = `case ${i}`;
    // Per class: the same single division in both, so bit-identical.
    assert.deepEqual(pick((s) => s.f1), ref[i].f1, what);
    assert.deepEqual(pick((s) => s.precision), ref[i].precision, what);
    assert.deepEqual(pick((s) => s.recall), ref[i].recall, what);
    assert.deepEqual(pick((s) => s.support), ref[i].support, what);
    // Macro: numpy sums pairwise beyond 8 terms, so allow the last ulp or two.
    for (
      const [ours, theirs] of [
        [report.macroF1, ref[i].macro_f1],
        [report.macroPrecision, ref[i].macro_p],
        [report.macroRecall, ref[i].macro_r],
      ]
    ) assert.ok(Math.abs(ours - theirs) <= 1e-15, `${what}: ${ours} vs ${theirs}`);
    if (!c.labels) {
      assert.deepEqual(f1Score(c.y_true, c.y_pred, c.k, null), ref[i].f1);
      assert.ok(Math.abs(f1Score(c.y_true, c.y_pred, c.k, "macro") - ref[i].macro_f1) <= 1e-15);
    }
  });
});

Deno.test("hand-checked report: 2 classes, known counts", () => {
  // true 0 0 0 1 1, pred 0 0 1 1 0: class 0 tp 2 fp 1 fn 1, class 1 tp 1 fp 1 fn 1.
  const cm = new ConfusionMatrix(2).add([0, 0, 0, 1, 1], [0, 0, 1, 1, 0]);
  assert.deepEqual(Array.from(cm.counts), [2, 1, 1, 1]);
  const r = classificationReport(cm);
  assert.deepEqual(r.perClass[0], { precision: 2 / 3, recall: 2 / 3, f1: 4 / 6, support: 3, predicted: 3 });
  assert.deepEqual(r.perClass[1], { precision: 0.5, recall: 0.5, f1: 0.5, support: 2, predicted: 2 });
  assert.equal(r.macroF1, (4 / 6 + 0.5) / 2);
  assert.equal(r.accuracy, 3 / 5);
  assert.equal(r.total, 5);
  const empty = classificationReport(new ConfusionMatrix(4));
  assert.deepEqual(empty.labels, []);
  assert.ok(Number.isNaN(empty.macroF1) && Number.isNaN(empty.accuracy));
  assert.equal(classificationReport(new ConfusionMatrix(4), { labels: "all" }).macroF1, 0);
});

Deno.test("confusion matrix: rows are true labels, ids are checked before counting, merge and round trip", () => {
  const cm = new ConfusionMatrix(AG_NEWS_LABELS.length).add(new Int32Array([0, 1, 2, 3, 3]), [0, 2, 2, 3, 1]);
  assert.equal(cm.get(1, 2), 1);
  assert.equal(cm.get(2, 1), 0);
  assert.equal(cm.get(3, 1), 1);
  assert.throws(() => cm.add([0, 4], [0, 0]), /label 4 at row 1/);
  assert.throws(() => cm.add([0], [-1]), /prediction -1/);
  assert.throws(() => cm.add([0, 1], [0]), RangeError);
  assert.equal(cm.total, 5, "a refused batch must not be half counted");
  const other = new ConfusionMatrix(4).add([1], [1]);
  const merged = ConfusionMatrix.fromArray(cm.toArray()).merge(other);
  assert.equal(merged.total, 6);
  assert.equal(merged.get(1, 1), 1);
  assert.equal(cm.get(1, 1), 0, "fromArray copies");
  assert.equal(merged.accuracy, 4 / 6);
  assert.throws(() => ConfusionMatrix.fromArray(new Float64Array(5)), /square/);
  assert.throws(() => cm.merge(new ConfusionMatrix(3)), RangeError);
});

Deno.test("running metrics: row-weighted loss, accuracy, flatten + sum + restore as an all-reduce would", () => {
  const rankA = new RunningMetrics().add({ loss: 1.0, correct: 3, count: 4 }).add({
    loss: 0.5,
    correct: 1,
    count: 2,
  });
  const rankB = new RunningMetrics().add({ loss: 2.0, correct: 0, count: 2 }).add({
    loss: NaN,
    correct: 0,
    count: 0,
  });
  assert.equal(rankA.meanLoss, (4 * 1.0 + 2 * 0.5) / 6);
  assert.equal(rankA.accuracy, 4 / 6);
  const a = rankA.toArray();
  const b = rankB.toArray();
  assert.ok(a instanceof Float64Array && a.length === RunningMetrics.LENGTH);
  const summed = a.map((v, i) => v + b[i]); // what all_reduce(SUM) yields on every rank
  const global = RunningMetrics.fromArray(summed);
  assert.equal(global.count, 8);
  assert.equal(global.correct, 4);
  assert.equal(global.meanLoss, (5 + 4) / 8);
  assert.equal(global.accuracy, 0.5);
  assert.deepEqual(global.toArray(), new RunningMetrics().merge(rankA).merge(rankB).toArray());
  assert.ok(Number.isNaN(new RunningMetrics().meanLoss) && Number.isNaN(new RunningMetrics().accuracy));
  assert.equal(rankA.reset().count, 0);
  assert.throws(() => RunningMetrics.fromArray([1, 2]), RangeError);
  assert.throws(() => new RunningMetrics().add({ loss: 1, correct: 3, count: 2 }), RangeError);
});

Deno.test("metrics writer: one JSON object per line, on disk after each write, append keeps old lines", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "metrics.jsonl");
  const now = () => Date.UTC(2026, 0, 2, 3, 4, 5);
  const step: MetricsRecord = { event: "step", epoch: 1, step: 10, loss: 0.7, lr: 2e-5, grad_norm: 1.5 };
  {
    using w = await MetricsWriter.open(path, { now });
    w.write(step);
    // Visible before close: each record is its own write, not a buffer waiting for close.
    assert.equal(
      await Deno.readTextFile(path),
      JSON.stringify({ ...step, time: "2026-01-02T03:04:05.000Z" }) + "\n",
    );
    w.write({
      event: "epoch",
      epoch: 1,
      step: 10,
      train_loss: NaN,
      train_accuracy: 0.5,
      samples: 80,
      seconds: 3,
    });
    assert.throws(() => w.write({ event: "nope" } as unknown as MetricsRecord), /unknown event/);
  }
  {
    using w = await MetricsWriter.open(path, { append: true, now });
    w.write({
      event: "eval",
      epoch: 1,
      step: 10,
      eval_loss: 0.4,
      eval_accuracy: 0.9,
      eval_macro_f1: 0.89,
      samples: 7600,
      time: "kept",
      eval_f1_per_class: { World: 0.9, Sports: 0.95, Business: 0.85, "Sci/Tech": 0.86 },
    });
    w.close();
    assert.throws(() => w.write(step), /closed/);
  }
  const text = await Deno.readTextFile(path);
  assert.equal(text.split("\n").length, 4, "three lines and a final newline");
  const records = await readMetrics(path);
  assert.deepEqual(records.map((r) => r.event), ["step", "epoch", "eval"]);
  assert.equal((records[1] as { train_loss: unknown }).train_loss, null, "NaN is written as null");
  assert.equal(records[2].time, "kept");
  // Truncating open starts over.
  (await MetricsWriter.open(path)).close();
  assert.equal(await Deno.readTextFile(path), "");
});

Deno.test("parseMetrics drops only a torn last line", () => {
  const good = '{"event":"step","epoch":1,"step":1,"loss":1,"lr":0}\n';
  assert.equal(parseMetrics(good + '{"event":"st').length, 1);
  assert.equal(parseMetrics(good + "\n\n").length, 1);
  assert.throws(() => parseMetrics('{"event":\n' + good), /line 1/);
  assert.throws(() => parseMetrics(good + "{bad}\n"), /line 2/);
});
