/**
 * `deno task ddp` (`deno run -A launch.ts --gpus N [-- train flags]`): starts the N local ranks of a DDP job
 * as child processes, with `torchrun`'s environment contract, and supervises them.
 *
 * - Each rank is `deno run -A <script> <train flags>` (default script: `train.ts` next to this file) in a
 *   process group of its own, as torchrun does (`start_new_session`), so stopping a rank stops whatever it
 *   started too.
 * - Each rank sees RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE, ROLE_RANK,
 *   ROLE_NAME, ROLE_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, TORCHELASTIC_RUN_ID, TORCHELASTIC_RESTART_COUNT,
 *   TORCHELASTIC_MAX_RESTARTS, TORCHELASTIC_USE_AGENT_STORE, TORCH_NCCL_ASYNC_ERROR_HANDLING and (with more than
 *   one local rank, unless already set) OMP_NUM_THREADS: the variables torchrun's LocalElasticAgent sets.
 *   One difference is deliberate: TORCHELASTIC_USE_AGENT_STORE is "False" here, because no agent hosts a
 *   TCPStore; rank 0 hosts it on MASTER_ADDR:MASTER_PORT (under torchrun, "True": every rank is a client).
 * - Every line a rank writes is prefixed with `[rank R] ` on the same stream (stdout or stderr), whole lines
 *   at a time, so lines of different ranks never interleave.
 * - SIGINT, SIGTERM, SIGHUP and SIGQUIT are forwarded to every rank; the launcher then exits with 128 + the
 *   signal's number. A second signal kills the ranks at once.
 * - When a rank exits non-zero or is killed by a signal, the others get SIGTERM, then SIGKILL after a grace
 *   period (3 s), and the launcher exits with the failed rank's code (128 + signal number when killed).
 * @module
 */

import { resolvePretrained } from "./weights/pretrained_sources.ts";
import { fileURLToPath } from "node:url";
import { parseFlags, positiveInt, runCli, UsageError } from "./cli/args.ts";
import { concatBytes } from "./util/bytes.ts";

/** Variables every rank gets from the launcher (and from torchrun: see tests/e2e/launch_test.ts). */
export const CONTRACT_KEYS: readonly string[] = [
  "RANK",
  "LOCAL_RANK",
  "WORLD_SIZE",
  "LOCAL_WORLD_SIZE",
  "GROUP_RANK",
  "GROUP_WORLD_SIZE",
  "ROLE_RANK",
  "ROLE_NAME",
  "ROLE_WORLD_SIZE",
  "MASTER_ADDR",
  "MASTER_PORT",
  "TORCHELASTIC_RUN_ID",
  "TORCHELASTIC_RESTART_COUNT",
  "TORCHELASTIC_MAX_RESTARTS",
  "TORCHELASTIC_USE_AGENT_STORE",
  "TORCH_NCCL_ASYNC_ERROR_HANDLING",
];

/** Signals the launcher forwards to its ranks (torchrun's TORCHELASTIC_SIGNALS_TO_HANDLE). */
export const FORWARDED_SIGNALS: readonly Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"];

/** Default time between SIGTERM and SIGKILL when stopping ranks. */
export const DEFAULT_GRACE_MS = 3000;

/** Numbers of the signals the launcher handles (its exit code is 128 + the number, as a shell's). */
const SIGNAL_NUMBERS: Partial<Record<Deno.Signal, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGTERM: 15,
};

/** How long, after SIGKILL, the launcher still waits for a rank before giving up on it. */
const KILL_WAIT_MS = 2000;
/** How long, after a rank exits, its output may still drain (a grandchild may hold the pipe open). */
const DRAIN_MS = 1000;

