/**
 * A small zip archive reader, enough for Python wheels, torch.save's zip checkpoints and similar archives
 * held in memory (the only zip reader of DistriNews):
 *
 * - the central directory, ZIP64 included (entry count, sizes and offsets past 4 GiB / 65535 entries);
 * - entries stored (method 0) or deflated (method 8, inflated by the platform's
 *   `DecompressionStream("deflate-raw")`), streamed in chunks so a large entry never needs a second copy;
 * - every extracted byte is checked: the size must equal the central directory's, and the CRC-32 too;
 * - stored entries can also be read in place, as views without a copy or a CRC-32 pass
 *   ({@link ZipArchive.storedBytes}), which is how torch checkpoints' storages are read.
 *
 * Encrypted entries, other compression methods (bzip2, LZMA, zstd, ...) and archives split over several
 * files are refused with a clear {@link ZipError}; so is anything that points outside the archive's bytes.
 * Names are decoded as UTF-8 (plain ASCII, the usual case, reads the same under CP437).
 * @module
 */

/** One file (or folder) of the archive, as its central directory describes it. */
export interface ZipEntry {
  /** Path inside the archive, with `/` separators; folders end with `/`. */
  name: string;
  /** Compression method: 0 stored, 8 deflate; anything else is refused on extraction. */
  method: number;
  /** General-purpose flags (bit 0: encrypted, bit 3: data descriptor, bit 11: UTF-8 name). */
  flags: number;
  /** CRC-32 of the uncompressed data. */
  crc32: number;
  /** Size of the data as stored in the archive. */
  compressedSize: number;
  /** Size once extracted. */
  size: number;
  /** Offset of the entry's local header. */
  localHeaderOffset: number;
}

/** A malformed, truncated or unsupported archive or entry. The message starts with the archive's name. */
export class ZipError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ZipError";
  }
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const EOCD_SIZE = 22;
const ZIP64_LOCATOR_SIZE = 20;
const ZIP64_EOCD_MIN_SIZE = 56;
const CHUNK = 1 << 20;

const METHOD_NAMES: Record<number, string> = {
  1: "shrink",
  6: "implode",
  9: "deflate64",
  12: "bzip2",
  14: "LZMA",
  93: "zstd",
  95: "xz",
  98: "PPMd",
  99: "AES encryption",
};

