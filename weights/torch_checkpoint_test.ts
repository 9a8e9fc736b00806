/**
 * Tests for the torch.save reader (weights/torch_checkpoint.ts), in both containers, and for the entry
 * points that reach it through weights/format.ts's detection (readStateDict, loadStateDictFile). Fixtures
 * are made at test time by the repo's Python venv (torch, transformers, safetensors); Python also writes
 * what each file must decode to, as safetensors of contiguous clones, so every key, dtype, shape and byte
 * is checked against torch itself.
 */

import assert from "node:assert/strict";
import { mulberry32 as prng } from "../util/random.ts";
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import { loadTorchCheckpoint, readTorchCheckpoint, TorchCheckpointError } from "./torch_checkpoint.ts";
import { loadStateDictFile, readStateDict } from "./checkpoint.ts";
import { detectFormat } from "./format.ts";
import { ZipArchive } from "./zip.ts";
import type { DType, RawTensor, StateDict } from "../model/tensor.ts";

// ---------------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------------

const PYTHON = fileURLToPath(new URL("../.venv/bin/python", import.meta.url));

/** Writes every fixture into argv[1]; `meta.json` records key orders and how the HF file was made. */
const FIXTURE_SCRIPT = String.raw`
import hashlib, json, os, sys, zipfile
import torch
from safetensors.torch import save_file
from transformers import DistilBertConfig, DistilBertForSequenceClassification

out = sys.argv[1]
meta = {"keys": {}}
p = lambda name: os.path.join(out, name)

def expect(name, sd):
    """Records what <name> must decode to: contiguous copies, in state_dict order."""
    tensors = {k: v.detach().contiguous().clone() for k, v in sd.items() if isinstance(v, torch.Tensor)}
    save_file(tensors, p(name + ".expected.safetensors"))
    meta["keys"][name] = list(tensors)

torch.manual_seed(0)
cfg = DistilBertConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=32,
                       max_position_embeddings=32, num_labels=3)
model = DistilBertForSequenceClassification(cfg).eval()
sd = model.state_dict()
assert type(sd).__name__ == "OrderedDict" and hasattr(sd, "_metadata")
torch.save(sd, p("distilbert.pt"))
expect("distilbert", sd)
torch.save(sd, p("legacy.pt"), _use_new_zipfile_serialization=False)
expect("legacy", sd)

# transformers < 5 wrote pytorch_model.bin here; 5.x ignores the flag and writes safetensors, so
# fall back to what 4.x did: torch.save of a plain dict of contiguous tensors.
hf = p("hf")
model.save_pretrained(hf, safe_serialization=False)
if os.path.exists(os.path.join(hf, "pytorch_model.bin")):
    meta["hf_via"] = "save_pretrained"
else:
    torch.save({k: v.contiguous() for k, v in sd.items()}, os.path.join(hf, "pytorch_model.bin"))
    meta["hf_via"] = "torch.save like transformers 4.x"
expect("hf", sd)

g = torch.Generator().manual_seed(1)
dtypes = {
    "f32": torch.randn(3, 4, generator=g),
    "f16": torch.randn(5, generator=g).half(),
    "bf16": torch.randn(2, 3, generator=g).bfloat16(),
    "f64": torch.randn(4, generator=g).double(),
    "i64": torch.tensor([-(2**62), -1, 0, 1, 2**62 + 3]),
    "i32": torch.tensor([-7, 2**31 - 1], dtype=torch.int32),
    "i8": torch.tensor([-128, 5, 127], dtype=torch.int8),
    "u8": torch.tensor([0, 200, 255], dtype=torch.uint8),
    "bool": torch.tensor([True, False, True]),
    "special": torch.tensor([float("inf"), float("-inf"), float("nan"), -0.0, 1e-40]),
}
torch.save(dtypes, p("dtypes.pt"))
expect("dtypes", dtypes)
torch.save(dtypes, p("proto4.pt"), pickle_protocol=4)
expect("proto4", dtypes)

base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
w = torch.randn(3, 5, generator=g)
views = {
    "base": base,
    "t": base.t(),
    "row": base[2],
    "col": base[:, 1],
    "block": base[1:3, 2:5],
    "every_other": base[:, ::2],
    "elem": base[3, 4],
    "expanded": torch.arange(3.0).expand(4, 3),
    "permuted": torch.arange(24).reshape(2, 3, 4).permute(2, 0, 1),
    "half_t": torch.randn(4, 3, generator=g).half().t(),
    "w": w,
    "w_tied": w,
    "scalar": torch.tensor(2.5),
    "empty": torch.zeros(0, 3),
}
torch.save(views, p("views.pt"))
expect("views", views)
with zipfile.ZipFile(p("views.pt")) as z:
    meta["views_storages"] = sum(1 for n in z.namelist() if "/data/" in n)

lin = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
lin(torch.randn(3, 4, generator=g)).sum().backward()
opt.step()
torch.save({"epoch": 3, "model": lin.state_dict(), "optimizer": opt.state_dict(), "best": 0.25,
            "name": "run-1"}, p("nested.pt"))
expect("nested", lin.state_dict())

plain = {"a": torch.ones(2), "b": torch.arange(3)}
torch.save(plain, p("plain.pt"))
expect("plain", plain)
torch.save({"p": torch.nn.Parameter(torch.arange(4.0))}, p("param.pt"))
expect("param", {"p": torch.arange(4.0)})

t = torch.arange(3.0)
t.note = "python attribute"
param = torch.nn.Parameter(torch.ones(2, 2))
param._is_hf_initialized = True
torch.save({"t": t, "param": param}, p("attrs.pt"))
expect("attrs", {"t": t, "param": param})

torch.save({"x": os.system}, p("evil.pt"))
torch.save([torch.ones(1)], p("list.pt"))
torch.save({"s": torch.zeros(2, dtype=torch.int16)}, p("int16.pt"))

def rezip(src, dst, method=zipfile.ZIP_STORED, edit=lambda name, data: data):
    with zipfile.ZipFile(p(src)) as zin, zipfile.ZipFile(p(dst), "w", method) as zout:
        for name in zin.namelist():
            data = edit(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)

rezip("plain.pt", "deflate.pt", zipfile.ZIP_DEFLATED)
rezip("plain.pt", "bigendian.pt", edit=lambda n, d: b"big" if n.endswith("/byteorder") else d)
rezip("plain.pt", "missing.pt", edit=lambda n, d: None if n.endswith("/data/0") else d)
# Python writes ZIP64 records only past 4 GiB; lowering its limits forces them on a small file.
zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = -1, 0
rezip("plain.pt", "zip64.pt")
expect("zip64", plain)
zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = (1 << 31) - 1, 1 << 16

# The legacy container (_use_new_zipfile_serialization=False): several dtypes, non-contiguous and offset
# views, and tensors sharing one storage, in pickle protocol 2 (torch's default) and 4 (FRAME opcodes).
g = torch.Generator().manual_seed(2)
base = torch.randn(4, 6, generator=g)
tied = torch.randn(3, generator=g).half()
mixed = {
    "f32": torch.randn(3, 4, generator=g),
    "f16": torch.randn(5, generator=g).half(),
    "bf16": torch.randn(2, 3, generator=g).bfloat16(),
    "i64": torch.tensor([-(2**62), -1, 0, 1, 2**62 + 3]),
    "base": base,
    "t": base.t(),
    "block": base[1:3, ::2],
    "row": base[2],
    "tied_a": tied,
    "tied_b": tied,
    "bf16_strided": torch.randn(3, 4, generator=g).bfloat16()[:, 1::2],
    "i64_t": torch.arange(6).reshape(2, 3).t(),
    "scalar": torch.tensor(-7),
}
for name, protocol in (("legacy_mixed", 2), ("legacy_proto4", 4)):
    torch.save(mixed, p(name + ".pt"), _use_new_zipfile_serialization=False, pickle_protocol=protocol)
    expect(name, mixed)
# What the file really holds, as torch.load sees it: the views still share their storage.
back = torch.load(p("legacy_mixed.pt"), weights_only=True)
ptr = lambda k: back[k].untyped_storage().data_ptr()
meta["legacy_mixed"] = {
    "views_share_base": ptr("t") == ptr("base") == ptr("block") == ptr("row"),
    "tied_share": ptr("tied_a") == ptr("tied_b"),
    "non_contiguous": sorted(k for k, v in back.items() if not v.is_contiguous()),
    "storages": len({ptr(k) for k in back}),
    "tensors": len(back),
}
# torch's own zip records, for the in-place reader: each entry's bytes and where its data starts.
with zipfile.ZipFile(p("views.pt")) as z:
    meta["views_entries"] = {i.filename: [hashlib.sha256(z.read(i)).hexdigest(), i.header_offset]
                             for i in z.infolist()}

with open(p("meta.json"), "w") as f:
    json.dump(meta, f)
`;

