/**
 * Tests for the zip reader. The archives are written at test time by Python's zipfile (the project venv's
 * Python, else python3): stored and deflated entries, an archive comment, ZIP64 records, data descriptors
 * (an archive streamed to an unseekable file), bzip2. Python also records each entry's SHA-256, which the
 * extracted bytes must match. Corruptions are made here, byte by byte, from those archives.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { crc32, findEndOfCentralDirectory, readCentralDirectory, ZipArchive, ZipError } from "./zip.ts";

const VENV_PYTHON = fileURLToPath(new URL("../.venv/bin/python", import.meta.url));

/** Writes the archives into argv[1] and `manifest.json`: per archive, its entries' names and SHA-256s. */
const FIXTURE_SCRIPT = String.raw`
import hashlib, io, json, os, random, sys, zipfile
out = sys.argv[1]
p = lambda name: os.path.join(out, name)
rnd = random.Random(7)
text = ("The quick brown fox jumps over the lazy dog. " * 2000).encode()
noise = bytes(rnd.getrandbits(8) for _ in range(3 * 1024 * 1024 + 123))  # > 1 MiB: several chunks
manifest = {}

def record(name):
    with zipfile.ZipFile(p(name)) as z:
        manifest[name] = {i.filename: [hashlib.sha256(z.read(i)).hexdigest(), i.compress_type, i.file_size]
                          for i in z.infolist()}

with zipfile.ZipFile(p("stored.zip"), "w", zipfile.ZIP_STORED) as z:
    z.writestr("a.txt", b"hello zip\n")
    z.writestr("empty.txt", b"")
    z.writestr("folder/", b"")
    z.writestr("folder/text.txt", text)
record("stored.zip")

with zipfile.ZipFile(p("deflated.zip"), "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("text.txt", text)
    z.writestr("noise.bin", noise)
    z.writestr("empty.txt", b"")
    z.writestr("caf\u00e9/\u00fcn\u00efc\u00f6d\u00e9.txt", "d\u00e9j\u00e0 vu".encode())
    z.writestr("stored-inside.txt", b"stored among deflated", compress_type=zipfile.ZIP_STORED)
    z.comment = b"an archive comment, which the reader must scan back over"
record("deflated.zip")

# An archive written to an unseekable stream: sizes and CRCs follow the data (flag bit 3).
class Unseekable(io.RawIOBase):
    def __init__(self, f): self.f = f
    def writable(self): return True
    def write(self, b): return self.f.write(b)
with open(p("streamed.zip"), "wb") as f:
    with zipfile.ZipFile(Unseekable(f), "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("streamed.txt", "w") as w:
            w.write(text)
        z.writestr("noise.bin", noise[:5000])
record("streamed.zip")

# ZIP64: force the ZIP64 end records (entry count limit 0) and ZIP64 local headers.
zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = -1, 0
with zipfile.ZipFile(p("zip64.zip"), "w", zipfile.ZIP_DEFLATED) as z:
    with z.open("big.txt", "w", force_zip64=True) as w:
        w.write(text)
    z.writestr("small.bin", noise[:777], compress_type=zipfile.ZIP_STORED)
record("zip64.zip")
zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = (1 << 31) - 1, 1 << 16

with zipfile.ZipFile(p("bzip2.zip"), "w", zipfile.ZIP_BZIP2) as z:
    z.writestr("text.txt", text)

json.dump(manifest, open(p("manifest.json"), "w"))
`;

type Manifest = Record<string, Record<string, [sha256: string, method: number, size: number]>>;

async function python(): Promise<string> {
  try {
    await Deno.stat(VENV_PYTHON);
    return VENV_PYTHON;
  } catch {
    return "python3";
  }
}

let fixtureDir: Promise<{ dir: string; manifest: Manifest }> | undefined;

/** Writes the archives once per test run; the folder is removed when the test module unloads. */
function fixtures(): Promise<{ dir: string; manifest: Manifest }> {
  fixtureDir ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "zip_test_" });
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    const result = await new Deno.Command(await python(), {
      args: ["-c", FIXTURE_SCRIPT, dir],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!result.success) {
      throw new Error(`fixture script failed:\n${new TextDecoder().decode(result.stderr)}`);
    }
    return { dir, manifest: JSON.parse(await Deno.readTextFile(join(dir, "manifest.json"))) };
  })();
  return fixtureDir;
}

