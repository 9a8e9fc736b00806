/**
 * A tokenized dataset: every text is tokenized once, and the result is cached on disk in a compact binary
 * file that later epochs, later runs and every DDP rank reuse.
 *
 * ## Where
 * In `cacheDir`, by default `$DISTRINEWS_CACHE/tokenized`, else `$XDG_CACHE_HOME/distrinews/tokenized`, else
 * `~/.cache/distrinews/tokenized` ({@link defaultCacheDir}). Files are never deleted by DistriNews; removing
 * the folder is always safe (it only costs a re-tokenization).
 *
 * ## The cache key
 * A cache file is named after (the first 128 bits of) a SHA-256 over everything that decides its content,
 * and carries the whole hash in its header:
 * - the data: the number of records, then each label and each text (length-prefixed, so no two datasets
 *   hash alike by shifting characters between neighbours);
 * - the tokenizer: the vocab (every token in id order), `do_lower_case` (always true: only uncased BERT is
 *   implemented) and {@link TOKENIZER_BEHAVIOUR}, a version string to bump whenever `data/tokenizer.ts`
 *   changes what it emits for the same vocab;
 * - `maxLength`;
 * - {@link TOKENIZED_FORMAT_VERSION}, the version of the file layout.
 *
 * So all DDP ranks share one file as long as they pass the same records in the same order.
 *
 * ## The file (`tokenized-<key>.dntok`, little-endian)
 * | bytes | what |
 * | --- | --- |
 * | 8 | magic `DNTOKENS` |
 * | 4 | u32 length H of the header |
 * | H | header, JSON (format, key, rows, tokens, types, section offsets, payload SHA-256) |
 * | … | offsets: Int32 × (rows + 1), row i is ids[offsets[i], offsets[i+1]) |
 * | … | labels: Int8 × rows (Int32 when a label does not fit) |
 * | … | ids: Uint16 × tokens (Int32 when the vocab has 65536 ids or more) |
 *
 * Each section starts on an 8-byte boundary, so loading is one read and three typed-array views over it:
 * no per-row objects, 2 bytes per token. 120k AG News rows (≈6.4M tokens) take ≈13 MB.
 *
 * A load checks the magic, the header, the key, the exact file size, the section bounds, the payload's
 * SHA-256, the offsets (start at 0, never decrease, end at the token count, no row over maxLength) and the
 * ids (below the vocab size). Anything wrong is reported through `log` (default `console.warn`) and the file
 * is rebuilt.
 *
 * ## Concurrency
 * Any number of builders (epochs, runs, DDP ranks started at once) may race for the same file:
 * - The file is only ever written as a unique temporary sibling, fsynced and renamed over the final name
 *   (`writeFileAtomic`), so a reader sees either no file or a complete one, and a losing writer can only
 *   replace a file with an identical one.
 * - So that only one process spends the time to tokenize, builders first take `<file>.lock`, created with
 *   `createNew` (O_EXCL). It holds the writer's pid and host. The others wait for it to go away, then load.
 *   The writer touches the lock as it goes; a lock whose process is gone (same host) or that has not been
 *   touched for `lockStaleMs` (other hosts) is broken with a warning. Breaking a lock can at worst let two
 *   processes write the same file, which the atomic rename makes harmless.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { homedir, hostname } from "node:os";
import { join } from "node:path";
import type { BertTokenizer } from "./tokenizer.ts";
import { writeFileAtomic } from "../util/fs.ts";

/** Version of the file layout; part of the cache key. */
export const TOKENIZED_FORMAT_VERSION = 1;

/**
 * Version of what `BertTokenizer.encode(text, {maxLength})` emits for a given vocab: uncased BERT normalizer
 * and pre-tokenizer as `BertTokenizerFast`, WordPiece, the five special tokens kept whole, `[CLS] … [SEP]`,
 * truncation from the right. Bump it when data/tokenizer.ts changes its output, so stale caches are not reused.
 */
export const TOKENIZER_BEHAVIOUR = "bert-uncased-wordpiece/1;cls-sep;truncate-right;never-split-5-specials";

const MAGIC = new TextEncoder().encode("DNTOKENS");
/** Typed arrays are written and read as they lie in memory; every platform Deno runs on is little-endian. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const FILE_PREFIX = "tokenized-";
const FILE_SUFFIX = ".dntok";
/** Rows tokenized between two lock heartbeats. */
const CHUNK_ROWS = 4096;

