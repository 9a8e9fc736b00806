/**
 * Training curves as a self-contained SVG: loss and accuracy per epoch, train and eval, in two side-by-side
 * panels with axes, ticks, grid and a legend. Hand-written SVG, no dependencies, so a run can write its
 * chart next to its checkpoint on any machine and any browser shows it.
 *
 * Missing values (NaN, ±Infinity, null, which is how JSON carries NaN) break a line rather than bend it to
 * zero; a lone point between gaps still shows as a marker. One epoch, a constant series and an all-missing
 * panel all draw.
 * @module
 */

import type { MetricsRecord } from "./metrics.ts";

/** One epoch's values; any of them may be absent or non-finite. */
export interface EpochPoint {
  /** The epoch (x), usually 1-based. */
  epoch: number;
  /** Mean training loss of the epoch. */
  trainLoss?: number | null;
  /** Training accuracy in [0, 1]. */
  trainAccuracy?: number | null;
  /** Evaluation loss after the epoch. */
  evalLoss?: number | null;
  /** Evaluation accuracy in [0, 1]. */
  evalAccuracy?: number | null;
}

/** Options of {@link renderChart}. */
export interface ChartOptions {
  /** Heading above the panels. Default "Training curves". */
  title?: string;
  /** Whole image width in px. Default 900. */
  width?: number;
  /** Whole image height in px. Default 380. */
  height?: number;
}

type SeriesKey = "trainLoss" | "trainAccuracy" | "evalLoss" | "evalAccuracy";

interface SeriesStyle {
  split: "train" | "eval";
  color: string;
  dash?: string;
}

// Colour-blind-safe pair (blue/orange) plus a dash, so the two splits differ in print too.
const STYLES: Record<"train" | "eval", SeriesStyle> = {
  train: { split: "train", color: "#1f77b4" },
  eval: { split: "eval", color: "#ff7f0e", dash: "6 4" },
};

interface PanelSpec {
  id: "loss" | "accuracy";
  title: string;
  series: [SeriesKey, SeriesStyle][];
  /** Tick label for a value, given the tick step. */
  format: (v: number, step: number) => string;
}

function decimalsFor(step: number): number {
  return Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
}

const PANELS: PanelSpec[] = [
  {
    id: "loss",
    title: "Loss",
    series: [["trainLoss", STYLES.train], ["evalLoss", STYLES.eval]],
    format: (v, step) => v.toFixed(decimalsFor(step)),
  },
  {
    id: "accuracy",
    title: "Accuracy",
    series: [["trainAccuracy", STYLES.train], ["evalAccuracy", STYLES.eval]],
    format: (v, step) => `${(v * 100).toFixed(Math.max(0, decimalsFor(step * 100)))}%`,
  },
];

const FONT = `font-family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"`;

/** Escapes text for SVG element content and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) => `&${{ "&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "apos" }[c]};`,
  );
}

function finite(v: number | null | undefined): v is number {
  return typeof v === "number" && Number.isFinite(v);
}

/** Rounded to 2 decimals: sub-pixel precision is plenty and keeps the file small. */
function px(v: number): string {
  return String(Math.round(v * 100) / 100);
}

/** A step of 1, 2 or 5 × 10^k near `span / target`, the usual "nice numbers" for axis ticks. */
export function niceStep(span: number, target = 5): number {
  const raw = span / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
}

/**
 * The y range and ticks for `values`: padded when the series is constant (a flat line in the middle rather
 * than a zero-height range), then widened to whole tick steps.
 */
export function niceDomain(values: number[]): { min: number; max: number; step: number; ticks: number[] } {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (hi - lo <= Math.abs(hi) * 1e-12) {
    const pad = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    lo -= pad;
    hi += pad;
  }
  const step = niceStep(hi - lo);
  // The small slack keeps 0.30000000000000004 from adding a whole empty step.
  const min = Math.floor(lo / step + 1e-9) * step;
  const max = Math.ceil(hi / step - 1e-9) * step;
  const n = Math.round((max - min) / step);
  // Rounded so that -0.2 + 2 × 0.1 prints as 0, not -0 or 5.55e-17.
  const ticks = Array.from({ length: n + 1 }, (_, i) => Number((min + i * step).toPrecision(12)) + 0);
  return { min, max, step, ticks };
}

