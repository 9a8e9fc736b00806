/**
 * The job plan: from the launch options and a few facts about this machine to everything the supervisor
 * will do — which ranks, each one's command line, environment and output prefix, and how long stopping may
 * take. Pure: it starts nothing, reads nothing and writes nothing, so every decision the launcher makes
 * before a process exists can be tested as a value (launcher/plan_test.ts).
 * @module
 */

import { fileURLToPath } from "node:url";
import { UsageError } from "../cli/args.ts";
import { type JobShape, rankEnv } from "./contract.ts";
import type { LaunchOptions } from "./options.ts";

/** Default time between SIGTERM and SIGKILL when stopping ranks. */
export const DEFAULT_GRACE_MS = 3000;
/** How long, after SIGKILL, the launcher still waits for a rank before giving up on it. */
export const KILL_WAIT_MS = 2000;
/** How long, after the ranks exit, their output may still drain (a grandchild may hold a pipe open). */
export const DRAIN_MS = 1000;

/** The script a rank runs unless told otherwise: train.ts at the repository root. */
export const DEFAULT_SCRIPT: string = fileURLToPath(new URL("../train.ts", import.meta.url));

/** What the plan needs to know about this machine; launcher/host.ts asks it. */
export interface HostFacts {
  /** CUDA devices libtorch sees (0 without any, and with `cpu`, where nobody asks). */
  cudaDevices: number;
  /** Logical CPUs, shared out among CPU ranks as OMP_NUM_THREADS. */
  cpus: number;
  /** The launcher's own environment, which every rank inherits (OMP_NUM_THREADS and
   * TORCH_NCCL_ASYNC_ERROR_HANDLING are read from it). */
  env: Record<string, string>;
  /** A free local port for the rendezvous store; needed only when the options name none. */
  freePort?: number;
  /** The deno binary that runs each rank's script. */
  denoPath: string;
}

/** One rank as the supervisor will start it. */
export interface RankPlan {
  /** Global rank (RANK). */
  rank: number;
  /** Rank on this node (LOCAL_RANK). */
  localRank: number;
  /** Program and arguments. */
  argv: string[];
  /** Variables added to the launcher's environment for this rank: the contract, and the job's extras. */
  env: Record<string, string>;
  /** Goes before each line the rank writes (`[rank R] `). */
  prefix: string;
}

/** Everything a launch will do, decided before any process starts. */
export interface JobPlan {
  /** The rank-independent part of torchrun's contract (sizes, node, master address and port). */
  job: JobShape;
  /** The collective backend the ranks will pick for the devices planned: nccl on GPUs, gloo on CPUs. */
  backend: "nccl" | "gloo";
  /** The local ranks, by local rank. */
  ranks: RankPlan[];
  /** Working directory of the ranks (undefined: the launcher's). */
  cwd?: string;
  /** Milliseconds from SIGTERM to SIGKILL when the ranks are stopped. */
  graceMs: number;
  /** Milliseconds from SIGKILL until the launcher gives up waiting for a rank. */
  killWaitMs: number;
  /** Milliseconds the ranks' output may take to drain after they exit. */
  drainMs: number;
  /** The `--pretrained` source among the training flags, to fetch once before the ranks start. */
  pretrained?: string;
  /** What the launcher chose and why, one line each, for the log. */
  notes: string[];
}

function checkInt(name: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new UsageError(`${name} must be an integer in [${min}, ${max}], got ${value}`);
  }
}

/**
 * Checks what can be checked without the machine: numbers in range, a master port when there are several
 * nodes, a non-empty command. {@link planJob} does it too; the launcher calls it first so that a mistake is
 * reported before it loads the native library to count GPUs.
 * @throws UsageError (Error for an empty `command`, a programming mistake).
 */
export function checkLaunchOptions(options: LaunchOptions): void {
  const nnodes = options.nnodes ?? 1;
  checkInt("nnodes", nnodes, 1);
  checkInt("node rank", options.nodeRank ?? 0, 0, nnodes - 1);
  if (options.nprocPerNode !== undefined) checkInt("ranks per node (--gpus)", options.nprocPerNode, 1);
  if (options.masterPort !== undefined) checkInt("master port", options.masterPort, 1, 65535);
  if (options.masterPort === undefined && nnodes > 1) {
    throw new UsageError("--master-port is required when --nnodes > 1 (every node must use the same one)");
  }
  checkInt("grace period (ms)", options.graceMs ?? DEFAULT_GRACE_MS, 0);
  if (options.command !== undefined && options.command.length === 0) throw new Error("command is empty");
}

/**
 * The `--pretrained` source among train's flags (`--pretrained X` or `--pretrained=X`), if any. The launcher
 * fetches it once, before the ranks start: otherwise every rank of a cold cache would download its own copy
 * at the same moment.
 */
