/**
 * Reads PyTorch checkpoints written by `torch.save` (e.g. Hugging Face `pytorch_model.bin`, or
 * `torch.save(model.state_dict(), path)`) into a {@link StateDict}, without Python or libtorch.
 *
 * Why this exists: libtorch's C++ unpickler turns `collections.OrderedDict` into `None`, so it cannot
 * read the state_dicts that Python writes. We parse the file here and hand raw tensors to the native side.
 *
 * Two container formats are understood:
 *  - the zip format (default since torch 1.6): `<folder>/data.pkl` plus one `<folder>/data/<key>`
 *    file per storage, all STORED (uncompressed), ZIP64 records allowed;
 *  - the legacy format (`_use_new_zipfile_serialization=False`, and files written by torch < 1.6):
 *    a run of pickles followed by the raw storages.
 *
 * The pickle is read by a restricted unpickler in the spirit of `torch.load(weights_only=True)`:
 * it never runs code, and any global outside a small allowlist (OrderedDict, tensor rebuild helpers,
 * storage and dtype types) is refused by name before anything else happens.
 * @module
 */

import { type DType, DTYPE_SIZE, numel, type RawTensor, type StateDict } from "../model/tensor.ts";

/** Every failure to read a checkpoint; the message starts with the file name (or the `source` given). */
export class TorchCheckpointError extends Error {
  override name = "TorchCheckpointError";
}

/**
 * Parses a checkpoint held in memory and returns its state_dict in file order.
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
 * @throws {TorchCheckpointError} on any malformed, unsupported or unsafe input
 */
export function readTorchCheckpoint(bytes: Uint8Array, source = "<bytes>"): StateDict {
  try {
    return selectStateDict(readObject(bytes), bytes.length);
  } catch (e) {
    if (e instanceof Malformed) throw new TorchCheckpointError(`${source}: ${e.message}`);
    // A bug here must still say which file triggered it, and never leak a bare RangeError.
    const detail = e instanceof Error ? e.message : String(e);
    throw new TorchCheckpointError(`${source}: internal error while reading checkpoint: ${detail}`, {
      cause: e,
    });
  }
}

/**
 * Reads a checkpoint file (see {@link readTorchCheckpoint} for which dict is returned).
 * @param path a `.bin` / `.pt` / `.pth` file written by `torch.save`
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

/** Internal error type; {@link readTorchCheckpoint} prefixes the source name and rethrows. */
class Malformed extends Error {}

function fail(message: string): never {
  throw new Malformed(message);
}

// ---------------------------------------------------------------------------------------------------
// Container detection
// ---------------------------------------------------------------------------------------------------

/** `torch.serialization.MAGIC_NUMBER`, the first pickle of a legacy file. */
const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;

/** Unpickles the checkpoint's main object, with storages resolved to file bytes. */
function readObject(bytes: Uint8Array): unknown {
  if (bytes.length < 4) fail(`file is too short (${bytes.length} bytes) to be a PyTorch checkpoint`);
  if (findEndOfCentralDirectory(bytes) >= 0) return readZipCheckpoint(bytes);
  if (startsWith(bytes, [0x50, 0x4b, 0x03, 0x04])) {
    fail("damaged or truncated zip: no end-of-central-directory record");
  }
  if (bytes[0] === 0x80) {
    const first = new Unpickler(bytes, 0, noPersistentIds).load();
    if (first.value === LEGACY_MAGIC) return readLegacyCheckpoint(bytes, first.end);
    fail("file is a bare pickle, not a torch.save checkpoint (no zip archive, no legacy magic number)");
  }
  if (looksLikeSafetensors(bytes)) fail("this is a safetensors file, not a torch.save checkpoint");
  if (bytes.length > 262 && latin1(bytes.subarray(257, 262)) === "ustar") {
    fail("the tar checkpoint format of torch < 0.4 is not supported; re-save it with a current torch");
  }
  fail("not a PyTorch checkpoint: neither a zip archive nor a legacy torch.save pickle");
}

function startsWith(bytes: Uint8Array, prefix: number[]): boolean {
  return prefix.every((b, i) => bytes[i] === b);
}

