/**
 * PyTorch checkpoints written by `torch.save` (Hugging Face's `pytorch_model.bin`,
 * `torch.save(model.state_dict(), path)`, training checkpoints) as a {@link StateDict}, without Python or
 * libtorch. Its one job is torch's side of the file: opening either container, rebuilding storages and
 * (possibly strided, shared) tensors from what the pickle says, and choosing the state_dict. The bytes are
 * told apart by weights/format.ts, the zip by weights/zip.ts and the pickle by weights/pickle.ts.
 *
 * Why this exists: libtorch's C++ unpickler turns `collections.OrderedDict` into `None`, so it cannot read
 * the state_dicts that Python writes. We parse the file here and hand raw tensors to the native side.
 *
 * Both containers:
 *  - the zip format (default since torch 1.6): `<folder>/data.pkl` plus one `<folder>/data/<key>` entry per
 *    storage, all STORED (uncompressed), ZIP64 records allowed;
 *  - the legacy format (`_use_new_zipfile_serialization=False`, and files written by torch < 1.6): a run of
 *    pickles (magic number, protocol version, sys_info, the object, the storage keys) followed by the raw
 *    storages.
 *
 * The pickle's globals go through an allowlist in the spirit of `torch.load(weights_only=True)`: OrderedDict,
 * dict, set, the tensor and parameter rebuild helpers, storage and dtype types. Anything else is refused by
 * name before anything is built, and nothing is ever executed.
 * @module
 */

import { type DType, DTYPE_SIZE, numel, type RawTensor, type StateDict } from "../model/tensor.ts";
import { detectFormat } from "./format.ts";
import {
  asSequence,
  builtinGlobal,
  describe,
  latin1,
  PyCallable,
  PyDict,
  type PyObject,
  unpickle,
  type UnpicklerHooks,
  UnpicklingError,
} from "./pickle.ts";
import { ZipArchive, ZipError } from "./zip.ts";

/** Every failure to read a checkpoint; the message starts with the file name (or the `source` given). */
export class TorchCheckpointError extends Error {
  override name = "TorchCheckpointError";
}

/**
 * Parses a checkpoint held in memory (either container) and returns its state_dict in file order.
 *
 * Which dict is the state_dict:
 *  1. the top-level object must be a dict (plain or OrderedDict);
 *  2. if every value in it is a tensor (this includes an empty dict), it is the state_dict;
 *  3. otherwise, the first of the keys `"state_dict"`, `"model_state_dict"`, `"model"` whose value is a
 *     dict holding at least one tensor is the state_dict (training checkpoints like
 *     `{"model": sd, "optimizer": ..., "epoch": 3}`);
 *  4. otherwise, if the top level holds at least one tensor, it is the state_dict;
 *  5. otherwise it is an error.
 * Non-tensor values of the chosen dict are skipped, and so is the `_metadata` attribute that
 * `nn.Module.state_dict()` attaches to its OrderedDict.
 *
 * Every returned tensor owns a fresh contiguous copy of its bytes (one copy per tensor, made straight
 * from the file bytes), so the tensors never alias `bytes` or each other, even when the file stores
 * them as views of one storage (tied weights, transposes).
 *
 * @param bytes the whole file
 * @param source a name for error messages, usually the file path
 * @throws {TorchCheckpointError} on any malformed, unsupported or unsafe input, and on bytes that are no
 *   torch.save checkpoint at all (safetensors, say: read those with weights/checkpoint.ts's readStateDict)
 */
export function readTorchCheckpoint(bytes: Uint8Array, source = "<bytes>"): StateDict {
  try {
    return selectStateDict(readObject(bytes), bytes.length);
  } catch (e) {
    if (e instanceof Malformed || e instanceof UnpicklingError || e instanceof ZipError) {
      throw new TorchCheckpointError(`${source}: ${e.message}`);
    }
    // A bug here must still say which file triggered it, and never leak a bare RangeError.
    const detail = e instanceof Error ? e.message : String(e);
    throw new TorchCheckpointError(`${source}: internal error while reading checkpoint: ${detail}`, {
      cause: e,
    });
  }
}

/**
 * Reads a checkpoint file (see {@link readTorchCheckpoint} for which dict is returned).
 * @param path a `.bin` / `.pt` / `.pth` file written by `torch.save`, in either container
 * @throws {TorchCheckpointError} if the file cannot be read or is not a supported checkpoint
 */
