/**
 * A torch.distributed process group from TypeScript: rendezvous through c10d's TCPStore (torchrun's
 * MASTER_ADDR/MASTER_PORT contract), Gloo for CPU tensors (NCCL for CUDA ones in CUDA builds), metric
 * all-reduces and barriers, and
 * {@link ProcessGroup.attachDdp}, which turns a model into DistributedDataParallel.
 *
 * Every call that waits on other processes runs on a worker thread, so the event loop keeps handling
 * signals and timers while a rank waits for its peers.
 * @module
 */

import { check, cString, loadNative, native, readCString } from "./lib.ts";
import type { DistilBertClassifier } from "./model.ts";

/** Where and how to join. */
export interface ProcessGroupOptions {
  rank: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  /**
   * "gloo" (CPU tensors; the default) or "nccl" (CUDA tensors through NCCL, CPU tensors still through Gloo;
   * only in CUDA builds).
   */
  backend?: "gloo" | "nccl";
  /** How long any collective or the rendezvous may wait for a peer (default 300 s). */
  timeoutMs?: number;
  /**
   * Whether this process serves the rendezvous store. Default: rank 0, unless the launcher's agent serves
   * it already (torchrun sets TORCHELASTIC_USE_AGENT_STORE=True; then every rank is a client).
   */
  hostStore?: boolean;
}

/** DistributedDataParallel's bucket sizes (defaults 25 MiB and a 1 MiB first bucket, as PyTorch's). */
export interface DdpOptions {
  bucketCapMb?: number;
  firstBucketCapMb?: number;
}

/**
 * Reads torchrun's environment contract; undefined when WORLD_SIZE is not set (a single process).
 * DISTRINEWS_RENDEZVOUS_TIMEOUT_S, when set, bounds how long a rank waits for the others (and for the
 * master's store) before it gives up with a message; the default is 300 s, as torch.distributed's.
 */
export function processGroupOptionsFromEnv(env: (name: string) => string | undefined = Deno.env.get):
  | ProcessGroupOptions
  | undefined {
  const worldSize = env("WORLD_SIZE");
  if (worldSize === undefined) return undefined;
  const int = (name: string, value: string | undefined) => {
    const n = Number(value);
    if (value === undefined || !Number.isInteger(n) || n < 0) {
      throw new Error(
        `${name} must be a non-negative integer (torchrun sets it), got ${JSON.stringify(value)}`,
      );
    }
    return n;
  };
  return {
    rank: int("RANK", env("RANK")),
    worldSize: int("WORLD_SIZE", worldSize),
    masterAddr: env("MASTER_ADDR") ?? "127.0.0.1",
    masterPort: int("MASTER_PORT", env("MASTER_PORT")),
    hostStore: env("TORCHELASTIC_USE_AGENT_STORE") === "True" ? false : undefined,
    ...(env("DISTRINEWS_RENDEZVOUS_TIMEOUT_S") === undefined
      ? {}
      : { timeoutMs: 1000 * positiveSeconds(env("DISTRINEWS_RENDEZVOUS_TIMEOUT_S")!) }),
  };
}

function positiveSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) {
    throw new Error(
      `DISTRINEWS_RENDEZVOUS_TIMEOUT_S must be a number of seconds > 0, got ${JSON.stringify(value)}`,
    );
  }
  return n;
}

function groupError(handle: Deno.PointerValue): string {
  const buf = new Uint8Array(4096);
  return readCString(buf, native().dn_group_last_error(handle, buf, BigInt(buf.length)));
}

/** A joined process group. Dispose it (or use `using`) to leave. */
export class ProcessGroup implements Disposable {
  readonly rank: number;
  readonly worldSize: number;
  #handle: Deno.PointerValue;

  private constructor(handle: Deno.PointerValue, rank: number, worldSize: number) {
    this.#handle = handle;
    this.rank = rank;
    this.worldSize = worldSize;
  }

  /** Joins the group; resolves once all `worldSize` ranks are there (or rejects at the timeout). */
  static async create(options: ProcessGroupOptions): Promise<ProcessGroup> {
    const lib = await loadNative();
    const { rank, worldSize, masterAddr, masterPort, backend = "gloo", timeoutMs = 300_000 } = options;
    const hostStore = options.hostStore ?? rank === 0;
    const out = new BigUint64Array(1);
    const status = await lib.dn_group_create(
      cString(masterAddr),
      masterPort,
      rank,
      worldSize,
      hostStore ? 1 : 0,
      cString(backend),
      BigInt(timeoutMs),
      new Uint8Array(out.buffer),
    );
    check("dn_group_create", status);
    return new ProcessGroup(Deno.UnsafePointer.create(out[0]), rank, worldSize);
  }

  #live(): Deno.PointerValue {
    if (this.#handle === null) throw new Error("this process group has been disposed");
    return this.#handle;
  }

  #check(call: string, status: number): void {
    if (status !== 0) throw new Error(`${call}: ${groupError(this.#handle)}`);
  }

  /** Element-wise sum across ranks, in place; returns `values`. */
  async allReduceSum(values: Float64Array): Promise<Float64Array> {
    const handle = this.#live();
    this.#check("allReduceSum", await native().dn_group_allreduce_sum(handle, values, BigInt(values.length)));
    return values;
  }

  /** Resolves once every rank has reached this barrier. */
  async barrier(): Promise<void> {
    this.#check("barrier", await native().dn_group_barrier(this.#live()));
  }

  /**
   * A barrier that returns the native clock's reading (nanoseconds, `monotonicNs`'s clock) taken the moment
   * the barrier let this rank go, on the thread that waited: every rank leaves a barrier at nearly the same
   * instant, so the readings of all ranks after one barrier tell how their clocks differ (training/trace.ts
   * aligns traces with it).
   */
  async barrierClock(): Promise<number> {
    const out = new BigInt64Array(1);
    this.#check(
      "barrierClock",
      await native().dn_group_barrier_clock(this.#live(), new Uint8Array(out.buffer)),
    );
    return Number(out[0]);
  }

  /**
   * Makes `model` DistributedDataParallel over this group: rank 0's parameters are copied to every rank,
   * then c10d's Reducer averages gradients in buckets during backward on every training step that applies
   * the optimizer (accumulation micro-steps stay local, as with DDP's no_sync()).
   */
  async attachDdp(model: DistilBertClassifier, options: DdpOptions = {}): Promise<void> {
    const { bucketCapMb = 25, firstBucketCapMb = 1 } = options;
    const mib = (x: number) => BigInt(Math.round(x * 1024 * 1024));
    const status = await native().dn_model_attach_ddp(
      model.nativeHandle(),
      this.#live(),
      mib(bucketCapMb),
      mib(firstBucketCapMb),
    );
    check("dn_model_attach_ddp", status, model.nativeHandle());
  }

  /** Leaves the group and frees its native resources. */
  dispose(): void {
    if (this.#handle !== null) native().dn_group_free(this.#handle);
    this.#handle = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
