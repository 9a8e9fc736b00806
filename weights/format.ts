/**
 * Which weights format a file is in, from its first bytes: the one place that tells safetensors, torch.save's
 * zip container and torch.save's legacy container apart, so that every reader (weights/checkpoint.ts's
 * `readStateDict` and `loadStateDictFile`, and through them `--pretrained`, `serve` and `predict`;
 * weights/torch_checkpoint.ts; weights/safetensors.ts) agrees on what a file is. File names and extensions
 * are never consulted: a `pytorch_model.bin` may hold either torch container, and people rename files.
 *
 * What is recognised, in the order checked:
 *  - **torch-zip**: `PK\x03\x04`, a zip local file header, which `torch.save` (torch >= 1.6) always writes
 *    first;
 *  - **torch-legacy**: `torch.save(..., _use_new_zipfile_serialization=False)` and torch < 1.6 start with a
 *    pickle of the magic number 0x1950a86a20f9469cfc6c: `\x80\x02` (PROTO 2; 3 to 5 when a newer
 *    `pickle_protocol` was asked for, then an optional FRAME), LONG1 of those 10 bytes, STOP. CPython
 *    pickles that integer only this way, so a byte comparison decides without running the pickle VM;
 *  - **safetensors**: an 8-byte little-endian header length, then a JSON header that starts with `{` (as
 *    the reference implementation requires), the length at most the format's 100 MB limit.
 * Anything else is "unknown" with a reason that says what was seen (empty, too short, a bare pickle, gzip,
 * a Git LFS pointer, text, or the first bytes in hex).
 * @module
 */

/** The formats DistriNews reads weights from. */
export type WeightsFormat = "safetensors" | "torch-zip" | "torch-legacy";

/** The result of {@link detectFormat}: a known format, or "unknown" and why. */
export type FormatDetection =
  | { format: WeightsFormat }
  | { format: "unknown"; reason: string };

/** Bytes from the start of a file that {@link detectFormat} needs at most (the tar check looks at 257..262). */
export const FORMAT_HEADER_BYTES = 512;

/** The safetensors format's own limit on its JSON header (the reference implementation refuses more). */
export const SAFETENSORS_MAX_HEADER_BYTES = 100_000_000;

/** Human names of the formats, for messages. */
export const FORMAT_NAMES: Readonly<Record<WeightsFormat, string>> = {
  "safetensors": "a safetensors file",
  "torch-zip": "a PyTorch checkpoint (torch.save's zip format)",
  "torch-legacy": "a PyTorch checkpoint (torch.save's legacy format)",
};

/** Bytes no reader understands; the message names the file, the formats looked for and what was seen. */
export class WeightsFormatError extends Error {
  override name = "WeightsFormatError";
  /**
   * @param source the file name (or other label) the bytes came from
   * @param reason what was seen instead, from {@link detectFormat}
   */
  constructor(readonly source: string, readonly reason: string) {
    super(
      `${source}: not a valid safetensors file, PyTorch zip checkpoint or legacy torch.save file: ${reason}`,
    );
  }
}

/** `PK\x03\x04`: a zip local file header. */
const ZIP_LOCAL_HEADER = [0x50, 0x4b, 0x03, 0x04];
/** LONG1, 10 bytes, torch.serialization.MAGIC_NUMBER little-endian, STOP. */
const LEGACY_MAGIC_PICKLE = [0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e];
const PROTO = 0x80;
const FRAME = 0x95;

/**
 * Tells which weights format `header` starts, from its first bytes.
 *
 * @param header the whole file, or at least its first {@link FORMAT_HEADER_BYTES} bytes (all of it when
 *   shorter)
 * @param fileSize the size of the whole file, when `header` is only its start; tells a short file (which is
 *   reported as truncated) from a short header
 * @returns the format, or `{ format: "unknown", reason }`; it never throws on any input
 */