export async function loadTorchCheckpoint(path: string): Promise<StateDict> {
  let bytes: Uint8Array;
  try {
    bytes = await readWholeFile(path);
  } catch (e) {
    const detail = e instanceof Error ? e.message : String(e);
    throw new TorchCheckpointError(`${path}: cannot read file: ${detail}`, { cause: e });
  }
  return readTorchCheckpoint(bytes, path);
}

/**
 * Reads a file into one buffer sized from stat(). For a 270 MB checkpoint this is about 3x faster
 * than Deno.readFile, which grows its buffer as it goes. A file that shrank meanwhile comes back
 * short, and the parser then reports it as truncated.
 */
async function readWholeFile(path: string): Promise<Uint8Array> {
  using file = await Deno.open(path);
  const size = (await file.stat()).size;
  const bytes = new Uint8Array(size);
  let filled = 0;
  while (filled < size) {
    const n = await file.read(bytes.subarray(filled, Math.min(size, filled + 64 * 2 ** 20)));
    if (n === null) break;
    filled += n;
  }
  return bytes.subarray(0, filled);
}

/**
 * A container or state_dict problem (the zip's records, the legacy layout, storages' bytes, which dict is
 * the state_dict). What the pickle itself builds is refused with the pickle VM's {@link UnpicklingError}
 * instead (see {@link refuse}), so that the message says where in the pickle. Both become
 * {@link TorchCheckpointError}s in {@link readTorchCheckpoint}, prefixed with the source.
 */
class Malformed extends Error {}

function fail(message: string): never {
  throw new Malformed(message);
}

/** Refuses something the pickle builds (a global, a persistent id, tensor arguments). */
function refuse(message: string): never {
  throw new UnpicklingError(message);
}

// ---------------------------------------------------------------------------------------------------
// The two containers
// ---------------------------------------------------------------------------------------------------

/** `torch.serialization.MAGIC_NUMBER`, the first pickle of a legacy file. */
const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
/** `torch.serialization.PROTOCOL_VERSION`, the second pickle of a legacy file. */
const LEGACY_PROTOCOL_VERSION = 1001;

/** Unpickles the checkpoint's main object, with storages resolved to file bytes. */
function readObject(bytes: Uint8Array): unknown {
  const detected = detectFormat(bytes);
  switch (detected.format) {
    case "torch-zip":
      return readZipContainer(bytes);
    case "torch-legacy":
      return readLegacyContainer(bytes);
    case "safetensors":
      return fail("this is a safetensors file, not a torch.save checkpoint");
    default:
      return fail(
        `not a PyTorch checkpoint (neither torch.save's zip nor its legacy format): ${detected.reason}`,
      );
  }
}

/** Allowlisted globals only; the pickles around the legacy main object have no persistent ids. */
const NO_STORAGES: UnpicklerHooks = { findClass, persistentLoad: noPersistentIds };

function noPersistentIds(): never {
  refuse("unexpected persistent id outside the checkpoint's main pickle");
}