async function archiveBytes(name: string): Promise<Uint8Array> {
  return await Deno.readFile(join((await fixtures()).dir, name));
}

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** The offset of an entry's data in the archive (after its local header). */
function dataOffset(bytes: Uint8Array, localHeaderOffset: number): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return localHeaderOffset + 30 + view.getUint16(localHeaderOffset + 26, true) +
    view.getUint16(localHeaderOffset + 28, true);
}

/** The offset of the central directory record of entry `name`. */
function centralRecord(bytes: Uint8Array, name: string): number {
  const needle = new TextEncoder().encode(name);
  for (let i = 0; i + 46 + needle.length <= bytes.length; i++) {
    if (bytes[i] !== 0x50 || bytes[i + 1] !== 0x4b || bytes[i + 2] !== 1 || bytes[i + 3] !== 2) continue;
    if (needle.every((b, j) => bytes[i + 46 + j] === b)) return i;
  }
  throw new Error(`no central record for ${name}`);
}

async function rejectsZip(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof ZipError, `expected a ZipError, got ${e}`);
    assert.match(e.message, pattern);
    return true;
  });
}

function throwsZip(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ZipError, `expected a ZipError, got ${e}`);
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("crc32 matches the standard check value and continues over chunks", () => {
  const data = new TextEncoder().encode("123456789");
  assert.equal(crc32(data), 0xcbf43926);
  assert.equal(crc32(data.subarray(4), crc32(data.subarray(0, 4))), 0xcbf43926);
  assert.equal(crc32(new Uint8Array(0)), 0);
});

for (const name of ["stored.zip", "deflated.zip", "streamed.zip", "zip64.zip"]) {
  Deno.test(`every entry of Python's ${name} extracts to Python's bytes`, async () => {
    const { manifest } = await fixtures();
    const zip = ZipArchive.fromBytes(await archiveBytes(name), name);
    assert.deepEqual(zip.names(), Object.keys(manifest[name]));
    for (const entry of zip.entries) {
      const [hash, method, size] = manifest[name][entry.name];
      assert.equal(entry.method, method, entry.name);
      assert.equal(entry.size, size, entry.name);
      const bytes = await zip.read(entry);
      assert.equal(sha256(bytes), hash, entry.name);
      // By name, and as a stream of chunks, too.
      assert.equal(sha256(await zip.read(entry.name)), hash);
      const h = createHash("sha256");
      for await (const chunk of zip.stream(entry.name)) h.update(chunk);
      assert.equal(h.digest("hex"), hash);
    }
  });
}

Deno.test("the fixtures cover what they claim: deflate, a comment, data descriptors, ZIP64 records", async () => {
  const deflated = ZipArchive.fromBytes(await archiveBytes("deflated.zip"));
  assert.ok(deflated.entries.some((e) => e.method === 8 && e.size > 3 * 1024 * 1024));
  assert.ok(deflated.get("café/ünïcödé.txt"));
  const withComment = await archiveBytes("deflated.zip");
  assert.ok(findEndOfCentralDirectory(withComment) < withComment.length - 22);
  const streamed = ZipArchive.fromBytes(await archiveBytes("streamed.zip"));
  assert.ok(streamed.entries.every((e) => e.flags & 8), "data descriptors");
  const zip64 = await archiveBytes("zip64.zip");
  const hasZip64Eocd = zip64.some((b, i) =>
    b === 0x50 && zip64[i + 1] === 0x4b && zip64[i + 2] === 6 && zip64[i + 3] === 6
  );
  assert.ok(hasZip64Eocd, "a ZIP64 end-of-central-directory record");
  // Its directory's 32-bit size fields are placeholders; the real values are in the ZIP64 extra field.
  const record = centralRecord(zip64, "big.txt");
  assert.equal(new DataView(zip64.buffer).getUint32(record + 24, true), 0xffffffff);
  assert.equal(ZipArchive.fromBytes(zip64).get("big.txt")!.size, 90_000);
});

