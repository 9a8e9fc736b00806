/**
 * A restricted pickle virtual machine: it runs the opcodes of Python's pickle protocols 2 to 5 over bytes in
 * memory and builds plain values (numbers, bigints, strings, bytes, tuples and lists as arrays, dicts as
 * {@link PyDict}, sets). That is its one job; what a pickle's globals and persistent ids stand for is the
 * caller's business, through two hooks in the spirit of Python's `Unpickler.find_class` and
 * `persistent_load` (weights/torch_checkpoint.ts gives them torch's meaning).
 *
 * Why restricted: a pickle can name any Python callable and have it called (`os.system`, `eval`). Here
 * nothing is ever called unless `findClass` returned a {@link PyCallable} for it, so the hook is an
 * allowlist and a refusal happens by name, before anything else.
 * @module
 */

/**
 * A malformed, truncated or refused pickle. The VM adds the opcode and byte offset where it happened;
 * hooks throw it to refuse a global or a persistent id, as Python's `find_class` raises
 * `pickle.UnpicklingError`.
 */
export class UnpicklingError extends Error {
  override name = "UnpicklingError";
}

function fail(message: string): never {
  throw new UnpicklingError(message);
}

// ---------------------------------------------------------------------------------------------------
// The object model
// ---------------------------------------------------------------------------------------------------

/** A value made by a hook that can name itself in error messages (see {@link describe}). */
export interface PyObject {
  /** A short description such as "a tensor" or "storage 0". */
  describe(): string;
}

/** A Python dict or OrderedDict. Attributes set by BUILD (e.g. `_metadata`) are kept apart. */
export class PyDict implements PyObject {
  /** The entries, in insertion order (pickles keep Python's order). */
  readonly items: Map<unknown, unknown> = new Map();
  /** Instance attributes set by BUILD, such as the `_metadata` of a state_dict's OrderedDict. */
  readonly attrs: Map<string, unknown> = new Map();

  describe(): string {
    return "a dict";
  }
}

/** A callable that `findClass` allowed: the target of REDUCE, NEWOBJ and NEWOBJ_EX. */
export class PyCallable implements PyObject {
  /**
   * @param qualname `module.name`, for error messages
   * @param call builds the result from the positional arguments (a tuple, as an array)
   */
  constructor(readonly qualname: string, readonly call: (args: unknown[]) => unknown) {}