/** What {@link launch} needs. Only `nprocPerNode` is commonly set; the rest mirror torchrun's flags. */
export interface LaunchOptions {
  /** Ranks on this node (`--gpus`, torchrun's `--nproc-per-node`). Default: every visible GPU, or 2 CPU ranks. */
  nprocPerNode?: number;
  /** Nodes in the job. Default 1. */
  nnodes?: number;
  /** This node's index in [0, nnodes). Default 0. */
  nodeRank?: number;
  /** Address of node 0, where rank 0 hosts the rendezvous store. Default "127.0.0.1". */
  masterAddr?: string;
  /** Port of the rendezvous store. Default: a free port when nnodes is 1; required when nnodes > 1. */
  masterPort?: number;
  /** Script each rank runs with `deno run -A`. Default: train.ts next to launch.ts. */
  script?: string;
  /** Arguments after the script (the training flags). */
  args?: string[];
  /** Full command line of a rank instead of `deno run -A script args` (torchrun's `--no-python`). */
  command?: string[];
  /** Run CPU ranks over Gloo even if GPUs are visible (sets CUDA_VISIBLE_DEVICES=""). */
  cpu?: boolean;
  /**
   * Number of CUDA devices, instead of asking libtorch ({@link detectCudaDevices}). 0 means CPU ranks.
   * Ignored with `cpu`.
   */
  deviceCount?: number;
  /** Extra variables for every rank (applied before the contract's, which win). */
  env?: Record<string, string>;
  /** Working directory of the ranks. Default: the launcher's. */
  cwd?: string;
  /** Milliseconds between SIGTERM and SIGKILL when stopping ranks. Default {@link DEFAULT_GRACE_MS}. */
  graceMs?: number;
  /** Forward SIGINT/SIGTERM/SIGHUP/SIGQUIT received by this process to the ranks. Default true. */
  forwardSignals?: boolean;
  /** Stops the ranks (SIGTERM, then SIGKILL) when aborted; the result's code is then 143. */
  signal?: AbortSignal;
  /** Where prefixed rank stdout goes. Default: this process's stdout. */
  stdout?: (bytes: Uint8Array) => void;
  /** Where prefixed rank stderr goes. Default: this process's stderr. */
  stderr?: (bytes: Uint8Array) => void;
  /** Where the launcher's own messages go (one line, no newline). Default: stderr, prefixed `[launcher] `. */
  log?: (line: string) => void;
}

/** How one rank ended. */
export interface RankExit {
  /** Global rank (RANK). */
  rank: number;
  /** Rank on this node (LOCAL_RANK). */
  localRank: number;
  /** Process id (also the id of the rank's process group). */
  pid: number;
  /** Exit code; 128 + signal number when killed by a signal; -1 if it never exited (gave up after SIGKILL). */
  code: number;
  /** The signal that killed it, if any. */
  signal: Deno.Signal | null;
}

/** What {@link launch} returns. */
export interface LaunchResult {
  /** The launcher's exit code: 0, the first failed rank's code, or 128 + a signal the launcher received. */
  code: number;
  /** Global rank of the first rank that failed (non-zero exit or killed by a signal). */
  failedRank?: number;
  /** Signal received by the launcher (or SIGTERM for an abort) that stopped the run. */
  signal?: Deno.Signal;
  /** Every rank's end, in local rank order. */
  ranks: RankExit[];
}

/** The rank-independent part of the contract, as {@link rankEnv} takes it. */
export interface JobShape {
  /** Ranks per node (LOCAL_WORLD_SIZE). */
  nprocPerNode: number;
  /** Nodes (GROUP_WORLD_SIZE). */
  nnodes: number;
  /** This node's index (GROUP_RANK). */
  nodeRank: number;
  /** MASTER_ADDR. */
  masterAddr: string;
  /** MASTER_PORT. */
  masterPort: number;
  /** TORCHELASTIC_RUN_ID. Default "none", as torchrun's static rendezvous. */
  runId?: string;
}

/**
 * The variables torchrun gives local rank `localRank` (global rank = nodeRank × nprocPerNode + localRank),
 * except TORCHELASTIC_USE_AGENT_STORE, which is "False": rank 0 hosts the store. `parentEnv` supplies
 * TORCH_NCCL_ASYNC_ERROR_HANDLING when set, as torchrun does.
 */
