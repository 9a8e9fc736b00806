/**
 * Tests for the one format detection (weights/format.ts): files written by torch (both containers, several
 * pickle protocols), safetensors and Python's pickle, tar and zip modules are told apart; every prefix of
 * them and random bytes get an answer, never an exception; and the readers reached through it name the
 * file and what they saw.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { detectFormat, FORMAT_HEADER_BYTES, type FormatDetection, WeightsFormatError } from "./format.ts";
import { loadStateDictFile, readStateDict } from "./checkpoint.ts";
import { readSafetensors, writeSafetensors } from "./safetensors.ts";
import { readTorchCheckpoint, TorchCheckpointError } from "./torch_checkpoint.ts";
import { pythonJson, tempDir } from "../tests/helpers.ts";

/** Writes each kind of file into memory and returns them base64-encoded, with the format each must be. */
const SCRIPT = String.raw`
import base64, io, json, pickle, sys, tarfile, zipfile
import torch
from safetensors.torch import save as save_safetensors

sd = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.float16)}
files = {}
def save(name, expected, **kwargs):
    buf = io.BytesIO()
    torch.save(sd, buf, **kwargs)
    files[name] = [buf.getvalue(), expected]

save("zip", "torch-zip")
save("zip-proto4", "torch-zip", pickle_protocol=4)
for protocol in (2, 3, 4, 5):
    save(f"legacy-proto{protocol}", "torch-legacy", _use_new_zipfile_serialization=False,
         pickle_protocol=protocol)
files["safetensors"] = [save_safetensors(sd), "safetensors"]
files["safetensors-metadata"] = [save_safetensors(sd, metadata={"format": "pt"}), "safetensors"]
for protocol in (2, 4):
    files[f"bare-pickle-proto{protocol}"] = [pickle.dumps({"w": [1, 2, 3]}, protocol), "unknown"]
buf = io.BytesIO()
zipfile.ZipFile(buf, "w").close()
files["empty-zip"] = [buf.getvalue(), "unknown"]
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as tar:
    info = tarfile.TarInfo("storages")
    info.size = 4
    tar.addfile(info, io.BytesIO(b"1234"))
files["tar"] = [buf.getvalue(), "unknown"]
json.dump({k: [base64.b64encode(v).decode(), f] for k, (v, f) in files.items()}, sys.stdout)
`;

type Files = Record<string, [bytes: Uint8Array, format: string]>;

let written: Promise<Files> | undefined;

/** The files, made once per test run. */
function files(): Promise<Files> {
  written ??= (async () => {
    const raw = await pythonJson(SCRIPT, null) as Record<string, [string, string]>;
    return Object.fromEntries(
      Object.entries(raw).map((
        [k, [b64, f]],
      ) => [k, [Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)), f]]),
    );
  })();
  return written;
}

const text = (s: string) => new TextEncoder().encode(s);

function reasonOf(detection: FormatDetection): string {
  assert.equal(detection.format, "unknown", `expected unknown, got ${JSON.stringify(detection)}`);
  return (detection as { reason: string }).reason;
}

/** A well-formed answer: a known format, or unknown with a non-empty one-line reason. */
function assertWellFormed(detection: FormatDetection, what: string): void {
  if (detection.format === "unknown") {
    assert.ok(detection.reason.length > 0 && !detection.reason.includes("\n"), what);
  } else {
    assert.ok(["safetensors", "torch-zip", "torch-legacy"].includes(detection.format), what);
    assert.deepEqual(Object.keys(detection), ["format"], what);
  }
}

