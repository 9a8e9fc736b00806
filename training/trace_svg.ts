/**
 * `deno task trace:svg FILE [--steps N] [--first-step S] [--out SVG]`: draws a few training steps of a
 * `train.ts --trace` file as an SVG, ranks as lanes, each with a compute row (data, forward, backward, the
 * wait for the all-reduce, the optimizer) and a communication row (one bar per gradient bucket, labelled
 * with its index and size). Perfetto shows the whole run; this is the picture to put in a report.
 *
 * What to read in it (a 2-rank run; the same for more):
 *
 * - The bucket bars start while backward (orange) is still running: that is DDP overlapping communication
 *   with compute. Bucket 0 is the small first bucket (1 MiB), full of the last layers' gradients, so it
 *   goes out early; later buckets follow as backward reaches earlier layers, the word embeddings last.
 * - The red "wait" at the end of backward is what compute could not hide: the last bucket only starts when
 *   the last gradient is ready, and the optimizer cannot step before every average is in.
 * - Both ranks wait for each other: an all-reduce completes only when every rank has sent its share, so a
 *   slower rank shows up as a longer wait on the faster one.
 * - With --grad-accum, the micro-steps marked no_sync have no bars at all: gradients accumulate locally and
 *   are averaged once, on the last micro-step.
 *
 * By default the drawing starts at step 2: on step 1 the Reducer still has one bucket holding every
 * gradient (it learns the order gradients become ready in during that step, then rebuilds its buckets).
 * @module
 */

import { parseFlags, positiveInt, runCli, UsageError } from "../cli/args.ts";
import { type ChromeTrace, COMM_TID, LOOP_TID, type TraceEvent } from "./trace.ts";

const USAGE = `Usage: deno task trace:svg FILE [--steps N] [--first-step S] [--out SVG]

Draws training steps of a train.ts --trace FILE as an SVG: one lane per rank, compute and all-reduce rows.
  --steps N        optimizer steps to draw (default 3)
  --first-step S   the first one (default 2: step 1 still has the Reducer's single initial bucket)
  --out SVG        where to write it (default FILE with .svg)`;

/** Options of {@link renderTraceSvg}. */
export interface TraceSvgOptions {
  /** Optimizer steps to draw (default 3). */
  steps?: number;
  /** The first step drawn (default 2 when the trace has it, else its first). */
  firstStep?: number;
  /** Width of the drawing in pixels (default 1200). */
  width?: number;
  /** A subtitle (the file name, say). */
  source?: string;
}

const COLORS: Record<string, string> = {
  data: "#9e9e9e",
  "stage batch": "#4db6ac",
  forward: "#1e88e5",
  backward: "#fb8c00",
  "wait for all-reduce": "#e53935",
  optimizer: "#43a047",
  comm: "#8e24aa",
  eval: "#00897b",
  io: "#6d4c41",
  sync: "#fdd835",
};

const LEGEND: [string, string][] = [
  ["data", "building the batch"],
  ["stage batch", "batch to device (and bucket rebuild)"],
  ["forward", "forward + loss"],
  ["backward", "backward (compute)"],
  ["wait for all-reduce", "waiting for the last buckets"],
  ["optimizer", "clip + AdamW"],
  ["comm", "bucket all-reduce"],
];

