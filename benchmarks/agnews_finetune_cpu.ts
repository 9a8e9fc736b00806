/**
 * Benchmark: a real AG News fine-tune on CPUs, start to finish, with the accuracy it reaches and what it
 * costs, against Hugging Face's Trainer (the tool our users would otherwise pick) on the same rows, initial
 * weights, batch, learning rate, schedule and threads.
 *
 *   deno run -A benchmarks/agnews_finetune_cpu.ts [--data DIR] [--rows 8000] [--epochs 3] [--only a,b]
 *
 * Runs (each a separate process, one after another; --only picks some, by name):
 * - headline:  MiniLM pretrained, every training row here, up to --epochs epochs, evaluated every epoch;
 * - ours:      our defaults (length-grouped batches, compute on real tokens only), fp32, 1 rank x 2 threads;
 * - baseline:  the same with batches in sampler order and compute on the padded batch (what the defaults buy);
 * - ddp2:      2 ranks x 1 thread over Gloo (launch.ts), same global batch, seed and schedule;
 * - bf16:      bf16 autocast (forced where the CPU has no bf16 instructions, to measure what the refusal
 *              is about);
 * - scratch:   the same network from random weights (what pretraining buys);
 * - trainer:   benchmarks/agnews_finetune_trainer.py, transformers' Trainer with DataCollatorWithPadding.
 * The comparisons use --rows stratified training rows for one epoch; all runs are evaluated on every row of
 * the test split. Peak memory is the largest VmHWM (peak resident set) of the run's processes, polled from
 * /proc the same way for every tool; for 2 ranks it is their sum.
 *
 * DIR holds ag_news/test.csv.gz and ag_news/train_subset.csv.gz (or train.csv.gz); default $DISTRINEWS_DATA
 * or ../shared/data. Results accumulate in benchmarks/results/agnews_finetune_cpu.json (a run replaces its
 * own entry) and the .md report and training-curves SVG are rewritten after every run, so each result can be
 * committed as it arrives.
 * @module
 */

import { join, resolve } from "node:path";
import { parseFlags, positiveInt, runCli, UsageError } from "../cli/args.ts";
import { exists } from "../util/fs.ts";
import { bf16Units, cpuHasNativeBf16 } from "../util/cpu.ts";
import { hardwareLine, writeResults } from "./common.ts";
import { loadAgNewsCsv, type NewsRecord, subset } from "../data/ag_news.ts";
import { AG_NEWS_LABELS } from "../model/labels.ts";
import { configToJson } from "../model/config.ts";
import { DistilBertClassifier, torchVersion } from "../ffi/model.ts";
import { BertTokenizer } from "../data/tokenizer.ts";
import { saveCheckpoint } from "../weights/checkpoint.ts";
import { loadPretrained } from "../weights/pretrained.ts";
import { type EpochRecord, type EvalRecord, readMetrics } from "../training/metrics.ts";
import { tempDir, venvPython } from "../tests/helpers.ts";

const USAGE = "Usage: deno run -A benchmarks/agnews_finetune_cpu.ts [--data DIR] [--rows N] [--epochs N] " +
  "[--only headline,ours,untrimmed,ddp2_defaults,trainer,trainer_grouped,grouped,baseline,ddp2,bf16,scratch] [--seeds 42,43,44] " +
  "[--report-only] [--out DIR]";
const RUN_NAMES = [
  "ours",
  "untrimmed",
  "ddp2_defaults",
  "trainer",
  "trainer_grouped",
  "grouped",
  "baseline",
  "ddp2",
  "scratch",
  "bf16",
  "headline",
] as const;
/** A run's name: one of RUN_NAMES, with `_s<seed>` for the extra seeds of ours and trainer. */
type RunName = string;
/** The kind of run a name stands for: "ours_s43" is an "ours" run. */
const baseName = (name: RunName) => name.replace(/_s\d+$/, "");

/**
 * Set DISTRINEWS_BENCH_SHARED=1 when other jobs share the machine during an invocation: its runs then say
 * that their timings are not comparable (their accuracy is: training is deterministic).
 */