/** One labelled text. */
export interface TextRecord {
  text: string;
  label: number;
}

/** Where warnings go (default `console.warn`). */
export type Logger = (message: string) => void;

/** Options of {@link TokenizedDataset.build}. */
export interface BuildOptions {
  /** Tokens per row including `[CLS]` and `[SEP]` (default 128); longer texts are truncated. */
  maxLength?: number;
  /**
   * Folder of the cache files (created if needed); `null` disables the disk cache. Default
   * {@link defaultCacheDir}: `$DISTRINEWS_CACHE/tokenized`, else `$XDG_CACHE_HOME/distrinews/tokenized`,
   * else `~/.cache/distrinews/tokenized`.
   */
  cacheDir?: string | null;
  /** A lock untouched for this long is considered abandoned (default 300000 ms = 5 min). */
  lockStaleMs?: number;
  /** How often a waiting builder looks at the lock (default 50 ms). */
  pollMs?: number;
  /**
   * Where warnings go (a corrupt cache file, a broken lock, a cache folder that cannot be written, in which
   * case the dataset is tokenized in memory and `cachePath` is undefined); default `console.warn`.
   */
  log?: Logger;
}

/** Options of {@link TokenizedDataset.load}. */
export interface LoadOptions {
  /** Refuse a file whose header carries another key. */
  expectedKey?: string;
}

/** The arrays and facts a dataset is made of. */
interface Fields {
  labels: Int32Array;
  offsets: Int32Array;
  tokenIds: Uint16Array | Int32Array;
  maxLength: number;
  padId: number;
  vocabSize: number;
  key: string;
}

/** The section layout and checks of a cache file, stored as its header. */
interface Header {
  format: number;
  key: string;
  rows: number;
  tokens: number;
  maxLength: number;
  vocabSize: number;
  padId: number;
  idType: "uint16" | "int32";
  labelType: "int8" | "int32";
  /** Byte offset of each section from the start of the file. */
  offsetsAt: number;
  labelsAt: number;
  idsAt: number;
  /** Total file size. */
  size: number;
  /** SHA-256 of the bytes from `offsetsAt` to the end. */
  payloadSha256: string;
  tokenizer: { behaviour: string; vocabSha256: string; doLowerCase: true };
}

/** The cache folder used when none is given; see {@link BuildOptions.cacheDir}. */
export function defaultCacheDir(): string {
  const root = Deno.env.get("DISTRINEWS_CACHE");
  if (root) return join(root, "tokenized");
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  return join(xdg || join(homedir(), ".cache"), "distrinews", "tokenized");
}

const vocabHashes = new WeakMap<BertTokenizer, string>();

/** SHA-256 (hex) of a tokenizer's vocab, every token in id order; computed once per tokenizer. */
export function vocabHash(tokenizer: BertTokenizer): string {
  let hash = vocabHashes.get(tokenizer);
  if (hash === undefined) {
    const h = createHash("sha256");
    h.update(`${tokenizer.vocabSize}\n`);
    for (let id = 0; id < tokenizer.vocabSize; id++) h.update(`${tokenizer.idToToken(id)}\n`);
    hash = h.digest("hex");
    vocabHashes.set(tokenizer, hash);
  }
  return hash;
}

/** The cache key (SHA-256 hex) of tokenizing `records` with `tokenizer` to `maxLength`. */
export function cacheKey(
  records: readonly TextRecord[],
  tokenizer: BertTokenizer,
  maxLength: number,
): string {
  const h = createHash("sha256");
  h.update(
    `distrinews-tokenized\nformat=${TOKENIZED_FORMAT_VERSION}\nbehaviour=${TOKENIZER_BEHAVIOUR}\n` +
      `do_lower_case=true\nvocab=${vocabHash(tokenizer)}\nmaxLength=${maxLength}\nrows=${records.length}\n`,
  );
  // Strings go to the hash in ~1 MB pieces: one native call per row would cost twice as much.
  let chunk = "";
  for (const { text, label } of records) {
    chunk += `${label}\x1f${text.length}\x1f${text}`;
    if (chunk.length >= 1 << 20) {
      h.update(chunk);
      chunk = "";
    }
  }
  h.update(chunk);
  return h.digest("hex");
}