// ---------------------------------------------------------------------------------------------------
// CRC-32 (IEEE 802.3, as zip uses it)
// ---------------------------------------------------------------------------------------------------

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** The CRC-32 of `data`; pass the previous result as `crc` to continue over several chunks. */
export function crc32(data: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

// ---------------------------------------------------------------------------------------------------
// The archive
// ---------------------------------------------------------------------------------------------------

/** A zip archive in memory: its entries, and their extraction (checked against size and CRC-32). */
export class ZipArchive {
  /** The archive's bytes. */
  readonly bytes: Uint8Array;
  /** The name used in error messages (usually the file's path). */
  readonly source: string;
  /** Every entry, in central-directory order. */
  readonly entries: readonly ZipEntry[];
  readonly #byName: Map<string, ZipEntry>;

  private constructor(bytes: Uint8Array, source: string, entries: ZipEntry[]) {
    this.bytes = bytes;
    this.source = source;
    this.entries = entries;
    // With duplicate names the last one wins, as in Python's zipfile.
    this.#byName = new Map(entries.map((e) => [e.name, e]));
  }

  /** Reads the central directory of an archive held in `bytes`. Throws ZipError if it is not a zip. */
  static fromBytes(bytes: Uint8Array, source = "zip archive"): ZipArchive {
    return new ZipArchive(bytes, source, readCentralDirectory(bytes, source));
  }

  /** Reads the file at `path` and its central directory. */
  static async open(path: string): Promise<ZipArchive> {
    return ZipArchive.fromBytes(await Deno.readFile(path), path);
  }

  /** The entry called `name`, or undefined. */
  get(name: string): ZipEntry | undefined {
    return this.#byName.get(name);
  }

  /** The names of all entries, in central-directory order. */
  names(): string[] {
    return this.entries.map((e) => e.name);
  }

  /**
   * The extracted bytes of an entry (by name or entry), checked against its size and CRC-32. A small stored
   * entry may come back as a view into the archive's bytes: copy it before changing it.
   */
  async read(entry: ZipEntry | string): Promise<Uint8Array> {
    const e = this.#entry(entry);
    // Collected first, allocated after: a corrupt size field must not make us allocate gigabytes.
    const chunks: Uint8Array[] = [];
    for await (const chunk of this.stream(e)) chunks.push(chunk);
    if (chunks.length === 1) return chunks[0];
    const out = new Uint8Array(e.size);
    let at = 0;
    for (const chunk of chunks) {
      out.set(chunk, at);
      at += chunk.length;
    }
    return out;
  }

  /**
   * The bytes of a stored (uncompressed) entry as a view into the archive's bytes, at once and without a
   * copy. For containers whose entries are always stored and read in place, such as `torch.save`'s: it
   * writes every record stored, padding each local header's extra field so that the data start 64-byte
   * aligned (the local extra field is skipped whatever its length). Unlike {@link read}, the CRC-32 is not
   * checked, as torch.load does not check it either: hashing a few hundred megabytes of weights on every
   * load would cost more than reading them.
   * @throws {ZipError} when the entry is compressed, encrypted, missing or lies outside the archive
   */
  storedBytes(entry: ZipEntry | string): Uint8Array {
    const e = this.#entry(entry);
    if (e.method !== 0 && !(e.flags & 0x41)) {
      const how = e.method === 8 ? "deflate-compressed" : `compressed with method ${e.method}`;
      throw new ZipError(
        `${this.source}: entry ${e.name} is ${how}; only stored entries can be read in place`,
      );
    }
    return entryData(this.bytes, e, this.source);
  }

  /**
   * The extracted bytes of an entry as a stream of chunks. The stream errors with a ZipError when the data
   * is corrupt, longer or shorter than the directory says, or fails its CRC-32; a consumer must therefore
   * treat what it received as valid only once the stream has ended normally.
   */
  stream(entry: ZipEntry | string): ReadableStream<Uint8Array> {
    const e = this.#entry(entry);
    const data = entryData(this.bytes, e, this.source);
    const where = `${this.source}: entry ${e.name}`;
    const raw = chunked(data);
    const inflate = () => new DecompressionStream("deflate-raw") as TransformStream<Uint8Array, Uint8Array>;
    const reader = (e.method === 8 ? raw.pipeThrough(inflate()) : raw).getReader();
    let crc = 0;
    let size = 0;
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        let result: ReadableStreamReadResult<Uint8Array>;
        try {
          result = await reader.read();
        } catch (err) {
          throw new ZipError(`${where} is corrupt: ${err instanceof Error ? err.message : err}`);
        }
        if (result.done) {
          if (size !== e.size) {
            throw new ZipError(`${where} is truncated: ${size} bytes extracted, ${e.size} expected`);
          }
          if (crc !== e.crc32) {
            throw new ZipError(
              `${where} is corrupt: CRC-32 ${hex32(crc)} of the extracted data, ${hex32(e.crc32)} expected`,
            );
          }
          controller.close();
          return;
        }
        const chunk = result.value;
        size += chunk.length;
        if (size > e.size) {
          await reader.cancel().catch(() => {});
          throw new ZipError(`${where} extracts to more than the ${e.size} bytes its directory says`);
        }
        crc = crc32(chunk, crc);
        controller.enqueue(chunk);
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    });
  }

  #entry(entry: ZipEntry | string): ZipEntry {
    if (typeof entry !== "string") return entry;
    const found = this.#byName.get(entry);
    if (!found) throw new ZipError(`${this.source} has no entry ${entry}`);
    return found;
  }
}