interface Meta {
  keys: Record<string, string[]>;
  hf_via: string;
  views_storages: number;
  legacy_mixed: {
    views_share_base: boolean;
    tied_share: boolean;
    non_contiguous: string[];
    storages: number;
    tensors: number;
  };
  views_entries: Record<string, [sha256: string, headerOffset: number]>;
}

let fixtureDir: Promise<{ dir: string; meta: Meta }> | undefined;

/** Generates the fixtures once per test run; the folder is removed when the test module unloads. */
function fixtures(): Promise<{ dir: string; meta: Meta }> {
  fixtureDir ??= (async () => {
    try {
      await Deno.stat(PYTHON);
    } catch {
      throw new Error(`${PYTHON} is missing: run \`deno task setup\` to create the Python venv`);
    }
    const dir = await Deno.makeTempDir({ prefix: "torch_checkpoint_test_" });
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    const result = await new Deno.Command(PYTHON, {
      args: ["-c", FIXTURE_SCRIPT, dir],
      stdout: "piped",
      stderr: "piped",
      env: { TRANSFORMERS_VERBOSITY: "error", HF_HUB_OFFLINE: "1", TQDM_DISABLE: "1" },
    }).output();
    if (!result.success) {
      throw new Error(`fixture script failed:\n${new TextDecoder().decode(result.stderr)}`);
    }
    const meta = JSON.parse(await Deno.readTextFile(`${dir}/meta.json`)) as Meta;
    return { dir, meta };
  })();
  return fixtureDir;
}