Deno.test("a flipped byte in stored data fails the CRC-32, naming the entry", async () => {
  const bytes = await archiveBytes("stored.zip");
  const entry = readCentralDirectory(bytes).find((e) => e.name === "a.txt")!;
  bytes[dataOffset(bytes, entry.localHeaderOffset)] ^= 0x20;
  const zip = ZipArchive.fromBytes(bytes, "bad.zip");
  await rejectsZip(
    zip.read("a.txt"),
    /^bad\.zip: entry a\.txt is corrupt: CRC-32 [0-9a-f]{8} of the extracted data, [0-9a-f]{8} expected$/,
  );
  assert.equal(new TextDecoder().decode(await zip.read("folder/text.txt")).slice(0, 9), "The quick");
});

Deno.test("corrupt deflate data, or a wrong CRC in the directory, is refused", async () => {
  const bytes = await archiveBytes("deflated.zip");
  const entry = readCentralDirectory(bytes).find((e) => e.name === "text.txt")!;
  const broken = bytes.slice();
  const start = dataOffset(broken, entry.localHeaderOffset);
  for (let i = 0; i < 8; i++) broken[start + 10 + i] ^= 0xa5;
  await rejectsZip(
    ZipArchive.fromBytes(broken, "bad.zip").read("text.txt"),
    /^bad\.zip: entry text\.txt (is corrupt|is truncated|extracts to more)/,
  );

  const wrongCrc = bytes.slice();
  wrongCrc[centralRecord(wrongCrc, "noise.bin") + 16] ^= 1;
  await rejectsZip(ZipArchive.fromBytes(wrongCrc).read("noise.bin"), /entry noise\.bin is corrupt: CRC-32/);
});

Deno.test("sizes in the directory that disagree with the data are refused", async () => {
  const bytes = await archiveBytes("deflated.zip");
  const record = centralRecord(bytes, "text.txt");
  const view = new DataView(bytes.buffer);
  const size = view.getUint32(record + 24, true);
  const bigger = bytes.slice();
  new DataView(bigger.buffer).setUint32(record + 24, size + 1, true);
  await rejectsZip(
    ZipArchive.fromBytes(bigger).read("text.txt"),
    new RegExp(`entry text\\.txt is truncated: ${size} bytes extracted, ${size + 1} expected`),
  );
  const smaller = bytes.slice();
  new DataView(smaller.buffer).setUint32(record + 24, 100, true);
  await rejectsZip(
    ZipArchive.fromBytes(smaller).read("text.txt"),
    /entry text\.txt extracts to more than the 100 bytes its directory says/,
  );
});

Deno.test("truncated archives and non-zips get clear errors", async () => {
  const bytes = await archiveBytes("deflated.zip");
  throwsZip(
    () => ZipArchive.fromBytes(bytes.subarray(0, bytes.length - 30), "cut.zip"),
    /^cut\.zip: no end-of-central-directory record: the zip archive is truncated or corrupt$/,
  );
  throwsZip(
    () => ZipArchive.fromBytes(new TextEncoder().encode("just text"), "x.txt"),
    /x\.txt is not a zip/,
  );
  throwsZip(() => ZipArchive.fromBytes(new Uint8Array(0), "empty"), /empty is not a zip archive/);
  // The tail kept (directory and end record) but the front cut away: offsets point outside the bytes.
  const tail = bytes.subarray(bytes.length - 2000);
  throwsZip(() => ZipArchive.fromBytes(tail, "tail.zip"), /tail\.zip: .*outside the 2000-byte archive/);
  // Entry data cut short: the directory is intact but the data lies past the end.
  const stored = await archiveBytes("stored.zip");
  const zip = ZipArchive.fromBytes(stored.subarray(0, stored.length), "ok.zip");
  const entry = zip.get("folder/text.txt")!;
  const moved = { ...entry, localHeaderOffset: stored.length - 40 };
  await rejectsZip(zip.read(moved), /ok\.zip: .*(outside|bad local header)/);
  await rejectsZip(zip.read("missing.txt"), /^ok\.zip has no entry missing\.txt$/);
});