Deno.test("files written by torch.save, safetensors and pickle are told apart by their bytes", async () => {
  const all = await files();
  assert.equal(Object.keys(all).length, 12);
  for (const [name, [bytes, format]] of Object.entries(all)) {
    assert.equal(detectFormat(bytes).format, format, name);
  }
  // Our own writer's safetensors too, and an empty state_dict's.
  const ours = writeSafetensors(new Map([["x", { dtype: "F32", shape: [1], data: new Uint8Array(4) }]]));
  assert.deepEqual(detectFormat(ours), { format: "safetensors" });
  assert.deepEqual(detectFormat(writeSafetensors(new Map())), { format: "safetensors" });
  // What the unknown ones were taken for.
  assert.match(reasonOf(detectFormat(all["bare-pickle-proto2"][0])), /pickle \(protocol 2\).*bare pickle/);
  assert.match(reasonOf(detectFormat(all["bare-pickle-proto4"][0])), /pickle \(protocol 4\).*bare pickle/);
  assert.match(reasonOf(detectFormat(all["empty-zip"][0])), /^an empty zip archive$/);
  assert.match(reasonOf(detectFormat(all["tar"][0])), /tar archive: .* torch < 0\.4 is not supported/);
});

Deno.test("the first FORMAT_HEADER_BYTES bytes and the file's size decide as the whole file does", async () => {
  for (const [name, [bytes]] of Object.entries(await files())) {
    const header = bytes.subarray(0, FORMAT_HEADER_BYTES);
    assert.deepEqual(detectFormat(header, bytes.length), detectFormat(bytes), name);
  }
  // Fewer bytes than that, from a longer file, is the caller's mistake and said so.
  assert.throws(() => detectFormat(new Uint8Array(100), 10_000), RangeError);
  assert.throws(() => detectFormat(new Uint8Array(0), 1), /needs the first 512 bytes/);
});

Deno.test("every prefix of a real file gets an answer: cut inside the header it is unknown, and says so", async () => {
  for (const [name, [bytes, format]] of Object.entries(await files())) {
    for (let cut = 0; cut <= Math.min(bytes.length, FORMAT_HEADER_BYTES + 8); cut++) {
      const prefix = bytes.subarray(0, cut);
      const detection = detectFormat(prefix);
      assertWellFormed(detection, `${name}[:${cut}]`);
      if (cut === 0) assert.equal(reasonOf(detection), "the file is empty");
      if (format === "torch-zip") assert.equal(detection.format, cut >= 4 ? "torch-zip" : "unknown");
      if (format === "safetensors") assert.equal(detection.format, cut >= 9 ? "safetensors" : "unknown");
      if (format === "torch-legacy") {
        // PROTO, protocol, [FRAME + 8 bytes], LONG1 + 10 bytes, STOP.
        const headerLength = bytes[2] === 0x95 ? 24 : 15;
        if (cut >= headerLength) {
          assert.equal(detection.format, "torch-legacy", `${name}[:${cut}]`);
        } else if (cut >= 2) {
          assert.match(reasonOf(detection), /start like a legacy torch\.save file .*\(truncated\?\)/);
        }
      }
    }
  }
});