export function rankEnv(
  job: JobShape,
  localRank: number,
  parentEnv: Record<string, string> = Deno.env.toObject(),
): Record<string, string> {
  const worldSize = job.nnodes * job.nprocPerNode;
  const rank = job.nodeRank * job.nprocPerNode + localRank;
  return {
    RANK: String(rank),
    LOCAL_RANK: String(localRank),
    WORLD_SIZE: String(worldSize),
    LOCAL_WORLD_SIZE: String(job.nprocPerNode),
    GROUP_RANK: String(job.nodeRank),
    GROUP_WORLD_SIZE: String(job.nnodes),
    ROLE_RANK: String(rank),
    ROLE_NAME: "default",
    ROLE_WORLD_SIZE: String(worldSize),
    MASTER_ADDR: job.masterAddr,
    MASTER_PORT: String(job.masterPort),
    TORCHELASTIC_RUN_ID: job.runId ?? "none",
    TORCHELASTIC_RESTART_COUNT: "0",
    TORCHELASTIC_MAX_RESTARTS: "0",
    TORCHELASTIC_USE_AGENT_STORE: "False",
    TORCH_NCCL_ASYNC_ERROR_HANDLING: parentEnv.TORCH_NCCL_ASYNC_ERROR_HANDLING ?? "1",
  };
}

/** A TCP port that was free a moment ago: bound on `hostname`:0, then released (racy, as torchrun's). */
export function findFreePort(hostname = "127.0.0.1"): number {
  const listener = Deno.listen({ hostname, port: 0, transport: "tcp" });
  try {
    return (listener.addr as Deno.NetAddr).port;
  } finally {
    listener.close();
  }
}

/**
 * The number of CUDA devices libtorch sees, through the native library (ffi/model.ts, imported only here:
 * loading it may build the shim first). A library that cannot load counts as no GPU; `onError` hears why.
 */
export async function detectCudaDevices(onError?: (message: string) => void): Promise<number> {
  try {
    const { cudaDeviceCount } = await import("./ffi/model.ts");
    return await cudaDeviceCount();
  } catch (err) {
    onError?.(err instanceof Error ? err.message.split("\n")[0] : String(err));
    return 0;
  }
}

const NEWLINE = 10;

/**
 * Splits a byte stream into lines and hands each complete line, prefixed, to `sink`. All complete lines of
 * one chunk go out in one call, so a line is never split between writes. {@link flush} emits an unfinished
 * last line with a newline added. A line longer than `maxLine` bytes is cut there (memory stays bounded).
 */
export class LinePrefixer {
  #prefix: Uint8Array;
  #sink: (bytes: Uint8Array) => void;
  #maxLine: number;
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;

  /** `prefix` goes before every line; `sink` receives whole prefixed lines. */
  constructor(prefix: string, sink: (bytes: Uint8Array) => void, maxLine = 1 << 20) {
    this.#prefix = new TextEncoder().encode(prefix);
    this.#sink = sink;
    this.#maxLine = maxLine;
  }

