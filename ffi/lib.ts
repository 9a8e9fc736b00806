/**
 * The one file that knows the C ABI (ffi/shim/distrinews.h): the Deno.dlopen symbol table, status codes
 * and the translation of a failed call into a TypeScript {@link NativeError} carrying the C++ message.
 * @module
 */

import { buildShim } from "./build.ts";

/** Must equal DN_ABI_VERSION in distrinews.h. */
export const ABI_VERSION = 8;

/** Status codes returned by every native call. */
export const Status = {
  OK: 0,
  INVALID_ARGUMENT: 1,
  TORCH: 2,
  OUT_OF_MEMORY: 3,
  IO: 4,
  INTERNAL: 5,
} as const;

const STATUS_NAMES: Record<number, string> = {
  1: "invalid argument",
  2: "libtorch error",
  3: "out of memory",
  4: "I/O error",
  5: "internal error",
};

/** Flags of trainStep/predict (DN_STEP_APPLY, DN_BF16). */
export const Flags = { APPLY: 1, BF16: 2, PADDED: 4 } as const;

/** Element type codes of dn_model_param_write. */
export const DTypeCode = { F32: 0, F16: 1, BF16: 2, F64: 3, U8: 4 } as const;

/** Maximum tensor rank reported by dn_model_param_info. */
export const MAX_NDIM = 8;

/** Size of dn_step_result: loss, grad_norm (f64), correct, count and six t_* clock readings (i64). */
export const STEP_RESULT_BYTES = 80;

/** Kinds of dn_trace_event. */
export const TraceKind = { ALLREDUCE: 1 } as const;

/** Size of dn_trace_event: kind, bucket (i32), start_ns, end_ns, bytes, params (i64). */
export const TRACE_EVENT_BYTES = 40;

const modelArgs = (...rest: Deno.NativeType[]) => ["pointer", ...rest] as const;