  describe(): string {
    return this.qualname;
  }
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

/** The harmless builtins a `findClass` hook may hand out: dict and OrderedDict (as PyDict), sets. */
const BUILTINS: Record<string, (args: unknown[]) => unknown> = {
  "collections.OrderedDict": newDict,
  "builtins.dict": newDict,
  "__builtin__.dict": newDict,
  "builtins.set": newSet,
  "__builtin__.set": newSet,
  "builtins.frozenset": newSet,
  "__builtin__.frozenset": newSet,
};

/**
 * The Python builtin `module.name` as a {@link PyCallable} when it only builds a container (dict,
 * OrderedDict, set, frozenset; Python 2 spellings too), else undefined. For `findClass` hooks that allow
 * them.
 */
export function builtinGlobal(module: string, name: string): PyCallable | undefined {
  const qualname = `${module}.${name}`;
  return Object.hasOwn(BUILTINS, qualname) ? new PyCallable(qualname, BUILTINS[qualname]) : undefined;
}

/** `value` as an array when it is a tuple, list or set; else an {@link UnpicklingError} naming `what`. */
export function asSequence(value: unknown, what: string): unknown[] {
  if (Array.isArray(value)) return value;
  if (value instanceof Set) return [...value];
  fail(`${what} is ${describe(value)}, not a tuple or list`);
}

/** A short description of an unpickled value for error messages (strings cut at 40 characters). */
export function describe(value: unknown): string {
  if (value === null) return "None";
  if (typeof value === "string") return JSON.stringify(value.length > 40 ? value.slice(0, 40) + "…" : value);
  if (typeof value === "number" || typeof value === "bigint" || typeof value === "boolean") {
    return String(value);
  }
  if (value instanceof Uint8Array) return `bytes(${value.length})`;
  if (Array.isArray(value)) return `a tuple/list of ${value.length}`;
  if (value instanceof Set) return "a set";
  if (typeof value === "object" && typeof (value as Partial<PyObject>).describe === "function") {
    return (value as PyObject).describe();
  }
  return typeof value;
}

/** The bytes as Latin-1 text (one character per byte), as Python decodes protocol-2 `str`. */
export function latin1(bytes: Uint8Array): string {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return text;
}

// ---------------------------------------------------------------------------------------------------
// Running a pickle
// ---------------------------------------------------------------------------------------------------

/** How the caller gives meaning to what a pickle refers to outside itself. */
export interface UnpicklerHooks {
  /**
   * GLOBAL and STACK_GLOBAL: the value that `module.name` stands for. Return a {@link PyCallable} for
   * anything the pickle may call; throw an {@link UnpicklingError} to refuse the name.
   */
  findClass(module: string, name: string): unknown;
  /**
   * BINPERSID: the object a persistent id stands for (torch uses them for tensor storages). Without this
   * hook a persistent id is an error.
   */
  persistentLoad?(pid: unknown): unknown;
}

/** One unpickled object, and where its pickle ended. */
export interface Unpickled {
  /** The object at STOP. */
  value: unknown;
  /** The offset just past the STOP opcode (where a following pickle starts). */
  end: number;
}

/**
 * Runs one pickle from `start` to its STOP opcode and returns the object it built.
 *
 * Each opcode consumes at least one byte and every read is bounds checked, so it ends (at STOP, or with an
 * error) within `bytes.length - start` steps. Strings and bytes are copied out, so the result does not keep
 * `bytes` alive.
 * @param bytes the buffer holding the pickle (possibly followed by more data)
 * @param hooks what globals and persistent ids stand for
 * @param start the offset of the pickle's first opcode
 * @throws {UnpicklingError} when the pickle is malformed, truncated, uses an unsupported opcode or a hook
 *   refuses something; other errors thrown by hooks pass through unchanged
 */
export function unpickle(bytes: Uint8Array, hooks: UnpicklerHooks, start = 0): Unpickled {
  return new Unpickler(bytes, start, hooks).load();
}

function dataView(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A uint64 length that must fit a JS number exactly. */
function readU64(view: DataView, at: number, what: string): number {
  const value = view.getBigUint64(at, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${what} ${value} is too large`);
  return Number(value);
}

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

/** The stack machine behind {@link unpickle}: one instance per pickle. */
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
    private readonly hooks: UnpicklerHooks,
  ) {
    this.#pos = start;
    this.#view = dataView(bytes);
  }

  /** Runs to STOP; returns the pickled object and the offset just past STOP. */
  load(): Unpickled {
    for (;;) {
      const at = this.#pos;
      const op = this.#u8();
      try {
        // Like CPython, STOP returns the top of the stack and ignores anything left under it.
        if (op === Op.STOP) return { value: this.#pop(), end: this.#pos };
        this.#step(op);
      } catch (e) {
        // Where it went wrong, once (a nested error may already say), for hook refusals too.
        if (e instanceof UnpicklingError && !e.message.includes(" at byte ")) {
          throw new UnpicklingError(`${e.message} (pickle opcode 0x${op.toString(16)} at byte ${at})`);
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
        stack.push(this.hooks.findClass(module, name));
        return;
      }
      case Op.STACK_GLOBAL: {
        const name = this.#pop();
        const module = this.#pop();
        if (typeof module !== "string" || typeof name !== "string") fail("STACK_GLOBAL needs two strings");
        stack.push(this.hooks.findClass(module, name));
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
      case Op.BINPERSID: {
        const pid = this.#pop();
        if (!this.hooks.persistentLoad) fail(`unexpected persistent id ${describe(pid)}`);
        stack.push(this.hooks.persistentLoad(pid));
        return;
      }
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