  /** Takes the next chunk of the stream. */
  push(chunk: Uint8Array): void {
    const out: Uint8Array[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(NEWLINE); nl !== -1; nl = chunk.indexOf(NEWLINE, start)) {
      out.push(this.#prefix, ...this.#pending, chunk.subarray(start, nl + 1));
      this.#pending = [];
      this.#pendingBytes = 0;
      start = nl + 1;
    }
    if (start < chunk.length) {
      this.#pending.push(chunk.slice(start));
      this.#pendingBytes += chunk.length - start;
      if (this.#pendingBytes >= this.#maxLine) this.#takePending(out);
    }
    if (out.length > 0) this.#sink(concatBytes(out));
  }

  /** Emits an unfinished last line, newline-terminated. */
  flush(): void {
    const out: Uint8Array[] = [];
    this.#takePending(out);
    if (out.length > 0) this.#sink(concatBytes(out));
  }

  #takePending(out: Uint8Array[]): void {
    if (this.#pendingBytes === 0) return;
    out.push(this.#prefix, ...this.#pending, Uint8Array.of(NEWLINE));
    this.#pending = [];
    this.#pendingBytes = 0;
  }
}

/** A sink that writes all bytes synchronously to `file` (whole chunks, so lines stay whole); a closed pipe
 * ends the output silently instead of failing the run. */
function fileSink(file: { writeSync(p: Uint8Array): number }): (bytes: Uint8Array) => void {
  let broken = false;
  return (bytes) => {
    let offset = 0;
    while (!broken && offset < bytes.length) {
      try {
        offset += file.writeSync(bytes.subarray(offset));
      } catch {
        broken = true;
      }
    }
  };
}

const stdoutSink = fileSink(Deno.stdout);
const stderrSink = fileSink(Deno.stderr);
const defaultLog = (line: string) => stderrSink(new TextEncoder().encode(`[launcher] ${line}\n`));

function signalNumber(signal: Deno.Signal): number {
  return SIGNAL_NUMBERS[signal] ?? 15;
}

function describeExit(e: RankExit): string {
  if (e.code === -1) return "did not exit after SIGKILL";
  return e.signal ? `was killed by ${e.signal} (exit code ${e.code})` : `exited with code ${e.code}`;
}

function checkInt(name: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new UsageError(`${name} must be an integer in [${min}, ${max}], got ${value}`);
  }
}

interface Rank {
  localRank: number;
  rank: number;
  child: Deno.ChildProcess;
  exit?: RankExit;
  pumps: Pump[];
}

/**
 * Starts the local ranks of a DDP job and supervises them until all have exited (see the module's
 * description for the rules). Throws a {@link UsageError} for inconsistent options (bad numbers, a missing
 * master port with several nodes, more ranks than GPUs) before starting anything.
 *
 * ```ts
 * const { code, failedRank } = await launch({ nprocPerNode: 2, args: ["--epochs", "1"] });
 * ```
 */
export async function launch(options: LaunchOptions = {}): Promise<LaunchResult> {
  const log = options.log ?? defaultLog;
  const nnodes = options.nnodes ?? 1;
  const nodeRank = options.nodeRank ?? 0;
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
  checkInt("nnodes", nnodes, 1);
  checkInt("node rank", nodeRank, 0, nnodes - 1);
  if (options.nprocPerNode !== undefined) checkInt("ranks per node (--gpus)", options.nprocPerNode, 1);
  if (options.masterPort !== undefined) checkInt("master port", options.masterPort, 1, 65535);
  if (options.masterPort === undefined && nnodes > 1) {
    throw new UsageError("--master-port is required when --nnodes > 1 (every node must use the same one)");
  }
  checkInt("grace period (ms)", graceMs, 0);
  if (options.command !== undefined && options.command.length === 0) throw new Error("command is empty");

  // Devices: CPU ranks over Gloo, or one GPU per rank over NCCL.
  const env: Record<string, string> = { ...options.env };
  let nproc = options.nprocPerNode;
  let onGpus = false;
  if (options.cpu) {
    nproc ??= 2;
    env.CUDA_VISIBLE_DEVICES = "";
    log(`--cpu: running ${nproc} CPU rank(s) over Gloo (CUDA devices hidden)`);
  } else {
    const count = options.deviceCount ??
      await detectCudaDevices((m) => log(`cannot load the native library (${m}); assuming no CUDA devices`));
    if (count === 0) {
      nproc ??= 2;
      log(`no CUDA devices: running ${nproc} CPU ranks over Gloo`);
    } else {
      nproc ??= count;
      if (nproc > count) {
        throw new UsageError(
          `--gpus ${nproc} asks for more ranks than this node has CUDA devices (${count} visible); ` +
            `use --gpus ${count} or fewer, or --cpu for CPU ranks`,
        );
      }
      onGpus = true;
      log(`running ${nproc} rank(s) on ${nproc} of ${count} CUDA device(s) over NCCL`);
    }
  }
  const parentEnv = Deno.env.toObject();
  if (nproc > 1 && parentEnv.OMP_NUM_THREADS === undefined && env.OMP_NUM_THREADS === undefined) {
    // torchrun sets 1; CPU ranks share the cores instead, or each would start one thread per core.
    const threads = onGpus ? 1 : Math.max(1, Math.floor(navigator.hardwareConcurrency / nproc));
    env.OMP_NUM_THREADS = String(threads);
    log(`OMP_NUM_THREADS=${threads} for each rank (set OMP_NUM_THREADS to choose)`);
  }

  const job: JobShape = {
    nprocPerNode: nproc,
    nnodes,
    nodeRank,
    masterAddr: options.masterAddr ?? "127.0.0.1",
    masterPort: options.masterPort ?? findFreePort(),
  };
  const script = options.script ?? fileURLToPath(new URL("./train.ts", import.meta.url));
  const command = options.command ?? [Deno.execPath(), "run", "-A", script, ...(options.args ?? [])];
  log(
    `starting ranks ${nodeRank * nproc}..${nodeRank * nproc + nproc - 1} of ${nnodes * nproc} ` +
      `(node ${nodeRank} of ${nnodes}, master ${job.masterAddr}:${job.masterPort}): ${command.join(" ")}`,
  );

  const stdout = options.stdout ?? stdoutSink;
  const stderr = options.stderr ?? stderrSink;
  const ranks: Rank[] = [];
  const timers = new Set<ReturnType<typeof setTimeout>>();
  let failure: RankExit | undefined;
  let received: Deno.Signal | undefined;
  let stopping = false;
  let spawnError: Error | undefined;
  let allExited!: () => void;
  const finished = new Promise<void>((resolve) => (allExited = resolve));
  let giveUp!: () => void;
  const gaveUp = new Promise<void>((resolve) => (giveUp = resolve));

  const later = (ms: number, fn: () => void) => {
    const id = setTimeout(() => {
      timers.delete(id);
      fn();
    }, ms);
    timers.add(id);
  };
  /** Signals every rank's process group (an exited rank's too: whatever it started may still run). */
  const signalRanks = (sig: Deno.Signal) => {
    for (const r of ranks) {
      try {
        // The rank leads its own process group: signal the group, so its children stop too.
        Deno.kill(-r.child.pid, sig);
      } catch {
        try {
          if (!r.exit) r.child.kill(sig);
        } catch { /* already gone */ }
      }
    }
  };
  const killNow = () => {
    if (ranks.some((r) => !r.exit)) log("sending SIGKILL to the remaining ranks");
    signalRanks("SIGKILL");
    later(KILL_WAIT_MS, giveUp);
  };
  const stop = (sig: Deno.Signal) => {
    if (stopping) return;
    stopping = true;
    signalRanks(sig);
    later(graceMs, killNow);
  };

  const onSignal = (sig: Deno.Signal) => () => {
    if (received === undefined && !stopping) {
      received = sig;
      log(`received ${sig}: forwarding it to the ranks`);
      stop(sig);
    } else {
      log(`received ${sig} while stopping the ranks: killing them now`);
      killNow();
    }
  };
  const listeners: [Deno.Signal, () => void][] = [];
  if (options.forwardSignals ?? true) {
    for (const sig of FORWARDED_SIGNALS) {
      const listener = onSignal(sig);
      try {
        Deno.addSignalListener(sig, listener);
        listeners.push([sig, listener]);
      } catch { /* not supported on this platform */ }
    }
  }
  const onAbort = () => {
    if (received === undefined && !stopping) {
      received = "SIGTERM";
      log("aborted: stopping the ranks");
      stop("SIGTERM");
    }
  };
  options.signal?.addEventListener("abort", onAbort);

  const onExit = (r: Rank, status: Deno.CommandStatus) => {
    const signal = status.signal ?? null;
    r.exit = {
      rank: r.rank,
      localRank: r.localRank,
      pid: r.child.pid,
      code: status.code, // Deno reports 128 + the signal's number for a killed process
      signal,
    };
    if ((signal || status.code !== 0) && failure === undefined && received === undefined && !stopping) {
      failure = r.exit;
      log(`rank ${r.rank} ${describeExit(r.exit)}: stopping the other ranks`);
      stop("SIGTERM");
    }
    if (ranks.length === nproc && ranks.every((x) => x.exit)) allExited();
  };

  try {
    if (options.signal?.aborted) onAbort();
    for (let localRank = 0; localRank < nproc && !stopping; localRank++) {
      const rank = nodeRank * nproc + localRank;
      let child: Deno.ChildProcess;
      try {
        child = new Deno.Command(command[0], {
          args: command.slice(1),
          cwd: options.cwd,
          env: { ...env, ...rankEnv(job, localRank, parentEnv) },
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
          detached: true, // setsid: a process group per rank, like torchrun's start_new_session
        }).spawn();
      } catch (err) {
        spawnError = new Error(
          `cannot start rank ${rank} (${command[0]}): ${err instanceof Error ? err.message : err}`,
        );
        log(`${spawnError.message}: stopping the other ranks`);
        stop("SIGTERM");
        break;
      }
      const prefix = `[rank ${rank}] `;
      const r: Rank = {
        localRank,
        rank,
        child,
        pumps: [
          pump(child.stdout, new LinePrefixer(prefix, stdout)),
          pump(child.stderr, new LinePrefixer(prefix, stderr)),
        ],
      };
      ranks.push(r);
      child.status.then((s) => onExit(r, s));
    }
    if (ranks.length < nproc) {
      // Stopped while starting: nothing more will start, so "all exited" means these.
      nproc = ranks.length;
      if (ranks.every((x) => x.exit)) allExited();
    }
    await Promise.race([finished, gaveUp]);
    // Output: let each pipe drain, but not forever (a grandchild might keep it open).
    const pumps = ranks.flatMap((r) => r.pumps);
    await Promise.race([
      Promise.all(pumps.map((p) => p.done)),
      new Promise<void>((resolve) => later(DRAIN_MS, resolve)),
    ]);
    await Promise.all(pumps.map((p) => p.cancel()));
  } finally {
    for (const [sig, listener] of listeners) Deno.removeSignalListener(sig, listener);
    options.signal?.removeEventListener("abort", onAbort);
    for (const id of timers) clearTimeout(id);
    if (stopping) signalRanks("SIGKILL"); // leftovers in the ranks' process groups
  }

  if (spawnError) throw spawnError;
  const exits = ranks.map((r): RankExit =>
    r.exit ?? { rank: r.rank, localRank: r.localRank, pid: r.child.pid, code: -1, signal: null }
  );
  for (const e of exits) {
    if (e.code === -1) log(`rank ${e.rank} (pid ${e.pid}) did not exit after SIGKILL; leaving it`);
  }
  if (failure) {
    const others = exits.filter((e) => e !== failure && e.code !== 0).map((e) =>
      `rank ${e.rank} ${describeExit(e)}`
    );
    log(
      `FAILED: rank ${failure.rank} failed first (it ${describeExit(failure)})` +
        (others.length > 0 ? `; then ${others.join(", ")}` : "") + `; exit code ${failure.code}`,
    );
    return { code: failure.code, failedRank: failure.rank, ranks: exits };
  }
  if (received) {
    log(`stopped by ${received}: ${exits.map((e) => `rank ${e.rank} ${describeExit(e)}`).join(", ")}`);
    return { code: 128 + signalNumber(received), signal: received, ranks: exits };
  }
  log(`all ${exits.length} rank(s) finished`);
  return { code: 0, ranks: exits };
}

/** Pumps `stream` through `lines` until it ends or {@link Pump.cancel} is called. */
interface Pump {
  done: Promise<void>;
  cancel(): Promise<void>;
}

function pump(stream: ReadableStream<Uint8Array>, lines: LinePrefixer): Pump {
  const reader = stream.getReader();
  const done = (async () => {
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        lines.push(value);
      }
    } catch { /* cancelled or broken */ }
    lines.flush();
  })();
  return {
    done,
    cancel: async () => {
      try {
        await reader.cancel();
      } catch { /* already closed */ }
      await done;
    },
  };
}

