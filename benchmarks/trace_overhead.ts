/**
 * Benchmark: what tracing costs. DDP training steps over Gloo (2 CPU ranks, one thread each) in three
 * modes, in the same script, alternating:
 *
 * - `off`: this tree without --trace, as train.ts runs by default: the native step reads its clocks
 *   (dn_step_result's t_* fields, always filled) and the loop adds them up for the epoch's time breakdown;
 *   the Reducer has no communication hook.
 * - `on`: this tree with tracing: the Reducer's recording hook, the events drained after every step and
 *   turned into trace spans (training/trace.ts's TraceRecorder, as train.ts --trace does; the file is not
 *   written).
 * - `before` (with `--baseline REF`): the same steps on the code of git revision REF (the commit before
 *   tracing existed), checked out with `git archive` into a temporary folder and built there: the
 *   "costs nothing when off" claim, measured against the code without any of it.
 *
 *   deno run -A benchmarks/trace_overhead.ts [--baseline REF] [--steps N] [--repeats R] [--out DIR]
 *
 * Two model sizes: the tests' tiny DistilBERT (steps of milliseconds, so any per-step cost of tracing
 * shows) and distilbert-small (11M parameters, 44 MB of gradients in two buckets: a realistic step). Each
 * run starts 2 fresh rank processes, warms up, then times `steps` steps on rank 0 between two barriers;
 * samples/s = steps x batch x 2 / seconds. Runs of the modes alternate in rotating order, `repeats` times;
 * medians are reported. Writes benchmarks/results/trace_overhead.md and .json.
 * @module
 */

import { join, resolve } from "node:path";
import process from "node:process";
import { parseFlags, positiveInt, runCli } from "../cli/args.ts";
import { hardwareLine, median, writeResults } from "./common.ts";
import { findFreePort } from "../launcher/host.ts";
import { DistilBertClassifier, torchVersion } from "../ffi/model.ts";
import { ProcessGroup, processGroupOptionsFromEnv } from "../ffi/process_group.ts";
import { DISTILBERT_SMALL, type DistilBertConfig } from "../model/config.ts";
import { makeBatch, tinyConfig } from "../tests/helpers.ts";

const USAGE =
  "Usage: deno run -A benchmarks/trace_overhead.ts [--baseline REF] [--steps N] [--repeats R] [--out DIR]";
const ROOT = resolve(import.meta.dirname!, "..");
const RANK_FLAG = "TRACE_OVERHEAD_RANK";

type Mode = "before" | "off" | "on";
interface Workload {
  name: string;
  model: "tiny" | "small";
  batch: number;
  seqLen: number;
  steps: number;
  warmup: number;
}
interface RankSpec extends Workload {
  mode: Mode;
}
interface RunResult {
  seconds: number;
  samplesPerS: number;
  /** CPU time of rank 0's process (all its threads: libtorch, Gloo, Deno) per timed step, ms. */
  cpuMsPerStep: number;
  /** Per step, means (ms): native compute and communication wait (this tree only). */
  computeMs?: number;
  commWaitMs?: number;
  /** Mean buckets per step (`on` only). */
  buckets?: number;
}

function modelConfig(name: RankSpec["model"]): DistilBertConfig {
  return name === "tiny" ? tinyConfig() : DISTILBERT_SMALL;
}

/**
 * One rank: the same code runs in this tree (`off`, `on`) and, copied, in the baseline checkout
 * (`before`, where `deno run` does not type-check it), so its static imports are only names the baseline
 * exports too; tracing is reached by dynamic import, and only outside `before`.
 */
