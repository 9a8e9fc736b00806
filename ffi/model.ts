/**
 * A typed handle on the native DistilBertForSequenceClassification: creation on a device, one-call
 * training steps and inference (blocking or on a worker thread), and parameter access by Hugging Face
 * name. Native memory is released by {@link DistilBertClassifier.dispose} (or `using`).
 * @module
 */

import {
  check,
  cString,
  DTypeCode,
  Flags,
  loadNative,
  MAX_NDIM,
  native,
  readCString,
  STEP_RESULT_BYTES,
  TRACE_EVENT_BYTES,
  TraceKind,
} from "./lib.ts";
import { type DistilBertConfig, validateConfig } from "../model/config.ts";
import type { DType, RawTensor, StateDict } from "../model/tensor.ts";
import { numel } from "../model/tensor.ts";
import { fsyncFile } from "../util/fs.ts";
import type { Batch, LabeledBatch } from "../model/batch.ts";

/** Options of one training (micro-)step. */
export interface StepOptions {
  /** Learning rate for this step (the schedule lives in TypeScript). */
  lr: number;
  /** Clip the total gradient L2 norm to this (0 or absent: no clipping). Default 1.0, as transformers. */
  maxGradNorm?: number;
  /** Multiplies the loss before backward, e.g. 1/accumulation steps. Default 1. */
  lossScale?: number;
  /** Apply the optimizer after backward (false: only accumulate gradients). Default true. */
  apply?: boolean;
  /** bf16 autocast for the forward pass (CUDA or CPU; weights, gradients and AdamW stay fp32). */
  bf16?: boolean;
  /**
   * Compute on the padded layout, as a plain forward would (the baseline). Default false: matrix products
   * run on the real tokens only and the last layer on [CLS] only, with the same loss and gradients.
   */
  padded?: boolean;
}

/**
 * Where one training step's time went: readings of {@link monotonicNs}'s clock (nanoseconds), taken inside
 * the native call on every step. In order: the call began (then the batch is checked and copied to the
 * device), forward began, backward began, the last gradient was ready (backward's compute ended), backward
 * returned (under DDP, after the Reducer waited for every bucket's all-reduce), the call ended (after
 * clipping and AdamW when the step applied the optimizer).
 */
export interface StepTiming {
  startNs: number;
  forwardNs: number;
  backwardNs: number;
  gradsReadyNs: number;
  backwardEndNs: number;
  endNs: number;
}

/** What a training step reports. */
export interface StepResult {
  /** Mean cross-entropy over the batch (before lossScale). */
  loss: number;
  /** Total gradient norm before clipping (0 when not applied or not clipped). */
  gradNorm: number;
  /** Rows whose argmax matched the label. */
  correct: number;
  /** Rows in the batch. */
  count: number;
  /** The step's phases on the native clock. */
  timing: StepTiming;
}

/**
 * One gradient bucket's all-reduce, timed inside c10d's Reducer while tracing (see
 * {@link DistilBertClassifier.enableTracing}); times on {@link monotonicNs}'s clock.
 */
export interface BucketEvent {
  /** The bucket's index: buckets are all-reduced in index order, which after the first step is the order
   * their gradients became ready in backward (last layers first). */
  bucket: number;
  /** The Reducer handed the bucket to the process group: all of its gradients were ready. */
  startNs: number;
  /** The all-reduce completed. */
  endNs: number;
  /** Size of the bucket's flat gradient buffer. */
  bytes: number;
  /** Parameter tensors in the bucket. */
  params: number;
}

/** Inference output, both row-major [batchSize, numLabels]. */
export interface Prediction {
  logits: Float32Array;
  probabilities: Float32Array;
}

/** AdamW hyper-parameters (torch.optim.AdamW semantics). */
export interface OptimizerOptions {
  weightDecay?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
}

/** Where a model lives: "cpu", "cuda", "cuda:N", or "auto" (CUDA when present, else CPU). */
export type DeviceSpec = "auto" | "cpu" | "cuda" | `cuda:${number}`;