export function pretrainedSpec(trainArgs: readonly string[]): string | undefined {
  const i = trainArgs.findIndex((a) => a === "--pretrained" || a.startsWith("--pretrained="));
  if (i < 0) return undefined;
  const spec = trainArgs[i].includes("=") ? trainArgs[i].slice("--pretrained=".length) : trainArgs[i + 1];
  return spec || undefined; // a missing value: train.ts reports it itself
}

/**
 * Plans a launch: how many ranks on which devices, each rank's contract variables, command line and prefix,
 * and the timeouts of stopping. Same inputs, same plan; `options` and `host` are not modified.
 * @throws UsageError for inconsistent options (see {@link checkLaunchOptions}) or more ranks than GPUs.
 */
export function planJob(options: LaunchOptions, host: HostFacts): JobPlan {
  checkLaunchOptions(options);
  const nnodes = options.nnodes ?? 1;
  const nodeRank = options.nodeRank ?? 0;
  const notes: string[] = [];
  const extra: Record<string, string> = { ...options.env };

  // Devices: CPU ranks over Gloo, or one GPU per rank over NCCL (a rank uses cuda:LOCAL_RANK).
  let nproc: number;
  let backend: JobPlan["backend"] = "gloo";
  if (options.cpu) {
    nproc = options.nprocPerNode ?? 2;
    extra.CUDA_VISIBLE_DEVICES = "";
    notes.push(`--cpu: running ${nproc} CPU rank(s) over Gloo (CUDA devices hidden)`);
  } else if (host.cudaDevices === 0) {
    nproc = options.nprocPerNode ?? 2;
    notes.push(`no CUDA devices: running ${nproc} CPU ranks over Gloo`);
  } else {
    const count = host.cudaDevices;
    nproc = options.nprocPerNode ?? count;
    if (nproc > count) {
      // Two ranks on one GPU would each hold a full model replica and fight over its memory; refuse early.
      throw new UsageError(
        `--gpus ${nproc} asks for more ranks than this node has CUDA devices (${count} visible); ` +
          `use --gpus ${count} or fewer, or --cpu for CPU ranks`,
      );
    }
    backend = "nccl";
    notes.push(`running ${nproc} rank(s) on ${nproc} of ${count} CUDA device(s) over NCCL`);
  }
  if (nproc > 1 && host.env.OMP_NUM_THREADS === undefined && extra.OMP_NUM_THREADS === undefined) {
    // torchrun sets 1; CPU ranks share the cores instead, or each would start one thread per core.
    const threads = backend === "nccl" ? 1 : Math.max(1, Math.floor(host.cpus / nproc));
    extra.OMP_NUM_THREADS = String(threads);
    notes.push(`OMP_NUM_THREADS=${threads} for each rank (set OMP_NUM_THREADS to choose)`);
  }

  const masterPort = options.masterPort ?? host.freePort;
  if (masterPort === undefined) throw new Error("planJob: no master port given and no free port found");
  const job: JobShape = {
    nprocPerNode: nproc,
    nnodes,
    nodeRank,
    masterAddr: options.masterAddr ?? "127.0.0.1",
    masterPort,
  };
  const argv = options.command ??
    [host.denoPath, "run", "-A", options.script ?? DEFAULT_SCRIPT, ...(options.args ?? [])];
  const ranks = Array.from({ length: nproc }, (_, localRank): RankPlan => {
    const rank = nodeRank * nproc + localRank;
    return {
      rank,
      localRank,
      argv: [...argv],
      // The contract is applied last: a stray RANK in `env` must not confuse a rank about who it is.
      env: { ...extra, ...rankEnv(job, localRank, host.env) },
      prefix: `[rank ${rank}] `,
    };
  });
  return {
    job,
    backend,
    ranks,
    cwd: options.cwd,
    graceMs: options.graceMs ?? DEFAULT_GRACE_MS,
    killWaitMs: KILL_WAIT_MS,
    drainMs: DRAIN_MS,
    pretrained: pretrainedSpec(options.args ?? []),
    notes,
  };
}

/** The launcher's "starting" line: which global ranks, where they meet, and the command they run. */
export function describeStart(plan: JobPlan): string {
  const { job, ranks } = plan;
  const first = job.nodeRank * job.nprocPerNode;
  return `starting ranks ${first}..${first + ranks.length - 1} of ${job.nnodes * job.nprocPerNode} ` +
    `(node ${job.nodeRank} of ${job.nnodes}, master ${job.masterAddr}:${job.masterPort}): ` +
    (ranks[0]?.argv ?? []).join(" ");
}
