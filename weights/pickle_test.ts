/**
 * Tests for the pickle VM (weights/pickle.ts) on its own, without torch: Python's pickle module writes the
 * values in protocols 2 to 5 together with a JSON description of each, which what the VM builds must
 * match; the hooks (findClass, persistentLoad) and every kind of malformed pickle are checked here too.
 */

import assert from "node:assert/strict";
import {
  builtinGlobal,
  describe,
  PyCallable,
  PyDict,
  unpickle,
  type UnpicklerHooks,
  UnpicklingError,
} from "./pickle.ts";
import { pythonJson } from "../tests/helpers.ts";

/**
 * Pickles a set of plain values in protocols 2 to 5 and describes each in the tagged JSON of `norm`, so the
 * expected values come from Python itself.
 */
const SCRIPT = String.raw`
import base64, collections, json, pickle, sys

def norm(x):
    if x is None or isinstance(x, bool):
        return x
    if isinstance(x, int):
        return {"int": str(x)}
    if isinstance(x, float):
        return {"float": repr(x)}
    if isinstance(x, str):
        return {"str": x}
    if isinstance(x, bytes):
        return {"bytes": x.hex()}
    if isinstance(x, (list, tuple)):
        return {"seq": [norm(v) for v in x]}
    if isinstance(x, (set, frozenset)):
        return {"set": sorted(json.dumps(norm(v), sort_keys=True) for v in x)}
    if isinstance(x, dict):
        out = {"dict": [[norm(k), norm(v)] for k, v in x.items()]}
        if getattr(x, "__dict__", None):
            out["attrs"] = [[k, norm(v)] for k, v in vars(x).items()]
        return out
    raise TypeError(type(x))

shared = [1, 2]
od = collections.OrderedDict([("b", 1), ("a", [1.5, -0.0])])
od._metadata = {"": {"version": 1}}
# Floats are not integral: JavaScript has one number type, so 1.0 and 1 come back alike.
values = {
    "scalars": [None, True, False, 0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31 - 1, 2**31, -2**63,
                2**64 + 5, 10**30, -10**30, 1.5, -0.0, 0.1, 1.25e-300, float("inf")],
    "strings": ["", "ascii", "d\u00e9j\u00e0 vu \u2603 \U0001F600", "x" * 300],
    "containers": {"tuple0": (), "tuple1": (1,), "tuple3": (1, "2", 3.5), "tuple5": (1, 2, 3, 4, 5),
                   "list": [[], [[]], list(range(1200))], "nested": {"k": {"k": {"k": ()}}},
                   "intkeys": {1: "one", -2: "minus two", 2**40: "big"}},
    "memo": [shared, shared, (shared,)],
    "sets": [set(), {1, 2, 3}, frozenset({"a", "b"})],
    "ordered": od,
}
out = {}
for protocol in (2, 3, 4, 5):
    # Protocol 2 spells bytes as a call of _codecs.encode, which is no container: from 3 on they are opcodes.
    extra = {"bytes": [b"", b"\x00\xff" * 200]} if protocol >= 3 else {}
    for name, value in {**values, **extra}.items():
        out[f"{name}-{protocol}"] = {"pickle": base64.b64encode(pickle.dumps(value, protocol)).decode(),
                                     "expected": norm(value)}
json.dump(out, sys.stdout)
`;

type Case = { pickle: string; expected: unknown };

/** The same tagged JSON as the script's `norm`, from what the VM built. */
function norm(x: unknown): unknown {
  if (x === null || typeof x === "boolean") return x;
  if (typeof x === "number" && Number.isInteger(x) && !Object.is(x, -0)) return { int: String(x) };
  if (typeof x === "bigint") return { int: String(x) };
  if (typeof x === "number") return { float: pythonRepr(x) };
  if (typeof x === "string") return { str: x };
  if (x instanceof Uint8Array) return { bytes: [...x].map((b) => b.toString(16).padStart(2, "0")).join("") };
  if (Array.isArray(x)) return { seq: x.map(norm) };
  if (x instanceof Set) return { set: [...x].map((v) => sortedJson(norm(v))).sort() };
  if (x instanceof PyDict) {
    const out: Record<string, unknown> = { dict: [...x.items].map(([k, v]) => [norm(k), norm(v)]) };
    if (x.attrs.size > 0) out.attrs = [...x.attrs].map(([k, v]) => [k, norm(v)]);
    return out;
  }
  throw new Error(`unexpected value ${describe(x)}`);
}