/** Reads a torch zip checkpoint: `data.pkl` with persistent ids naming the `data/<key>` entries. */
function readZipContainer(bytes: Uint8Array): unknown {
  // Messages read "<file>: zip archive: ...": the caller puts the file name first.
  const zip = ZipArchive.fromBytes(bytes, "zip archive");
  // torch names everything `<folder>/...`, where the folder is "archive" or the file's stem.
  const pkl = zip.names().find((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pkl === undefined) fail("zip archive has no <folder>/data.pkl: not a torch.save checkpoint");
  const prefix = pkl.slice(0, -"data.pkl".length);
  const stored = (name: string): Uint8Array => {
    const entry = zip.get(name);
    if (entry === undefined) fail(`storage ${name} is missing from the archive`);
    if (entry.method !== 0) {
      const how = entry.method === 8 ? "deflate-compressed" : `compressed with method ${entry.method}`;
      fail(`zip entry ${name} is ${how}; torch.save stores entries uncompressed (re-save it with torch)`);
    }
    return zip.storedBytes(entry);
  };

  if (zip.get(`${prefix}byteorder`) !== undefined) {
    const order = latin1(stored(`${prefix}byteorder`)).trim();
    if (order === "big") {
      fail("checkpoint was written on a big-endian machine; only little-endian is supported");
    }
    if (order !== "little") fail(`unexpected byteorder record "${order.slice(0, 20)}"`);
  }

  const storages = new StorageTable((key) => stored(`${prefix}data/${key}`));
  const hooks: UnpicklerHooks = { findClass, persistentLoad: (pid) => storages.persistentLoad(pid) };
  return unpickle(stored(pkl), hooks).value;
}

/**
 * Reads the legacy layout: pickles of the magic number, the protocol version, a sys_info dict, the
 * main object and the sorted list of storage keys; then, per key, an int64 element count and the
 * storage's raw bytes.
 */
function readLegacyContainer(bytes: Uint8Array): unknown {
  const magic = unpickle(bytes, NO_STORAGES);
  // detectFormat matched the magic's bytes; the VM must read the same number from them.
  if (magic.value !== LEGACY_MAGIC) {
    fail(`legacy checkpoint starts with ${describe(magic.value)}, not the magic`);
  }
  const protocol = unpickle(bytes, NO_STORAGES, magic.end);
  if (protocol.value !== LEGACY_PROTOCOL_VERSION) {
    fail(`unsupported legacy torch.save protocol version ${describe(protocol.value)}`);
  }
  const sysInfo = unpickle(bytes, NO_STORAGES, protocol.end);
  if (sysInfo.value instanceof PyDict && sysInfo.value.items.get("little_endian") === false) {
    fail("checkpoint was written on a big-endian machine; only little-endian is supported");
  }

  const storages = new StorageTable();
  const main = unpickle(
    bytes,
    { findClass, persistentLoad: (pid) => storages.persistentLoad(pid, true) },
    sysInfo.end,
  );
  const keys = unpickle(bytes, NO_STORAGES, main.end);
  if (!Array.isArray(keys.value)) fail("legacy checkpoint: storage key list is not a list");

  const view = dataView(bytes);
  let pos = keys.end;
  for (const key of keys.value) {
    const storage = storages.get(String(key));
    if (storage === undefined) fail(`legacy checkpoint lists storage ${describe(key)} that nothing uses`);
    checkRange(bytes, pos, 8, `legacy storage ${storage.key}`);
    const count = readU64(view, pos, `element count of legacy storage ${storage.key}`);
    const length = count * DTYPE_SIZE[storage.dtype];
    checkRange(bytes, pos + 8, length, `legacy storage ${storage.key}`);
    storage.provide(bytes.subarray(pos + 8, pos + 8 + length));
    pos += 8 + length;
  }
  return main.value;
}

// ---------------------------------------------------------------------------------------------------
// Torch's objects: element types, storages, tensors
// ---------------------------------------------------------------------------------------------------

/** A `torch.*Storage` class or a `torch.<dtype>` object: both just name an element type. */
class TorchType implements PyObject {
  constructor(readonly qualname: string, readonly dtype: DType) {}

  describe(): string {
    return this.qualname;
  }
}

/** One serialized storage; its bytes come from `data/<key>` (zip) or the file tail (legacy). */
class Storage implements PyObject {
  #bytes: Uint8Array | undefined;
  constructor(readonly key: string, readonly dtype: DType, readonly numel: number) {}

  describe(): string {
    return `storage ${this.key}`;
  }

  provide(bytes: Uint8Array): void {
    const needed = this.numel * DTYPE_SIZE[this.dtype];
    if (bytes.length < needed) {
      fail(`storage ${this.key} holds ${bytes.length} bytes but ${this.numel} ${this.dtype} need ${needed}`);
    }
    this.#bytes = bytes.subarray(0, needed);
  }

  get bytes(): Uint8Array {
    return this.#bytes ?? fail(`storage ${this.key} has no data`);
  }
}

/** A tensor as pickled: a strided view of a storage. Copied out only if it ends up in the result. */
class TensorView implements PyObject {
  constructor(
    readonly storage: Storage,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}

  describe(): string {
    return "a tensor";
  }
}

/**
 * Resolves persistent ids to {@link Storage}s, one per key, so shared storages stay shared. `lookup`
 * finds a storage's bytes at once (zip); without it (legacy) they are provided after the pickle.
 */
class StorageTable {
  readonly #byKey = new Map<string, Storage>();
  constructor(private readonly lookup?: (key: string) => Uint8Array) {}

  get(key: string): Storage | undefined {
    return this.#byKey.get(key);
  }

  /** `('storage', StorageType, key, location, numel)`; legacy files add a 6th item, view metadata. */
  persistentLoad(pid: unknown, legacy = false): Storage {
    if (!Array.isArray(pid) || pid[0] !== "storage") refuse(`unsupported persistent id ${describe(pid)}`);
    if (pid.length !== (legacy ? 6 : 5)) refuse(`storage persistent id has ${pid.length} items`);
    const [, type, key, , count] = pid;
    if (legacy && pid[5] !== null) refuse("legacy storage views (torch < 1.0 files) are not supported");
    if (!(type instanceof TorchType)) {
      refuse(`storage persistent id names ${describe(type)}, not a storage type`);
    }
    if (typeof key !== "string") refuse(`storage key ${describe(key)} is not a string`);
    const n = checkCount(count, `element count of storage ${key}`);

    const known = this.#byKey.get(key);
    if (known !== undefined) {
      if (known.dtype !== type.dtype || known.numel !== n) {
        refuse(`storage ${key} is declared twice, differently`);
      }
      return known;
    }
    const storage = new Storage(key, type.dtype, n);
    if (this.lookup) storage.provide(this.lookup(key));
    this.#byKey.set(key, storage);
    return storage;
  }
}

// ---------------------------------------------------------------------------------------------------
// Allowlisted globals: the findClass hook
// ---------------------------------------------------------------------------------------------------

const STORAGE_DTYPES: Record<string, DType> = {
  FloatStorage: "F32",
  HalfStorage: "F16",
  BFloat16Storage: "BF16",
  DoubleStorage: "F64",
  LongStorage: "I64",
  IntStorage: "I32",
  CharStorage: "I8",
  ByteStorage: "U8",
  BoolStorage: "BOOL",
};

const TORCH_DTYPES: Record<string, DType> = {
  float32: "F32",
  float: "F32",
  float16: "F16",
  half: "F16",
  bfloat16: "BF16",
  float64: "F64",
  double: "F64",
  int64: "I64",
  long: "I64",
  int32: "I32",
  int: "I32",
  int8: "I8",
  uint8: "U8",
  bool: "BOOL",
};

/** Torch's callables a checkpoint may use (dict, OrderedDict and set come from pickle.ts's builtins). */
const CALLABLES: Record<string, (args: unknown[]) => unknown> = {
  "torch.Size": (args) => [...asSequence(args[0] ?? [], "torch.Size argument")],
  "torch._utils._rebuild_tensor_v2": (args) => rebuildTensor(args, "_rebuild_tensor_v2"),
  "torch._utils._rebuild_tensor": (args) => rebuildTensor(args, "_rebuild_tensor"),
  "torch._utils._rebuild_parameter": rebuildParameter,
  "torch._utils._rebuild_parameter_with_state": rebuildParameter,
  "torch._tensor._rebuild_from_type_v2": rebuildFromType,
  // Classes that only ever appear as arguments of _rebuild_from_type_v2, never called themselves.
  "torch.Tensor": notCallable("torch.Tensor"),
  "torch.nn.parameter.Parameter": notCallable("torch.nn.parameter.Parameter"),
};

/**
 * The `findClass` hook: maps a GLOBAL / STACK_GLOBAL reference to a harmless value, or refuses it by name.
 */
function findClass(module: string, name: string): PyCallable | TorchType {
  const builtin = builtinGlobal(module, name);
  if (builtin !== undefined) return builtin;
  const qualname = `${module}.${name}`;
  const call = own(CALLABLES, qualname);
  if (call !== undefined) return new PyCallable(qualname, call);
  if (module === "torch") {
    const dtype = own(STORAGE_DTYPES, name) ?? own(TORCH_DTYPES, name);
    if (dtype !== undefined) return new TorchType(qualname, dtype);
    // Torch element types that have no DType here deserve a clearer message than "refusing".
    if (
      /^\w*Storage$/.test(name) || /^(u?int|float|complex|qu?int|bits|short|c?half|cfloat|cdouble)/.test(name)
    ) {
      const supported = Object.keys(DTYPE_SIZE).join(", ");
      refuse(`tensor type ${qualname} is not supported (supported dtypes: ${supported})`);
    }
  }
  refuse(`refusing to load global ${qualname}: only tensors, storages and (Ordered)dicts are allowed`);
}

/** `table[key]` for own keys only, so names like "constructor" never hit Object.prototype. */
function own<T>(table: Record<string, T>, key: string): T | undefined {
  return Object.hasOwn(table, key) ? table[key] : undefined;
}

/**
 * `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`
 * and `_rebuild_tensor(storage, storage_offset, size, stride)`. Autograd state is irrelevant here.
 */
function rebuildTensor(args: unknown[], what: string): TensorView {
  const [storage, offsetArg, sizeArg, strideArg] = args;
  if (args.length < 4) refuse(`${what} called with ${args.length} arguments`);
  if (!(storage instanceof Storage)) refuse(`${what}: first argument is ${describe(storage)}, not a storage`);
  const offset = checkCount(offsetArg, `${what} storage offset`);
  const shape = asSequence(sizeArg, `${what} size`).map((d) => checkCount(d, `${what} size`));
  const stride = asSequence(strideArg, `${what} stride`).map((s) => checkCount(s, `${what} stride`));
  if (shape.length !== stride.length) {
    refuse(`${what}: size has ${shape.length} dims but stride ${stride.length}`);
  }

  // Every element the view can address must lie inside the storage.
  if (shape.every((d) => d > 0)) {
    const last = shape.reduce((acc, d, i) => acc + (d - 1) * stride[i], offset);
    if (!Number.isSafeInteger(last) || last >= storage.numel) {
      refuse(
        `tensor view [${shape}] stride [${stride}] offset ${offset} reads past storage ${storage.key} ` +
          `(${storage.numel} elements)`,
      );
    }
  }
  return new TensorView(storage, offset, shape, stride);
}

/** `_rebuild_parameter(data, requires_grad, backward_hooks[, state])`: an nn.Parameter is its data. */
function rebuildParameter(args: unknown[]): TensorView {
  if (!(args[0] instanceof TensorView)) refuse(`_rebuild_parameter of ${describe(args[0])}, not a tensor`);
  return args[0];
}

/**
 * `_rebuild_from_type_v2(func, cls, args, state)`: how torch pickles a Tensor or Parameter that carries
 * Python attributes (e.g. `t.foo = 1`). The attributes (`state`) are dropped; only the data matters.
 */
function rebuildFromType(args: unknown[]): unknown {
  const [func, cls, funcArgs] = args;
  const tensorClasses = ["torch.Tensor", "torch.nn.parameter.Parameter"];
  if (!(cls instanceof PyCallable) || !tensorClasses.includes(cls.qualname)) {
    refuse(`_rebuild_from_type_v2 of ${describe(cls)}: only torch.Tensor and nn.Parameter are supported`);
  }
  if (!(func instanceof PyCallable)) refuse(`_rebuild_from_type_v2 with ${describe(func)}, not a callable`);
  return func.call(asSequence(funcArgs, "_rebuild_from_type_v2 arguments"));
}

function notCallable(qualname: string): (args: unknown[]) => never {
  return () => refuse(`${qualname} cannot be called in a checkpoint`);
}

/** A non-negative safe integer (sizes, strides, offsets, counts). */
function checkCount(value: unknown, what: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    refuse(`${what} is ${describe(value)}, not a non-negative integer`);
  }
  return value;
}
// ---------------------------------------------------------------------------------------------------
// Choosing and materializing the state_dict
// ---------------------------------------------------------------------------------------------------