async function rank(spec: RankSpec): Promise<void> {
  const options = processGroupOptionsFromEnv()!;
  const config = modelConfig(spec.model);
  using model = await DistilBertClassifier.create(config, { device: "cpu", seed: 1 });
  const tracing = spec.mode === "on";
  const trace = spec.mode === "before" ? undefined : await import("../training/trace.ts");
  const breakdown = spec.mode === "before" ? undefined : await import("../training/trace_breakdown.ts");
  if (tracing) model.enableTracing();
  using group = await ProcessGroup.create(options);
  await group.attachDdp(model);
  const recorder = tracing && trace
    ? await trace.TraceRecorder.start({
      rank: options.rank,
      worldSize: options.worldSize,
      parameters: model.parameterCount(),
      nativeNs: (await import("../ffi/model.ts")).monotonicNs,
      group,
    })
    : undefined;
  const time = breakdown ? new breakdown.TimeBreakdown() : undefined;
  const batches = Array.from(
    { length: 8 },
    (_, i) => makeBatch(config, spec.batch, spec.seqLen, 100 * options.rank + i),
  );
  let buckets = 0;
  const step = async (i: number) => {
    const dataStarted = performance.now();
    const batch = batches[i % batches.length];
    const dataEnded = performance.now();
    const result = await model.trainStepAsync(batch, { lr: 1e-4 });
    if (!time) return;
    // What train.ts does with every step: the breakdown always, the trace spans with --trace.
    const timing = result.timing;
    time.addDataMs(dataEnded - dataStarted).addStep(timing);
    if (recorder) {
      const events = model.drainTrace();
      buckets += events.length;
      const info = {
        epoch: 1,
        step: i + 1,
        micro: 0,
        sync: true,
        rows: batch.batchSize,
        seqLen: batch.seqLen,
      };
      recorder.step(info, dataStarted, dataEnded, timing, events);
    }
  };
  for (let i = 0; i < spec.warmup; i++) await step(i);
  const timeAtStart = time?.toArray();
  await group.barrier();
  const started = performance.now(), cpu = process.cpuUsage();
  for (let i = 0; i < spec.steps; i++) await step(spec.warmup + i);
  const used = process.cpuUsage(cpu);
  await group.barrier();
  const seconds = (performance.now() - started) / 1000;
  if (options.rank !== 0) return;
  const result: RunResult = {
    seconds,
    samplesPerS: (spec.steps * spec.batch * options.worldSize) / seconds,
    cpuMsPerStep: (used.user + used.system) / 1000 / spec.steps,
  };
  if (time && timeAtStart) {
    const now = time.toArray();
    result.computeMs = ((now[0] - timeAtStart[0]) / spec.steps) * 1000;
    result.commWaitMs = ((now[1] - timeAtStart[1]) / spec.steps) * 1000;
  }
  if (recorder) result.buckets = buckets / (spec.warmup + spec.steps);
  console.log(JSON.stringify(result));
}

/** Starts the 2 ranks of one run in `root` (this tree, or the baseline checkout) and returns rank 0's result. */
async function runOnce(
  root: string,
  spec: RankSpec,
  extraEnv: Record<string, string> = {},
): Promise<RunResult> {
  const port = findFreePort();
  const children = [0, 1].map((r) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", join(root, "benchmarks", "trace_overhead.ts"), JSON.stringify(spec)],
      cwd: root,
      env: {
        [RANK_FLAG]: "1",
        RANK: String(r),
        LOCAL_RANK: String(r),
        WORLD_SIZE: "2",
        LOCAL_WORLD_SIZE: "2",
        MASTER_ADDR: "127.0.0.1",
        MASTER_PORT: String(port),
        OMP_NUM_THREADS: "1",
        ...extraEnv,
      },
      stdout: "piped",
      stderr: "piped",
    }).spawn()
  );
  const outputs = await Promise.all(children.map((c) => c.output()));
  outputs.forEach((o, r) => {
    if (!o.success) throw new Error(`${spec.mode} rank ${r} failed:\n${new TextDecoder().decode(o.stderr)}`);
  });
  return JSON.parse(new TextDecoder().decode(outputs[0].stdout).trim().split("\n").at(-1)!);
}

/** The 1-minute load average (Linux), for the report: how busy the machine was. */
async function loadAverage(): Promise<string> {
  return (await Deno.readTextFile("/proc/loadavg").catch(() => "?")).split(" ")[0];
}

