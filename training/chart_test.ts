import assert from "node:assert/strict";
import { type EpochPoint, escapeXml, niceDomain, niceStep, pointsFromMetrics, renderChart } from "./chart.ts";
import type { MetricsRecord } from "./metrics.ts";

interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  text: string;
}

const NAME = "[A-Za-z_][\\w.:-]*";
const ENTITY = /&(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);/y;

function checkText(s: string, where: string): string {
  for (let i = 0; i < s.length; i++) {
    if (s[i] === "<") throw new Error(`raw < in ${where}`);
    if (s[i] === "&") {
      ENTITY.lastIndex = i;
      if (!ENTITY.test(s)) throw new Error(`bad entity in ${where}: ${s.slice(i, i + 10)}`);
    }
  }
  return s.replace(
    /&(amp|lt|gt|quot|apos);/g,
    (_, e: string) => ({ amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" } as Record<string, string>)[e],
  );
}

/**
 * A strict little XML well-formedness parser, enough for SVG: one root, balanced tags, quoted unique
 * attributes, escaped text. Throws on the first problem.
 */
function parseXml(xml: string): XmlElement {
  const tag = new RegExp(`<(/?)(${NAME})((?:\\s+${NAME}\\s*=\\s*(?:"[^"]*"|'[^']*'))*)\\s*(/?)>`, "y");
  const attr = new RegExp(`(${NAME})\\s*=\\s*(?:"([^"]*)"|'([^']*)')`, "g");
  const stack: XmlElement[] = [{ name: "#document", attrs: {}, children: [], text: "" }];
  let i = 0;
  while (i < xml.length) {
    const lt = xml.indexOf("<", i);
    const text = xml.slice(i, lt < 0 ? xml.length : lt);
    if (text.trim() !== "") {
      if (stack.length === 1) throw new Error(`text outside the root: ${text.slice(0, 20)}`);
      stack.at(-1)!.text += checkText(text, "text");
    }
    if (lt < 0) break;
    if (xml.startsWith("<!--", lt)) {
      i = xml.indexOf("-->", lt) + 3;
      if (i < 3) throw new Error("unterminated comment");
      continue;
    }
    tag.lastIndex = lt;
    const m = tag.exec(xml);
    if (!m) throw new Error(`malformed tag at ${lt}: ${xml.slice(lt, lt + 40)}`);
    const [, close, name, attrText, selfClose] = m;
    if (close) {
      const open = stack.pop()!;
      if (open.name !== name || attrText || selfClose) throw new Error(`</${name}> closes <${open.name}>`);
    } else {
      const attrs: Record<string, string> = {};
      for (const a of attrText.matchAll(attr)) {
        if (a[1] in attrs) throw new Error(`duplicate attribute ${a[1]} on <${name}>`);
        attrs[a[1]] = checkText(a[2] ?? a[3], `attribute ${a[1]}`);
      }
      const el = { name, attrs, children: [], text: "" };
      if (stack.length === 1 && stack[0].children.length > 0) throw new Error("a second root element");
      stack.at(-1)!.children.push(el);
      if (!selfClose) stack.push(el);
    }
    i = tag.lastIndex;
  }
  if (stack.length !== 1) throw new Error(`unclosed <${stack.at(-1)!.name}>`);
  if (stack[0].children.length !== 1) throw new Error("no root element");
  return stack[0].children[0];
}

function all(el: XmlElement, pred: (e: XmlElement) => boolean): XmlElement[] {
  return [...(pred(el) ? [el] : []), ...el.children.flatMap((c) => all(c, pred))];
}

function one(el: XmlElement, pred: (e: XmlElement) => boolean, what: string): XmlElement {
  const found = all(el, pred);
  assert.equal(found.length, 1, `${what}: ${found.length} matches`);
  return found[0];
}

const cls = (c: string) => (e: XmlElement) => (e.attrs.class ?? "").split(" ").includes(c);
const series = (name: string) => (e: XmlElement) => e.attrs["data-series"] === name && cls("series")(e);
const textOf = (e: XmlElement): string => e.text + e.children.map(textOf).join("");

/** [x, y] of each marker of a series, in document order. */
function markers(root: XmlElement, name: string): [number, number][] {
  return one(root, series(name), name).children.filter((c) => c.name === "circle")
    .map((c) => [Number(c.attrs.cx), Number(c.attrs.cy)]);
}

const RUN: EpochPoint[] = [
  { epoch: 1, trainLoss: 0.62, trainAccuracy: 0.78, evalLoss: 0.35, evalAccuracy: 0.885 },
  { epoch: 2, trainLoss: 0.28, trainAccuracy: 0.905, evalLoss: 0.27, evalAccuracy: 0.911 },
  { epoch: 3, trainLoss: 0.19, trainAccuracy: 0.936, evalLoss: 0.26, evalAccuracy: 0.917 },
  { epoch: 4, trainLoss: 0.13, trainAccuracy: 0.957, evalLoss: 0.29, evalAccuracy: 0.915 },
];

Deno.test("the XML checker itself refuses broken documents", () => {
  for (
    const bad of [
      "<svg><g></svg>",
      "<svg a=1/>",
      '<svg a="1" a="2"/>',
      "<svg>a < b</svg>",
      "<svg>AT&T</svg>",
      "<svg/><svg/>",
      '<svg a="<"/>',
      "text<svg/>",
    ]
  ) assert.throws(() => parseXml(bad), Error, bad);
  assert.equal(parseXml('<svg a="&amp;"><t>x &lt; y</t></svg>').children[0].text, "x < y");
});

Deno.test("a 4-epoch chart: well-formed SVG, two panels, axes, ticks, legend, and the series where expected", () => {
  const svg = renderChart(RUN, { title: "DistilBERT <small> & AG News" });
  const root = parseXml(svg);
  assert.equal(root.name, "svg");
  assert.equal(root.attrs.xmlns, "http://www.w3.org/2000/svg");
  assert.equal(root.attrs.viewBox, "0 0 900 380");
  assert.equal(
    textOf(one(root, (e) => e.name === "title" && e === root.children[0], "title")),
    "DistilBERT <small> & AG News",
  );
  assert.ok(svg.includes("DistilBERT &lt;small&gt; &amp; AG News"));

  const panels = all(root, cls("panel"));
  assert.deepEqual(panels.map((p) => p.attrs["data-panel"]), ["loss", "accuracy"]);
  for (const panel of panels) {
    one(panel, cls("frame"), "frame");
    const xLabels = one(panel, cls("x-axis"), "x axis").children.filter((c) => c.name === "text");
    assert.deepEqual(xLabels.map(textOf), ["1", "2", "3", "4", "epoch"]);
    const yAxis = one(panel, cls("y-axis"), "y axis");
    assert.ok(all(yAxis, cls("tick")).length >= 3, "at least 3 y ticks");
    assert.equal(all(yAxis, cls("tick")).length, all(yAxis, cls("grid")).length);
    assert.equal(textOf(one(yAxis, cls("axis-label"), "y label")), panel.attrs["data-panel"]);
  }
  const accTicks = all(
    one(panels[1], cls("y-axis"), "acc axis"),
    (e) => e.name === "text" && !cls("axis-label")(e),
  );
  for (const t of accTicks) assert.match(textOf(t), /^\d+(\.\d+)?%$/);
  const lossTicks = all(
    one(panels[0], cls("y-axis"), "loss axis"),
    (e) => e.name === "text" && !cls("axis-label")(e),
  )
    .map((t) => Number(textOf(t)));
  assert.ok(lossTicks[0] <= 0.13 && lossTicks.at(-1)! >= 0.62, `loss ticks ${lossTicks} cover the data`);

  assert.deepEqual(all(root, cls("legend-entry")).map((e) => textOf(e)), ["train", "eval"]);
  for (const name of ["train-loss", "eval-loss", "train-accuracy", "eval-accuracy"]) {
    const g = one(root, series(name), name);
    assert.equal(g.attrs["data-points"], "4");
    const path = one(g, (e) => e.name === "path", `${name} path`);
    assert.match(path.attrs.d, /^M[\d.]+ [\d.]+( L[\d.]+ [\d.]+){3}$/, "one unbroken line of 4 points");
  }
  // Geometry: x grows with the epoch; SVG y grows downwards, so a falling loss has rising y.
  const trainLoss = markers(root, "train-loss");
  for (let i = 1; i < 4; i++) {
    assert.ok(trainLoss[i][0] > trainLoss[i - 1][0]);
    assert.ok(trainLoss[i][1] > trainLoss[i - 1][1], "train loss falls");
  }
  const evalLoss = markers(root, "eval-loss");
  assert.ok(evalLoss[3][1] < evalLoss[2][1], "eval loss rises in epoch 4");
  assert.deepEqual(evalLoss.map((p) => p[0]), trainLoss.map((p) => p[0]), "same epochs, same x");
  // Both panels are laid out alike: the accuracy panel is the loss panel shifted right.
  const shift = markers(root, "train-accuracy")[0][0] - trainLoss[0][0];
  assert.ok(shift > 300);
  // Ticks and markers share one scale: reading a marker's y off the first and last tick gives its value.
  for (
    const [panel, name, values] of [[0, "train-loss", RUN.map((p) => p.trainLoss!)], [
      1,
      "eval-accuracy",
      RUN.map((p) => p.evalAccuracy!),
    ]] as const
  ) {
    const yAxis = one(panels[panel], cls("y-axis"), "y axis");
    const ticks = all(yAxis, (e) => e.name === "text" && !cls("axis-label")(e))
      .map((t) => [Number(textOf(t).replace("%", "")) / (panel === 1 ? 100 : 1), Number(t.attrs.y)]);
    const [[v0, y0], [v1, y1]] = [ticks[0], ticks.at(-1)!];
    markers(root, name).forEach(([, y], i) => {
      const read = v0 + ((y - y0) / (y1 - y0)) * (v1 - v0);
      assert.ok(
        Math.abs(read - values[i]) < 1e-3,
        `${name} epoch ${i + 1}: marker reads ${read}, value ${values[i]}`,
      );
    });
  }
  // Each marker sits on its epoch's x tick.
  const xTicks = all(one(panels[0], cls("x-axis"), "x axis"), cls("tick")).map((t) => Number(t.attrs.x1));
  assert.deepEqual(trainLoss.map(([x]) => x), xTicks);
  // The markers span the plot: the first and last epochs sit just inside the frame's left and right edges.
  const lossFrame = one(panels[0], cls("frame"), "frame");
  const [fx, fw] = [Number(lossFrame.attrs.x), Number(lossFrame.attrs.width)];
  assert.ok(trainLoss[0][0] > fx && trainLoss[0][0] - fx < 0.05 * fw, `first marker x ${trainLoss[0][0]}`);
  assert.ok(
    trainLoss[3][0] < fx + fw && fx + fw - trainLoss[3][0] < 0.05 * fw,
    `last marker x ${trainLoss[3][0]}`,
  );
  // Tooltips carry the values.
  assert.ok(svg.includes("<title>eval accuracy, epoch 3: 91.70%</title>"));
  assert.ok(svg.includes("<title>train loss, epoch 1: 0.6200</title>"));
});

Deno.test("one epoch: centred markers, no lines to nowhere", () => {
  const root = parseXml(
    renderChart([{ epoch: 1, trainLoss: 0.5, trainAccuracy: 0.8, evalLoss: 0.4, evalAccuracy: 0.85 }]),
  );
  const [[x, y]] = markers(root, "train-loss");
  const frame = one(all(root, cls("panel"))[0], cls("frame"), "frame");
  assert.equal(x, Number(frame.attrs.x) + Number(frame.attrs.width) / 2);
  assert.ok(y > Number(frame.attrs.y) && y < Number(frame.attrs.y) + Number(frame.attrs.height));
  assert.match(one(root, series("eval-loss"), "eval").children[0].attrs.d, /^M[\d.]+ [\d.]+$/);
  assert.deepEqual(
    one(all(root, cls("panel"))[0], cls("x-axis"), "x").children.filter((c) => c.name === "text").map(textOf),
    [
      "1",
      "epoch",
    ],
  );
});

Deno.test("NaN, null and Infinity break the line; a constant series draws flat in the middle", () => {
  const svg = renderChart([
    { epoch: 1, trainLoss: 0.9, evalLoss: 0.5, trainAccuracy: 0.9 },
    { epoch: 2, trainLoss: NaN, evalLoss: 0.5, trainAccuracy: 0.9 },
    { epoch: 3, trainLoss: 0.5, evalLoss: 0.5, trainAccuracy: 0.9 },
    { epoch: 4, trainLoss: 0.4, evalLoss: 0.5, trainAccuracy: 0.9 },
    { epoch: 5, trainLoss: Infinity, evalLoss: null, trainAccuracy: 0.9 },
  ]);
  assert.ok(!/NaN|Infinity|undefined|null/.test(svg), "no non-numbers leak into the SVG");
  const root = parseXml(svg);
  const trainLoss = one(root, series("train-loss"), "train loss");
  assert.equal(trainLoss.attrs["data-points"], "3");
  assert.match(
    trainLoss.children[0].attrs.d,
    /^M[\d.]+ [\d.]+ M[\d.]+ [\d.]+ L[\d.]+ [\d.]+$/,
    "gap after epoch 1",
  );
  // Constant eval loss and train accuracy: one y for every marker, strictly inside the frame.
  for (const name of ["eval-loss", "train-accuracy"]) {
    const ys = new Set(markers(root, name).map((p) => p[1]));
    assert.equal(ys.size, 1, name);
  }
  const accPanel = all(root, cls("panel"))[1];
  const frame = one(accPanel, cls("frame"), "frame");
  const [[, y]] = markers(root, "train-accuracy");
  const mid = Number(frame.attrs.y) + Number(frame.attrs.height) / 2;
  assert.ok(Math.abs(y - mid) < 1, `constant series at y ${y}, panel middle ${mid}`);
  assert.equal(all(root, series("eval-accuracy")).length, 0, "no eval accuracy at all: no series");
  assert.equal(all(root, cls("no-data")).length, 0);
});

Deno.test("no data at all still renders two panels saying so", () => {
  for (
    const points of [[], [{ epoch: 1 }], [{ epoch: 1, trainLoss: NaN, evalAccuracy: null }]] as EpochPoint[][]
  ) {
    const root = parseXml(renderChart(points));
    assert.equal(all(root, cls("panel")).length, 2);
    assert.equal(all(root, cls("no-data")).length, 2);
    assert.equal(all(root, cls("series")).length, 0);
    assert.equal(all(root, cls("legend-entry")).length, 0);
    const xTicks = all(root, (e) => cls("tick")(e) && e.attrs.y1 !== e.attrs.y2).length;
    assert.equal(xTicks, points.length === 0 ? 0 : 2, "x ticks only for epochs that exist");
  }
});

Deno.test("legend lists only splits with data; unsorted input is sorted by epoch", () => {
  const root = parseXml(renderChart([{ epoch: 2, trainLoss: 0.3 }, { epoch: 1, trainLoss: 0.6 }]));
  assert.deepEqual(all(root, cls("legend-entry")).map((e) => e.attrs["data-series"]), ["train"]);
  const [a, b] = markers(root, "train-loss");
  assert.ok(a[0] < b[0] && a[1] < b[1], "epoch 1 (0.6) left of and above epoch 2 (0.3)");
});

Deno.test("many epochs thin the x ticks", () => {
  const points = Array.from({ length: 60 }, (_, i) => ({ epoch: i + 1, trainLoss: 1 / (i + 1) }));
  const root = parseXml(renderChart(points));
  const labels = one(all(root, cls("panel"))[0], cls("x-axis"), "x").children.filter((c) => c.name === "text")
    .map(textOf);
  assert.ok(labels.length <= 13, `${labels.length} ticks`);
  assert.deepEqual(labels.slice(0, 3), ["5", "10", "15"]);
});

Deno.test("nice ticks", () => {
  assert.equal(niceStep(1), 0.2);
  assert.equal(niceStep(0.49), 0.1);
  assert.equal(niceStep(30), 5);
  assert.deepEqual(niceDomain([0.13, 0.62]).ticks, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]);
  assert.deepEqual(niceDomain([-0.15, 0.05]).ticks, [-0.15, -0.1, -0.05, 0, 0.05]);
  assert.ok(!Object.is(niceDomain([-0.15, 0.05]).ticks[3], -0), "no -0 tick");
  const flat = niceDomain([0.9, 0.9]);
  assert.ok(flat.min < 0.9 && flat.max > 0.9);
  const zero = niceDomain([0, 0]);
  assert.ok(zero.min < 0 && zero.max > 0);
  assert.equal(escapeXml(`a<b>&"c'`), "a&lt;b&gt;&amp;&quot;c&apos;");
});

Deno.test("points from a metrics log: epoch and eval records joined by epoch, later ones win", () => {
  const records: MetricsRecord[] = [
    { event: "step", epoch: 1, step: 5, loss: 1, lr: 1e-5 },
    { event: "epoch", epoch: 1, step: 10, train_loss: 0.9, train_accuracy: 0.6, samples: 320, seconds: 4 },
    {
      event: "eval",
      epoch: 1,
      step: 10,
      eval_loss: 0.8,
      eval_accuracy: 0.7,
      eval_macro_f1: 0.69,
      samples: 100,
    },
    { event: "epoch", epoch: 2, step: 20, train_loss: 0.5, train_accuracy: 0.8, samples: 320, seconds: 4 },
    { event: "epoch", epoch: 2, step: 20, train_loss: 0.45, train_accuracy: 0.82, samples: 320, seconds: 4 },
  ];
  assert.deepEqual(pointsFromMetrics(records), [
    { epoch: 1, trainLoss: 0.9, trainAccuracy: 0.6, evalLoss: 0.8, evalAccuracy: 0.7 },
    { epoch: 2, trainLoss: 0.45, trainAccuracy: 0.82 },
  ]);
});