/** Name and shape of one parameter. */
export interface ParamInfo {
  name: string;
  shape: number[];
}

/** Result of {@link DistilBertClassifier.loadStateDict}. */
export interface LoadReport {
  /** Model parameters the state_dict did not provide (left as initialised). */
  missing: string[];
  /** Entries of the state_dict the model has no parameter for (ignored). */
  unexpected: string[];
}

const DTYPE_CODES: Partial<Record<DType, number>> = {
  F32: DTypeCode.F32,
  F16: DTypeCode.F16,
  BF16: DTypeCode.BF16,
  F64: DTypeCode.F64,
};

/** Buffers not part of the state_dict in current transformers (non-persistent), found in old checkpoints. */
const IGNORED_KEYS = /(^|\.)embeddings\.position_ids$/;

/** Sets libtorch's intra-op thread count (and inter-op, only possible before any parallel work). */
export async function setNumThreads(intra: number, interop = 0): Promise<void> {
  const n = await loadNative();
  check("dn_set_num_threads", n.dn_set_num_threads(intra, interop));
}

/** libtorch's current intra-op thread count. */
export async function getNumThreads(): Promise<number> {
  return (await loadNative()).dn_get_num_threads();
}

/** Number of visible CUDA devices (0 on a CPU build or machine). */
export async function cudaDeviceCount(): Promise<number> {
  return (await loadNative()).dn_cuda_device_count();
}

/** The libtorch version the native core runs on. */
export async function torchVersion(): Promise<string> {
  const n = await loadNative();
  const buf = new Uint8Array(128);
  return readCString(buf, n.dn_torch_version(buf, BigInt(buf.length)));
}

/** Seeds libtorch's generators (dropout masks). */
export async function manualSeed(seed: number | bigint): Promise<void> {
  const n = await loadNative();
  check("dn_manual_seed", n.dn_manual_seed(BigInt(seed)));
}

/**
 * `torch.randperm(n, generator=torch.Generator().manual_seed(seed))`, computed by libtorch itself so the
 * order is PyTorch's bit for bit (DistributedSampler's shuffle).
 */
export async function randperm(n: number, seed: number | bigint): Promise<BigInt64Array> {
  await loadNative();
  return randpermSync(n, seed);
}

/**
 * {@link randperm} without awaiting, for callers on a hot path that have loaded the library already.
 * @throws Error if the native library is not loaded yet (`await loadNative()` first).
 */
export function randpermSync(n: number, seed: number | bigint): BigInt64Array {
  if (!Number.isInteger(n) || n < 0) {
    throw new Error(`randperm size must be a non-negative integer, got ${n}`);
  }
  const out = new BigInt64Array(n);
  check("dn_randperm", native().dn_randperm(BigInt(n), BigInt(seed), new Uint8Array(out.buffer)));
  return out;
}

/**
 * Returns the host memory the C allocator keeps free to the operating system (glibc's `malloc_trim`), and
 * says whether any was returned. Freed tensor memory stays in the allocator's arenas for reuse, and with
 * batches of changing shapes the arenas grow; the training loop calls this every few steps to keep the
 * resident set near what is live. Blocks while it runs (milliseconds); later allocations fault pages back in.
 */
export async function trimHostMemory(): Promise<boolean> {
  const lib = await loadNative();
  const released = new Int32Array(1);
  check("dn_trim_host_memory", lib.dn_trim_host_memory(new Uint8Array(released.buffer)));
  return released[0] === 1;
}

/**
 * The native clock every step timing and trace event is read from, in nanoseconds: monotonic
 * (CLOCK_MONOTONIC on Linux, so the processes of one machine share it), with an arbitrary origin. As a
 * number: exact to the nanosecond for 104 days of uptime, to the microsecond long after.
 * @throws Error if the native library is not loaded yet (`await loadNative()` first).
 */
export function monotonicNs(): number {
  const out = new BigInt64Array(1);
  check("dn_clock_ns", native().dn_clock_ns(new Uint8Array(out.buffer)));
  return Number(out[0]);
}