function escapeXml(s: string): string {
  return s.replace(
    /[<>&"']/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]!,
  );
}

function colorOf(e: TraceEvent): string {
  return COLORS[e.name] ?? COLORS[e.cat ?? ""] ?? "#607d8b";
}

/** A round step for axis ticks: 1, 2 or 5 times a power of ten, about `span / 8`. */
function tickStep(span: number): number {
  const raw = span / 8;
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
}

function formatBytes(n: number): string {
  return n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${(n / 1024).toFixed(0)} KiB`;
}

/** The labels a span can carry, longest first: the first one that fits its width is drawn. */
function labels(e: TraceEvent): string[] {
  if (e.cat === "comm") {
    return [`b${e.args?.bucket} · ${formatBytes(Number(e.args?.bytes ?? 0))}`, `b${e.args?.bucket}`];
  }
  if (e.name === "wait for all-reduce") return ["wait"];
  if (e.name === "optimizer") return ["optimizer", "opt"];
  return e.name === "stage batch" ? [] : [e.name];
}

function tooltip(e: TraceEvent): string {
  const ms = ((e.dur ?? 0) / 1000).toFixed(3);
  if (e.cat === "comm") {
    return `all-reduce bucket ${e.args?.bucket}: ${formatBytes(Number(e.args?.bytes ?? 0))}, ` +
      `${e.args?.params} parameter tensors, ${ms} ms (step ${e.args?.step})`;
  }
  return `${e.name}: ${ms} ms`;
}

/** Optimizer steps in the trace, ascending (from the "step" spans' args). */
export function traceSteps(trace: ChromeTrace): number[] {
  const steps = new Set<number>();
  for (const e of trace.traceEvents) if (e.ph === "X" && e.cat === "step") steps.add(Number(e.args?.step));
  return [...steps].sort((a, b) => a - b);
}

/** Renders steps of a merged trace (training/trace.ts) as an SVG document. */
export function renderTraceSvg(trace: ChromeTrace, options: TraceSvgOptions = {}): string {
  const spans = trace.traceEvents.filter((e) => e.ph === "X" && e.ts !== undefined);
  const all = traceSteps(trace);
  if (!all.length) throw new Error("the trace has no training steps");
  const first = options.firstStep ?? (all.includes(2) ? 2 : all[0]);
  const chosen = new Set(all.filter((s) => s >= first).slice(0, options.steps ?? 3));
  if (!chosen.size) throw new Error(`the trace has no step ${first} (it has steps ${all[0]}..${all.at(-1)})`);
  const stepSpans = spans.filter((e) => e.cat === "step" && chosen.has(Number(e.args?.step)));
  const t0 = Math.min(...stepSpans.map((e) => e.ts!));
  const t1 = Math.max(...stepSpans.map((e) => e.ts! + (e.dur ?? 0)));
  // The chosen steps' spans (a step's phases and buckets carry its number), and whatever else falls in the
  // window (an evaluation, a barrier); not the next step a fast rank has already begun.
  const inWindow = (e: TraceEvent) =>
    e.args?.step !== undefined && e.cat !== undefined && e.cat !== "eval" && e.cat !== "io" &&
      e.cat !== "sync"
      ? chosen.has(Number(e.args.step))
      : e.ts! < t1 && e.ts! + (e.dur ?? 0) > t0;
  const ranks = [...new Set(spans.map((e) => e.pid))].sort((a, b) => a - b);

  const width = options.width ?? 1200;
  const left = 130, right = 20, top = 58;
  const plot = width - left - right;
  const x = (us: number) => left + ((Math.min(Math.max(us, t0), t1) - t0) / (t1 - t0)) * plot;
  const stepRow = 16, row = 24, gap = 14;
  const out: string[] = [];
  let y = top;

  const rect = (e: TraceEvent, ry: number, h: number) => {
    const x0 = x(e.ts!), x1 = x(e.ts! + (e.dur ?? 0));
    const w = Math.max(0.75, x1 - x0);
    const text = labels(e).find((t) => w > t.length * 6.2 + 6);
    out.push(
      `<rect x="${x0.toFixed(2)}" y="${ry}" width="${w.toFixed(2)}" height="${h}" fill="${colorOf(e)}"` +
        ` stroke="#ffffff" stroke-width="0.5"><title>${escapeXml(tooltip(e))}</title></rect>`,
    );
    if (text) {
      out.push(
        `<text x="${(x0 + w / 2).toFixed(2)}" y="${ry + h / 2 + 4}" text-anchor="middle" font-size="11"` +
          ` fill="#ffffff">${escapeXml(text)}</text>`,
      );
    }
  };

  for (const rank of ranks) {
    const mine = spans.filter((e) => e.pid === rank && inWindow(e));
    const lanes = [...new Set(mine.filter((e) => e.tid >= COMM_TID).map((e) => e.tid))].sort((a, b) => a - b);
    const commRows = Math.max(1, lanes.length);
    const height = stepRow + row + 4 + commRows * row;
    out.push(`<g class="rank" data-rank="${rank}">`);
    out.push(
      `<text x="10" y="${y + stepRow + row / 2 + 4}" font-size="13" font-weight="bold">rank ${rank}</text>`,
      `<text x="${left - 8}" y="${y + stepRow + row / 2 + 4}" font-size="11" text-anchor="end"` +
        ` fill="#555">compute</text>`,
      `<text x="${left - 8}" y="${y + stepRow + row + 4 + row / 2 + 4}" font-size="11" text-anchor="end"` +
        ` fill="#555">all-reduce</text>`,
      `<rect x="${left}" y="${y + stepRow}" width="${plot}" height="${height - stepRow}" fill="#f7f7f7"/>`,
    );
    // The steps: a bracket per micro-step with its name, then its phases and its buckets.
    for (const s of mine.filter((e) => e.cat === "step")) {
      const x0 = x(s.ts!), x1 = x(s.ts! + (s.dur ?? 0));
      out.push(
        `<line x1="${x0.toFixed(2)}" y1="${y + 2}" x2="${x0.toFixed(2)}" y2="${
          y + height
        }" stroke="#9e9e9e"` +
          ` stroke-dasharray="3,3"/>`,
        `<line x1="${x0.toFixed(2)}" y1="${y + stepRow - 3}" x2="${x1.toFixed(2)}" y2="${y + stepRow - 3}"` +
          ` stroke="#616161"/>`,
      );
      if (x1 - x0 > s.name.length * 6) {
        out.push(
          `<text x="${(x0 + 3).toFixed(2)}" y="${y + stepRow - 6}" font-size="10" fill="#424242">` +
            `${escapeXml(s.name)}</text>`,
        );
      }
    }
    for (const e of mine.filter((e) => e.tid === LOOP_TID && e.cat !== "step")) rect(e, y + stepRow, row);
    for (const e of mine.filter((e) => e.tid >= COMM_TID)) {
      rect(e, y + stepRow + row + 4 + Math.max(0, lanes.indexOf(e.tid)) * row, row);
    }
    out.push(`</g>`);
    y += height + gap;
  }

  // The time axis, in milliseconds from the first drawn step.
  const spanMs = (t1 - t0) / 1000, tick = tickStep(spanMs);
  out.push(`<line x1="${left}" y1="${y}" x2="${left + plot}" y2="${y}" stroke="#424242"/>`);
  for (let ms = 0; ms <= spanMs + 1e-9; ms += tick) {
    const tx = x(t0 + ms * 1000);
    out.push(
      `<line x1="${tx.toFixed(2)}" y1="${y}" x2="${tx.toFixed(2)}" y2="${y + 5}" stroke="#424242"/>`,
      `<text x="${tx.toFixed(2)}" y="${y + 18}" font-size="11" text-anchor="middle">` +
        `${Number(ms.toFixed(6))} ms</text>`,
    );
  }
  y += 40;
  let lx = left;
  for (const [key, text] of LEGEND) {
    if (lx + 16 + text.length * 6 > width - right) [lx, y] = [left, y + 18];
    out.push(
      `<rect x="${lx}" y="${y - 10}" width="12" height="12" fill="${COLORS[key]}"/>`,
      `<text x="${lx + 16}" y="${y}" font-size="11">${escapeXml(text)}</text>`,
    );
    lx += 32 + text.length * 6;
  }
  const notes = [
    "Buckets are all-reduced in the order their gradients became ready (last layers first); the small first",
    "bucket goes out early, so communication overlaps backward. The red wait is what compute could not hide.",
    "Micro-steps marked no_sync (gradient accumulation) have no all-reduce: gradients are averaged once per step.",
  ];
  notes.forEach((line, i) =>
    out.push(`<text x="${left}" y="${y + 22 + 15 * i}" font-size="11" fill="#555">${escapeXml(line)}</text>`)
  );
  const height = y + 22 + 15 * notes.length + 10;
  const steps = [...chosen];
  const title = `DDP trace: step${steps.length > 1 ? `s ${steps[0]}-${steps.at(-1)}` : ` ${steps[0]}`}, ` +
    `${ranks.length} rank${ranks.length > 1 ? "s" : ""}`;
  const subtitle = `${spanMs.toFixed(1)} ms shown` + (options.source ? ` · ${options.source}` : "");
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="10" y="24" font-size="16" font-weight="bold">${escapeXml(title)}</text>`,
    `<text x="10" y="42" font-size="11" fill="#555">${escapeXml(subtitle)}</text>`,
    ...out,
    `</svg>`,
    "",
  ].join("\n");
}

async function main(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    steps: { type: "string" },
    "first-step": { type: "string" },
    out: { type: "string" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) return console.log(USAGE);
  if (positionals.length !== 1) throw new UsageError("give one trace FILE");
  const file = positionals[0];
  const trace = JSON.parse(await Deno.readTextFile(file)) as ChromeTrace;
  const out = values.out ?? file.replace(/\.json$/i, "") + ".svg";
  const svg = renderTraceSvg(trace, {
    steps: positiveInt("steps", values.steps, 3),
    firstStep: values["first-step"] === undefined
      ? undefined
      : positiveInt("first-step", values["first-step"], 1),
    source: file,
  });
  await Deno.writeTextFile(out, svg);
  console.log(`wrote ${out}`);
}

if (import.meta.main) await runCli(USAGE, () => main(Deno.args));