async function fixturePath(name: string): Promise<string> {
  return `${(await fixtures()).dir}/${name}`;
}

// ---------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------

/** Minimal safetensors reader for the expected values (8-byte header length, JSON header, data). */
function readSafetensors(bytes: Uint8Array): Map<string, RawTensor> {
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  const out = new Map<string, RawTensor>();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const { dtype, shape, data_offsets: [begin, end] } = info as {
      dtype: DType;
      shape: number[];
      data_offsets: [number, number];
    };
    out.set(name, { dtype, shape, data: bytes.subarray(8 + headerLength + begin, 8 + headerLength + end) });
  }
  return out;
}

/** Asserts `actual` holds exactly the keys (in Python's order), dtypes, shapes and bytes expected. */
async function assertMatchesPython(actual: StateDict, name: string): Promise<void> {
  const { dir, meta } = await fixtures();
  const expected = readSafetensors(await Deno.readFile(`${dir}/${name}.expected.safetensors`));
  assert.deepEqual([...actual.keys()], meta.keys[name], `${name}: keys or their order differ`);
  for (const [key, want] of expected) {
    const got = actual.get(key)!;
    assert.equal(got.dtype, want.dtype, `${name}/${key}: dtype`);
    assert.deepEqual(got.shape, want.shape, `${name}/${key}: shape`);
    assertBytesEqual(got.data, want.data, `${name}/${key}`);
  }
}