const SYMBOLS = {
  dn_abi_version: { parameters: [], result: "i32" },
  dn_last_error: { parameters: ["pointer", "buffer", "i64"], result: "i64" },
  dn_torch_version: { parameters: ["buffer", "i64"], result: "i64" },
  dn_set_num_threads: { parameters: ["i32", "i32"], result: "i32" },
  dn_get_num_threads: { parameters: [], result: "i32" },
  dn_cuda_device_count: { parameters: [], result: "i32" },
  dn_manual_seed: { parameters: ["u64"], result: "i32" },
  dn_randperm: { parameters: ["i64", "u64", "buffer"], result: "i32" },
  dn_trim_host_memory: { parameters: ["buffer"], result: "i32" },
  dn_clock_ns: { parameters: ["buffer"], result: "i32" },
  dn_model_create: { parameters: ["buffer", "i32", "u64", "buffer"], result: "i32" },
  dn_model_free: { parameters: ["pointer"], result: "void" },
  dn_model_param_count: { parameters: modelArgs("buffer"), result: "i32" },
  dn_model_param_info: { parameters: modelArgs("i64", "buffer", "i64", "buffer", "buffer"), result: "i32" },
  dn_model_param_read: { parameters: modelArgs("i64", "buffer", "i64"), result: "i32" },
  dn_model_param_write: { parameters: modelArgs("i64", "i32", "buffer", "i64"), result: "i32" },
  dn_model_save_pt: { parameters: modelArgs("buffer"), result: "i32" },
  dn_train_state_count: { parameters: modelArgs("buffer"), result: "i32" },
  dn_train_state_info: {
    parameters: modelArgs("i64", "buffer", "i64", "buffer", "buffer", "buffer"),
    result: "i32",
  },
  dn_train_state_read: { parameters: modelArgs("i64", "buffer", "i64"), result: "i32" },
  dn_train_state_write: { parameters: modelArgs("i64", "buffer", "i64"), result: "i32" },
  dn_optimizer_configure: { parameters: modelArgs("f64", "f64", "f64", "f64"), result: "i32" },
  dn_train_step: {
    parameters: modelArgs("buffer", "buffer", "buffer", "i64", "i64", "f64", "f64", "f64", "i32", "buffer"),
    result: "i32",
  },
  // The same step on one of Deno's worker threads: the event loop keeps running while libtorch works.
  dn_train_step_async: {
    name: "dn_train_step",
    parameters: modelArgs("buffer", "buffer", "buffer", "i64", "i64", "f64", "f64", "f64", "i32", "buffer"),
    result: "i32",
    nonblocking: true,
  },
  dn_model_trace_enable: { parameters: modelArgs("i32"), result: "i32" },
  dn_model_trace_drain: { parameters: modelArgs("buffer", "i64", "buffer", "buffer"), result: "i32" },
  dn_predict: {
    parameters: modelArgs("buffer", "buffer", "i64", "i64", "i32", "buffer", "buffer", "i64"),
    result: "i32",
  },
  dn_predict_async: {
    name: "dn_predict",
    parameters: modelArgs("buffer", "buffer", "i64", "i64", "i32", "buffer", "buffer", "i64"),
    result: "i32",
    nonblocking: true,
  },
  // Process groups. Creation, all-reduce and barrier wait on other processes, so they run on worker threads:
  // the event loop stays free to handle signals and print progress meanwhile.
  dn_group_create: {
    parameters: ["buffer", "i32", "i32", "i32", "i32", "buffer", "i64", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  dn_group_free: { parameters: ["pointer"], result: "void" },
  dn_group_last_error: { parameters: ["pointer", "buffer", "i64"], result: "i64" },
  dn_group_allreduce_sum: { parameters: ["pointer", "buffer", "i64"], result: "i32", nonblocking: true },
  dn_group_barrier: { parameters: ["pointer"], result: "i32", nonblocking: true },
  dn_group_barrier_clock: { parameters: ["pointer", "buffer"], result: "i32", nonblocking: true },
  dn_model_attach_ddp: { parameters: ["pointer", "pointer", "i64", "i64"], result: "i32", nonblocking: true },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded library's symbols. */
export type Native = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** An error raised by the native core: the C++ message, the status and the call that failed. */
export class NativeError extends Error {
  /** DN_ERR_* status of the failed call. */
  readonly status: number;
  /** Name of the native function. */
  readonly call: string;

  constructor(call: string, status: number, message: string) {
    super(message || `${call} failed: ${STATUS_NAMES[status] ?? `status ${status}`}`);
    this.name = "NativeError";
    this.status = status;
    this.call = call;
  }
}

let loaded: { lib: Deno.DynamicLibrary<typeof SYMBOLS>; path: string } | undefined;

/**
 * Loads the native library, building it first when missing or stale (see ffi/build.ts).
 * `DISTRINEWS_LIB` points at a prebuilt library instead (a Docker image, say).
 */
export async function loadNative(): Promise<Native> {
  if (loaded) return loaded.lib.symbols;
  const path = Deno.env.get("DISTRINEWS_LIB") ?? (await buildShim()).library;
  const lib = Deno.dlopen(path, SYMBOLS);
  const abi = lib.symbols.dn_abi_version();
  if (abi !== ABI_VERSION) {
    lib.close();
    throw new Error(`${path} speaks ABI ${abi}, expected ${ABI_VERSION}: rebuild with \`deno task build\``);
  }
  loaded = { lib, path };
  return lib.symbols;
}

/** The already-loaded library; throws if {@link loadNative} has not run. */
export function native(): Native {
  if (!loaded) throw new Error("native library not loaded: await loadNative() first");
  return loaded.lib.symbols;
}

/** Path of the loaded library (for logs). */
export function nativePath(): string | undefined {
  return loaded?.path;
}

/** Reads a C string written into `buf` by a native call that returned its full length. */
export function readCString(buf: Uint8Array, length: number | bigint): string {
  const n = Math.min(Number(length), buf.length - 1);
  return new TextDecoder().decode(buf.subarray(0, n));
}

/** Message of the last failure on `handle` (null: the last handle-less call). */
export function lastError(handle: Deno.PointerValue): string {
  const buf = new Uint8Array(4096);
  return readCString(buf, native().dn_last_error(handle, buf, BigInt(buf.length)));
}

/** Throws a {@link NativeError} unless `status` is OK. */
export function check(call: string, status: number, handle: Deno.PointerValue = null): void {
  if (status !== Status.OK) throw new NativeError(call, status, lastError(handle));
}

/** A NUL-terminated UTF-8 copy of `s`, for const char* parameters. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}