/** Resolves a device spec to a CUDA index, or -1 for the CPU. */
export async function resolveDevice(spec: DeviceSpec | string): Promise<number> {
  if (spec === "cpu") return -1;
  const count = await cudaDeviceCount();
  if (spec === "auto") return count > 0 ? 0 : -1;
  const match = /^cuda(?::(\d+))?$/.exec(spec);
  if (!match) throw new Error(`unknown device "${spec}": use auto, cpu, cuda or cuda:N`);
  const index = Number(match[1] ?? 0);
  if (index >= count) {
    throw new Error(`device ${spec} requested but ${count} CUDA device(s) are visible to this libtorch`);
  }
  return index;
}

function configStruct(c: DistilBertConfig): Uint8Array<ArrayBuffer> {
  // Layout of dn_config: eight int64 fields, then four doubles.
  const buf = new ArrayBuffer(8 * 12);
  const ints = new BigInt64Array(buf, 0, 8);
  const floats = new Float64Array(buf, 64, 4);
  [
    c.vocab_size,
    c.max_position_embeddings,
    c.dim,
    c.n_layers,
    c.n_heads,
    c.hidden_dim,
    c.id2label.length,
    c
      .pad_token_id,
  ].forEach((v, i) => ints[i] = BigInt(v));
  [c.dropout, c.attention_dropout, c.seq_classif_dropout, c.initializer_range].forEach((v, i) =>
    floats[i] = v
  );
  return new Uint8Array(buf);
}

function checkBatch(b: Batch, maxPositions: number): void {
  const { batchSize, seqLen } = b;
  if (!Number.isInteger(batchSize) || batchSize < 1 || !Number.isInteger(seqLen) || seqLen < 1) {
    throw new Error(`batch shape must be positive integers, got ${batchSize} x ${seqLen}`);
  }
  if (seqLen > maxPositions) {
    throw new Error(
      `sequence length ${seqLen} exceeds the model's max_position_embeddings (${maxPositions})`,
    );
  }
  const n = batchSize * seqLen;
  // The native side trusts these lengths, so they are checked here, before any pointer crosses.
  if (!(b.inputIds instanceof Int32Array) || b.inputIds.length !== n) {
    throw new Error(`inputIds must be an Int32Array of ${n} ids (${batchSize} x ${seqLen})`);
  }
  if (!(b.attentionMask instanceof Uint8Array) || b.attentionMask.length !== n) {
    throw new Error(`attentionMask must be a Uint8Array of ${n} values (${batchSize} x ${seqLen})`);
  }
  // Token ids and mask values are range-checked natively, where the scan is a single vectorised pass.
}

/** DistilBertForSequenceClassification on a device, owned by this handle. */
export class DistilBertClassifier implements Disposable {
  /** The model's configuration. */
  readonly config: Readonly<DistilBertConfig>;
  /** CUDA device index, or -1 for the CPU. */
  readonly deviceIndex: number;
  #handle: Deno.PointerValue;
  // Nonblocking calls still running on worker threads; the native model is freed only after the last.
  #inFlight = 0;
  #disposed = false;
  #params: ParamInfo[] | undefined;

  private constructor(config: DistilBertConfig, deviceIndex: number, handle: Deno.PointerValue) {
    this.config = config;
    this.deviceIndex = deviceIndex;
    this.#handle = handle;
  }

  /**
   * Creates a model initialised as transformers' `_init_weights` does, from `seed` (default 42).
   * @param options.device "auto" (default), "cpu", "cuda" or "cuda:N".
   */
  static async create(
    config: DistilBertConfig,
    options: { device?: DeviceSpec | string; seed?: number } = {},
  ): Promise<DistilBertClassifier> {
    const n = await loadNative();
    validateConfig(config);
    const deviceIndex = await resolveDevice(options.device ?? "auto");
    const out = new BigUint64Array(1);
    check(
      "dn_model_create",
      n.dn_model_create(
        configStruct(config),
        deviceIndex,
        BigInt(options.seed ?? 42),
        new Uint8Array(out.buffer),
      ),
    );
    // A private, deeply frozen copy: output buffers are sized from it, so nobody may change it later.
    const own = structuredClone(config) as DistilBertConfig;
    Object.freeze(own.id2label);
    return new DistilBertClassifier(
      Object.freeze(own),
      deviceIndex,
      Deno.UnsafePointer.create(out[0]),
    );
  }