const SHARED_NOTE = Deno.env.get("DISTRINEWS_BENCH_SHARED") === "1"
  ? " (timed while other jobs ran: samples/s not comparable)"
  : "";

/** Shared optimisation settings: the comparison point (MiniLM, b32, lr 1e-4, fp32). */
const BATCH = 32, LR = 1e-4, WARMUP = 0.06, SEED = 42, MAX_LENGTH = 128, THREADS = 2;

/** One run's figures. */
interface RunResult {
  name: RunName;
  what: string;
  tool: "distrinews" | "hf_trainer";
  ranks: number;
  threadsPerRank: number;
  precision: "fp32" | "bf16";
  start: "pretrained" | "scratch";
  rows: number;
  epochs: number;
  /** Training time summed over epochs (no evaluation, no start-up). */
  trainSeconds: number;
  samplesPerSecond: number;
  /** Whole process wall clock: start-up, tokenization, training, evaluation, saving. */
  wallSeconds: number;
  peakRssBytes: number;
  evalLoss: number;
  accuracy: number;
  macroF1: number;
  f1PerClass: Record<string, number>;
  /** Per epoch (headline): accuracy after each epoch. */
  epochAccuracy?: number[];
  measuredAt: string;
}

interface Results {
  hardware: string;
  cpuBf16Units: string[];
  versions: Record<string, string>;
  data: Record<string, unknown>;
  runs: Record<RunName, RunResult>;
}

/** Largest peak RSS among `pid` and its descendants, read from /proc (0 where unreadable). */
async function treePeaks(root: number, peaks: Map<number, number>): Promise<void> {
  const children = new Map<number, number[]>();
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const stat = await Deno.readTextFile(`/proc/${entry.name}/stat`).catch(() => "");
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid)!.push(Number(entry.name));
  }
  const queue = [root];
  while (queue.length) {
    const pid = queue.pop()!;
    const status = await Deno.readTextFile(`/proc/${pid}/status`).catch(() => "");
    const kb = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
    // Only a process's own name is kept: deno's launcher and ranks, python.
    if (kb) peaks.set(pid, Math.max(peaks.get(pid) ?? 0, kb * 1024));
    queue.push(...(children.get(pid) ?? []));
  }
}