/** Integer epoch ticks, thinned to about 10 on long runs. */
function epochTicks(lo: number, hi: number): number[] {
  const first = Math.ceil(lo);
  const last = Math.floor(hi);
  if (!(last >= first)) return []; // also NaN: no epochs at all
  const step = Math.max(1, niceStep(last - first + 1, 10));
  const ticks: number[] = [];
  for (let e = Math.ceil(first / step) * step; e <= last; e += step) ticks.push(e);
  if (ticks.length === 0) ticks.push(first);
  return ticks;
}

interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

function renderPanel(spec: PanelSpec, points: EpochPoint[], box: Box, xLo: number, xHi: number): string {
  const out: string[] = [`<g class="panel" data-panel="${spec.id}">`];
  out.push(
    `<text x="${px(box.x + box.w / 2)}" y="${px(box.y - 10)}" text-anchor="middle" font-size="14" ` +
      `font-weight="600" ${FONT}>${escapeXml(spec.title)}</text>`,
  );
  out.push(
    `<rect class="frame" x="${px(box.x)}" y="${px(box.y)}" width="${px(box.w)}" height="${px(box.h)}" ` +
      `fill="#ffffff" stroke="#444444" stroke-width="1"/>`,
  );
  const values = spec.series.flatMap(([key]) => points.map((p) => p[key]).filter(finite));
  // Inner padding so markers at the ends are not cut by the frame.
  const inset = 14;
  const xOf = (e: number) =>
    xHi === xLo ? box.x + box.w / 2 : box.x + inset + ((e - xLo) / (xHi - xLo)) * (box.w - 2 * inset);
  // x axis: ticks, grid, labels.
  out.push(`<g class="x-axis">`);
  for (const e of epochTicks(xLo, xHi)) {
    const x = px(xOf(e));
    out.push(
      `<line class="grid" x1="${x}" y1="${px(box.y)}" x2="${x}" y2="${px(box.y + box.h)}" stroke="#e6e6e6"/>`,
      `<line class="tick" x1="${x}" y1="${px(box.y + box.h)}" x2="${x}" y2="${px(box.y + box.h + 5)}" ` +
        `stroke="#444444"/>`,
      `<text x="${x}" y="${px(box.y + box.h + 18)}" text-anchor="middle" font-size="11" ${FONT}>${e}</text>`,
    );
  }
  out.push(
    `<text class="axis-label" x="${px(box.x + box.w / 2)}" y="${px(box.y + box.h + 36)}" ` +
      `text-anchor="middle" font-size="12" ${FONT}>epoch</text>`,
  );
  out.push(`</g>`);
  if (values.length === 0) {
    out.push(
      `<text class="no-data" x="${px(box.x + box.w / 2)}" y="${
        px(box.y + box.h / 2)
      }" text-anchor="middle" ` +
        `font-size="12" fill="#888888" ${FONT}>no data</text>`,
      `</g>`,
    );
    return out.join("\n");
  }
  const dom = niceDomain(values);
  const yOf = (v: number) =>
    box.y + box.h - inset - ((v - dom.min) / (dom.max - dom.min)) * (box.h - 2 * inset);
  out.push(`<g class="y-axis">`);
  for (const v of dom.ticks) {
    const y = px(yOf(v));
    out.push(
      `<line class="grid" x1="${px(box.x)}" y1="${y}" x2="${px(box.x + box.w)}" y2="${y}" stroke="#e6e6e6"/>`,
      `<line class="tick" x1="${px(box.x - 5)}" y1="${y}" x2="${px(box.x)}" y2="${y}" stroke="#444444"/>`,
      `<text x="${
        px(box.x - 8)
      }" y="${y}" text-anchor="end" dominant-baseline="middle" font-size="11" ${FONT}>` +
        `${escapeXml(spec.format(v, dom.step))}</text>`,
    );
  }
  out.push(
    `<text class="axis-label" transform="translate(${px(box.x - 52)} ${
      px(box.y + box.h / 2)
    }) rotate(-90)" ` +
      `text-anchor="middle" font-size="12" ${FONT}>${spec.id}</text>`,
  );
  out.push(`</g>`);
  for (const [key, style] of spec.series) {
    const pts = points.filter((p) => finite(p[key]));
    if (pts.length === 0) continue;
    // One path per series; "M" restarts it after a gap, so missing epochs break the line.
    let d = "";
    let previousFinite = false;
    for (const p of points) {
      const v = p[key];
      if (!finite(v)) {
        previousFinite = false;
        continue;
      }
      d += `${previousFinite ? "L" : "M"}${px(xOf(p.epoch))} ${px(yOf(v))} `;
      previousFinite = true;
    }
    const name = `${style.split}-${spec.id}`;
    out.push(`<g class="series" data-series="${name}" data-points="${pts.length}">`);
    out.push(
      `<path d="${d.trim()}" fill="none" stroke="${style.color}" stroke-width="2" ` +
        `stroke-linejoin="round"${style.dash ? ` stroke-dasharray="${style.dash}"` : ""}/>`,
    );
    for (const p of pts) {
      const v = p[key] as number;
      const label = spec.id === "accuracy" ? `${(v * 100).toFixed(2)}%` : v.toPrecision(4);
      out.push(
        `<circle cx="${px(xOf(p.epoch))}" cy="${px(yOf(v))}" r="3.5" fill="${style.color}">` +
          `<title>${style.split} ${spec.id}, epoch ${p.epoch}: ${label}</title></circle>`,
      );
    }
    out.push(`</g>`);
  }
  out.push(`</g>`);
  return out.join("\n");
}