const USAGE = `Usage: deno run -A launch.ts [options] [-- TRAIN_FLAGS...]
       (deno task ddp [options] [-- TRAIN_FLAGS...])

Starts the local ranks of a DDP training job, each as \`deno run -A SCRIPT TRAIN_FLAGS\`, with torchrun's
environment (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT, ...).
Output lines are prefixed with [rank R]. If a rank fails, the others are stopped and the launcher exits
with that rank's code. Without CUDA devices the ranks run on the CPU over Gloo.

Options:
  --gpus N             ranks on this node (default: all visible GPUs, or 2 CPU ranks without GPUs)
  --nproc-per-node N   same as --gpus (also --nproc_per_node)
  --nnodes N           nodes in the job (default 1)
  --node-rank R        this node's index, 0..nnodes-1 (default 0; also --node_rank)
  --master-addr HOST   address of node 0 (default 127.0.0.1; also --master_addr)
  --master-port PORT   rendezvous port (default: a free port; required with --nnodes > 1; also --master_port)
  --script FILE        the script each rank runs (default train.ts)
  --cpu                CPU ranks over Gloo even if GPUs are visible
  -h, --help           this help`;

function alias(values: Record<string, unknown>, names: string[]): string | undefined {
  const given = names.filter((n) => values[n] !== undefined);
  const distinct = new Set(given.map((n) => values[n]));
  if (distinct.size > 1) throw new UsageError(`conflicting values for --${given.join(" and --")}`);
  return given.length > 0 ? String(values[given[0]]) : undefined;
}