const NESTED_STATE_DICT_KEYS = ["state_dict", "model_state_dict", "model"];

/** Applies the rule documented on {@link readTorchCheckpoint}. */
function selectStateDict(root: unknown, fileSize: number): StateDict {
  if (!(root instanceof PyDict)) fail(`checkpoint holds ${describe(root)}, not a dict of tensors`);
  const values = [...root.items.values()];
  if (values.every((v) => v instanceof TensorView)) return materializeDict(root, fileSize);
  for (const key of NESTED_STATE_DICT_KEYS) {
    const nested = root.items.get(key);
    if (nested instanceof PyDict && [...nested.items.values()].some((v) => v instanceof TensorView)) {
      return materializeDict(nested, fileSize);
    }
  }
  if (values.some((v) => v instanceof TensorView)) return materializeDict(root, fileSize);
  const keys = [...root.items.keys()].slice(0, 10).map(describe).join(", ");
  const nested = NESTED_STATE_DICT_KEYS.join("/");
  fail(`checkpoint has no tensors at its top level nor under ${nested} (keys: ${keys})`);
}

/**
 * Copies out every tensor of `dict`. A small pickle can name one storage many times, or expand it with
 * stride 0, so the output is capped relative to the file (4x + 1 GiB; real checkpoints stay under 1x
 * plus tied weights) to turn a memory bomb into an error instead of an out-of-memory kill.
 */