/** Runs a command, polling its process tree's peak memory; returns wall seconds and the peaks. */
async function runMeasured(cmd: string, args: string[], label: string) {
  console.error(`${label}: ${cmd} ${args.join(" ")}`);
  const started = performance.now();
  const child = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).spawn();
  const peaks = new Map<number, number>();
  let done = false;
  const poller = (async () => {
    while (!done) {
      await treePeaks(child.pid, peaks).catch(() => {});
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  const out = await child.output();
  done = true;
  await poller;
  const wallSeconds = (performance.now() - started) / 1000;
  const stdout = new TextDecoder().decode(out.stdout), stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) {
    throw new Error(`${label} failed (exit ${out.code}):\n${stderr.slice(-3000)}${stdout.slice(-2000)}`);
  }
  return { wallSeconds, peaks: [...peaks.values()], stdout };
}

/** Writes the chosen rows of an original-format CSV verbatim (1 line = 1 row in these files). */
async function writeRows(source: string, records: NewsRecord[], chosen: NewsRecord[], dest: string) {
  const index = new Map(records.map((r, i) => [r, i]));
  const bytes = await Deno.readFile(source);
  const gz = bytes[0] === 0x1f && bytes[1] === 0x8b;
  const text = gz
    ? await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"))).text()
    : new TextDecoder().decode(bytes);
  const lines = text.split("\n").filter((l) => l !== "");
  if (lines.length !== records.length) {
    throw new Error(`${source}: ${lines.length} lines for ${records.length} rows`);
  }
  await Deno.writeTextFile(dest, chosen.map((r) => lines[index.get(r)!]).join("\n") + "\n");
}

async function main(args: string[]) {
  const { values } = parseFlags(args, {
    data: { type: "string" },
    rows: { type: "string" },
    epochs: { type: "string" },
    only: { type: "string" },
    seeds: { type: "string" },
    "report-only": { type: "boolean", default: false },
    out: { type: "string", default: "benchmarks/results" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) return console.log(USAGE);
  if (values["report-only"]) {
    // Rewrites the report from the recorded results (after a change to the report's wording).
    const path = join(values.out!, "agnews_finetune_cpu.json");
    const recorded: Results = JSON.parse(await Deno.readTextFile(path));
    await writeResults(values.out!, "agnews_finetune_cpu", report(recorded), recorded);
    return;
  }
  const dataDir = resolve(values.data ?? Deno.env.get("DISTRINEWS_DATA") ?? "../shared/data", "ag_news");
  const rows = positiveInt("rows", values.rows, 8000);
  const headlineEpochs = positiveInt("epochs", values.epochs, 3);
  const only = values.only?.split(",") ?? [...RUN_NAMES];
  for (const n of only) {
    if (!(RUN_NAMES as readonly string[]).includes(baseName(n))) throw new UsageError(`unknown run "${n}"`);
  }
  // One-epoch fine-tunes differ by a few tenths of a point from seed to seed (row order, dropout), so ours
  // and the Trainer can each be run with several seeds; the first is the one every other run uses.
  const seeds = (values.seeds ?? String(SEED)).split(",").map((x) => positiveInt("seeds", x, SEED));
  if (seeds[0] !== SEED) throw new UsageError(`--seeds must start with ${SEED}, the seed of the other runs`);
  const trainCsv = (await exists(join(dataDir, "train.csv.gz")))
    ? join(dataDir, "train.csv.gz")
    : join(dataDir, "train_subset.csv.gz");
  const testCsv = join(dataDir, "test.csv.gz");
  for (const f of [trainCsv, testCsv]) if (!await exists(f)) throw new Error(`${f} not found (see --data)`);

  // --- data: the comparison rows (stratified) and all training rows, each folder with the full test split
  // Removed on every exit, a failed run's included (it holds copies of the data and every checkpoint).
  await using workDir = await tempDir();
  const work = workDir.path;
  const allTrain = await loadAgNewsCsv(trainCsv);
  const sample = subset(allTrain, { stratified: rows, seed: SEED });
  const sampleDir = join(work, "sample"), fullDir = join(work, "full");
  for (const [dir, chosen] of [[sampleDir, sample], [fullDir, allTrain]] as const) {
    await Deno.mkdir(dir);
    await writeRows(trainCsv, allTrain, chosen, join(dir, "train.csv"));
    await Deno.copyFile(testCsv, join(dir, "test.csv.gz"));
  }
  const testRows = (await loadAgNewsCsv(testCsv)).length;

  // --- the starting point, once: MiniLM mapped onto DistilBERT with the head our seed draws, as a
  // DistilBERT checkpoint folder the Trainer loads too (same initial weights on both sides), and the same
  // network's config alone for the from-scratch run.
  const pretrained = await loadPretrained("minilm", { id2label: [...AG_NEWS_LABELS] });
  const initDir = join(work, "minilm_init");
  {
    using model = await DistilBertClassifier.create(pretrained.config, { device: "cpu", seed: SEED });
    model.loadStateDict(pretrained.state, { strict: false });
    await saveCheckpoint(initDir, model, { tokenizer: await BertTokenizer.bundled() });
  }
  const scratchConfig = join(work, "minilm_shape.json");
  await Deno.writeTextFile(scratchConfig, JSON.stringify(configToJson(pretrained.config)));

  const resultsPath = join(values.out!, "agnews_finetune_cpu.json");
  const results: Results = (await exists(resultsPath))
    ? JSON.parse(await Deno.readTextFile(resultsPath))
    : { runs: {} } as Results;
  results.hardware = await hardwareLine();
  results.cpuBf16Units = bf16Units();
  results.versions = {
    libtorch: await torchVersion(),
    deno: Deno.version.deno,
    ...(await pythonVersions()),
  };
  results.data = {
    trainFile: trainCsv.replace(/^.*\/ag_news\//, "ag_news/"),
    trainRowsAvailable: allTrain.length,
    comparisonRows: rows,
    testRows,
    note: allTrain.length < 120_000
      ? `the training split here is ${allTrain.length.toLocaleString("en-US")} rows, ` +
        `${(100 * allTrain.length / 120_000).toFixed(0)} % of the original 120,000`
      : "the full original training split",
  };

  const common = (dir: string, epochs: number, seed: number) => [
    "--data",
    dir,
    "--epochs",
    String(epochs),
    "--lr",
    String(LR),
    "--warmup",
    String(WARMUP),
    "--seed",
    String(seed),
    "--max-length",
    String(MAX_LENGTH),
  ];

  const ours = async (
    name: RunName,
    what: string,
    options: {
      ranks?: number;
      extra?: string[];
      epochs?: number;
      dir?: string;
      scratch?: boolean;
      seed?: number;
    } = {},
  ): Promise<RunResult> => {
    const ranks = options.ranks ?? 1, epochs = options.epochs ?? 1, dir = options.dir ?? sampleDir;
    const threadsPerRank = Math.max(1, THREADS / ranks);
    const output = join(work, `out_${name}`);
    const flags = [
      ...common(dir, epochs, options.seed ?? SEED),
      ...(options.scratch ? ["--model", scratchConfig] : ["--pretrained", initDir]),
      "--batch-size",
      String(BATCH / ranks),
      "--threads",
      String(threadsPerRank),
      "--output",
      output,
      ...(options.extra ?? []),
    ];
    const entry = ranks > 1
      ? ["launch.ts", "--gpus", String(ranks), "--cpu", "--", ...flags]
      : ["train.ts", ...flags];
    const run = await runMeasured(Deno.execPath(), ["run", "-A", ...entry], name);
    const metrics = await readMetrics(join(`${output}-logs`, "metrics.jsonl"));
    const epochsDone = metrics.filter((r): r is EpochRecord => r.event === "epoch");
    const evals = metrics.filter((r): r is EvalRecord => r.event === "eval");
    const last = evals.at(-1)!;
    const trainSeconds = epochsDone.reduce((a, r) => a + r.seconds, 0);
    if (name === "headline") {
      await Deno.copyFile(
        join(`${output}-logs`, "training_curves.svg"),
        join(values.out!, "agnews_finetune_cpu_curves.svg"),
      );
    }
    return {
      name,
      what: what + SHARED_NOTE,
      tool: "distrinews",
      ranks,
      threadsPerRank,
      precision: options.extra?.includes("--bf16") ? "bf16" : "fp32",
      start: options.scratch ? "scratch" : "pretrained",
      rows: epochsDone[0].samples,
      epochs: epochsDone.length,
      trainSeconds,
      samplesPerSecond: epochsDone.reduce((a, r) => a + r.samples, 0) / trainSeconds,
      wallSeconds: run.wallSeconds,
      // The launcher's own memory is small; the ranks are what a machine must hold.
      peakRssBytes: ranks > 1
        ? run.peaks.sort((a, b) => b - a).slice(0, ranks).reduce((a, b) => a + b, 0)
        : Math.max(...run.peaks),
      evalLoss: last.eval_loss,
      accuracy: last.eval_accuracy,
      macroF1: last.eval_macro_f1,
      f1PerClass: last.eval_f1_per_class ?? {},
      epochAccuracy: evals.map((r) => r.eval_accuracy),
      measuredAt: new Date().toISOString(),
    };
  };

  const trainer = async (name: RunName, seed: number, grouped = false): Promise<RunResult> => {
    const out = join(work, `${name}.json`);
    const run = await runMeasured(venvPython(), [
      "benchmarks/agnews_finetune_trainer.py",
      "--train",
      join(sampleDir, "train.csv"),
      "--test",
      testCsv,
      "--model",
      initDir,
      "--out",
      out,
      "--epochs",
      "1",
      "--batch-size",
      String(BATCH),
      "--lr",
      String(LR),
      "--warmup",
      String(WARMUP),
      "--max-length",
      String(MAX_LENGTH),
      "--threads",
      String(THREADS),
      "--seed",
      String(seed),
      ...(grouped ? ["--group-by-length"] : []),
    ], name);
    const r = JSON.parse(await Deno.readTextFile(out));
    return {
      name,
      what:
        `transformers ${r.versions.transformers} Trainer, DataCollatorWithPadding, fp32, 1 x ${r.threads}` +
        (grouped ? ", length-grouped sampler" : "") + (seed === SEED ? "" : `, seed ${seed}`),
      tool: "hf_trainer",
      ranks: 1,
      threadsPerRank: r.threads,
      precision: "fp32",
      start: "pretrained",
      rows: r.rows,
      epochs: r.epochs,
      trainSeconds: r.train_seconds,
      samplesPerSecond: r.samples_per_s,
      wallSeconds: run.wallSeconds,
      peakRssBytes: Math.max(...run.peaks),
      evalLoss: r.eval_loss,
      accuracy: r.accuracy,
      macroF1: r.macro_f1,
      f1PerClass: r.f1_per_class,
      measuredAt: new Date().toISOString(),
    };
  };

  const native = cpuHasNativeBf16();
  // The headline runs in the fastest precision that keeps accuracy, as measured by this script's own
  // one-epoch comparison: bf16 when it was faster than fp32 and within 0.3 points of it.
  const { bf16: bfRun, grouped: fpRun } = results.runs;
  const bf16Pays = native && bfRun !== undefined && fpRun !== undefined &&
    bfRun.samplesPerSecond > fpRun.samplesPerSecond && Math.abs(bfRun.accuracy - fpRun.accuracy) <= 0.003;
  const plans: Record<RunName, () => Promise<RunResult>> = {
    headline: () =>
      ours(
        "headline",
        `MiniLM pretrained, all ${allTrain.length} rows, ${headlineEpochs} epochs, ` +
          `${bf16Pays ? "bf16" : "fp32"}, 1 x 2`,
        { epochs: headlineEpochs, dir: fullDir, extra: bf16Pays ? ["--bf16"] : [] },
      ),
    ours: () => ours("ours", "our defaults: real tokens only, batches in sampler order; fp32, 1 x 2"),
    // The memory baseline of the defaults: the same run without handing freed host memory back to the OS.
    untrimmed: () =>
      ours("untrimmed", "our defaults without trimming host memory (--trim-memory-every 0); fp32, 1 x 2", {
        extra: ["--trim-memory-every", "0"],
      }),
    trainer: () => trainer("trainer", SEED),
    trainer_grouped: () => trainer("trainer_grouped", SEED, true),
    grouped: () =>
      ours("grouped", "real tokens only, length-grouped batches (--group-by-length); fp32, 1 x 2", {
        extra: ["--group-by-length"],
      }),
    baseline: () =>
      ours("baseline", "batches in sampler order, compute on padded batches; fp32, 1 x 2", {
        extra: ["--padded-compute"],
      }),
    // Our defaults on 2 ranks x 1 thread: DistributedSampler's shards of one permutation, 16 rows per rank,
    // make each step's global batch the same 32 rows as the 1-rank run's (only dropout streams differ).
    ddp2_defaults: () =>
      ours("ddp2_defaults", "our defaults, 2 ranks x 1 thread over Gloo, 16 rows per rank; fp32", {
        ranks: 2,
      }),
    // These three compare against the length-grouped run ("grouped"), with which they share everything else.
    ddp2: () =>
      ours("ddp2", "length-grouped, 2 ranks x 1 thread over Gloo, 16 rows per rank; fp32", {
        ranks: 2,
        extra: ["--group-by-length"],
      }),
    bf16: () =>
      ours("bf16", `length-grouped, bf16 autocast${native ? "" : " (forced: no bf16 instructions)"}, 1 x 2`, {
        extra: ["--group-by-length", ...(native ? ["--bf16"] : ["--bf16", "--force-bf16"])],
      }),
    scratch: () =>
      ours("scratch", "length-grouped, from random weights (same network); fp32, 1 x 2", {
        scratch: true,
        extra: ["--group-by-length"],
      }),
  };
  for (const seed of seeds.slice(1)) {
    plans[`ours_s${seed}`] = () => ours(`ours_s${seed}`, `our defaults, fp32, 1 x 2, seed ${seed}`, { seed });
    plans[`trainer_s${seed}`] = () => trainer(`trainer_s${seed}`, seed);
    plans[`ddp2_defaults_s${seed}`] = () =>
      ours(`ddp2_defaults_s${seed}`, `our defaults, 2 ranks x 1 thread, seed ${seed}`, { ranks: 2, seed });
    plans[`untrimmed_s${seed}`] = () =>
      ours(`untrimmed_s${seed}`, `--trim-memory-every 0, fp32, 1 x 2, seed ${seed}`, {
        seed,
        extra: ["--trim-memory-every", "0"],
      });
    plans[`grouped_s${seed}`] = () =>
      ours(`grouped_s${seed}`, `--group-by-length, fp32, 1 x 2, seed ${seed}`, {
        seed,
        extra: ["--group-by-length"],
      });
  }
  // The headline run goes last: it is the long one.
  const names = Object.keys(plans).sort((a, b) => Number(a === "headline") - Number(b === "headline"));
  for (const name of names.filter((n) => only.includes(n) || only.includes(baseName(n)))) {
    const result = await plans[name]();
    results.runs[name] = result;
    console.error(
      `${name}: ${result.samplesPerSecond.toFixed(1)} samples/s, ${(result.accuracy * 100).toFixed(2)}% ` +
        `accuracy, peak ${(result.peakRssBytes / 2 ** 30).toFixed(2)} GiB`,
    );
    const { md } = await writeResults(values.out!, "agnews_finetune_cpu", report(results), results);
    console.error(`wrote ${md}`);
  }
}

async function pythonVersions(): Promise<Record<string, string>> {
  const out = await new Deno.Command(venvPython(), {
    args: [
      "-c",
      "import sys, torch, transformers; print(sys.version.split()[0], torch.__version__, transformers.__version__)",
    ],
    stdout: "piped",
    stderr: "null",
  }).output();
  const [python, torch, transformers] = new TextDecoder().decode(out.stdout).trim().split(" ");
  return { python, torch, transformers };
}

const gib = (b: number) => (b / 2 ** 30).toFixed(2);
const pct = (x: number) => (x * 100).toFixed(2);

/** The markdown report, from whatever runs the results hold. */
function report(r: Results): string {
  const order = (n: RunName) => RUN_NAMES.indexOf(baseName(n) as typeof RUN_NAMES[number]);
  const runs = Object.values(r.runs).sort((a, b) =>
    order(a.name) - order(b.name) || a.name.localeCompare(b.name)
  );
  const t = r.runs.trainer;
  const rows = runs.map((x) =>
    `| ${x.name} | ${x.what} | ${x.rows} x ${x.epochs} | ${x.trainSeconds.toFixed(0)} | ` +
    `${x.samplesPerSecond.toFixed(1)} | ${
      t ? (x.samplesPerSecond / t.samplesPerSecond).toFixed(2) + "x" : "-"
    } | ` +
    `${gib(x.peakRssBytes)} | ${x.evalLoss.toFixed(4)} | ${pct(x.accuracy)} | ${x.macroF1.toFixed(4)} |`
  );
  const lines = [
    "# AG News fine-tune on CPUs: accuracy, speed and memory against Hugging Face's Trainer",
    "",
    "Measured by `deno run -A benchmarks/agnews_finetune_cpu.ts`; each run is a separate process, one after another.",
    "",
    `- Hardware: ${r.hardware}; bf16 units: ${r.cpuBf16Units.join(", ") || "none"}` +
    (r.cpuBf16Units.includes("amx_bf16") ? "" : " (no AMX)"),
    `- Versions: libtorch ${r.versions.libtorch}, Deno ${r.versions.deno}, Python ${r.versions.python}, ` +
    `torch ${r.versions.torch}, transformers ${r.versions.transformers}`,
    `- Data: AG News, ${r.data.note}; comparisons on ${r.data.comparisonRows} stratified rows of it for 1 epoch; ` +
    `every run evaluated on all ${r.data.testRows} rows of the test split`,
    `- Model: sentence-transformers/all-MiniLM-L6-v2 (6 layers, width 384; 22.7M parameters) mapped onto DistilBERT, ` +
    "with a new 4-class head drawn from seed 42; the Trainer starts from the same weights (a DistilBERT folder we write)",
    `- Optimisation, every run: batch ${BATCH} (global), AdamW lr ${LR}, weight decay 0.01, linear schedule with ` +
    `${WARMUP * 100} % warmup, clipping 1.0, max length ${MAX_LENGTH}, dynamic padding, seed ${SEED}`,
    "- Time: training seconds summed over epochs (no start-up, tokenization or evaluation); samples/s = rows x " +
    "epochs / that time. Peak memory: the largest peak resident set (VmHWM) of the run's processes, polled from " +
    "/proc the same way for every tool (2 ranks: both summed). The Trainer's time is its `trainer.train()` " +
    "call, which includes the Trainer's own set-up before the first step (a second or so).",
    "- What differs from the Trainer, by design: our defaults compute on real tokens only (the `baseline` row " +
    "is ours without that); `grouped` rows add length grouping within each rank's shard, which the Trainer " +
    'also offers (`train_sampling_strategy="group_by_length"`, off by default, so it runs without it here). ' +
    "Row order, dropout masks and tokenizer implementation differ (same token ids, tested); the initial " +
    "weights, including the new head, are the same file on both sides.",
    "",
    "| run | what | rows x epochs | train s | samples/s | vs Trainer | peak GiB | eval loss | accuracy % | macro-F1 |",
    "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...rows,
    "",
  ];
  const o = r.runs.ours, d = r.runs.ddp2, b = r.runs.baseline, s = r.runs.scratch, bf = r.runs.bf16;
  const h = r.runs.headline;
  const notes: string[] = [];
  if (h) {
    notes.push(
      `- Headline: ${pct(h.accuracy)} % test accuracy after ${h.epochs} epoch(s) ` +
        `(per epoch: ${
          h.epochAccuracy?.map(pct).join(", ")
        } %); training curves: agnews_finetune_cpu_curves.svg.`,
    );
  }
  if (o && t) {
    notes.push(
      `- Our defaults against the Trainer: ${
        (o.samplesPerSecond / t.samplesPerSecond).toFixed(2)
      }x its samples/s, ` +
        `${(o.peakRssBytes / t.peakRssBytes).toFixed(2)}x its peak memory, accuracy ` +
        `${((o.accuracy - t.accuracy) * 100).toFixed(2)} points apart.`,
    );
  }
  const group = (base: string) => runs.filter((x) => baseName(x.name) === base);
  const trainerAll = group("trainer");
  const mean = (xs: number[]) => xs.reduce((x, y) => x + y, 0) / xs.length;
  for (const base of ["ours", "untrimmed", "grouped"]) {
    const mine = group(base);
    if (mine.length < 2 || trainerAll.length < 2) continue;
    const acc = (g: RunResult[]) => g.map((x) => x.accuracy);
    const span = (xs: number[]) => `${pct(Math.min(...xs))}-${pct(Math.max(...xs))}`;
    const ratio = (f: (x: RunResult) => number) => (mean(mine.map(f)) / mean(trainerAll.map(f))).toFixed(2);
    notes.push(
      `- Over seeds, ${base} (${mine.length} runs) against the Trainer (${trainerAll.length}): mean accuracy ` +
        `${pct(mean(acc(mine)))} % (${span(acc(mine))}) against ${pct(mean(acc(trainerAll)))} % ` +
        `(${span(acc(trainerAll))}); mean samples/s ${ratio((x) => x.samplesPerSecond)}x, mean peak memory ` +
        `${ratio((x) => x.peakRssBytes)}x the Trainer's.`,
    );
  }
  const dAllRuns = group("ddp2_defaults");
  if (dAllRuns.length) {
    const pairs = dAllRuns.map((d) => {
      const seed = /_s(\d+)$/.exec(d.name)?.[1];
      return [d, r.runs[seed ? `ours_s${seed}` : "ours"]] as const;
    }).filter(([, one]) => one !== undefined);
    notes.push(
      `- 2 ranks against 1 rank, our defaults, same seeds (${pairs.length}): accuracy differences ` +
        pairs.map(([d, one]) => `${((d.accuracy - one!.accuracy) * 100).toFixed(2)}`).join(", ") + " points" +
        (pairs.some(([d]) => d.what.includes("timed while other jobs ran"))
          ? " (run for their accuracy: their timings are not comparable)."
          : `; samples/s ${
            pairs.map(([d, one]) => (d.samplesPerSecond / one!.samplesPerSecond).toFixed(2)).join(", ")
          }x.`),
    );
  }
  const oAllRuns = group("ours"), uAllRuns = group("untrimmed");
  if (oAllRuns.length && uAllRuns.length) {
    const peaks = (g: RunResult[]) => g.map((x) => gib(x.peakRssBytes)).join(", ");
    notes.push(
      `- Trimming host memory every 8 steps (the default) against not trimming it (--trim-memory-every 0), ` +
        `same seeds: peak memory ${peaks(oAllRuns)} GiB against ${peaks(uAllRuns)} GiB (mean ` +
        `${
          (mean(oAllRuns.map((x) => x.peakRssBytes)) / mean(uAllRuns.map((x) => x.peakRssBytes))).toFixed(2)
        }x), ` +
        `samples/s ${
          (mean(oAllRuns.map((x) => x.samplesPerSecond)) /
            mean(uAllRuns.map((x) => x.samplesPerSecond))).toFixed(3)
        }x.`,
    );
  }
  const tg = r.runs.trainer_grouped;
  if (o && tg) {
    notes.push(
      `- Against the Trainer with its own length grouping (train_sampling_strategy="group_by_length"): ` +
        `${(o.samplesPerSecond / tg.samplesPerSecond).toFixed(2)}x its samples/s, ` +
        `${(o.peakRssBytes / tg.peakRssBytes).toFixed(2)}x its peak memory, accuracy ` +
        `${((o.accuracy - tg.accuracy) * 100).toFixed(2)} points apart.`,
    );
  }
  const g = r.runs.grouped;
  if (o && b) {
    notes.push(
      `- What computing on real tokens only buys (our default against the padded baseline, both in sampler ` +
        `order): ${(o.samplesPerSecond / b.samplesPerSecond).toFixed(2)}x the samples/s, ` +
        `${(o.peakRssBytes / b.peakRssBytes).toFixed(2)}x the peak memory.`,
    );
  }
  if (o && g) {
    const gAll = group("grouped"), oAll = group("ours");
    const meanAcc = (xs: RunResult[]) => mean(xs.map((x) => x.accuracy));
    notes.push(
      `- Length grouping on top (--group-by-length): ${
        (g.samplesPerSecond / o.samplesPerSecond).toFixed(2)
      }x ` +
        `the samples/s, ${
          ((meanAcc(gAll) - meanAcc(oAll)) * 100).toFixed(2)
        } points of accuracy on average ` +
        `over seeds (${gAll.length} and ${oAll.length} runs): faster, less accurate after one epoch, so off by ` +
        "default.",
    );
  }
  // ddp2, bf16 and scratch ran length-grouped: their reference is the grouped 1-rank fp32 run.
  if (g && d) {
    notes.push(
      `- 2 ranks x 1 thread against 1 rank x 2 threads (both length-grouped): ` +
        `${(d.samplesPerSecond / g.samplesPerSecond).toFixed(2)}x the samples/s, accuracy ` +
        `${
          ((d.accuracy - g.accuracy) * 100).toFixed(2)
        } points apart (same global batch, seed and schedule; ` +
        "each rank sees its DistributedSampler shard and groups within it, so the row order differs).",
    );
  }
  if (g && s) {
    notes.push(
      `- Pretraining buys ${((g.accuracy - s.accuracy) * 100).toFixed(2)} points of accuracy in this epoch.`,
    );
  }
  if (g && bf) {
    notes.push(
      `- bf16 against fp32 (both length-grouped): ${
        (bf.samplesPerSecond / g.samplesPerSecond).toFixed(2)
      }x ` +
        `the samples/s, accuracy ${((bf.accuracy - g.accuracy) * 100).toFixed(2)} points apart.` +
        (r.cpuBf16Units.includes("amx_bf16")
          ? ""
          : " This CPU has AVX-512-BF16 but no AMX; no machine with AMX was available for this measurement."),
    );
  }
  return [...lines, ...notes, ""].join("\n");
}

if (import.meta.main) await runCli(USAGE, () => main(Deno.args));