Deno.test("random and near-miss bytes never throw, and unknown ones show what was seen", () => {
  let seed = 5;
  const random = () => (seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32;
  const prefixes = [[], [0x50, 0x4b, 3, 4], [0x50, 0x4b], [0x80, 2], [0x80, 4, 0x95], [0x80, 2, 0x8a, 0x0a]];
  for (let i = 0; i < 3000; i++) {
    const bytes = Uint8Array.from(
      { length: Math.floor(random() * 700) },
      () => Math.floor(random() * 256),
    );
    bytes.set(prefixes[i % prefixes.length].slice(0, bytes.length));
    if (i % 7 === 0 && bytes.length > 8) bytes[8] = 0x7b; // safetensors' "{"
    const detection = detectFormat(bytes);
    assertWellFormed(detection, `case ${i}`);
    if (i % prefixes.length === 1 && bytes.length >= 4) assert.equal(detection.format, "torch-zip");
  }
  // Plain noise is shown as its first bytes.
  const noise = Uint8Array.from({ length: 100 }, (_, i) => (i * 131) & 0xff);
  assert.equal(reasonOf(detectFormat(noise)), "starts with 00 83 06 89 0c 8f 12 95 18 9b 1e a1 24 a7 2a ad");
});

Deno.test("unknown bytes are named for what they look like", async () => {
  const gzip = new Uint8Array(
    await new Response(
      new Blob([text("weights ".repeat(100))]).stream().pipeThrough(
        new CompressionStream("gzip"),
      ),
    ).arrayBuffer(),
  );
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array(0), /^the file is empty$/],
    [new Uint8Array([1, 2, 3]), /^only 3 bytes, too short for any weights file \(starts with 01 02 03\)$/],
    [gzip, /^gzip-compressed data/],
    [
      text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n"),
      /Git LFS pointer.*git lfs pull/,
    ],
    [text("<!DOCTYPE html><html><body>404 Not Found</body></html>"), /^text, not weights: "<!DOCTYPE html>/],
    [new Uint8Array([0x80, 0x07, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), /unknown protocol 7 \(starts with 80 07/],
    [
      new Uint8Array([0, 0, 0, 0, 0, 1, 0, 0, 0x7b, 0x7d, 0x20, 0x20]),
      /byte 8 is "\{" as in safetensors, but the 8-byte header length before it is 1099511627776/,
    ],
  ];
  for (const [bytes, pattern] of cases) assert.match(reasonOf(detectFormat(bytes)), pattern);
});

Deno.test("every reader goes through the detection and names the file and what it saw", async () => {
  const all = await files();
  const [zip] = all["zip"];
  const [legacy] = all["legacy-proto2"];
  const [safetensors] = all["safetensors"];
  const three = new Uint8Array([1, 2, 3]);
  // readStateDict reads all three formats, and refuses the rest with a WeightsFormatError.
  assert.deepEqual([...readStateDict(zip, "z").keys()], ["w", "b"]);
  assert.deepEqual([...readStateDict(legacy, "l").keys()], ["w", "b"]);
  assert.deepEqual([...readStateDict(safetensors, "s").keys()].sort(), ["b", "w"]);
  assert.throws(() => readStateDict(three, "x.bin"), (e: unknown) => {
    assert.ok(e instanceof WeightsFormatError);
    assert.equal(e.source, "x.bin");
    assert.equal(
      e.message,
      "x.bin: not a valid safetensors file, PyTorch zip checkpoint or legacy torch.save file: only 3 bytes, " +
        "too short for any weights file (starts with 01 02 03)",
    );
    return true;
  });
  // The format-specific readers say what the file is instead.
  assert.throws(
    () => readSafetensors(zip, "m.bin"),
    /^Error: m\.bin: not a valid safetensors file: this is a PyTorch checkpoint \(torch\.save's zip format\)/,
  );
  assert.throws(
    () => readSafetensors(legacy, "m.bin"),
    /this is a PyTorch checkpoint \(torch\.save's legacy format\)/,
  );
  assert.throws(
    () => readSafetensors(three, "m.st"),
    /^Error: m\.st: not a valid safetensors file: only 3 bytes/,
  );
  assert.throws(
    () => readTorchCheckpoint(safetensors, "m.safetensors"),
    (e: unknown) =>
      e instanceof TorchCheckpointError && /^m\.safetensors: this is a safetensors file/.test(e.message),
  );
  // loadStateDictFile: the same, with the path.
  await using tmp = await tempDir();
  const path = join(tmp.path, "pytorch_model.bin");
  await Deno.writeFile(path, text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n"));
  await assert.rejects(
    () => loadStateDictFile(path),
    new RegExp(`^WeightsFormatError: ${path}: not a valid safetensors file, .*: a Git LFS pointer`),
  );
  await assert.rejects(
    () => loadStateDictFile(join(tmp.path, "missing.bin")),
    /cannot read weights .*missing\.bin/,
  );
});