/** Rows of token ids with a label each, tokenized once; see the module documentation for the cache. */
export class TokenizedDataset {
  /** Number of rows. */
  readonly length: number;
  /** Label of each row. */
  readonly labels: Int32Array;
  /** Token count of each row (with `[CLS]` and `[SEP]`, at most `maxLength`). */
  readonly lengths: Int32Array;
  /** Row i is `tokenIds[offsets[i], offsets[i + 1])`. */
  readonly offsets: Int32Array;
  /** All rows' ids, concatenated. Uint16 when the vocab has fewer than 65536 ids. */
  readonly tokenIds: Uint16Array | Int32Array;
  /** Tokens per row the texts were truncated to. */
  readonly maxLength: number;
  /** The tokenizer's `[PAD]` id, for collation. */
  readonly padId: number;
  /** The tokenizer's vocab size. */
  readonly vocabSize: number;
  /** The cache key (SHA-256 hex); see {@link cacheKey}. */
  readonly key: string;
  /** Whether this dataset came from an existing cache file (false: tokenized in this call). */
  readonly cacheHit: boolean;
  /** The cache file, or undefined when the cache was disabled. */
  readonly cachePath: string | undefined;

  private constructor(
    fields: Fields,
    cacheHit: boolean,
    cachePath: string | undefined,
  ) {
    this.labels = fields.labels;
    this.offsets = fields.offsets;
    this.tokenIds = fields.tokenIds;
    this.maxLength = fields.maxLength;
    this.padId = fields.padId;
    this.vocabSize = fields.vocabSize;
    this.key = fields.key;
    this.length = fields.labels.length;
    this.lengths = new Int32Array(this.length);
    for (let i = 0; i < this.length; i++) this.lengths[i] = this.offsets[i + 1] - this.offsets[i];
    this.cacheHit = cacheHit;
    this.cachePath = cachePath;
  }

  /** The ids of row `i`: a view into {@link tokenIds}, not a copy. */
  ids(i: number): Uint16Array | Int32Array {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) {
      throw new RangeError(`row ${i} is outside the dataset (length ${this.length})`);
    }
    return this.tokenIds.subarray(this.offsets[i], this.offsets[i + 1]);
  }

  /** Total number of tokens over all rows. */
  get totalTokens(): number {
    return this.tokenIds.length;
  }

  /**
   * Tokenizes `records` (each text to at most `maxLength` ids, `[CLS] … [SEP]`), or loads the result from
   * the cache when an intact file for the same key exists. Safe to call from many processes at once.
   */
  static async build(
    records: readonly TextRecord[],
    tokenizer: BertTokenizer,
    options: BuildOptions = {},
  ): Promise<TokenizedDataset> {
    const { maxLength = 128, lockStaleMs = 300_000, pollMs = 50, log = console.warn } = options;
    if (!Number.isInteger(maxLength) || maxLength < 2) {
      throw new RangeError(`maxLength must be an integer >= 2, got ${maxLength}`);
    }
    for (let i = 0; i < records.length; i++) {
      const { text, label } = records[i];
      if (typeof text !== "string") throw new TypeError(`record ${i}: text must be a string`);
      if (!Number.isInteger(label) || label < -(2 ** 31) || label >= 2 ** 31) {
        throw new RangeError(`record ${i}: label must be a 32-bit integer, got ${label}`);
      }
    }
    const key = cacheKey(records, tokenizer, maxLength);
    const cacheDir = options.cacheDir === undefined ? defaultCacheDir() : options.cacheDir;
    const uncached = async () =>
      new TokenizedDataset(
        await tokenizeAll(records, tokenizer, maxLength, key, async () => {}),
        false,
        undefined,
      );
    const message = (err: unknown) => err instanceof Error ? err.message : String(err);
    if (cacheDir === null) return await uncached();
    try {
      await Deno.mkdir(cacheDir, { recursive: true });
    } catch (err) {
      log(`tokenized cache folder ${cacheDir} is unusable (${message(err)}); tokenizing without a cache`);
      return await uncached();
    }
    const path = join(cacheDir, `${FILE_PREFIX}${key.slice(0, 32)}${FILE_SUFFIX}`);
    const lockPath = `${path}.lock`;
    const warned = new Set<string>();
    const warnOnce = (message: string) => {
      if (!warned.has(message)) log(message);
      warned.add(message);
    };

    for (;;) {
      const cached = await tryLoad(path, key);
      if (cached instanceof TokenizedDataset) return cached;
      if (cached !== undefined) warnOnce(`tokenized cache ${path} is unusable (${cached}); rebuilding it`);

      let lock: HeldLock | undefined;
      try {
        lock = await tryLock(lockPath);
      } catch (err) {
        log(`cannot create ${lockPath} (${message(err)}); tokenizing without a cache`);
        return await uncached();
      }
      if (lock === undefined) {
        // Another builder is at work: wait for it to finish (or to be found dead), then look again.
        while (await lockHeld(lockPath, lockStaleMs, warnOnce)) await sleep(pollMs);
        continue;
      }
      try {
        // The file may have been completed between our look and taking the lock.
        const again = await tryLoad(path, key);
        if (again instanceof TokenizedDataset) return again;
        const fields = await tokenizeAll(records, tokenizer, maxLength, key, lock.touch);
        try {
          await writeFileAtomic(path, encodeFile(fields, vocabHash(tokenizer)));
        } catch (err) {
          log(`cannot write ${path} (${message(err)}); going on without a cache`);
          return new TokenizedDataset(fields, false, undefined);
        }
        return new TokenizedDataset(fields, false, path);
      } finally {
        await lock.release();
      }
    }
  }

  /** Loads a cache file written by {@link build}; throws when it is missing or fails any check. */
  static async load(path: string, options: LoadOptions = {}): Promise<TokenizedDataset> {
    const bytes = await Deno.readFile(path);
    return new TokenizedDataset(decodeFile(bytes, options.expectedKey), true, path);
  }
}

