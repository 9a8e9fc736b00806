/**
 * `deno task ddp` (`deno run -A launch.ts --gpus N [-- train flags]`): starts the N local ranks of a DDP job
 * as child processes, with `torchrun`'s environment contract, and supervises them. This file is the entry
 * point; each step is one module of launcher/:
 *
 * 1. parse the flags (launcher/options.ts; everything after `--` is train's, untouched);
 * 2. warm the `--pretrained` cache once, so N ranks do not download the same weights at once
 *    (launcher/warm.ts), before a port is picked;
 * 3. plan the job (launcher/host.ts asks the machine for GPUs and a free port, then launcher/plan.ts decides,
 *    without side effects, every rank's environment, command line and output prefix);
 * 4. run the ranks under the supervisor (launcher/supervisor.ts): `[rank R] `-prefixed output
 *    (launcher/output.ts), SIGINT/SIGTERM/SIGHUP/SIGQUIT forwarded (a second one kills at once), and when a
 *    rank fails, the others stopped together: SIGTERM, then SIGKILL after a grace period (3 s);
 * 5. print the summary, one line per rank and a verdict, and exit with its code (launcher/summary.ts): the
 *    first failed rank's code, 128 + a signal the launcher received, or 0.
 *
 * Each rank sees RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE, ROLE_RANK,
 * ROLE_NAME, ROLE_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, TORCHELASTIC_RUN_ID, TORCHELASTIC_RESTART_COUNT,
 * TORCHELASTIC_MAX_RESTARTS, TORCHELASTIC_USE_AGENT_STORE, TORCH_NCCL_ASYNC_ERROR_HANDLING and (with more than
 * one local rank, unless already set) OMP_NUM_THREADS: the variables torchrun's LocalElasticAgent sets
 * (launcher/contract.ts). One difference is deliberate: TORCHELASTIC_USE_AGENT_STORE is "False" here, because
 * no agent hosts a TCPStore; rank 0 hosts it on MASTER_ADDR:MASTER_PORT.
 * @module
 */

import { runCli } from "./cli/args.ts";
import { gatherHostFacts } from "./launcher/host.ts";
import { LAUNCH_USAGE, type LaunchOptions, parseLaunchArgs } from "./launcher/options.ts";
import { launcherLog, stderrSink, stdoutSink } from "./launcher/output.ts";
import { checkLaunchOptions, describeStart, type JobPlan, planJob, pretrainedSpec } from "./launcher/plan.ts";
import { forwardSignals, Supervisor } from "./launcher/supervisor.ts";
import { type RunSummary, summaryLines } from "./launcher/summary.ts";
import { warmPretrainedCache } from "./launcher/warm.ts";

export { CONTRACT_KEYS, type JobShape, rankEnv } from "./launcher/contract.ts";
export { detectCudaDevices, findFreePort } from "./launcher/host.ts";
export { LAUNCH_USAGE, type LaunchOptions, parseLaunchArgs } from "./launcher/options.ts";
export { LinePrefixer } from "./launcher/output.ts";
export { DEFAULT_GRACE_MS, type JobPlan, planJob } from "./launcher/plan.ts";
export { FORWARDED_SIGNALS, type RankState, Supervisor } from "./launcher/supervisor.ts";
export type { RankExit, RankReport, RunSummary } from "./launcher/summary.ts";

/** What {@link launch} returns: the run's summary (exit code, first failed rank, every rank's end). */
export type LaunchResult = RunSummary;

/**
 * Starts the local ranks of a DDP job and supervises them until all have exited (see the module's
 * description for the rules). Throws a UsageError for inconsistent options (bad numbers, a missing
 * master port with several nodes, more ranks than GPUs) before starting anything. Unlike the command
 * line, it does not warm the `--pretrained` cache.
 *
 * ```ts
 * const { code, failedRank } = await launch({ nprocPerNode: 2, args: ["--epochs", "1"] });
 * ```
 */
export async function launch(options: LaunchOptions = {}): Promise<LaunchResult> {
  const log = options.log ?? launcherLog;
  return await supervise(await prepare(options, log), options, log);
}

/** Options to plan: the cheap checks first (before loading the native library to count GPUs), then the
 * machine's facts, then the pure plan, whose choices are logged. */
async function prepare(options: LaunchOptions, log: (line: string) => void): Promise<JobPlan> {
  checkLaunchOptions(options);
  const plan = planJob(options, await gatherHostFacts(options, log));
  for (const note of plan.notes) log(note);
  return plan;
}

/** Runs the plan's ranks under a {@link Supervisor}, wired to this process's signals and `options.signal`,
 * and logs the summary. */
async function supervise(
  plan: JobPlan,
  options: LaunchOptions,
  log: (line: string) => void,
): Promise<RunSummary> {
  log(describeStart(plan));
  const supervisor = new Supervisor(plan, {
    stdout: options.stdout ?? stdoutSink,
    stderr: options.stderr ?? stderrSink,
    log,
  });
  using _forwarding = (options.forwardSignals ?? true) ? forwardSignals(supervisor) : undefined;
  const onAbort = () => supervisor.abort();
  options.signal?.addEventListener("abort", onAbort);
  try {
    if (options.signal?.aborted) onAbort();
    const summary = await supervisor.run();
    for (const line of summaryLines(summary)) log(line);
    return summary;
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
}

async function main(argv: string[]): Promise<void> {
  const options = parseLaunchArgs(argv);
  if (options === null) {
    console.log(LAUNCH_USAGE);
    return;
  }
  // Warm the cache before the free port is picked: a long first download would otherwise leave the port
  // unclaimed (rank 0's store binds it) for minutes, time for another process to take it.
  checkLaunchOptions(options);
  const pretrained = pretrainedSpec(options.args ?? []);
  if (pretrained) await warmPretrainedCache(pretrained, launcherLog);
  const { code } = await supervise(await prepare(options, launcherLog), options, launcherLog);
  Deno.exit(code);
}

if (import.meta.main) await runCli(LAUNCH_USAGE, () => main(Deno.args));