/** The SVG document (a string) of `points`, sorted by epoch; an empty list draws two "no data" panels. */
export function renderChart(points: readonly EpochPoint[], options: ChartOptions = {}): string {
  const width = options.width ?? 900;
  const height = options.height ?? 380;
  const title = options.title ?? "Training curves";
  const sorted = [...points].filter((p) => Number.isFinite(p.epoch)).sort((a, b) => a.epoch - b.epoch);
  const epochs = sorted.map((p) => p.epoch);
  // One epoch gives an empty range: renderPanel centres it. No epoch at all gives NaN: no x ticks.
  const xLo = epochs.length ? epochs[0] : NaN;
  const xHi = epochs.length ? epochs[epochs.length - 1] : NaN;
  // Layout: title and legend on top, two panels with room on the left for tick labels, below for the x axis.
  const top = 78;
  const bottom = 50;
  const left = 72;
  const gap = 84;
  const right = 20;
  const panelW = (width - left - gap - right) / 2;
  const panelH = height - top - bottom;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeXml(title)}">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text class="title" x="${px(width / 2)}" y="24" text-anchor="middle" font-size="16" font-weight="600" ` +
    `${FONT}>${escapeXml(title)}</text>`,
  ];
  // Legend: only the splits that have data anywhere, so an eval-less run does not advertise an eval line.
  const present = (["train", "eval"] as const).filter((split) =>
    sorted.some((p) => finite(p[`${split}Loss`]) || finite(p[`${split}Accuracy`]))
  );
  out.push(`<g class="legend">`);
  present.forEach((split, i) => {
    const style = STYLES[split];
    const x = width / 2 - (present.length * 90) / 2 + i * 90;
    out.push(
      `<g class="legend-entry" data-series="${split}">`,
      `<line x1="${px(x)}" y1="44" x2="${px(x + 28)}" y2="44" stroke="${style.color}" stroke-width="2"` +
        `${style.dash ? ` stroke-dasharray="${style.dash}"` : ""}/>`,
      `<circle cx="${px(x + 14)}" cy="44" r="3.5" fill="${style.color}"/>`,
      `<text x="${px(x + 34)}" y="44" dominant-baseline="middle" font-size="12" ${FONT}>${split}</text>`,
      `</g>`,
    );
  });
  out.push(`</g>`);
  PANELS.forEach((spec, i) => {
    const box = { x: left + i * (panelW + gap), y: top, w: panelW, h: panelH };
    out.push(renderPanel(spec, sorted, box, xLo, xHi));
  });
  out.push(`</svg>`, "");
  return out.join("\n");
}

/**
 * Chart points from a metrics log: train values from "epoch" records, eval values from "eval" records, by
 * epoch. A later record for the same epoch (a resumed run repeating it) replaces the earlier one.
 */
export function pointsFromMetrics(records: readonly MetricsRecord[]): EpochPoint[] {
  const byEpoch = new Map<number, EpochPoint>();
  const at = (epoch: number) => {
    let p = byEpoch.get(epoch);
    if (!p) byEpoch.set(epoch, p = { epoch });
    return p;
  };
  for (const r of records) {
    if (r.event === "epoch") {
      Object.assign(at(r.epoch), { trainLoss: r.train_loss, trainAccuracy: r.train_accuracy });
    } else if (r.event === "eval") {
      Object.assign(at(r.epoch), { evalLoss: r.eval_loss, evalAccuracy: r.eval_accuracy });
    }
  }
  return [...byEpoch.values()].sort((a, b) => a.epoch - b.epoch);
}