/** The dataset, `undefined` when there is no file, or why the file is unusable. */
async function tryLoad(path: string, key: string): Promise<TokenizedDataset | string | undefined> {
  try {
    return await TokenizedDataset.load(path, { expectedKey: key });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    return err instanceof Error ? err.message : String(err);
  }
}

async function tokenizeAll(
  records: readonly TextRecord[],
  tokenizer: BertTokenizer,
  maxLength: number,
  key: string,
  heartbeat: () => Promise<void>,
): Promise<Fields> {
  const rows = records.length;
  const wide = tokenizer.vocabSize > 0xffff;
  let capacity = Math.max(1024, rows * 64);
  let tokenIds: Uint16Array | Int32Array = wide ? new Int32Array(capacity) : new Uint16Array(capacity);
  const offsets = new Int32Array(rows + 1);
  const labels = new Int32Array(rows);
  let used = 0;
  for (let i = 0; i < rows; i++) {
    if (i > 0 && i % CHUNK_ROWS === 0) await heartbeat();
    const { ids } = tokenizer.encode(records[i].text, { maxLength });
    if (used + ids.length > capacity) {
      capacity = Math.max(capacity * 2, used + ids.length);
      const grown: Uint16Array | Int32Array = wide ? new Int32Array(capacity) : new Uint16Array(capacity);
      grown.set(tokenIds.subarray(0, used));
      tokenIds = grown;
    }
    tokenIds.set(ids, used);
    used += ids.length;
    if (used > 0x7fffffff) throw new RangeError("more than 2^31 - 1 tokens: too many for one dataset");
    offsets[i + 1] = used;
    labels[i] = records[i].label;
  }
  return {
    labels,
    offsets,
    tokenIds: tokenIds.slice(0, used),
    maxLength,
    padId: tokenizer.padId,
    vocabSize: tokenizer.vocabSize,
    key,
  };
}

const align8 = (n: number) => Math.ceil(n / 8) * 8;