/** A checkout of `ref` with its own native library built (the same libtorch as this tree's). */
async function prepareBaseline(
  ref: string,
): Promise<{ root: string; commit: string; env: Record<string, string> }> {
  const git = async (...args: string[]) => {
    const out = await new Deno.Command("git", { args, cwd: ROOT, stdout: "piped", stderr: "piped" }).output();
    if (!out.success) throw new Error(`git ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
    return new TextDecoder().decode(out.stdout).trim();
  };
  const commit = await git("rev-parse", ref);
  const root = join(await Deno.makeTempDir({ prefix: "distrinews-baseline-" }), "tree");
  await Deno.mkdir(root);
  try {
    return await buildBaseline(root, commit);
  } catch (err) {
    await Deno.remove(resolve(root, ".."), { recursive: true });
    throw err;
  }
}

async function buildBaseline(
  root: string,
  commit: string,
): Promise<{ root: string; commit: string; env: Record<string, string> }> {
  const archive = await new Deno.Command("bash", {
    args: ["-c", `git -C "${ROOT}" archive "${commit}" | tar -x -C "${root}"`],
  }).output();
  if (!archive.success) throw new Error(`git archive ${commit} failed`);
  // This very script, so the baseline runs the same steps (it finds no tracing there and does not ask).
  await Deno.copyFile(
    join(ROOT, "benchmarks", "trace_overhead.ts"),
    join(root, "benchmarks", "trace_overhead.ts"),
  );
  const { findLibtorch } = await import("../ffi/build.ts");
  const libtorch = await findLibtorch();
  console.error(`building ${commit.slice(0, 10)}'s native library in ${root} (libtorch ${libtorch.version})`);
  const build = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "ffi/build.ts"],
    cwd: root,
    env: { LIBTORCH: libtorch.root },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!build.success) throw new Error(`baseline build failed:\n${new TextDecoder().decode(build.stderr)}`);
  // Its ranks find the same libtorch (the checkout has no virtualenv of its own).
  return { root, commit, env: { LIBTORCH: libtorch.root } };
}