function looksLikeSafetensors(bytes: Uint8Array): boolean {
  if (bytes.length < 10) return false;
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  return bytes[8] === 0x7b /* { */ && headerLength <= BigInt(bytes.length - 8);
}

function noPersistentIds(): never {
  fail("unexpected persistent id outside the checkpoint's main pickle");
}

// ---------------------------------------------------------------------------------------------------
// Zip container
// ---------------------------------------------------------------------------------------------------

interface ZipEntry {
  name: string;
  method: number;
  flags: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const EOCD_SIZE = 22;
const ZIP64_LOCATOR_SIZE = 20;

/** Reads a torch zip checkpoint: `data.pkl` with persistent ids naming the `data/<key>` entries. */
function readZipCheckpoint(bytes: Uint8Array): unknown {
  const entries = new Map(readCentralDirectory(bytes).map((e) => [e.name, e]));
  // torch names everything `<folder>/...`, where the folder is "archive" or the file's stem.
  const pkl = [...entries.keys()].find((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pkl === undefined) fail("zip archive has no <folder>/data.pkl: not a torch.save checkpoint");
  const prefix = pkl.slice(0, -"data.pkl".length);

  const byteorder = entries.get(`${prefix}byteorder`);
  if (byteorder !== undefined) {
    const order = latin1(entryData(bytes, byteorder)).trim();
    if (order === "big") {
      fail("checkpoint was written on a big-endian machine; only little-endian is supported");
    }
    if (order !== "little") fail(`unexpected byteorder record "${order.slice(0, 20)}"`);
  }

  const storages = new StorageTable((key) => {
    const entry = entries.get(`${prefix}data/${key}`);
    if (entry === undefined) fail(`storage ${prefix}data/${key} is missing from the archive`);
    return entryData(bytes, entry);
  });
  const pickle = entryData(bytes, entries.get(pkl)!);
  const { value } = new Unpickler(pickle, 0, (pid) => storages.persistentLoad(pid)).load();
  return value;
}

/** Finds the end-of-central-directory record, scanning back over a possible archive comment. */
function findEndOfCentralDirectory(bytes: Uint8Array): number {
  const view = dataView(bytes);
  const lowest = Math.max(0, bytes.length - EOCD_SIZE - 0xffff);
  for (let pos = bytes.length - EOCD_SIZE; pos >= lowest; pos--) {
    // The comment length must reach exactly to the end of the file, which rules out most false hits.
    if (
      view.getUint32(pos, true) === SIG_EOCD &&
      pos + EOCD_SIZE + view.getUint16(pos + 20, true) === bytes.length
    ) {
      return pos;
    }
  }
  return -1;
}

/** Lists the archive's entries from its central directory (ZIP64 aware). */
function readCentralDirectory(bytes: Uint8Array): ZipEntry[] {
  const view = dataView(bytes);
  const eocd = findEndOfCentralDirectory(bytes);
  let count = view.getUint16(eocd + 10, true);
  let size = view.getUint32(eocd + 12, true);
  let offset = view.getUint32(eocd + 16, true);

  const locator = eocd - ZIP64_LOCATOR_SIZE;
  if (locator >= 0 && view.getUint32(locator, true) === SIG_ZIP64_LOCATOR) {
    const zip64 = readU64(view, locator + 8, "ZIP64 end-of-central-directory offset");
    checkRange(bytes, zip64, 56, "ZIP64 end-of-central-directory record");
    if (view.getUint32(zip64, true) !== SIG_ZIP64_EOCD) fail("bad ZIP64 end-of-central-directory signature");
    count = readU64(view, zip64 + 32, "ZIP64 entry count");
    size = readU64(view, zip64 + 40, "ZIP64 central directory size");
    offset = readU64(view, zip64 + 48, "ZIP64 central directory offset");
  } else if (count === 0xffff || size === 0xffffffff || offset === 0xffffffff) {
    fail("zip uses ZIP64 sizes but has no ZIP64 end-of-central-directory locator");
  }
  checkRange(bytes, offset, size, "zip central directory");

  const entries: ZipEntry[] = [];
  let pos = offset;
  for (let i = 0; i < count; i++) {
    checkRange(bytes, pos, 46, "zip central directory entry");
    if (view.getUint32(pos, true) !== SIG_CENTRAL) {
      fail(`bad zip central directory entry signature at ${pos}`);
    }
    const nameLength = view.getUint16(pos + 28, true);
    const extraLength = view.getUint16(pos + 30, true);
    const commentLength = view.getUint16(pos + 32, true);
    checkRange(bytes, pos + 46, nameLength + extraLength, "zip central directory entry");
    const entry: ZipEntry = {
      name: new TextDecoder().decode(bytes.subarray(pos + 46, pos + 46 + nameLength)),
      flags: view.getUint16(pos + 8, true),
      method: view.getUint16(pos + 10, true),
      compressedSize: view.getUint32(pos + 20, true),
      size: view.getUint32(pos + 24, true),
      localHeaderOffset: view.getUint32(pos + 42, true),
    };
    applyZip64Extra(view, pos + 46 + nameLength, extraLength, entry);
    entries.push(entry);
    pos += 46 + nameLength + extraLength + commentLength;
  }
  return entries;
}

/**
 * Replaces 0xffffffff placeholders with the 64-bit values of the ZIP64 extra field (id 1), which
 * lists, in this order and only when their 32-bit field is saturated: size, compressed size, offset.
 */
function applyZip64Extra(view: DataView, start: number, length: number, entry: ZipEntry): void {
  const end = start + length;
  for (let pos = start; pos + 4 <= end;) {
    const id = view.getUint16(pos, true);
    const fieldLength = view.getUint16(pos + 2, true);
    if (pos + 4 + fieldLength > end) fail(`zip extra field of ${entry.name} overruns its entry`);
    if (id === 0x0001) {
      let at = pos + 4;
      const next = (what: string): number => {
        if (at + 8 > pos + 4 + fieldLength) fail(`ZIP64 extra field of ${entry.name} is too short`);
        const value = readU64(view, at, what);
        at += 8;
        return value;
      };
      if (entry.size === 0xffffffff) entry.size = next("ZIP64 size");
      if (entry.compressedSize === 0xffffffff) entry.compressedSize = next("ZIP64 compressed size");
      if (entry.localHeaderOffset === 0xffffffff) entry.localHeaderOffset = next("ZIP64 offset");
      return;
    }
    pos += 4 + fieldLength;
  }
}

/** The bytes of a STORED entry, as a view into `bytes` (no copy). */
function entryData(bytes: Uint8Array, entry: ZipEntry): Uint8Array {
  if (entry.flags & 1) fail(`zip entry ${entry.name} is encrypted`);
  if (entry.method !== 0) {
    const how = entry.method === 8 ? "deflate-compressed" : `compressed with method ${entry.method}`;
    fail(`zip entry ${entry.name} is ${how}; torch.save stores entries uncompressed (re-save it with torch)`);
  }
  if (entry.compressedSize !== entry.size) fail(`zip entry ${entry.name} is stored but its sizes differ`);
  const view = dataView(bytes);
  const header = entry.localHeaderOffset;
  checkRange(bytes, header, 30, `local header of zip entry ${entry.name}`);
  if (view.getUint32(header, true) !== SIG_LOCAL) {
    fail(`bad local header signature for zip entry ${entry.name}`);
  }
  // The local extra field differs from the central one: torch pads it to align storages to 64 bytes.
  const start = header + 30 + view.getUint16(header + 26, true) + view.getUint16(header + 28, true);
  checkRange(bytes, start, entry.size, `data of zip entry ${entry.name}`);
  return bytes.subarray(start, start + entry.size);
}

// ---------------------------------------------------------------------------------------------------
// Legacy (pre-zip) container
// ---------------------------------------------------------------------------------------------------

/**
 * Reads the legacy layout: pickles of the magic number, the protocol version, a sys_info dict, the
 * main object and the sorted list of storage keys; then, per key, an int64 element count and the
 * storage's raw bytes.
 */
function readLegacyCheckpoint(bytes: Uint8Array, afterMagic: number): unknown {
  const protocol = new Unpickler(bytes, afterMagic, noPersistentIds).load();
  if (protocol.value !== 1001) {
    fail(`unsupported legacy torch.save protocol version ${describe(protocol.value)}`);
  }
  const sysInfo = new Unpickler(bytes, protocol.end, noPersistentIds).load();
  if (sysInfo.value instanceof PyDict && sysInfo.value.items.get("little_endian") === false) {
    fail("checkpoint was written on a big-endian machine; only little-endian is supported");
  }

  const storages = new StorageTable();
  const main = new Unpickler(bytes, sysInfo.end, (pid) => storages.persistentLoad(pid, true)).load();
  const keys = new Unpickler(bytes, main.end, noPersistentIds).load();
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
// Values produced by the unpickler
// ---------------------------------------------------------------------------------------------------

/** A Python dict or OrderedDict. Attributes set by BUILD (e.g. `_metadata`) are kept apart. */
class PyDict {
  readonly items = new Map<unknown, unknown>();
  readonly attrs = new Map<string, unknown>();
}

/** An allowlisted Python callable (REDUCE / NEWOBJ target). */
class PyCallable {
  constructor(readonly qualname: string, readonly call: (args: unknown[]) => unknown) {}
}

/** A `torch.*Storage` class or a `torch.<dtype>` object: both just name an element type. */
class TorchType {
  constructor(readonly qualname: string, readonly dtype: DType) {}
}

/** One serialized storage; its bytes come from `data/<key>` (zip) or the file tail (legacy). */
class Storage {
  #bytes: Uint8Array | undefined;
  constructor(readonly key: string, readonly dtype: DType, readonly numel: number) {}

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
class TensorView {
  constructor(
    readonly storage: Storage,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
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
    if (!Array.isArray(pid) || pid[0] !== "storage") fail(`unsupported persistent id ${describe(pid)}`);
    if (pid.length !== (legacy ? 6 : 5)) fail(`storage persistent id has ${pid.length} items`);
    const [, type, key, , count] = pid;
    if (legacy && pid[5] !== null) fail("legacy storage views (torch < 1.0 files) are not supported");
    if (!(type instanceof TorchType)) {
      fail(`storage persistent id names ${describe(type)}, not a storage type`);
    }
    if (typeof key !== "string") fail(`storage key ${describe(key)} is not a string`);
    const n = checkCount(count, `element count of storage ${key}`);

    const known = this.#byKey.get(key);
    if (known !== undefined) {
      if (known.dtype !== type.dtype || known.numel !== n) {
        fail(`storage ${key} is declared twice, differently`);
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
// Allowlisted globals
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

const CALLABLES: Record<string, (args: unknown[]) => unknown> = {
  "collections.OrderedDict": newDict,
  "builtins.dict": newDict,
  "__builtin__.dict": newDict,
  "builtins.set": newSet,
  "__builtin__.set": newSet,
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

/** Maps a GLOBAL / STACK_GLOBAL reference to a harmless value, or refuses it. */
function resolveGlobal(module: string, name: string): PyCallable | TorchType {
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
      fail(`tensor type ${qualname} is not supported (supported dtypes: ${supported})`);
    }
  }
  fail(`refusing to load global ${qualname}: only tensors, storages and (Ordered)dicts are allowed`);
}

/** `table[key]` for own keys only, so names like "constructor" never hit Object.prototype. */
function own<T>(table: Record<string, T>, key: string): T | undefined {
  return Object.hasOwn(table, key) ? table[key] : undefined;
}

function newDict(args: unknown[]): PyDict {
  const dict = new PyDict();
  for (const pair of asSequence(args[0] ?? [], "dict argument")) {
    const [key, value] = asSequence(pair, "dict item");
    dict.items.set(key, value);
  }
  return dict;
}

function newSet(args: unknown[]): Set<unknown> {
  return new Set(asSequence(args[0] ?? [], "set argument"));
}

/**
 * `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`
 * and `_rebuild_tensor(storage, storage_offset, size, stride)`. Autograd state is irrelevant here.
 */
function rebuildTensor(args: unknown[], what: string): TensorView {
  const [storage, offsetArg, sizeArg, strideArg] = args;
  if (args.length < 4) fail(`${what} called with ${args.length} arguments`);
  if (!(storage instanceof Storage)) fail(`${what}: first argument is ${describe(storage)}, not a storage`);
  const offset = checkCount(offsetArg, `${what} storage offset`);
  const shape = asSequence(sizeArg, `${what} size`).map((d) => checkCount(d, `${what} size`));
  const stride = asSequence(strideArg, `${what} stride`).map((s) => checkCount(s, `${what} stride`));
  if (shape.length !== stride.length) {
    fail(`${what}: size has ${shape.length} dims but stride ${stride.length}`);
  }

  // Every element the view can address must lie inside the storage.
  if (shape.every((d) => d > 0)) {
    const last = shape.reduce((acc, d, i) => acc + (d - 1) * stride[i], offset);
    if (!Number.isSafeInteger(last) || last >= storage.numel) {
      fail(
        `tensor view [${shape}] stride [${stride}] offset ${offset} reads past storage ${storage.key} ` +
          `(${storage.numel} elements)`,
      );
    }
  }
  return new TensorView(storage, offset, shape, stride);
}

/** `_rebuild_parameter(data, requires_grad, backward_hooks[, state])`: an nn.Parameter is its data. */
function rebuildParameter(args: unknown[]): TensorView {
  if (!(args[0] instanceof TensorView)) fail(`_rebuild_parameter of ${describe(args[0])}, not a tensor`);
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
    fail(`_rebuild_from_type_v2 of ${describe(cls)}: only torch.Tensor and nn.Parameter are supported`);
  }
  if (!(func instanceof PyCallable)) fail(`_rebuild_from_type_v2 with ${describe(func)}, not a callable`);
  return func.call(asSequence(funcArgs, "_rebuild_from_type_v2 arguments"));
}

function notCallable(qualname: string): (args: unknown[]) => never {
  return () => fail(`${qualname} cannot be called in a checkpoint`);
}

function asSequence(value: unknown, what: string): unknown[] {
  if (Array.isArray(value)) return value;
  if (value instanceof Set) return [...value];
  fail(`${what} is ${describe(value)}, not a tuple or list`);
}

/** A non-negative safe integer (sizes, strides, offsets, counts). */
function checkCount(value: unknown, what: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    fail(`${what} is ${describe(value)}, not a non-negative integer`);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------------
// Restricted unpickler
// ---------------------------------------------------------------------------------------------------

/** Pickle opcodes (see CPython's Lib/pickle.py). */
const Op = {
  MARK: 0x28, // (
  STOP: 0x2e, // .
  POP: 0x30, // 0
  POP_MARK: 0x31, // 1
  DUP: 0x32, // 2
  BINBYTES: 0x42, // B
  SHORT_BINBYTES: 0x43, // C
  BINFLOAT: 0x47, // G
  BININT: 0x4a, // J
  BININT1: 0x4b, // K
  BININT2: 0x4d, // M
  NONE: 0x4e, // N
  BINPERSID: 0x51, // Q
  REDUCE: 0x52, // R
  BINSTRING: 0x54, // T
  SHORT_BINSTRING: 0x55, // U
  BINUNICODE: 0x58, // X
  EMPTY_LIST: 0x5d, // ]
  APPEND: 0x61, // a
  BUILD: 0x62, // b
  GLOBAL: 0x63, // c
  APPENDS: 0x65, // e
  BINGET: 0x68, // h
  LONG_BINGET: 0x6a, // j
  BINPUT: 0x71, // q
  LONG_BINPUT: 0x72, // r
  SETITEM: 0x73, // s
  TUPLE: 0x74, // t
  SETITEMS: 0x75, // u
  EMPTY_TUPLE: 0x29, // )
  EMPTY_DICT: 0x7d, // }
  PROTO: 0x80,
  NEWOBJ: 0x81,
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  NEWTRUE: 0x88,
  NEWFALSE: 0x89,
  LONG1: 0x8a,
  LONG4: 0x8b,
  SHORT_BINUNICODE: 0x8c,
  BINUNICODE8: 0x8d,
  BINBYTES8: 0x8e,
  EMPTY_SET: 0x8f,
  ADDITEMS: 0x90,
  FROZENSET: 0x91,
  NEWOBJ_EX: 0x92,
  STACK_GLOBAL: 0x93,
  MEMOIZE: 0x94,
  FRAME: 0x95,
} as const;

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * A stack machine over one pickle. Each opcode consumes at least one byte and every read is bounds
 * checked, so it ends (at STOP, or with an error) within `bytes.length` steps.
 */
class Unpickler {
  #pos: number;
  readonly #view: DataView;
  readonly #stack: unknown[] = [];
  /** Stack heights at each pending MARK. */
  readonly #marks: number[] = [];
  readonly #memo = new Map<number, unknown>();

  constructor(
    private readonly bytes: Uint8Array,
    start: number,
    private readonly persistentLoad: (pid: unknown) => unknown,
  ) {
    this.#pos = start;
    this.#view = dataView(bytes);
  }

  /** Runs to STOP; returns the pickled object and the offset just past STOP. */
  load(): { value: unknown; end: number } {
    for (;;) {
      const at = this.#pos;
      const op = this.#u8();
      // Like CPython, STOP returns the top of the stack and ignores anything left under it.
      if (op === Op.STOP) return { value: this.#pop(), end: this.#pos };
      try {
        this.#step(op);
      } catch (e) {
        if (e instanceof Malformed && !e.message.includes(" at byte ")) {
          throw new Malformed(`${e.message} (pickle opcode 0x${op.toString(16)} at byte ${at})`);
        }
        throw e;
      }
    }
  }

  #step(op: number): void {
    const stack = this.#stack;
    switch (op) {
      case Op.PROTO: {
        const version = this.#u8();
        if (version > 5) fail(`unsupported pickle protocol ${version}`);
        return;
      }
      case Op.FRAME: // Protocol 4 framing is only a read-ahead hint.
        this.#u64();
        return;
      case Op.MARK:
        this.#marks.push(stack.length);
        return;
      case Op.POP:
        this.#pop();
        return;
      case Op.POP_MARK:
        this.#popMark();
        return;
      case Op.DUP:
        stack.push(this.#top());
        return;

      case Op.NONE:
        stack.push(null);
        return;
      case Op.NEWTRUE:
        stack.push(true);
        return;
      case Op.NEWFALSE:
        stack.push(false);
        return;
      case Op.BININT:
        stack.push(this.#view.getInt32(this.#take(4), true));
        return;
      case Op.BININT1:
        stack.push(this.#u8());
        return;
      case Op.BININT2:
        stack.push(this.#view.getUint16(this.#take(2), true));
        return;
      case Op.LONG1:
        stack.push(this.#long(this.#u8()));
        return;
      case Op.LONG4:
        stack.push(this.#long(this.#view.getUint32(this.#take(4), true)));
        return;
      case Op.BINFLOAT:
        stack.push(this.#view.getFloat64(this.#take(8), false));
        return;

      case Op.BINUNICODE:
        stack.push(this.#utf8(this.#view.getUint32(this.#take(4), true)));
        return;
      case Op.SHORT_BINUNICODE:
        stack.push(this.#utf8(this.#u8()));
        return;
      case Op.BINUNICODE8:
        stack.push(this.#utf8(this.#u64()));
        return;
      case Op.BINSTRING: // Python 2 str; Python 3 decodes it to str too.
        stack.push(latin1(this.#bytes(this.#i32Length())));
        return;
      case Op.SHORT_BINSTRING:
        stack.push(latin1(this.#bytes(this.#u8())));
        return;
      case Op.BINBYTES:
        stack.push(this.#bytes(this.#view.getUint32(this.#take(4), true)));
        return;
      case Op.SHORT_BINBYTES:
        stack.push(this.#bytes(this.#u8()));
        return;
      case Op.BINBYTES8:
        stack.push(this.#bytes(this.#u64()));
        return;

      case Op.EMPTY_TUPLE:
        stack.push([]);
        return;
      case Op.TUPLE:
        stack.push(this.#popMark());
        return;
      case Op.TUPLE1:
      case Op.TUPLE2:
      case Op.TUPLE3: {
        const n = op - Op.TUPLE1 + 1;
        if (stack.length - n < this.#floor()) fail("pickle stack underflow");
        stack.push(stack.splice(stack.length - n, n));
        return;
      }
      case Op.EMPTY_LIST:
        stack.push([]);
        return;
      case Op.APPEND: {
        const item = this.#pop();
        this.#list(this.#top()).push(item);
        return;
      }
      case Op.APPENDS: {
        const items = this.#popMark();
        const list = this.#list(this.#top());
        for (const item of items) list.push(item);
        return;
      }
      case Op.EMPTY_DICT:
        stack.push(new PyDict());
        return;
      case Op.SETITEM: {
        const value = this.#pop();
        const key = this.#pop();
        this.#dict(this.#top()).items.set(key, value);
        return;
      }
      case Op.SETITEMS: {
        const items = this.#popMark();
        if (items.length % 2 !== 0) fail("SETITEMS with an odd number of items");
        const dict = this.#dict(this.#top());
        for (let i = 0; i < items.length; i += 2) dict.items.set(items[i], items[i + 1]);
        return;
      }
      case Op.EMPTY_SET:
        stack.push(new Set());
        return;
      case Op.ADDITEMS: {
        const items = this.#popMark();
        const set = this.#top();
        if (!(set instanceof Set)) fail(`ADDITEMS on ${describe(set)}`);
        for (const item of items) set.add(item);
        return;
      }
      case Op.FROZENSET:
        stack.push(new Set(this.#popMark()));
        return;

      case Op.BINPUT:
        this.#memo.set(this.#u8(), this.#top());
        return;
      case Op.LONG_BINPUT:
        this.#memo.set(this.#view.getUint32(this.#take(4), true), this.#top());
        return;
      case Op.MEMOIZE:
        this.#memo.set(this.#memo.size, this.#top());
        return;
      case Op.BINGET:
        stack.push(this.#memoGet(this.#u8()));
        return;
      case Op.LONG_BINGET:
        stack.push(this.#memoGet(this.#view.getUint32(this.#take(4), true)));
        return;

      case Op.GLOBAL: {
        const module = this.#line();
        const name = this.#line();
        stack.push(resolveGlobal(module, name));
        return;
      }
      case Op.STACK_GLOBAL: {
        const name = this.#pop();
        const module = this.#pop();
        if (typeof module !== "string" || typeof name !== "string") fail("STACK_GLOBAL needs two strings");
        stack.push(resolveGlobal(module, name));
        return;
      }
      case Op.REDUCE: {
        const args = this.#pop();
        stack.push(this.#call(this.#pop(), args));
        return;
      }
      case Op.NEWOBJ: {
        const args = this.#pop();
        stack.push(this.#call(this.#pop(), args));
        return;
      }
      case Op.NEWOBJ_EX: {
        const kwargs = this.#pop();
        const args = this.#pop();
        if (!(kwargs instanceof PyDict) || kwargs.items.size !== 0) fail("NEWOBJ_EX with keyword arguments");
        stack.push(this.#call(this.#pop(), args));
        return;
      }
      case Op.BUILD: {
        const state = this.#pop();
        this.#build(this.#top(), state);
        return;
      }
      case Op.BINPERSID:
        stack.push(this.persistentLoad(this.#pop()));
        return;
      default:
        fail(`pickle has unknown or unsupported opcode 0x${op.toString(16)} at byte ${this.#pos - 1}`);
    }
  }

  #call(callable: unknown, args: unknown): unknown {
    if (!(callable instanceof PyCallable)) fail(`cannot call ${describe(callable)}`);
    if (!Array.isArray(args)) fail(`arguments to ${callable.qualname} are ${describe(args)}, not a tuple`);
    return callable.call(args);
  }

  /** BUILD on a dict sets instance attributes: how `OrderedDict._metadata` travels. */
  #build(target: unknown, state: unknown): void {
    // A (dict_state, slot_state) pair is also legal; slots are attributes too.
    const parts = Array.isArray(state) && state.length === 2 ? state : [state];
    if (!(target instanceof PyDict)) fail(`BUILD on ${describe(target)} is not supported`);
    for (const part of parts) {
      if (part === null) continue;
      if (!(part instanceof PyDict)) fail(`BUILD with state ${describe(part)} is not supported`);
      for (const [key, value] of part.items) target.attrs.set(String(key), value);
    }
  }

  // --- stack helpers ------------------------------------------------------------------------------

  /** Lowest stack index the current MARK frame may touch. */
  #floor(): number {
    return this.#marks.length > 0 ? this.#marks[this.#marks.length - 1] : 0;
  }

  #pop(): unknown {
    if (this.#stack.length <= this.#floor()) fail("pickle stack underflow");
    return this.#stack.pop();
  }

  #top(): unknown {
    if (this.#stack.length <= this.#floor()) fail("pickle stack underflow");
    return this.#stack[this.#stack.length - 1];
  }

  #popMark(): unknown[] {
    const mark = this.#marks.pop();
    if (mark === undefined) fail("pickle uses a MARK that was never set");
    return this.#stack.splice(mark);
  }

  #list(value: unknown): unknown[] {
    if (!Array.isArray(value)) fail(`APPEND to ${describe(value)}`);
    return value;
  }

  #dict(value: unknown): PyDict {
    if (!(value instanceof PyDict)) fail(`SETITEM on ${describe(value)}`);
    return value;
  }

  #memoGet(index: number): unknown {
    if (!this.#memo.has(index)) fail(`memo entry ${index} is read before it is written`);
    return this.#memo.get(index);
  }

  // --- byte readers -------------------------------------------------------------------------------

  /** Reserves `n` bytes and returns their start; the single place that bounds-checks the pickle. */
  #take(n: number): number {
    const at = this.#pos;
    if (n > this.bytes.length - at) fail(`pickle is truncated: needs ${n} bytes at byte ${at}`);
    this.#pos = at + n;
    return at;
  }

  #u8(): number {
    return this.bytes[this.#take(1)];
  }

  #i32Length(): number {
    const n = this.#view.getInt32(this.#take(4), true);
    if (n < 0) fail("negative string length");
    return n;
  }

  #u64(): number {
    return readU64(this.#view, this.#take(8), "pickle length");
  }

  #bytes(n: number): Uint8Array {
    const at = this.#take(n);
    return this.bytes.slice(at, at + n);
  }

  #utf8(n: number): string {
    const at = this.#take(n);
    try {
      return utf8.decode(this.bytes.subarray(at, at + n));
    } catch {
      fail(`invalid UTF-8 string at byte ${at}`);
    }
  }

  /** A newline-terminated ASCII line (GLOBAL operands). */
  #line(): string {
    // Module and class names are short; the cap keeps a corrupt file from scanning megabytes.
    const end = this.bytes.subarray(0, this.#pos + 1024).indexOf(0x0a, this.#pos);
    if (end < 0) fail(`pickle is truncated or corrupt: unterminated GLOBAL at byte ${this.#pos}`);
    const text = latin1(this.bytes.subarray(this.#pos, end));
    this.#pos = end + 1;
    return text;
  }

  /** Little-endian two's complement integer; a number when it fits exactly, else a bigint. */
  #long(n: number): number | bigint {
    const at = this.#take(n);
    let value = 0n;
    for (let i = n - 1; i >= 0; i--) value = (value << 8n) | BigInt(this.bytes[at + i]);
    if (n > 0 && this.bytes[at + n - 1] & 0x80) value -= 1n << BigInt(8 * n);
    const asNumber = Number(value);
    return Number.isSafeInteger(asNumber) ? asNumber : value;
  }
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

function latin1(bytes: Uint8Array): string {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return text;
}

/** A short description of a pickled value for error messages. */
function describe(value: unknown): string {
  if (value === null) return "None";
  if (typeof value === "string") return JSON.stringify(value.length > 40 ? value.slice(0, 40) + "…" : value);
  if (typeof value === "number" || typeof value === "bigint" || typeof value === "boolean") {
    return String(value);
  }
  if (value instanceof Uint8Array) return `bytes(${value.length})`;
  if (Array.isArray(value)) return `a tuple/list of ${value.length}`;
  if (value instanceof PyDict) return "a dict";
  if (value instanceof Set) return "a set";
  if (value instanceof PyCallable || value instanceof TorchType) return value.qualname;
  if (value instanceof TensorView) return "a tensor";
  if (value instanceof Storage) return `storage ${value.key}`;
  return typeof value;
}