function materializeDict(dict: PyDict, fileSize: number): StateDict {
  const tensors: [string, TensorView][] = [];
  let total = 0;
  for (const [key, value] of dict.items) {
    if (!(value instanceof TensorView)) continue;
    if (typeof key !== "string") fail(`state_dict has a tensor under the non-string key ${describe(key)}`);
    tensors.push([key, value]);
    total += numel(value.shape) * DTYPE_SIZE[value.storage.dtype];
  }
  const limit = 4 * fileSize + 2 ** 30;
  if (!(total <= limit)) {
    fail(`tensors would take ${total} bytes from a ${fileSize}-byte file (overlapping views?); refusing`);
  }
  return new Map(tensors.map(([key, view]) => [key, materialize(view)]));
}

/** Copies a (possibly strided) view into a fresh contiguous row-major buffer. */
function materialize(view: TensorView): RawTensor {
  const { storage, offset, shape, stride } = view;
  const elementSize = DTYPE_SIZE[storage.dtype];
  const count = numel(shape);
  const byteLength = count * elementSize;
  const data = new Uint8Array(byteLength);
  if (count > 0) {
    const src = storage.bytes;
    if (isContiguous(shape, stride)) {
      data.set(src.subarray(offset * elementSize, offset * elementSize + byteLength));
    } else {
      copyStrided(src, data, elementSize, offset, shape, stride);
    }
  }
  return { dtype: storage.dtype, shape: [...shape], data };
}