/** Python's repr of a float, for the non-integral values the script uses (both print 17 digits at most). */
function pythonRepr(x: number): string {
  if (x === Infinity) return "inf";
  if (Object.is(x, -0)) return "-0.0";
  return String(x);
}

/** JSON with sorted keys and Python's separators (json.dumps(..., sort_keys=True)). */
function sortedJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(sortedJson).join(", ")}]`;
  if (v !== null && typeof v === "object") {
    const entries = Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}: ${sortedJson(x)}`).join(", ")}}`;
  }
  return JSON.stringify(v);
}

/** Hooks that allow Python's container builtins and nothing else. */
const BUILTINS_ONLY: UnpicklerHooks = {
  findClass(module, name) {
    return builtinGlobal(module, name) ?? fail(`refusing ${module}.${name}`);
  },
};

function fail(message: string): never {
  throw new UnpicklingError(message);
}

const bytesOf = (...parts: (string | number[])[]): Uint8Array =>
  Uint8Array.from(parts.flatMap((p) => typeof p === "string" ? [...p].map((c) => c.charCodeAt(0)) : p));

function assertUnpicklingError(fn: () => unknown, pattern: RegExp): UnpicklingError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof UnpicklingError, `expected an UnpicklingError, got ${e}`);
    assert.match(e.message, pattern);
    return e;
  }
  assert.fail(`expected an UnpicklingError matching ${pattern}`);
}

Deno.test("values pickled by Python in protocols 2 to 5 come back as Python wrote them", async () => {
  const cases = await pythonJson(SCRIPT, null) as Record<string, Case>;
  assert.equal(Object.keys(cases).length, 27);
  for (const [name, { pickle, expected }] of Object.entries(cases)) {
    const bytes = Uint8Array.from(atob(pickle), (c) => c.charCodeAt(0));
    const { value, end } = unpickle(bytes, BUILTINS_ONLY);
    assert.equal(end, bytes.length, `${name}: ends at STOP`);
    assert.deepEqual(norm(value), expected, name);
  }
  // The memo makes shared objects one object, as in Python.
  const memo = cases["memo-2"];
  const value = unpickle(Uint8Array.from(atob(memo.pickle), (c) => c.charCodeAt(0)), BUILTINS_ONLY).value;
  const [a, b, [c]] = value as unknown[][];
  assert.ok(a === b && b === c);
});

Deno.test("findClass is asked for every global and decides what may be called", () => {
  const asked: string[] = [];
  const calls: unknown[][] = [];
  const hooks: UnpicklerHooks = {
    findClass(module, name) {
      asked.push(`${module}.${name}`);
      return new PyCallable(`${module}.${name}`, (args) => (calls.push(args), "built"));
    },
  };
  // GLOBAL (protocol 2) and STACK_GLOBAL (protocol 4), each called through REDUCE with one argument.
  const viaGlobal = bytesOf([0x80, 2], "cmod\nfn\nK", [7], [0x85], "R.");
  assert.equal(unpickle(viaGlobal, hooks).value, "built");
  const viaStack = bytesOf([0x80, 4, 0x8c, 3], "pkg", [0x8c, 4], "make", [0x93], "K", [9], [0x85], "R.");
  assert.equal(unpickle(viaStack, hooks).value, "built");
  assert.deepEqual(asked, ["mod.fn", "pkg.make"]);
  assert.deepEqual(calls, [[7], [9]]);
  // A global that is not a PyCallable is a value, never called.
  const plain: UnpicklerHooks = { findClass: () => "just a value" };
  assert.equal(unpickle(bytesOf([0x80, 2], "cmod\nname\n."), plain).value, "just a value");
  assertUnpicklingError(() => unpickle(viaGlobal, plain), /cannot call "just a value"/);
});

Deno.test("a refused global stops the pickle by name, with where it happened, before any call", () => {
  // The crafted os.system / builtins.eval pickles of torch_checkpoint_test.ts, against the builtins only.
  const viaGlobal = bytesOf([0x80, 2], "cos\nsystem\nX", [4, 0, 0, 0], "echo", [0x85], "R.");
  const e = assertUnpicklingError(() => unpickle(viaGlobal, BUILTINS_ONLY), /refusing os\.system/);
  assert.match(e.message, /\(pickle opcode 0x63 at byte 2\)$/);
  const viaStack = bytesOf(
    [0x80, 4, 0x8c, 8],
    "builtins",
    [0x8c, 4],
    "eval",
    [0x93],
    "X",
    [1, 0, 0, 0],
    "1",
    [
      0x85,
    ],
    "R.",
  );
  assertUnpicklingError(() => unpickle(viaStack, BUILTINS_ONLY), /refusing builtins\.eval .*at byte 18\)$/);
  // Errors of other kinds from a hook pass through unchanged.
  const boom = new RangeError("boom");
  const throwing: UnpicklerHooks = {
    findClass() {
      throw boom;
    },
  };
  assert.throws(() => unpickle(viaGlobal, throwing), (err) => err === boom);
});

Deno.test("persistent ids go to persistentLoad, and are refused without it", () => {
  // BINPERSID of the tuple ("storage", 3).
  const pickle = bytesOf([0x80, 2], "X", [7, 0, 0, 0], "storageK", [3], [0x86], "Q.");
  const pids: unknown[] = [];
  const value = unpickle(pickle, { findClass: fail, persistentLoad: (pid) => (pids.push(pid), "loaded") });
  assert.equal(value.value, "loaded");
  assert.deepEqual(pids, [["storage", 3]]);
  assertUnpicklingError(
    () => unpickle(pickle, { findClass: fail }),
    /unexpected persistent id a tuple\/list of 2 .*at byte 17/,
  );
});

Deno.test("pickles follow each other: `end` is where the next one starts", () => {
  const first = bytesOf([0x80, 2], "K", [1], ".");
  const second = bytesOf([0x80, 2], "X", [2, 0, 0, 0], "hi.");
  const both = bytesOf([...first], [...second], [0xde, 0xad]);
  const one = unpickle(both, BUILTINS_ONLY);
  assert.deepEqual(one, { value: 1, end: first.length });
  assert.deepEqual(unpickle(both, BUILTINS_ONLY, one.end), {
    value: "hi",
    end: first.length + second.length,
  });
});

Deno.test("malformed pickles are UnpicklingErrors that say what and where", () => {
  const cases: [Uint8Array, RegExp][] = [
    [bytesOf([0x80, 2], "}I1\n."), /unknown or unsupported opcode 0x49 at byte 3/],
    [bytesOf([0x80, 2], "h", [7], "."), /memo entry 7 is read before it is written/],
    [bytesOf([0x80, 2], "s."), /stack underflow/],
    [bytesOf([0x80, 2], "."), /stack underflow/],
    [bytesOf([0x80, 2], "}(X", [0xff, 0xff, 0xff, 0x7f], "."), /truncated: needs 2147483647 bytes/],
    [bytesOf([0x80, 2], "}"), /truncated: needs 1 bytes at byte 3/],
    [bytesOf([0x80, 9], "."), /unsupported pickle protocol 9/],
    [bytesOf([0x80, 2], "e."), /MARK that was never set/],
    [bytesOf([0x80, 2], "}(K", [1], "u."), /SETITEMS with an odd number of items/],
    [bytesOf([0x80, 2], "K", [1], "K", [2], "K", [3], "s."), /SETITEM on 1/],
    [bytesOf([0x80, 2], "cmod\nname"), /unterminated GLOBAL/],
    [bytesOf([0x80, 2], "X", [2, 0, 0, 0], [0xff, 0xfe], "."), /invalid UTF-8 string at byte 7/],
    [bytesOf([0x80, 2], "]K", [1], "b."), /BUILD on a tuple\/list of 0 is not supported/],
  ];
  for (const [pickle, pattern] of cases) {
    const e = assertUnpicklingError(() => unpickle(pickle, BUILTINS_ONLY), pattern);
    assert.match(e.message, / at byte \d+/, e.message);
  }
});

Deno.test("BUILD on a dict keeps the state as attributes apart from the items", () => {
  // OrderedDict() then BUILD({"_metadata": 1}).
  const pickle = bytesOf(
    [0x80, 2],
    "ccollections\nOrderedDict\n)R}X",
    [9, 0, 0, 0],
    "_metadataK",
    [1],
    "sb.",
  );
  const dict = unpickle(pickle, BUILTINS_ONLY).value;
  assert.ok(dict instanceof PyDict);
  assert.equal(dict.items.size, 0);
  assert.deepEqual([...dict.attrs], [["_metadata", 1]]);
});

Deno.test("random bytes after a PROTO opcode end in an UnpicklingError, never another error", () => {
  let seed = 11;
  const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let i = 0; i < 2000; i++) {
    const bytes = Uint8Array.from(
      { length: 2 + Math.floor(random() * 60) },
      () => Math.floor(random() * 256),
    );
    bytes.set([0x80, 2]);
    try {
      unpickle(bytes, BUILTINS_ONLY);
    } catch (e) {
      assert.ok(e instanceof UnpicklingError, `case ${i}: ${e}`);
    }
  }
});