async function main(args: string[]): Promise<void> {
  const { values } = parseFlags(args, {
    baseline: { type: "string" },
    steps: { type: "string" },
    repeats: { type: "string" },
    out: { type: "string", default: join(ROOT, "benchmarks", "results") },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) return console.log(USAGE);
  const repeats = positiveInt("repeats", values.repeats, 3);
  const scale = positiveInt("steps", values.steps, 1);
  const workloads: Workload[] = [
    {
      name: "tiny (2 layers x 32, 24k parameters)",
      model: "tiny",
      batch: 8,
      seqLen: 32,
      steps: 300 * scale,
      warmup: 10,
    },
    {
      name: "distilbert-small (4 layers x 256, 11M parameters)",
      model: "small",
      batch: 8,
      seqLen: 64,
      steps: 20 * scale,
      warmup: 3,
    },
  ];
  const baseline = values.baseline ? await prepareBaseline(values.baseline) : undefined;
  const loadBefore = await loadAverage();
  const modes: Mode[] = baseline ? ["before", "off", "on"] : ["off", "on"];
  const results: Record<string, Record<Mode, RunResult[]>> = {};
  try {
    for (const w of workloads) {
      results[w.name] = { before: [], off: [], on: [] };
      for (let r = 0; r < repeats; r++) {
        // Rotate the order each repeat, so a slow drift of the machine favours no mode.
        const order = modes.map((_, i) => modes[(i + r) % modes.length]);
        for (const mode of order) {
          const result = mode === "before"
            ? await runOnce(baseline!.root, { ...w, mode }, baseline!.env)
            : await runOnce(ROOT, { ...w, mode });
          console.error(
            `${w.model} ${mode} run ${r + 1}/${repeats}: ${result.samplesPerS.toFixed(1)} samples/s`,
          );
          results[w.name][mode].push(result);
        }
      }
    }
  } finally {
    if (baseline) await Deno.remove(resolve(baseline.root, ".."), { recursive: true });
  }

  const loadAfter = await loadAverage();
  const spread = (rs: RunResult[]) => {
    const xs = rs.map((x) => x.samplesPerS);
    return (Math.max(...xs) - Math.min(...xs)) / median(xs);
  };
  const med = (rs: RunResult[], f: (r: RunResult) => number | undefined) =>
    rs.length ? median(rs.map(f).filter((x): x is number => x !== undefined)) : NaN;
  const hardware = await hardwareLine();
  const versions = `libtorch ${await torchVersion()}, Deno ${Deno.version.deno}, Gloo (CPU)`;
  const rows: string[] = [];
  const summary: Record<string, { onOverOff: number; offOverBefore?: number; cpu: Record<string, number> }> =
    {};
  for (const w of workloads) {
    const r = results[w.name];
    const sps = (m: Mode) => med(r[m], (x) => x.samplesPerS);
    const cpu = (m: Mode) => med(r[m], (x) => x.cpuMsPerStep);
    const runs = (m: Mode) => r[m].map((x) => x.samplesPerS.toFixed(0)).join(", ");
    const ms = (m: Mode, f: (x: RunResult) => number | undefined) =>
      m === "before" ? "n/a" : med(r[m], f).toFixed(1);
    for (const m of modes) {
      rows.push(
        `| ${w.name} | ${m} | ${sps(m).toFixed(1)} | ${runs(m)} | ${(sps(m) / sps("off")).toFixed(3)} | ` +
          `${cpu(m).toFixed(2)} | ${(cpu(m) / cpu("off")).toFixed(3)} | ${ms(m, (x) => x.computeMs)} | ` +
          `${ms(m, (x) => x.commWaitMs)} |`,
      );
    }
    summary[w.name] = {
      onOverOff: sps("on") / sps("off"),
      ...(baseline ? { offOverBefore: sps("off") / sps("before") } : {}),
      cpu: Object.fromEntries(modes.map((m) => [m, cpu(m)])),
    };
  }
  const ratioLines = workloads.map((w) => {
    const s = summary[w.name];
    const cpuRatio = (a: Mode, b: Mode) => (s.cpu[a] / s.cpu[b]).toFixed(3);
    return `- ${w.name}: tracing on gives ${s.onOverOff.toFixed(3)}x the samples/s of tracing off ` +
      `(${cpuRatio("on", "off")}x the CPU time per step)` +
      (s.offOverBefore !== undefined
        ? `; tracing off gives ${s.offOverBefore.toFixed(3)}x the samples/s of the code before tracing ` +
          `(${cpuRatio("off", "before")}x the CPU time per step)`
        : "") +
      ". Run-to-run spread of the same mode ((max - min) / median samples/s): " +
      modes.map((m) => `${m} ${(spread(results[w.name][m]) * 100).toFixed(1)}%`).join(", ") +
      ". Buckets per traced step: " + med(results[w.name].on, (x) => x.buckets).toFixed(1) + ".";
  });
  const lines = [
    "# Tracing overhead: DDP training steps with tracing off and on",
    "",
    `Measured by \`deno run -A benchmarks/trace_overhead.ts${
      values.baseline ? ` --baseline ${values.baseline}` : ""
    }${values.repeats ? ` --repeats ${values.repeats}` : ""}\` on ${new Date().toISOString().slice(0, 10)}.`,
    "",
    `- Hardware: ${hardware}`,
    `- Versions: ${versions}`,
    `- Machine load (1-minute load average) before and after: ${loadBefore} and ${loadAfter}; other ` +
    `processes sharing the cores make wall-clock rates noisy, which is why rank 0's CPU time per step is ` +
    `reported beside them`,
    `- Setup: 2 CPU ranks on this machine, DDP over Gloo, 1 libtorch thread per rank, fp32, default buckets ` +
    `(1 MiB first, 25 MiB after); synthetic batches (tests/helpers.ts makeBatch: random ids, ragged rows, ` +
    `batch 8)`,
    `- Modes: off = this tree, no --trace (step clock readings and the time breakdown, no Reducer hook); ` +
    `on = the Reducer's recording hook, events drained every step into trace spans; ` +
    (baseline
      ? `before = commit ${baseline.commit.slice(0, 10)} (before tracing), built from a git archive with ` +
        `the same libtorch and running the same steps`
      : "before = not measured (no --baseline)"),
    `- Method: each run starts 2 fresh rank processes, warms up, then times the steps on rank 0 between two ` +
    `barriers; ${repeats} runs per mode, alternating in rotating order; medians`,
    "",
    "| workload | mode | samples/s (median) | runs | vs off | CPU ms/step | vs off | compute ms/step | " +
    "comm wait ms/step |",
    "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ...rows,
    "",
    ...ratioLines,
    "",
    "How to read it: `off` against `before` is the cost of the always-on part (six clock readings per step " +
    "in the native call, three more numbers in the all-reduce each epoch already does); `on` against `off` " +
    "is the cost of tracing (the Reducer's hook scales each bucket in a pass of its own instead of during " +
    "the copy into it, one more native call per step to drain the events, about ten span objects per step). " +
    "A ratio inside the run-to-run spread is not a measured difference.",
    "",
  ];
  console.log(lines.join("\n"));
  await writeResults(values.out!, "trace_overhead", lines.join("\n"), {
    hardware,
    versions,
    baseline: baseline?.commit,
    workloads,
    results,
    summary,
  });
}

if (import.meta.main) {
  if (Deno.env.get(RANK_FLAG)) await rank(JSON.parse(Deno.args[0]) as RankSpec);
  else await runCli(USAGE, () => main(Deno.args));
}