function assertBytesEqual(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: byte length`);
  const at = actual.findIndex((b, i) => b !== expected[i]);
  assert.equal(at, -1, `${what}: first differing byte at ${at}`);
}

/** Asserts `fn` throws a TorchCheckpointError naming `source` and matching `pattern`. */
function assertRejects(fn: () => unknown, source: string, pattern: RegExp): TorchCheckpointError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof TorchCheckpointError, `expected TorchCheckpointError, got ${e}`);
    assert.ok(e.message.includes(source), `message lacks the source name: ${e.message}`);
    assert.match(e.message, pattern);
    return e;
  }
  assert.fail(`expected ${source} to be rejected (${pattern})`);
}

async function rejectsFixture(name: string, pattern: RegExp): Promise<TorchCheckpointError> {
  const bytes = await Deno.readFile(await fixturePath(name));
  return assertRejects(() => readTorchCheckpoint(bytes, name), name, pattern);
}

const f32 = (t: RawTensor) => [...new Float32Array(t.data.slice().buffer)];

/** Builds a STORED zip (no data descriptors, no ZIP64), enough to wrap crafted pickles. */
function makeZip(files: [string, Uint8Array][]): Uint8Array {
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const [name, data] of files) {
    const nameBytes = new TextEncoder().encode(name);
    const local = new Uint8Array(30 + nameBytes.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true);
    lv.setUint32(18, data.length, true);
    lv.setUint32(22, data.length, true);
    lv.setUint16(26, nameBytes.length, true);
    local.set(nameBytes, 30);
    const entry = new Uint8Array(46 + nameBytes.length);
    const cv = new DataView(entry.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint32(20, data.length, true);
    cv.setUint32(24, data.length, true);
    cv.setUint16(28, nameBytes.length, true);
    cv.setUint32(42, offset, true);
    entry.set(nameBytes, 46);
    parts.push(local, data);
    central.push(entry);
    offset += local.length + data.length;
  }
  const centralSize = central.reduce((n, e) => n + e.length, 0);
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, files.length, true);
  ev.setUint16(10, files.length, true);
  ev.setUint32(12, centralSize, true);
  ev.setUint32(16, offset, true);
  return concat([...parts, ...central, eocd]);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, at), at += p.length;
  return out;
}

/** Pickle bytes from latin1 text pieces and byte arrays. */
function pickle(...pieces: (string | number[])[]): Uint8Array {
  return concat(
    pieces.map((p) =>
      typeof p === "string" ? Uint8Array.from(p, (c) => c.charCodeAt(0)) : Uint8Array.from(p)
    ),
  );
}

/** A torch-layout archive around a crafted data.pkl. */
function torchZip(dataPkl: Uint8Array, storages: Record<string, Uint8Array> = {}): Uint8Array {
  return makeZip([
    ["archive/data.pkl", dataPkl],
    ["archive/byteorder", new TextEncoder().encode("little")],
    ...Object.entries(storages).map(([k, v]): [string, Uint8Array] => [`archive/data/${k}`, v]),
    ["archive/version", new TextEncoder().encode("3\n")],
  ]);
}

/** BININT opcode for a non-negative int. */
function int(n: number): number[] {
  return [0x4a, n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24];
}

/**
 * `{"w": _rebuild_tensor_v2(storage('0', FloatStorage, numel), offset, size, stride, False, OrderedDict())}`
 * spelled out opcode by opcode, the way torch.save writes it.
 */
function oneTensorPickle(numel: number, offset: number, size: number[], stride = [1]): Uint8Array {
  const tuple = (items: number[]) => ["(", ...items.map(int), "t"];
  return pickle(
    [0x80, 2],
    "}(X",
    [1, 0, 0, 0],
    "w",
    "ctorch._utils\n_rebuild_tensor_v2\n((X",
    [7, 0, 0, 0],
    "storagectorch\nFloatStorage\nX",
    [1, 0, 0, 0],
    "0X",
    [3, 0, 0, 0],
    "cpu",
    int(numel),
    "tQ",
    int(offset),
    ...tuple(size),
    ...tuple(stride),
    [0x89],
    "ccollections\nOrderedDict\n)RtRu.",
  );
}

// ---------------------------------------------------------------------------------------------------
// Real checkpoints written by torch
// ---------------------------------------------------------------------------------------------------

Deno.test("DistilBERT state_dict (OrderedDict with _metadata) matches Python byte for byte", async () => {
  const sd = await loadTorchCheckpoint(await fixturePath("distilbert.pt"));
  await assertMatchesPython(sd, "distilbert");
  const emb = sd.get("distilbert.embeddings.word_embeddings.weight")!;
  assert.deepEqual([emb.dtype, emb.shape], ["F32", [50, 16]]);
  assert.deepEqual(sd.get("classifier.weight")!.shape, [3, 16]);
  assert.ok(!sd.has("_metadata"));
});

Deno.test("Hugging Face pytorch_model.bin matches Python", async () => {
  const { meta } = await fixtures();
  const sd = await loadTorchCheckpoint(await fixturePath("hf/pytorch_model.bin"));
  await assertMatchesPython(sd, "hf");
  assert.ok(meta.hf_via.length > 0);
});

Deno.test("legacy (non-zip) torch.save format matches Python", async () => {
  await assertMatchesPython(await loadTorchCheckpoint(await fixturePath("legacy.pt")), "legacy");
});

Deno.test("legacy container: F32 F16 BF16 I64, strided views and shared storages, bit for bit", async () => {
  const { meta } = await fixtures();
  // The fixture is what it claims: views of one storage, a tied pair, non-contiguous tensors.
  assert.ok(meta.legacy_mixed.views_share_base && meta.legacy_mixed.tied_share);
  assert.deepEqual(meta.legacy_mixed.non_contiguous, ["bf16_strided", "block", "i64_t", "t"]);
  assert.ok(meta.legacy_mixed.storages < meta.legacy_mixed.tensors);
  for (const name of ["legacy_mixed", "legacy_proto4"]) {
    const bytes = await Deno.readFile(await fixturePath(`${name}.pt`));
    assert.deepEqual(detectFormat(bytes), { format: "torch-legacy" }, name);
    const sd = readTorchCheckpoint(bytes, name);
    await assertMatchesPython(sd, name);
    assert.deepEqual(
      [...sd.values()].map((t) => t.dtype),
      ["F32", "F16", "BF16", "I64", "F32", "F32", "F32", "F32", "F16", "F16", "BF16", "I64", "I64"],
    );
    // Views come out as their own contiguous copies: the transpose's first row is the base's first column.
    const base = f32(sd.get("base")!);
    assert.deepEqual(f32(sd.get("t")!).slice(0, 4), [0, 1, 2, 3].map((r) => base[r * 6]));
    assert.deepEqual(f32(sd.get("row")!), base.slice(12, 18));
    assert.notEqual(sd.get("tied_a")!.data.buffer, sd.get("tied_b")!.data.buffer);
    assert.deepEqual([...new BigInt64Array(sd.get("i64_t")!.data.slice().buffer)], [0n, 3n, 1n, 4n, 2n, 5n]);
  }
});

Deno.test("every weights entry point reads legacy and zip torch files alike", async () => {
  for (const name of ["legacy_mixed", "legacy_proto4", "legacy", "distilbert", "views"]) {
    const path = await fixturePath(`${name}.pt`);
    await assertMatchesPython(await loadStateDictFile(path), name);
    await assertMatchesPython(readStateDict(await Deno.readFile(path), path), name);
    await assertMatchesPython(await loadTorchCheckpoint(path), name);
  }
});

Deno.test("dtypes F32 F16 BF16 F64 I64 I32 I8 U8 BOOL, with inf/nan/-0/subnormal", async () => {
  const sd = await loadTorchCheckpoint(await fixturePath("dtypes.pt"));
  await assertMatchesPython(sd, "dtypes");
  assert.deepEqual(
    [...sd.values()].map((t) => t.dtype),
    ["F32", "F16", "BF16", "F64", "I64", "I32", "I8", "U8", "BOOL", "F32"],
  );
  assert.deepEqual([...new BigInt64Array(sd.get("i64")!.data.slice().buffer)], [
    -(2n ** 62n),
    -1n,
    0n,
    1n,
    2n ** 62n + 3n,
  ]);
  assert.deepEqual([...sd.get("bool")!.data], [1, 0, 1]);
});

Deno.test("pickle protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL, SHORT_BINUNICODE)", async () => {
  await assertMatchesPython(await loadTorchCheckpoint(await fixturePath("proto4.pt")), "proto4");
});

Deno.test("strided views, transposes, offsets, expanded and tied tensors are copied out correctly", async () => {
  const { meta } = await fixtures();
  // The fixture really does share storages: 14 tensors, 7 storages.
  assert.equal(meta.views_storages, 7);
  const sd = await loadTorchCheckpoint(await fixturePath("views.pt"));
  await assertMatchesPython(sd, "views");
  assert.deepEqual(f32(sd.get("t")!).slice(0, 8), [0, 6, 12, 18, 1, 7, 13, 19]);
  assert.deepEqual(f32(sd.get("block")!), [8, 9, 10, 14, 15, 16]);
  assert.deepEqual(f32(sd.get("col")!), [1, 7, 13, 19]);
  assert.deepEqual(sd.get("empty")!.shape, [0, 3]);
  assert.equal(sd.get("empty")!.data.length, 0);
  // Tied tensors come back equal but independent.
  assert.notEqual(sd.get("w")!.data.buffer, sd.get("w_tied")!.data.buffer);
});

Deno.test("0-d tensors: a scalar and a view of one element at an offset", async () => {
  const sd = await loadTorchCheckpoint(await fixturePath("views.pt"));
  for (const [key, value] of [["scalar", 2.5], ["elem", 22]] as const) {
    const t = sd.get(key)!;
    assert.deepEqual([t.dtype, t.shape, f32(t)], ["F32", [], [value]]);
  }
});

Deno.test("training checkpoint {epoch, model, optimizer, ...} yields the nested model state_dict", async () => {
  const sd = await loadTorchCheckpoint(await fixturePath("nested.pt"));
  await assertMatchesPython(sd, "nested");
  assert.deepEqual([...sd.keys()], ["weight", "bias"]);
});

Deno.test("plain dict and nn.Parameter values", async () => {
  await assertMatchesPython(await loadTorchCheckpoint(await fixturePath("plain.pt")), "plain");
  const param = await loadTorchCheckpoint(await fixturePath("param.pt"));
  await assertMatchesPython(param, "param");
  assert.deepEqual(f32(param.get("p")!), [0, 1, 2, 3]);
});

Deno.test("tensors and parameters carrying Python attributes (_rebuild_from_type_v2)", async () => {
  await assertMatchesPython(await loadTorchCheckpoint(await fixturePath("attrs.pt")), "attrs");
});

Deno.test("torch's zip records are read in place by weights/zip.ts, past their local alignment padding", async () => {
  const { meta } = await fixtures();
  const bytes = await Deno.readFile(await fixturePath("views.pt"));
  const zip = ZipArchive.fromBytes(bytes, "views.pt");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let padded = 0;
  assert.deepEqual(zip.names(), Object.keys(meta.views_entries));
  for (const entry of zip.entries) {
    const [hash, headerOffset] = meta.views_entries[entry.name];
    assert.equal(entry.localHeaderOffset, headerOffset, entry.name);
    const data = zip.storedBytes(entry);
    assert.equal(createHash("sha256").update(data).digest("hex"), hash, entry.name);
    assert.equal(data.buffer, bytes.buffer, `${entry.name}: a view, not a copy`);
    if (view.getUint16(headerOffset + 28, true) > 0) padded++;
    if (entry.name.includes("/data/")) {
      assert.equal(data.byteOffset % 64, 0, `${entry.name} is 64-byte aligned`);
    }
  }
  assert.ok(padded > 0, "torch padded some local headers");
});

Deno.test("ZIP64 archive", async () => {
  const bytes = await Deno.readFile(await fixturePath("zip64.pt"));
  const zip64Eocd = [0x50, 0x4b, 0x06, 0x06];
  assert.ok(
    bytes.some((_, i) => zip64Eocd.every((b, j) => bytes[i + j] === b)),
    "fixture lacks ZIP64 records",
  );
  await assertMatchesPython(readTorchCheckpoint(bytes, "zip64.pt"), "zip64");
});

// ---------------------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------------------

Deno.test("refuses a torch.save'd os.system global", async () => {
  // os.system pickles as posix.system on Linux.
  await rejectsFixture("evil.pt", /refusing to load global (posix|os)\.system/);
});

Deno.test("refuses crafted pickles calling os.system / builtins.eval", () => {
  const viaGlobal = pickle([0x80, 2], "cos\nsystem\nX", [4, 0, 0, 0], "echo", [0x85], "R.");
  assertRejects(() => readTorchCheckpoint(torchZip(viaGlobal), "evil.zip"), "evil.zip", /global os\.system/);
  const viaStack = pickle([0x80, 4, 0x8c, 8], "builtins", [0x8c, 4], "eval", [0x93], "X", [1, 0, 0, 0], "1", [
    0x85,
  ], "R.");
  assertRejects(
    () => readTorchCheckpoint(torchZip(viaStack), "eval.zip"),
    "eval.zip",
    /global builtins\.eval/,
  );
  // Inside the legacy container (not zip), it is refused by name too: nothing is ever called.
  const legacyHead = pickle(
    [0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e], // magic number
    [0x80, 2, 0x4d, 0xe9, 0x03, 0x2e], // protocol version 1001
    [0x80, 2, 0x7d, 0x2e], // sys_info: {}
  );
  assertRejects(
    () => readTorchCheckpoint(concat([legacyHead, viaGlobal]), "legacy.pkl"),
    "legacy.pkl",
    /global os\.system/,
  );
  // As a bare pickle (no torch container at all) it is refused before it is even unpickled.
  assertRejects(
    () => readTorchCheckpoint(viaGlobal, "bare.pkl"),
    "bare.pkl",
    /not a PyTorch checkpoint .*bare pickle/,
  );
});

Deno.test("crafted tensor within bounds is read; out of bounds or missing storage is refused", () => {
  const storage = new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer);
  const ok = readTorchCheckpoint(torchZip(oneTensorPickle(4, 1, [3]), { 0: storage }), "ok.zip");
  assert.deepEqual(f32(ok.get("w")!), [2, 3, 4]);
  assertRejects(
    () => readTorchCheckpoint(torchZip(oneTensorPickle(4, 2, [3]), { 0: storage }), "oob.zip"),
    "oob.zip",
    /reads past storage 0/,
  );
  assertRejects(
    () => readTorchCheckpoint(torchZip(oneTensorPickle(5, 0, [5]), { 0: storage }), "short.zip"),
    "short.zip",
    /storage 0 holds 16 bytes/,
  );
  assertRejects(
    () => readTorchCheckpoint(torchZip(oneTensorPickle(4, 0, [4])), "nodata.zip"),
    "nodata.zip",
    /data\/0/,
  );
});

Deno.test("strided crafted view and a stride-0 memory bomb", () => {
  const storage = new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6]).buffer);
  // A 2x2 view with strides (1, 3) starting at element 1: rows [2, 5], [3, 6].
  const view = readTorchCheckpoint(torchZip(oneTensorPickle(6, 1, [2, 2], [1, 3]), { 0: storage }), "v.zip");
  assert.deepEqual(f32(view.get("w")!), [2, 5, 3, 6]);
  const expand = readTorchCheckpoint(
    torchZip(oneTensorPickle(6, 2, [3, 2], [0, 1]), { 0: storage }),
    "e.zip",
  );
  assert.deepEqual(f32(expand.get("w")!), [3, 4, 3, 4, 3, 4]);
  // 2^20 x 2^20 floats out of one: 4 TiB from a few hundred bytes.
  const bomb = torchZip(oneTensorPickle(6, 0, [2 ** 20, 2 ** 20], [0, 0]), { 0: storage });
  assertRejects(() => readTorchCheckpoint(bomb, "bomb.zip"), "bomb.zip", /overlapping views\?\); refusing/);
});

Deno.test("malformed pickles: unknown opcode, memo miss, stack underflow", () => {
  const cases: [Uint8Array, RegExp][] = [
    [pickle([0x80, 2], "}I1\n."), /unknown or unsupported opcode 0x49/],
    [pickle([0x80, 2], "h", [7], "."), /memo entry 7/],
    [pickle([0x80, 2], "s."), /stack underflow/],
    [pickle([0x80, 2], "}(X", [0xff, 0xff, 0xff, 0x7f], "."), /truncated/],
  ];
  for (const [pkl, pattern] of cases) {
    assertRejects(() => readTorchCheckpoint(torchZip(pkl), "bad.zip"), "bad.zip", pattern);
  }
});

Deno.test("deflate-compressed, big-endian and incomplete archives are refused clearly", async () => {
  await rejectsFixture("deflate.pt", /deflate-compressed/);
  await rejectsFixture("bigendian.pt", /big-endian/);
  await rejectsFixture("missing.pt", /data\/0 is missing/);
});

Deno.test("non-dict checkpoints, unsupported dtypes and other formats are refused clearly", async () => {
  await rejectsFixture("list.pt", /not a dict/);
  await rejectsFixture("int16.pt", /torch\.ShortStorage is not supported/);
  await rejectsFixture(
    "plain.expected.safetensors",
    /this is a safetensors file, not a torch\.save checkpoint/,
  );
  await assert.rejects(loadTorchCheckpoint("/nonexistent/x.pt"), /\/nonexistent\/x\.pt: cannot read file/);
});

// ---------------------------------------------------------------------------------------------------
// Robustness: nothing but TorchCheckpointError, always naming the source
// ---------------------------------------------------------------------------------------------------

/** Reads `bytes`; it may succeed, but a failure must be a clean, named TorchCheckpointError. */
function readOrCleanError(bytes: Uint8Array, source: string): void {
  try {
    readTorchCheckpoint(bytes, source);
  } catch (e) {
    assert.ok(e instanceof TorchCheckpointError, `${source}: ${e}`);
    assert.ok(e.message.startsWith(`${source}: `), e.message);
    assert.ok(!e.message.includes("internal error"), e.message);
  }
}

Deno.test("truncated files are refused with the file name", async () => {
  for (const name of ["distilbert.pt", "legacy.pt", "legacy_mixed.pt", "legacy_proto4.pt", "zip64.pt"]) {
    const bytes = await Deno.readFile(await fixturePath(name));
    for (let i = 0; i < 40; i++) {
      const cut = Math.floor((bytes.length * i) / 40);
      assertRejects(() => readTorchCheckpoint(bytes.subarray(0, cut), name), name, /./);
    }
  }
});

Deno.test("random bytes are refused with the file name", () => {
  const random = prng(42);
  for (let i = 0; i < 200; i++) {
    const bytes = Uint8Array.from({ length: Math.floor(random() * 300) }, () => Math.floor(random() * 256));
    if (i % 3 === 1) bytes.set([0x80, 2].slice(0, bytes.length)); // looks like a pickle
    if (i % 3 === 2) bytes.set([0x50, 0x4b, 3, 4].slice(0, bytes.length)); // looks like a zip
    assertRejects(() => readTorchCheckpoint(bytes, "noise.bin"), "noise.bin", /./);
  }
});

Deno.test("corrupting data.pkl or the zip directory never escapes as a RangeError", async () => {
  const bytes = await Deno.readFile(await fixturePath("views.pt"));
  // data.pkl is the first entry: its pickle starts right after the first local header.
  const view = new DataView(bytes.buffer);
  const pklStart = 30 + view.getUint16(26, true) + view.getUint16(28, true);
  const pklEnd = pklStart + view.getUint32(18, true);
  const random = prng(7);
  for (let i = 0; i < 1000; i++) {
    const copy = bytes.slice();
    const inPickle = i % 4 !== 0;
    for (let k = 0; k < 1 + (i % 3); k++) {
      const at = inPickle
        ? pklStart + Math.floor(random() * (pklEnd - pklStart))
        : copy.length - 1 - Math.floor(random() * Math.min(copy.length, 1500));
      copy[at] = Math.floor(random() * 256);
    }
    readOrCleanError(copy, `mutant-${i}.pt`);
  }
});