function nonNegativeInt(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isInteger(n) || n < 0) {
    throw new UsageError(`--${name} must be a non-negative integer, got "${value}"`);
  }
  return n;
}

/** Parses the launcher's command line into {@link LaunchOptions} (null: help was asked for). */
export function parseLaunchArgs(argv: string[]): LaunchOptions | null {
  const dash = argv.indexOf("--");
  const own = dash === -1 ? argv : argv.slice(0, dash);
  const rest = dash === -1 ? [] : argv.slice(dash + 1);
  const { values, positionals } = parseFlags(own, {
    gpus: { type: "string" },
    "nproc-per-node": { type: "string" },
    nproc_per_node: { type: "string" },
    nnodes: { type: "string" },
    "node-rank": { type: "string" },
    node_rank: { type: "string" },
    "master-addr": { type: "string" },
    master_addr: { type: "string" },
    "master-port": { type: "string" },
    master_port: { type: "string" },
    script: { type: "string" },
    cpu: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) return null;
  if (positionals.length > 0) {
    throw new UsageError(`unexpected argument "${positionals[0]}": put the training flags after --`);
  }
  const gpus = alias(values, ["gpus", "nproc-per-node", "nproc_per_node"]);
  const port = alias(values, ["master-port", "master_port"]);
  const masterPort = nonNegativeInt("master-port", port);
  if (masterPort !== undefined && (masterPort < 1 || masterPort > 65535)) {
    throw new UsageError(`--master-port must be in [1, 65535], got ${masterPort}`);
  }
  const nnodes = positiveInt("nnodes", values.nnodes, 1);
  const nodeRank = nonNegativeInt("node-rank", alias(values, ["node-rank", "node_rank"])) ?? 0;
  if (nodeRank >= nnodes) {
    throw new UsageError(`--node-rank must be below --nnodes (${nnodes}), got ${nodeRank}`);
  }
  if (nnodes > 1 && masterPort === undefined) {
    throw new UsageError("--master-port is required when --nnodes > 1 (every node must use the same one)");
  }
  return {
    nprocPerNode: gpus === undefined ? undefined : positiveInt("gpus", gpus, 1),
    nnodes,
    nodeRank,
    masterAddr: alias(values, ["master-addr", "master_addr"]),
    masterPort,
    script: values.script,
    cpu: values.cpu ?? false,
    args: rest,
  };
}

async function main(argv: string[]): Promise<void> {
  const options = parseLaunchArgs(argv);
  if (options === null) {
    console.log(USAGE);
    return;
  }
  await warmPretrainedCache(options.args ?? []);
  const { code } = await launch(options);
  Deno.exit(code);
}

/**
 * Fetches train.ts's `--pretrained` source once, before any rank starts: otherwise every rank of a cold
 * cache would download (or pip-fetch) its own copy at the same moment. The ranks then find it cached.
 * Each node's launcher does this for its own ranks; for a multi-node job from a Hub branch, pin a commit
 * (`owner/name@<sha>`) so that no node can see a newer one.
 */
async function warmPretrainedCache(trainArgs: string[]): Promise<void> {
  const i = trainArgs.findIndex((a) => a === "--pretrained" || a.startsWith("--pretrained="));
  if (i < 0) return;
  const spec = trainArgs[i].includes("=") ? trainArgs[i].slice("--pretrained=".length) : trainArgs[i + 1];
  if (!spec) return; // train.ts reports the missing value itself
  const source = await resolvePretrained(spec);
  defaultLog(`pretrained weights ready for every rank: ${source.description}`);
}

if (import.meta.main) await runCli(USAGE, () => main(Deno.args));