export function detectFormat(header: Uint8Array, fileSize: number = header.length): FormatDetection {
  // The header's bytes exist, so the file is at least that long whatever `fileSize` says.
  const size = Math.max(fileSize, header.length);
  if (header.length < Math.min(size, FORMAT_HEADER_BYTES)) {
    // A caller's mistake, not a property of the file: too few bytes would make a whole file look cut short.
    throw new RangeError(
      `detectFormat needs the first ${FORMAT_HEADER_BYTES} bytes (or the whole file), got ${header.length}`,
    );
  }
  const unknown = (reason: string): FormatDetection => ({ format: "unknown", reason });
  if (size === 0) return unknown("the file is empty");

  if (startsWith(header, ZIP_LOCAL_HEADER)) return { format: "torch-zip" };

  if (header[0] === PROTO) {
    const legacy = legacyHeader(header, size);
    if (legacy !== undefined) return legacy === true ? { format: "torch-legacy" } : unknown(legacy);
  }

  if (size >= 9 && header[8] === 0x7b /* { */) {
    const length = new DataView(header.buffer, header.byteOffset, 8).getBigUint64(0, true);
    if (length >= 2n && length <= BigInt(SAFETENSORS_MAX_HEADER_BYTES)) return { format: "safetensors" };
    return unknown(
      `byte 8 is "{" as in safetensors, but the 8-byte header length before it is ${length}, which no ` +
        `safetensors file has (2 to ${SAFETENSORS_MAX_HEADER_BYTES})`,
    );
  }

  return unknown(otherReason(header, size));
}

/**
 * The legacy torch.save check for bytes that start with PROTO: true when they are its header, a reason when
 * they start like it but end too soon or are some other pickle, undefined when no pickle protocol this
 * format can have follows (then it is just a byte 0x80).
 */
function legacyHeader(header: Uint8Array, size: number): true | string | undefined {
  const protocol = header[1];
  if (protocol === undefined || protocol < 2 || protocol > 5) return undefined;
  // Protocols 4 and 5 may put the first pickle in a FRAME (opcode and 8-byte length).
  const at = protocol >= 4 && header[2] === FRAME ? 11 : 2;
  // Bytes past the end of the file cannot disagree: a cut-short header still matches as far as it goes.
  if (!LEGACY_MAGIC_PICKLE.every((b, i) => at + i >= size || header[at + i] === b)) {
    return `a pickle (protocol ${protocol}) that does not start with torch's magic number: a bare pickle, ` +
      `not a torch.save checkpoint`;
  }
  if (size < at + LEGACY_MAGIC_PICKLE.length) {
    return `only ${size} bytes, which start like a legacy torch.save file but end inside its header ` +
      `(truncated?)`;
  }
  return true;
}

/** Why bytes that are none of the formats are not: what they look like instead. */
function otherReason(have: Uint8Array, size: number): string {
  const seen = `starts with ${hex(have.subarray(0, 16))}`;
  if (size < 10) return `only ${size} byte${size === 1 ? "" : "s"}, too short for any weights file (${seen})`;
  if (startsWith(have, [0x50, 0x4b, 0x05, 0x06])) return "an empty zip archive";
  if (startsWith(have, [0x50, 0x4b])) return `a zip archive that does not start with a file entry (${seen})`;
  if (startsWith(have, [0x1f, 0x8b])) return "gzip-compressed data: decompress it first";
  const text = ascii(have.subarray(0, 64));
  if (text.startsWith("version https://git-lfs")) {
    return "a Git LFS pointer, not the weights themselves: fetch them with `git lfs pull`";
  }
  if (have.length >= 262 && ascii(have.subarray(257, 262)) === "ustar") {
    return "a tar archive: the tar checkpoint format of torch < 0.4 is not supported; re-save it with a " +
      "current torch";
  }
  if (have[0] === PROTO) return `a pickle with an unknown protocol ${have[1]} (${seen})`;
  if (/^[\t\n\r\x20-\x7e]{8,}/.test(text)) {
    return `text, not weights: ${JSON.stringify(text.replace(/\s+/g, " ").slice(0, 40))}`;
  }
  return seen;
}

function startsWith(bytes: Uint8Array, prefix: number[]): boolean {
  return bytes.length >= prefix.length && prefix.every((b, i) => bytes[i] === b);
}

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(" ");
}

/** Bytes as ASCII text, anything above 0x7f as NUL, so that only real ASCII can look like text. */
function ascii(bytes: Uint8Array): string {
  let text = "";
  for (const b of bytes) text += b < 0x80 ? String.fromCharCode(b) : "\0";
  return text;
}