/** Row-major contiguity; strides of size-1 dims do not matter (torch leaves them arbitrary). */
function isContiguous(shape: number[], stride: number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expected) return false;
    expected *= shape[d];
  }
  return true;
}

/** Gathers a non-contiguous view row by row (rows along the last dim), odometer-style over the rest. */
function copyStrided(
  src: Uint8Array,
  dst: Uint8Array,
  elementSize: number,
  offset: number,
  shape: number[],
  stride: number[],
): void {
  const outer = shape.length - 1; // >= 0: a 0-d tensor is always contiguous
  const rowLength = shape[outer];
  const rowStride = stride[outer];
  const index = new Array<number>(outer).fill(0);
  const rows = numel(shape) / rowLength;
  let start = offset; // element offset of the current row's first element
  let out = 0;
  for (let r = 0; r < rows; r++) {
    if (rowStride === 1) {
      dst.set(src.subarray(start * elementSize, (start + rowLength) * elementSize), out);
      out += rowLength * elementSize;
    } else {
      for (let i = 0; i < rowLength; i++) {
        const from = (start + i * rowStride) * elementSize;
        for (let b = 0; b < elementSize; b++) dst[out++] = src[from + b];
      }
    }
    for (let d = outer - 1; d >= 0; d--) {
      start += stride[d];
      if (++index[d] < shape[d]) break;
      start -= stride[d] * shape[d];
      index[d] = 0;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------------

function dataView(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A uint64 that must fit a JS number exactly (offsets and sizes; 2^53 bytes is 8 PiB). */
function readU64(view: DataView, at: number, what: string): number {
  const value = view.getBigUint64(at, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${what} ${value} is too large`);
  return Number(value);
}

/** Fails unless `bytes[start, start + length)` exists. */
function checkRange(bytes: Uint8Array, start: number, length: number, what: string): void {
  if (start < 0 || length < 0 || start > bytes.length || length > bytes.length - start) {
    fail(`${what} (${length} bytes at ${start}) lies outside the ${bytes.length}-byte file: truncated?`);
  }
}