Deno.test("encrypted entries and other compression methods are refused by name", async () => {
  const bz = ZipArchive.fromBytes(await archiveBytes("bzip2.zip"), "bz.zip");
  await rejectsZip(
    bz.read("text.txt"),
    /^bz\.zip: entry text\.txt is compressed with method 12 \(bzip2\); only stored \(0\) and deflate \(8\)/,
  );
  const bytes = await archiveBytes("stored.zip");
  bytes[centralRecord(bytes, "a.txt") + 8] |= 1;
  await rejectsZip(
    ZipArchive.fromBytes(bytes, "enc.zip").read("a.txt"),
    /enc\.zip: entry a\.txt is encrypted/,
  );
});

Deno.test("storedBytes: stored entries as views in place, without a CRC-32 pass; anything else refused", async () => {
  const { manifest } = await fixtures();
  for (const name of ["stored.zip", "deflated.zip", "zip64.zip"]) {
    const bytes = await archiveBytes(name);
    const zip = ZipArchive.fromBytes(bytes, name);
    for (const entry of zip.entries.filter((e) => e.method === 0)) {
      const data = zip.storedBytes(entry);
      assert.equal(sha256(data), manifest[name][entry.name][0], `${name}: ${entry.name}`);
      assert.equal(data.buffer, bytes.buffer, "a view into the archive");
      assert.equal(data.byteOffset, dataOffset(bytes, entry.localHeaderOffset));
      assert.deepEqual(zip.storedBytes(entry.name), data);
    }
  }
  const deflated = ZipArchive.fromBytes(await archiveBytes("deflated.zip"), "d.zip");
  throwsZip(
    () => deflated.storedBytes("text.txt"),
    /^d\.zip: entry text\.txt is deflate-compressed; only stored entries can be read in place$/,
  );
  throwsZip(() => deflated.storedBytes("nope"), /^d\.zip has no entry nope$/);
  const bz = ZipArchive.fromBytes(await archiveBytes("bzip2.zip"), "bz.zip");
  throwsZip(() => bz.storedBytes("text.txt"), /entry text\.txt is compressed with method 12/);
  // Encrypted: refused whatever the method.
  const encrypted = await archiveBytes("stored.zip");
  encrypted[centralRecord(encrypted, "a.txt") + 8] |= 1;
  throwsZip(
    () => ZipArchive.fromBytes(encrypted, "e.zip").storedBytes("a.txt"),
    /e\.zip: entry a\.txt is encrypted/,
  );
  // No CRC-32 pass: a flipped byte comes back flipped here, while read() refuses it.
  const flipped = await archiveBytes("stored.zip");
  const entry = readCentralDirectory(flipped).find((e) => e.name === "a.txt")!;
  flipped[dataOffset(flipped, entry.localHeaderOffset)] ^= 0x20;
  const zip = ZipArchive.fromBytes(flipped, "f.zip");
  assert.equal(new TextDecoder().decode(zip.storedBytes("a.txt")), "Hello zip\n");
  await rejectsZip(zip.read("a.txt"), /CRC-32/);
  // Data that lies past the end of the archive is refused, not returned short.
  const cut = ZipArchive.fromBytes(await archiveBytes("stored.zip"), "c.zip");
  const text = cut.get("folder/text.txt")!;
  throwsZip(() => cut.storedBytes({ ...text, size: 1e9, compressedSize: 1e9 }), /c\.zip: .*outside the/);
});

Deno.test("a bad central directory signature is reported, not a RangeError", async () => {
  const bytes = await archiveBytes("stored.zip");
  bytes[centralRecord(bytes, "empty.txt")] = 0;
  throwsZip(() => ZipArchive.fromBytes(bytes, "sig.zip"), /sig\.zip: bad central directory entry signature/);
  // Random damage anywhere never escapes as anything but a ZipError.
  const good = await archiveBytes("deflated.zip");
  for (let i = 0; i < 200; i++) {
    const damaged = good.slice();
    const at = (i * 7919) % damaged.length;
    damaged[at] ^= 0xff;
    try {
      const zip = ZipArchive.fromBytes(damaged);
      for (const e of zip.entries) await zip.read(e);
    } catch (err) {
      assert.ok(err instanceof ZipError, `byte ${at}: ${err}`);
    }
  }
});
