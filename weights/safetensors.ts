/**
 * Reading and writing Hugging Face safetensors files: an 8-byte little-endian header length, a JSON
 * header `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then the raw bytes.
 * @module
 */

import { type DType, DTYPE_SIZE, numel, type StateDict } from "../model/tensor.ts";
import { detectFormat, FORMAT_NAMES, SAFETENSORS_MAX_HEADER_BYTES } from "./format.ts";

/** Largest header accepted (the format's own limit is 100 MB). */
const MAX_HEADER_BYTES = SAFETENSORS_MAX_HEADER_BYTES;

function fail(source: string, message: string): never {
  throw new Error(`${source}: not a valid safetensors file: ${message}`);
}

function parseHeader(
  bytes: Uint8Array,
  source: string,
): { header: Record<string, unknown>; dataStart: number } {
  // The same format check as every other reader, so a torch file or garbage is named for what it is.
  const detected = detectFormat(bytes);
  if (detected.format === "unknown") fail(source, detected.reason);
  if (detected.format !== "safetensors") {
    fail(source, `this is ${FORMAT_NAMES[detected.format]}; read it with loadStateDictFile or readStateDict`);
  }
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (headerLength > BigInt(Math.min(MAX_HEADER_BYTES, bytes.length - 8))) {
    fail(
      source,
      `header length ${headerLength} exceeds the file (${bytes.length} bytes); truncated or corrupt`,
    );
  }
  const dataStart = 8 + Number(headerLength);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, dataStart)));
  } catch (err) {
    fail(source, `header is not JSON (${err instanceof Error ? err.message : err})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    fail(source, "header is not an object");
  }
  return { header: header as Record<string, unknown>, dataStart };
}

/** The `__metadata__` strings of safetensors bytes ({} when there are none). */
export function readSafetensorsMetadata(bytes: Uint8Array, source = "safetensors"): Record<string, string> {
  const meta = parseHeader(bytes, source).header.__metadata__;
  return typeof meta === "object" && meta !== null ? meta as Record<string, string> : {};
}

/**
 * Parses safetensors bytes into a state_dict. Tensor data are views into `bytes` (no copy).
 * @param source a name for error messages, usually the file path.
 */
export function readSafetensors(bytes: Uint8Array, source = "safetensors"): StateDict {
  const { header, dataStart } = parseHeader(bytes, source);
  const dataLength = bytes.length - dataStart;
  const state: StateDict = new Map();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const { dtype, shape, data_offsets: offsets } = (info ?? {}) as Record<string, unknown>;
    if (typeof dtype !== "string" || !(dtype in DTYPE_SIZE)) {
      fail(source, `${name}: unsupported dtype ${dtype}`);
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      fail(source, `${name}: bad shape ${JSON.stringify(shape)}`);
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isInteger(o) && o >= 0)
    ) {
      fail(source, `${name}: bad data_offsets ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as number[];
    const expected = numel(shape) * DTYPE_SIZE[dtype as DType];
    if (end - begin !== expected) fail(source, `${name}: ${end - begin} bytes for ${expected} expected`);
    if (end > dataLength) {
      fail(source, `${name}: data ends at ${end}, past the file's ${dataLength} data bytes`);
    }
    state.set(name, {
      dtype: dtype as DType,
      shape: shape as number[],
      data: bytes.subarray(dataStart + begin, dataStart + end),
    });
  }
  return state;
}

/** Reads a .safetensors file. */
export async function loadSafetensors(path: string): Promise<StateDict> {
  return readSafetensors(await Deno.readFile(path), path);
}

/** The 8-byte length, the JSON header (space-padded to a multiple of 8) and the data size of `state`. */
function encodeHeader(
  state: StateDict,
  metadata: Record<string, string>,
): { prefix: Uint8Array; dataBytes: number } {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const [name, t] of state) {
    const size = numel(t.shape) * DTYPE_SIZE[t.dtype];
    if (t.data.byteLength !== size) {
      throw new Error(`${name}: ${t.data.byteLength} bytes for shape [${t.shape}]`);
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  // Padded with spaces as the reference implementation does, so the data that follow stay aligned.
  const padded = Math.ceil(json.length / 8) * 8;
  const prefix = new Uint8Array(8 + padded).fill(0x20);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(padded), true);
  prefix.set(json, 8);
  return { prefix, dataBytes: offset };
}

/**
 * Serialises a state_dict as safetensors (tensors in the map's order, header padded with spaces to a
 * multiple of 8 as the reference implementation does, so data stay aligned).
 */
export function writeSafetensors(
  state: StateDict,
  metadata: Record<string, string> = { format: "pt" },
): Uint8Array {
  const { prefix, dataBytes } = encodeHeader(state, metadata);
  const out = new Uint8Array(prefix.length + dataBytes);
  out.set(prefix);
  let at = prefix.length;
  for (const t of state.values()) {
    out.set(t.data, at);
    at += t.data.byteLength;
  }
  return out;
}

/**
 * Writes `state` as a safetensors file, atomically (a temporary sibling, fsync, rename), tensor by tensor:
 * unlike {@link writeSafetensors} it never holds a second copy of the whole state in memory, which is what
 * keeps a checkpoint save from raising a training run's peak memory.
 */
export async function writeSafetensorsFile(
  path: string,
  state: StateDict,
  metadata: Record<string, string> = { format: "pt" },
): Promise<void> {
  const { prefix } = encodeHeader(state, metadata);
  const tmp = `${path}.${crypto.randomUUID()}.tmp`;
  try {
    using file = await Deno.open(tmp, { write: true, createNew: true });
    const writeAll = async (bytes: Uint8Array) => {
      for (let off = 0; off < bytes.byteLength;) off += await file.write(bytes.subarray(off));
    };
    await writeAll(prefix);
    for (const t of state.values()) await writeAll(t.data);
    await file.sync();
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
}