  /** The native handle, for other native wrappers (ffi/process_group.ts). Not for general use. */
  nativeHandle(): Deno.PointerValue {
    return this.#live();
  }

  /** Whether a nonblocking call on this model is still running. */
  get busy(): boolean {
    return this.#inFlight > 0;
  }

  /** "cpu" or "cuda:N". */
  get device(): string {
    return this.deviceIndex < 0 ? "cpu" : `cuda:${this.deviceIndex}`;
  }

  /** Number of classes. */
  get numLabels(): number {
    return this.config.id2label.length;
  }

  #live(): Deno.PointerValue {
    if (this.#disposed || this.#handle === null) throw new Error("this model has been disposed");
    return this.#handle;
  }

  #check(call: string, status: number): void {
    check(call, status, this.#handle);
  }

  /**
   * Frees the native model. Safe to call twice, and while a nonblocking call is still running: then the
   * memory is released when that call returns (freeing it under a running call would crash the process).
   */
  dispose(): void {
    this.#disposed = true;
    if (this.#inFlight === 0 && this.#handle !== null) {
      native().dn_model_free(this.#handle);
      this.#handle = null;
    }
  }

  /** Runs a nonblocking native call, keeping the model alive until it returns. */
  async #nonblocking(call: string, run: () => Promise<number>): Promise<void> {
    this.#inFlight++;
    let status: number;
    try {
      status = await run();
    } finally {
      this.#inFlight--;
    }
    try {
      this.#check(call, status);
    } finally {
      if (this.#disposed) this.dispose();
    }
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Parameters in state_dict order with Hugging Face names. */
  parameters(): ParamInfo[] {
    if (this.#params) return this.#params;
    const n = native(), h = this.#live();
    const count = new BigInt64Array(1);
    this.#check("dn_model_param_count", n.dn_model_param_count(h, new Uint8Array(count.buffer)));
    const name = new Uint8Array(512), shape = new BigInt64Array(MAX_NDIM), ndim = new Int32Array(1);
    const params: ParamInfo[] = [];
    for (let i = 0; i < Number(count[0]); i++) {
      this.#check(
        "dn_model_param_info",
        n.dn_model_param_info(
          h,
          BigInt(i),
          name,
          BigInt(name.length),
          new Uint8Array(shape.buffer),
          new Uint8Array(ndim.buffer),
        ),
      );
      params.push({
        name: readCString(name, name.indexOf(0)),
        shape: Array.from(shape.subarray(0, ndim[0]), Number),
      });
    }
    return this.#params = params;
  }

  /** Total number of parameters. */
  parameterCount(): number {
    return this.parameters().reduce((sum, p) => sum + numel(p.shape), 0);
  }

  /** Copies every parameter out as float32, keyed by Hugging Face name. */
  stateDict(): StateDict {
    const n = native(), h = this.#live();
    const out: StateDict = new Map();
    this.parameters().forEach((p, i) => {
      const values = new Float32Array(numel(p.shape));
      this.#check(
        "dn_model_param_read",
        n.dn_model_param_read(h, BigInt(i), new Uint8Array(values.buffer), BigInt(values.length)),
      );
      out.set(p.name, { dtype: "F32", shape: [...p.shape], data: new Uint8Array(values.buffer) });
    });
    return out;
  }

  /**
   * Copies a state_dict into the model. Strict by default: every parameter must be present with its exact
   * shape and nothing else may be there, and the error lists all missing, unexpected and mismatched keys.
   * With `strict: false` (loading a pretrained backbone, as `from_pretrained` does) missing and unexpected
   * keys are reported instead, and a bare DistilBertModel's keys get the `distilbert.` prefix; shape
   * mismatches always fail. Floating tensors of any precision are converted to the model's float32.
   */
  loadStateDict(state: StateDict, options: { strict?: boolean; source?: string } = {}): LoadReport {
    const strict = options.strict ?? true;
    const source = options.source ?? "state_dict";
    const params = this.parameters();
    const expected = new Map(params.map((p, i) => [p.name, i]));
    const entries = new Map<string, RawTensor>();
    const hasPrefix = [...state.keys()].some((k) => k.startsWith("distilbert."));
    for (const [key, tensor] of state) {
      if (IGNORED_KEYS.test(key)) continue;
      const name = !strict && !hasPrefix && !expected.has(key) && expected.has(`distilbert.${key}`)
        ? `distilbert.${key}`
        : key;
      entries.set(name, tensor);
    }
    const missing = params.map((p) => p.name).filter((name) => !entries.has(name));
    const unexpected = [...entries.keys()].filter((name) => !expected.has(name));
    const problems: string[] = [];
    for (const [name, t] of entries) {
      const i = expected.get(name);
      if (i === undefined) continue;
      const want = params[i].shape;
      if (t.shape.length !== want.length || t.shape.some((d, j) => d !== want[j])) {
        problems.push(`${name}: shape [${t.shape}] in ${source}, [${want}] in the model`);
      } else if (DTYPE_CODES[t.dtype] === undefined) {
        problems.push(`${name}: dtype ${t.dtype} is not a floating type`);
      }
    }
    if (strict && missing.length) problems.push(`missing keys (${missing.length}): ${missing.join(", ")}`);
    if (strict && unexpected.length) {
      problems.push(`unexpected keys (${unexpected.length}): ${unexpected.join(", ")}`);
    }
    if (problems.length) {
      throw new Error(
        `cannot load ${source} into DistilBertForSequenceClassification:\n  - ${problems.join("\n  - ")}`,
      );
    }
    const n = native(), h = this.#live();
    for (const [name, t] of entries) {
      const i = expected.get(name);
      if (i === undefined) continue;
      this.#check(
        "dn_model_param_write",
        n.dn_model_param_write(h, BigInt(i), DTYPE_CODES[t.dtype]!, t.data, BigInt(t.data.byteLength)),
      );
    }
    return { missing, unexpected };
  }