function hex32(n: number): string {
  return n.toString(16).padStart(8, "0");
}

/** A stream of `data` in chunks (views, no copies). */
function chunked(data: Uint8Array): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (at >= data.length) {
        controller.close();
        return;
      }
      // DecompressionStream may keep the chunk: hand it a copy-free view that nobody mutates.
      controller.enqueue(data.subarray(at, at + CHUNK));
      at += CHUNK;
    },
  });
}

// ---------------------------------------------------------------------------------------------------
// Directory parsing
// ---------------------------------------------------------------------------------------------------

function dataView(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function checkRange(bytes: Uint8Array, offset: number, length: number, what: string, source: string): void {
  if (offset < 0 || length < 0 || offset + length > bytes.length) {
    throw new ZipError(
      `${source}: ${what} (bytes ${offset}..${offset + length}) lies outside the ${bytes.length}-byte ` +
        `archive: the file is truncated or corrupt`,
    );
  }
}

function readU64(view: DataView, at: number, what: string, source: string): number {
  const value = view.getBigUint64(at, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new ZipError(`${source}: ${what} ${value} is too large`);
  return Number(value);
}

/** Finds the end-of-central-directory record, scanning back over a possible archive comment; -1 if none. */
export function findEndOfCentralDirectory(bytes: Uint8Array): number {
  if (bytes.length < EOCD_SIZE) return -1;
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
export function readCentralDirectory(bytes: Uint8Array, source = "zip archive"): ZipEntry[] {
  const eocd = findEndOfCentralDirectory(bytes);
  if (eocd < 0) {
    const looksZip = bytes.length >= 4 && dataView(bytes).getUint32(0, true) === SIG_LOCAL;
    throw new ZipError(
      looksZip
        ? `${source}: no end-of-central-directory record: the zip archive is truncated or corrupt`
        : `${source} is not a zip archive (no end-of-central-directory record)`,
    );
  }
  const view = dataView(bytes);
  const disk = view.getUint16(eocd + 4, true);
  const cdDisk = view.getUint16(eocd + 6, true);
  let count = view.getUint16(eocd + 10, true);
  let size = view.getUint32(eocd + 12, true);
  let offset = view.getUint32(eocd + 16, true);

  const locator = eocd - ZIP64_LOCATOR_SIZE;
  if (locator >= 0 && view.getUint32(locator, true) === SIG_ZIP64_LOCATOR) {
    const zip64 = readU64(view, locator + 8, "ZIP64 end-of-central-directory offset", source);
    checkRange(bytes, zip64, ZIP64_EOCD_MIN_SIZE, "the ZIP64 end-of-central-directory record", source);
    if (view.getUint32(zip64, true) !== SIG_ZIP64_EOCD) {
      throw new ZipError(`${source}: bad ZIP64 end-of-central-directory signature`);
    }
    count = readU64(view, zip64 + 32, "ZIP64 entry count", source);
    size = readU64(view, zip64 + 40, "ZIP64 central directory size", source);
    offset = readU64(view, zip64 + 48, "ZIP64 central directory offset", source);
  } else if (count === 0xffff || size === 0xffffffff || offset === 0xffffffff) {
    throw new ZipError(`${source}: ZIP64 sizes without a ZIP64 end-of-central-directory locator`);
  } else if (disk !== 0 || cdDisk !== 0) {
    throw new ZipError(`${source} is one part of a multi-volume (split) archive, which is not supported`);
  }
  checkRange(bytes, offset, size, "the central directory", source);

  const entries: ZipEntry[] = [];
  const end = offset + size;
  let pos = offset;
  for (let i = 0; i < count; i++) {
    if (pos + 46 > end) {
      throw new ZipError(`${source}: the central directory ends after ${i} of its ${count} entries`);
    }
    if (view.getUint32(pos, true) !== SIG_CENTRAL) {
      throw new ZipError(`${source}: bad central directory entry signature at byte ${pos}`);
    }
    const nameLength = view.getUint16(pos + 28, true);
    const extraLength = view.getUint16(pos + 30, true);
    const commentLength = view.getUint16(pos + 32, true);
    if (pos + 46 + nameLength + extraLength + commentLength > end) {
      throw new ZipError(`${source}: central directory entry ${i} overruns the directory`);
    }
    const entry: ZipEntry = {
      name: new TextDecoder().decode(bytes.subarray(pos + 46, pos + 46 + nameLength)),
      flags: view.getUint16(pos + 8, true),
      method: view.getUint16(pos + 10, true),
      crc32: view.getUint32(pos + 16, true),
      compressedSize: view.getUint32(pos + 20, true),
      size: view.getUint32(pos + 24, true),
      localHeaderOffset: view.getUint32(pos + 42, true),
    };
    applyZip64Extra(view, pos + 46 + nameLength, extraLength, entry, source);
    entries.push(entry);
    pos += 46 + nameLength + extraLength + commentLength;
  }
  return entries;
}

/**
 * Replaces 0xffffffff placeholders with the 64-bit values of the ZIP64 extra field (id 1), which
 * lists, in this order and only when their 32-bit field is saturated: size, compressed size, offset.
 */
function applyZip64Extra(view: DataView, start: number, length: number, entry: ZipEntry, source: string) {
  const end = start + length;
  const needs = entry.size === 0xffffffff || entry.compressedSize === 0xffffffff ||
    entry.localHeaderOffset === 0xffffffff;
  for (let pos = start; pos + 4 <= end;) {
    const id = view.getUint16(pos, true);
    const fieldLength = view.getUint16(pos + 2, true);
    if (pos + 4 + fieldLength > end) {
      throw new ZipError(`${source}: the extra field of entry ${entry.name} overruns its entry`);
    }
    if (id === 0x0001) {
      let at = pos + 4;
      const next = (what: string): number => {
        if (at + 8 > pos + 4 + fieldLength) {
          throw new ZipError(`${source}: the ZIP64 extra field of entry ${entry.name} is too short`);
        }
        const value = readU64(view, at, what, source);
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
  if (needs) throw new ZipError(`${source}: entry ${entry.name} needs a ZIP64 extra field but has none`);
}

/**
 * The stored (possibly compressed) bytes of an entry, as a view into `bytes`, after checking that the
 * entry can be extracted at all: not encrypted, stored or deflated, within the archive.
 */
export function entryData(bytes: Uint8Array, entry: ZipEntry, source = "zip archive"): Uint8Array {
  const where = `${source}: entry ${entry.name}`;
  if (entry.flags & 0x41) throw new ZipError(`${where} is encrypted, which is not supported`);
  if (entry.method !== 0 && entry.method !== 8) {
    const name = METHOD_NAMES[entry.method];
    throw new ZipError(
      `${where} is compressed with method ${entry.method}${name ? ` (${name})` : ""}; ` +
        `only stored (0) and deflate (8) entries can be extracted`,
    );
  }
  if (entry.method === 0 && entry.compressedSize !== entry.size) {
    throw new ZipError(
      `${where} is stored uncompressed but its sizes differ (${entry.compressedSize} vs ${entry.size})`,
    );
  }
  const view = dataView(bytes);
  const header = entry.localHeaderOffset;
  checkRange(bytes, header, 30, `the local header of entry ${entry.name}`, source);
  if (view.getUint32(header, true) !== SIG_LOCAL) {
    throw new ZipError(`${where}: bad local header signature at byte ${header}`);
  }
  // The local name and extra field may differ in length from the central ones (alignment padding, ZIP64).
  const start = header + 30 + view.getUint16(header + 26, true) + view.getUint16(header + 28, true);
  checkRange(bytes, start, entry.compressedSize, `the data of entry ${entry.name}`, source);
  return bytes.subarray(start, start + entry.compressedSize);
}