function encodeFile(fields: Fields, vocabSha256: string): Uint8Array {
  if (!LITTLE_ENDIAN) throw new Error("tokenized cache files need a little-endian machine");
  const { labels, offsets, tokenIds } = fields;
  const rows = labels.length;
  const narrowLabels = labels.every((l) => l >= -128 && l <= 127);
  const labelBytes = narrowLabels ? Int8Array.from(labels) : labels;
  const header: Header = {
    format: TOKENIZED_FORMAT_VERSION,
    key: fields.key,
    rows,
    tokens: tokenIds.length,
    maxLength: fields.maxLength,
    vocabSize: fields.vocabSize,
    padId: fields.padId,
    idType: tokenIds instanceof Uint16Array ? "uint16" : "int32",
    labelType: narrowLabels ? "int8" : "int32",
    offsetsAt: 0,
    labelsAt: 0,
    idsAt: 0,
    size: 0,
    payloadSha256: "0".repeat(64),
    tokenizer: { behaviour: TOKENIZER_BEHAVIOUR, vocabSha256, doLowerCase: true },
  };
  // The header area is sized for 15-digit offsets, and the JSON is padded with spaces to fill it, so the
  // layout does not depend on the numbers written into the header.
  const wide = 999_999_999_999_999;
  const headerLength = new TextEncoder().encode(
    JSON.stringify({ ...header, offsetsAt: wide, labelsAt: wide, idsAt: wide, size: wide }),
  ).length;
  header.offsetsAt = align8(MAGIC.length + 4 + headerLength);
  header.labelsAt = align8(header.offsetsAt + offsets.byteLength);
  header.idsAt = align8(header.labelsAt + labelBytes.byteLength);
  header.size = align8(header.idsAt + tokenIds.byteLength);
  const bytes = new Uint8Array(header.size);
  const put = (at: number, view: ArrayBufferView) =>
    bytes.set(new Uint8Array(view.buffer, view.byteOffset, view.byteLength), at);
  put(header.offsetsAt, offsets);
  put(header.labelsAt, labelBytes);
  put(header.idsAt, tokenIds);
  header.payloadSha256 = createHash("sha256").update(bytes.subarray(header.offsetsAt)).digest("hex");
  const headerBytes = new TextEncoder().encode(JSON.stringify(header).padEnd(headerLength, " "));
  if (headerBytes.length !== headerLength) throw new Error("internal: tokenized-file header overflow");
  bytes.set(MAGIC, 0);
  new DataView(bytes.buffer).setUint32(MAGIC.length, headerLength, true);
  bytes.set(headerBytes, MAGIC.length + 4);
  return bytes;
}

function decodeFile(bytes: Uint8Array, expectedKey: string | undefined): Fields {
  if (!LITTLE_ENDIAN) throw new Error("tokenized cache files need a little-endian machine");
  const fail = (why: string): never => {
    throw new Error(why);
  };
  if (bytes.length < MAGIC.length + 4) fail(`only ${bytes.length} bytes`);
  if (!MAGIC.every((b, i) => bytes[i] === b)) fail("not a DistriNews tokenized file (bad magic)");
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset).getUint32(MAGIC.length, true);
  if (MAGIC.length + 4 + headerLength > bytes.length) fail("truncated header");
  let header: Header;
  try {
    header = JSON.parse(
      new TextDecoder().decode(bytes.subarray(MAGIC.length + 4, MAGIC.length + 4 + headerLength)),
    );
  } catch {
    return fail("unreadable header");
  }
  if (header.format !== TOKENIZED_FORMAT_VERSION) {
    fail(`format ${header.format}, expected ${TOKENIZED_FORMAT_VERSION}`);
  }
  if (expectedKey !== undefined && header.key !== expectedKey) fail("its key does not match its name");
  const { rows, tokens, maxLength, vocabSize } = header;
  for (const [name, n] of Object.entries({ rows, tokens, maxLength, vocabSize, padId: header.padId })) {
    if (!Number.isSafeInteger(n) || n < 0) fail(`bad ${name} in header`);
  }
  if (bytes.length !== header.size) {
    fail(`${bytes.length} bytes where the header says ${header.size} (truncated?)`);
  }
  const idBytes = header.idType === "uint16" ? 2 : header.idType === "int32" ? 4 : fail("bad idType");
  const labelBytes = header.labelType === "int8"
    ? 1
    : header.labelType === "int32"
    ? 4
    : fail("bad labelType");
  const sections: [string, number, number][] = [
    ["offsets", header.offsetsAt, 4 * (rows + 1)],
    ["labels", header.labelsAt, labelBytes * rows],
    ["ids", header.idsAt, idBytes * tokens],
  ];
  let end = MAGIC.length + 4 + headerLength;
  for (const [name, at, length] of sections) {
    if (!Number.isSafeInteger(at) || at % 8 !== 0 || at < end || at + length > bytes.length) {
      fail(`bad ${name} section`);
    }
    end = at + length;
  }
  const digest = createHash("sha256").update(bytes.subarray(header.offsetsAt)).digest("hex");
  if (digest !== header.payloadSha256) fail("checksum mismatch (corrupt data)");

  // Typed views need aligned memory; Deno.readFile's buffer starts at 0, copy otherwise.
  const own = bytes.byteOffset % 8 === 0 ? bytes : bytes.slice();
  const offsets = new Int32Array(own.buffer, own.byteOffset + header.offsetsAt, rows + 1);
  const tokenIds = header.idType === "uint16"
    ? new Uint16Array(own.buffer, own.byteOffset + header.idsAt, tokens)
    : new Int32Array(own.buffer, own.byteOffset + header.idsAt, tokens);
  const labels = header.labelType === "int8"
    ? Int32Array.from(new Int8Array(own.buffer, own.byteOffset + header.labelsAt, rows))
    : new Int32Array(own.buffer, own.byteOffset + header.labelsAt, rows);
  if (offsets[0] !== 0 || offsets[rows] !== tokens) fail("offsets do not span the ids");
  for (let i = 0; i < rows; i++) {
    const n = offsets[i + 1] - offsets[i];
    if (n < 0 || n > maxLength) fail(`row ${i} has ${n} tokens (max ${maxLength})`);
  }
  let maxId = 0;
  for (let i = 0; i < tokens; i++) if (tokenIds[i] > maxId) maxId = tokenIds[i];
  if (tokens > 0 && maxId >= vocabSize) fail(`token id ${maxId} is outside the vocab (size ${vocabSize})`);
  if (header.padId >= vocabSize) fail("bad padId");
  return { labels, offsets, tokenIds, maxLength, padId: header.padId, vocabSize, key: header.key };
}

