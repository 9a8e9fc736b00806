/**
 * The launcher's command line: one flag table (cli/flags.ts) that parses, checks and prints the usage of
 * `deno task ddp`, and {@link LaunchOptions}, what a launch is asked to do (by the command line or by code).
 * Everything after `--` belongs to the ranks' script and passes through untouched.
 * @module
 */

import { type Flag, flags, parseFlagTable, usage } from "../cli/flags.ts";
import { UsageError } from "../cli/args.ts";

/** What a launch is asked to do. Only `nprocPerNode` is commonly set; the rest mirror torchrun's flags. */
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
  /** Script each rank runs with `deno run -A`. Default: train.ts at the repository root. */
  script?: string;
  /** Arguments after the script (the training flags). */
  args?: string[];
  /** Full command line of a rank instead of `deno run -A script args` (torchrun's `--no-python`). */
  command?: string[];
  /** Run CPU ranks over Gloo even if GPUs are visible (sets CUDA_VISIBLE_DEVICES=""). */
  cpu?: boolean;
  /** Number of CUDA devices, instead of asking libtorch. 0 means CPU ranks. Ignored with `cpu`. */
  deviceCount?: number;
  /** Extra variables for every rank (applied before the contract's, which win). */
  env?: Record<string, string>;
  /** Working directory of the ranks. Default: the launcher's. */
  cwd?: string;
  /** Milliseconds between SIGTERM and SIGKILL when stopping ranks. Default 3000. */
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

const HEADER = `Usage: deno run -A launch.ts [options] [-- TRAIN_FLAGS...]
       (deno task ddp [options] [-- TRAIN_FLAGS...])

Starts the local ranks of a DDP training job, each as \`deno run -A SCRIPT TRAIN_FLAGS\`, with torchrun's
environment (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT, ...).
Output lines are prefixed with [rank R]. If a rank fails, the others are stopped and the launcher exits
with that rank's code. Without CUDA devices the ranks run on the CPU over Gloo.`;

const FOOTER =
  "torchrun's spellings --nproc_per_node, --node_rank, --master_addr and --master_port work too.";

/** A TCP port: an integer in [1, 65535], or absent. */
function port(d: { help: string; defaultText?: string }): Flag<number | undefined> {
  const base = flags.optionalInt({ placeholder: "PORT", min: 1, ...d });
  return {
    ...base,
    parse: (raw, name) => {
      const n = base.parse(raw, name);
      if (n !== undefined && n > 65535) throw new UsageError(`--${name} must be in [1, 65535], got ${n}`);
      return n;
    },
  };
}

/** The launcher's flags, in the order the usage lists them. */
export const LAUNCH_FLAGS = {
  gpus: flags.optionalInt({
    section: "Options",
    help: "ranks on this node",
    defaultText: "all visible GPUs, or 2 CPU ranks without GPUs",
  }),
  "nproc-per-node": flags.optionalInt({ help: "same as --gpus" }),
  nnodes: flags.int({ help: "nodes in the job", default: 1 }),
  "node-rank": flags.optionalInt({
    placeholder: "R",
    min: 0,
    help: "this node's index, 0..nnodes-1",
    defaultText: "0",
  }),
  "master-addr": flags.optionalString({
    placeholder: "HOST",
    help: "address of node 0",
    defaultText: "127.0.0.1",
  }),
  "master-port": port({
    help: "rendezvous port, the same on every node; required with --nnodes > 1",
    defaultText: "a free port",
  }),
  script: flags.optionalString({
    placeholder: "FILE",
    help: "the script each rank runs",
    defaultText: "train.ts",
  }),
  cpu: flags.boolean({ help: "CPU ranks over Gloo even if GPUs are visible" }),
};

/** torchrun's underscore spellings: parsed exactly as their dashed twins, and only named in the footer. */
const TORCHRUN_SPELLINGS = {
  nproc_per_node: LAUNCH_FLAGS["nproc-per-node"],
  node_rank: LAUNCH_FLAGS["node-rank"],
  master_addr: LAUNCH_FLAGS["master-addr"],
  master_port: LAUNCH_FLAGS["master-port"],
};

/** The help text of `deno task ddp`. */
export const LAUNCH_USAGE: string = usage(HEADER, LAUNCH_FLAGS, FOOTER);

/** The value of whichever of `names` was given; two different values are a UsageError naming both. */
function oneOf<T>(values: Record<string, unknown>, names: string[]): T | undefined {
  const given = names.filter((n) => values[n] !== undefined);
  if (new Set(given.map((n) => values[n])).size > 1) {
    throw new UsageError(`conflicting values for --${given.join(" and --")}`);
  }
  return given.length > 0 ? values[given[0]] as T : undefined;
}

/**
 * Parses the launcher's command line into {@link LaunchOptions} (null: help was asked for). Everything after
 * the first `--` is the script's, untouched (another `--` or `--help` there included).
 * @throws UsageError naming the flag, for an unknown flag, a bad value or inconsistent values.
 */
export function parseLaunchArgs(argv: string[]): LaunchOptions | null {
  const dash = argv.indexOf("--");
  const own = dash === -1 ? argv : argv.slice(0, dash);
  const rest = dash === -1 ? [] : argv.slice(dash + 1);
  const { values, positionals, help } = parseFlagTable(own, { ...LAUNCH_FLAGS, ...TORCHRUN_SPELLINGS });
  if (help) return null;
  if (positionals.length > 0) {
    throw new UsageError(`unexpected argument "${positionals[0]}": put the training flags after --`);
  }
  const nnodes = values.nnodes;
  const nodeRank = oneOf<number>(values, ["node-rank", "node_rank"]) ?? 0;
  if (nodeRank >= nnodes) {
    throw new UsageError(`--node-rank must be below --nnodes (${nnodes}), got ${nodeRank}`);
  }
  const masterPort = oneOf<number>(values, ["master-port", "master_port"]);
  if (nnodes > 1 && masterPort === undefined) {
    throw new UsageError("--master-port is required when --nnodes > 1 (every node must use the same one)");
  }
  return {
    nprocPerNode: oneOf<number>(values, ["gpus", "nproc-per-node", "nproc_per_node"]),
    nnodes,
    nodeRank,
    masterAddr: oneOf<string>(values, ["master-addr", "master_addr"]),
    masterPort,
    script: values.script,
    cpu: values.cpu,
    args: rest,
  };
}