  /**
   * Writes the state_dict as a PyTorch file (torch::pickle_save), readable by Python's
   * `torch.load(path, weights_only=True)`. Atomic: written to a temporary file, then renamed.
   */
  async savePt(path: string): Promise<void> {
    const tmp = `${path}.${crypto.randomUUID()}.tmp`;
    try {
      this.#check("dn_model_save_pt", native().dn_model_save_pt(this.#live(), cString(tmp)));
      await fsyncFile(tmp);
      await Deno.rename(tmp, path);
    } catch (err) {
      await Deno.remove(tmp).catch(() => {});
      throw err;
    }
  }

  /**
   * Everything beyond the weights that a resumed run needs to continue bit for bit: AdamW's moments and
   * step counts per parameter (`optimizer.exp_avg.<name>`, `optimizer.exp_avg_sq.<name>`,
   * `optimizer.step.<name>`, float32) and this model's dropout RNG state (`rng_state`, uint8).
   */
  trainState(): StateDict {
    const n = native(), h = this.#live();
    const out: StateDict = new Map();
    this.#trainStateEntries().forEach((entry, i) => {
      const data = new Uint8Array(numel(entry.shape) * (entry.dtype === "U8" ? 1 : 4));
      this.#check("dn_train_state_read", n.dn_train_state_read(h, BigInt(i), data, BigInt(data.length)));
      out.set(entry.name, { ...entry, data });
    });
    return out;
  }

  /** Names, shapes and dtypes of {@link trainState}'s entries, in native order, without copying data. */
  #trainStateEntries(): { name: string; shape: number[]; dtype: "F32" | "U8" }[] {
    const n = native(), h = this.#live();
    const count = new BigInt64Array(1);
    this.#check("dn_train_state_count", n.dn_train_state_count(h, new Uint8Array(count.buffer)));
    const name = new Uint8Array(1024), shape = new BigInt64Array(MAX_NDIM), ndim = new Int32Array(1);
    const dtype = new Int32Array(1);
    return Array.from({ length: Number(count[0]) }, (_, i) => {
      this.#check(
        "dn_train_state_info",
        n.dn_train_state_info(
          h,
          BigInt(i),
          name,
          BigInt(name.length),
          new Uint8Array(shape.buffer),
          new Uint8Array(ndim.buffer),
          new Uint8Array(dtype.buffer),
        ),
      );
      return {
        name: readCString(name, name.indexOf(0)),
        shape: Array.from(shape.subarray(0, ndim[0]), Number),
        dtype: dtype[0] === DTypeCode.U8 ? "U8" as const : "F32" as const,
      };
    });
  }

  /** Restores {@link trainState}'s output; every entry must be present with its exact size. */
  loadTrainState(state: StateDict, source = "training state"): void {
    const names = this.#trainStateEntries().map((e) => e.name);
    const missing = names.filter((k) => !state.has(k));
    if (missing.length) {
      throw new Error(`${source} lacks ${missing.length} entries (${missing.slice(0, 3).join(", ")}...)`);
    }
    const n = native(), h = this.#live();
    names.forEach((key, i) => {
      const t = state.get(key)!;
      this.#check(
        "dn_train_state_write",
        n.dn_train_state_write(h, BigInt(i), t.data, BigInt(t.data.byteLength)),
      );
    });
  }

  /** Replaces the AdamW optimizer (and its state). Defaults: transformers' TrainingArguments. */
  configureOptimizer(options: OptimizerOptions = {}): void {
    const { weightDecay = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8 } = options;
    this.#check(
      "dn_optimizer_configure",
      native().dn_optimizer_configure(this.#live(), weightDecay, beta1, beta2, eps),
    );
  }

  /**
   * Starts (or stops) recording trace events: under DDP, each gradient bucket's all-reduce from launch to
   * completion, timed by a communication hook on c10d's Reducer ({@link drainTrace} collects them). The hook
   * is installed when DDP is attached, and only on a model that is tracing then, so turn tracing on before
   * `ProcessGroup.attachDdp`; a model without it runs the Reducer's default path, untouched. The hook
   * averages and all-reduces exactly as the default path does: results are bit-identical either way.
   * @throws NativeError when turning tracing on for a model already attached to DDP without the hook.
   */
  enableTracing(enabled = true): void {
    this.#check("dn_model_trace_enable", native().dn_model_trace_enable(this.#live(), enabled ? 1 : 0));
  }

  /**
   * The trace events recorded since the last drain, in launch order. A step's events are all there once the
   * step has returned. Without DDP, or on a gradient-accumulation micro-step (no_sync), there are none.
   */
  drainTrace(): BucketEvent[] {
    const n = native(), h = this.#live();
    const capacity = 256;
    const buf = new ArrayBuffer(capacity * TRACE_EVENT_BYTES);
    const counts = new BigInt64Array(2);
    const events: BucketEvent[] = [];
    const view = new DataView(buf);
    for (;;) {
      this.#check(
        "dn_model_trace_drain",
        n.dn_model_trace_drain(
          h,
          new Uint8Array(buf),
          BigInt(capacity),
          new Uint8Array(counts.buffer, 0, 8),
          new Uint8Array(counts.buffer, 8, 8),
        ),
      );
      for (let i = 0; i < Number(counts[0]); i++) {
        const at = i * TRACE_EVENT_BYTES;
        if (view.getInt32(at, true) !== TraceKind.ALLREDUCE) continue;
        events.push({
          bucket: view.getInt32(at + 4, true),
          startNs: Number(view.getBigInt64(at + 8, true)),
          endNs: Number(view.getBigInt64(at + 16, true)),
          bytes: Number(view.getBigInt64(at + 24, true)),
          params: Number(view.getBigInt64(at + 32, true)),
        });
      }
      // Recorded as they complete (on the process group's threads, in any order): handed out as launched.
      if (counts[1] === 0n) return events.sort((a, b) => a.startNs - b.startNs);
    }
  }

  #stepArgs(batch: LabeledBatch, options: StepOptions) {
    checkBatch(batch, this.config.max_position_embeddings);
    if (!(batch.labels instanceof Int32Array) || batch.labels.length !== batch.batchSize) {
      throw new Error(`labels must be an Int32Array of ${batch.batchSize} class ids`);
    }
    if (!(Number.isFinite(options.lr) && options.lr >= 0)) throw new Error(`learning rate must be >= 0`);
    const flags = (options.apply ?? true ? Flags.APPLY : 0) | (options.bf16 ? Flags.BF16 : 0) |
      (options.padded ? Flags.PADDED : 0);
    return [
      this.#live(),
      batch.inputIds,
      batch.attentionMask,
      batch.labels,
      BigInt(batch.batchSize),
      BigInt(batch.seqLen),
      options.lr,
      options.maxGradNorm ?? 1.0,
      options.lossScale ?? 1.0,
      flags,
      // dn_step_result (two doubles, eight int64), one per call: concurrent steps must not share it.
      new Uint8Array(STEP_RESULT_BYTES),
    ] as const;
  }

  #stepResult(out: Uint8Array): StepResult {
    const f = new Float64Array(out.buffer, 0, 2), i = new BigInt64Array(out.buffer, 16, 8);
    const t = (k: number) => Number(i[2 + k]);
    return {
      loss: f[0],
      gradNorm: f[1],
      correct: Number(i[0]),
      count: Number(i[1]),
      timing: {
        startNs: t(0),
        forwardNs: t(1),
        backwardNs: t(2),
        gradsReadyNs: t(3),
        backwardEndNs: t(4),
        endNs: t(5),
      },
    };
  }

  /** One training step in one native call: forward, loss, backward, clip, AdamW. Blocks this thread. */
  trainStep(batch: LabeledBatch, options: StepOptions): StepResult {
    const args = this.#stepArgs(batch, options);
    this.#check("dn_train_step", native().dn_train_step(...args));
    return this.#stepResult(args[10]);
  }

  /** {@link trainStep} on a worker thread: the event loop stays free (progress bars, signals, servers). */
  async trainStepAsync(batch: LabeledBatch, options: StepOptions): Promise<StepResult> {
    const args = this.#stepArgs(batch, options);
    await this.#nonblocking("dn_train_step", () => native().dn_train_step_async(...args));
    return this.#stepResult(args[10]);
  }

  #predictArgs(batch: Batch, bf16: boolean) {
    checkBatch(batch, this.config.max_position_embeddings);
    const size = batch.batchSize * this.numLabels;
    const out = { logits: new Float32Array(size), probabilities: new Float32Array(size) };
    const args = [
      this.#live(),
      batch.inputIds,
      batch.attentionMask,
      BigInt(batch.batchSize),
      BigInt(batch.seqLen),
      bf16 ? Flags.BF16 : 0,
      new Uint8Array(out.logits.buffer),
      new Uint8Array(out.probabilities.buffer),
      BigInt(size),
    ] as const;
    return { args, out };
  }

  /**
   * Logits and softmax probabilities in eval mode (no dropout, no autograd). Blocks this thread. `bf16`
   * runs the forward pass under bf16 autocast, on CUDA or on the CPU (fast where the CPU has AMX or
   * AVX-512-BF16).
   */
  predict(batch: Batch, options: { bf16?: boolean } = {}): Prediction {
    const { args, out } = this.#predictArgs(batch, options.bf16 ?? false);
    this.#check("dn_predict", native().dn_predict(...args));
    return out;
  }

  /** {@link predict} on a worker thread, for servers: the event loop never waits on libtorch. */
  async predictAsync(batch: Batch, options: { bf16?: boolean } = {}): Promise<Prediction> {
    const { args, out } = this.#predictArgs(batch, options.bf16 ?? false);
    await this.#nonblocking("dn_predict", () => native().dn_predict_async(...args));
    return out;
  }
}