/** A held lock: `touch` renews its mtime, `release` removes it. */
interface HeldLock {
  touch: () => Promise<void>;
  release: () => Promise<void>;
}

interface LockOwner {
  pid: number;
  host: string;
  token: string;
}

function currentHost(): string {
  try {
    return hostname();
  } catch {
    return "";
  }
}

async function tryLock(lockPath: string): Promise<HeldLock | undefined> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(lockPath, { write: true, createNew: true });
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) return undefined;
    throw err;
  }
  const owner: LockOwner = { pid: Deno.pid, host: currentHost(), token: crypto.randomUUID() };
  try {
    await file.write(new TextEncoder().encode(JSON.stringify(owner)));
  } finally {
    file.close();
  }
  return {
    touch: async () => {
      const now = new Date();
      await Deno.utime(lockPath, now, now).catch(() => {});
    },
    release: async () => {
      // Only remove the lock if it is still ours (it may have been broken as stale and retaken).
      const current = await readOwner(lockPath);
      if (current?.token === owner.token) await Deno.remove(lockPath).catch(() => {});
    },
  };
}

async function readOwner(lockPath: string): Promise<LockOwner | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(lockPath));
  } catch {
    return undefined; // gone, or created but not yet written
  }
}

/** Whether a process with this pid runs on this machine (undefined: cannot tell on this OS). */
function processAlive(pid: number): boolean | undefined {
  if (Deno.build.os !== "linux") return undefined;
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch (err) {
    return err instanceof Deno.errors.NotFound ? false : undefined;
  }
}

/** Whether someone holds the lock; an abandoned lock is removed (with a warning) and reported as free. */
async function lockHeld(lockPath: string, staleMs: number, warn: Logger): Promise<boolean> {
  let mtime: number;
  try {
    mtime = (await Deno.stat(lockPath)).mtime?.getTime() ?? Date.now();
  } catch {
    return false;
  }
  const owner = await readOwner(lockPath);
  const dead = owner !== undefined && owner.host === currentHost() && processAlive(owner.pid) === false;
  const idle = Date.now() - mtime > staleMs;
  if (!dead && !idle) return true;
  warn(
    `breaking abandoned lock ${lockPath} (${
      dead ? `process ${owner!.pid} is gone` : `untouched for ${Math.round((Date.now() - mtime) / 1000)} s`
    })`,
  );
  const again = await readOwner(lockPath);
  if (again?.token === owner?.token) await Deno.remove(lockPath).catch(() => {});
  return false;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
