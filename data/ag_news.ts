/**
 * AG News, loaded into one record shape with Hugging Face's semantics, from any of its three usual forms:
 *
 * - the original CSV release (`train.csv`, `test.csv`, optionally gzipped): no header, three quoted fields
 *   `"class","title","description"`, a doubled `""` for a quote inside a field, class 1..4;
 * - Hugging Face's parquet files (columns `text`, `label`), as stored in the Hub dataset `fancyzhx/ag_news`;
 * - the Hub itself: those parquet files, downloaded once into the Hugging Face cache (see hf_hub.ts).
 *
 * The text rule, and why: Hugging Face's `ag_news` builder read the original CSV with Python's csv module
 * (`quoting=QUOTE_ALL, skipinitialspace=True`) and wrote `text = " ".join((title, description))`,
 * `label = int(class) - 1`; the Hub's parquet files are that builder's output. Nothing else is changed: the
 * release's backslash sequences (`\band`, `\n` written as backslash + n), HTML remnants (` #39;`,
 * ` quot;`) and leading, trailing or repeated spaces stay exactly as they are in the CSV. So a CSV row
 * gives the same record as the parquet row built from it, byte for byte; the tests check this against
 * Python.
 *
 * Evidence: the builder's code (huggingface/datasets, `datasets/ag_news/ag_news.py`, `_generate_examples`)
 * has no other transformation, and its recorded download checksum of test.csv equals the original release's.
 * The Hub's card after the conversion to parquet gives the test split as 1,879,474 bytes of Arrow data,
 * exactly what pyarrow reports for the 7,600 original test rows joined by this rule (labels as int64); a
 * join without the space gives 7,600 bytes less. Rows shown from the Hub keep the backslash: train row 0
 * ends "Wall Street's dwindling\band of ultra-cynics, are seeing green again." (one backslash, label 2).
 * @module
 */

import { parquetMetadata, parquetRead, parquetSchema } from "hyparquet";
import { join } from "node:path";
import { AG_NEWS_LABELS } from "../model/labels.ts";
import { isDirectory, isFile } from "../util/fs.ts";
import { hubDownload, type HubFileOptions, hubFileUrl, manualCachePath } from "./hf_hub.ts";
import type { TextRecord } from "./dataset.ts";
import { mulberry32 } from "../util/random.ts";

/**
 * One example: the news text and its topic, 0 World, 1 Sports, 2 Business, 3 Sci/Tech (AG_NEWS_LABELS).
 * The dataset layer's generic {@link TextRecord}, named for this corpus.
 */
export type NewsRecord = TextRecord;

/** The two splits of AG News. */
export type AgNewsSplit = "train" | "test";

/** The Hub dataset (formerly `ag_news`; the Hub redirects the old name). */
export const AG_NEWS_REPO = "fancyzhx/ag_news";

/** The parquet file of each split in the Hub repository. */
export const AG_NEWS_HUB_FILES: Readonly<Record<AgNewsSplit, string>> = Object.freeze({
  train: "data/train-00000-of-00001.parquet",
  test: "data/test-00000-of-00001.parquet",
});

const NUM_CLASSES = AG_NEWS_LABELS.length;

/** A file that is not valid AG News data. `line` (CSV, 1-based) or `row` (parquet, 0-based) says where. */
export class AgNewsFormatError extends Error {
  /** The file, as it was given. */
  readonly file: string;
  /** 1-based line of a CSV file where the bad row starts. */
  readonly line?: number;
  /** 0-based row index in a parquet file. */
  readonly row?: number;

  constructor(file: string, where: { line?: number; row?: number }, message: string) {
    const at = where.line !== undefined
      ? `, line ${where.line}`
      : where.row !== undefined
      ? `, row ${where.row} (0-based)`
      : "";
    super(`${file}${at}: ${message}`);
    this.name = "AgNewsFormatError";
    this.file = file;
    this.line = where.line;
    this.row = where.row;
  }
}

/** The text of a record, as Hugging Face builds it from the CSV's title and description. */
export function agNewsText(title: string, description: string): string {
  return `${title} ${description}`;
}

// ---------------------------------------------------------------------------------------------------------
// CSV

const QUOTE = 0x22;
const COMMA = 0x2c;
const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;

/** 1-based line number of offset `pos`. Only computed for errors, so the parser never counts lines. */
function lineAt(s: string, pos: number): number {
  let line = 1;
  for (let i = s.indexOf("\n"); i !== -1 && i < pos; i = s.indexOf("\n", i + 1)) line++;
  return line;
}

/** Reads RFC 4180 CSV field by field; `pos` is the offset of the next unread character. */
class CsvScanner {
  pos = 0;
  constructor(readonly s: string, readonly file: string) {}

  fail(pos: number, message: string): never {
    throw new AgNewsFormatError(this.file, { line: lineAt(this.s, pos) }, message);
  }

  /** Reads one row into `fields` and moves past its line break (LF, CRLF or CR) or to the end. */
  row(fields: string[]): void {
    fields.length = 0;
    for (;;) {
      fields.push(this.field());
      const c = this.s.charCodeAt(this.pos);
      if (c === COMMA) {
        this.pos++;
        continue;
      }
      if (c === CR) this.pos += this.s.charCodeAt(this.pos + 1) === LF ? 2 : 1;
      else if (c === LF) this.pos++;
      return;
    }
  }

  /** One field; spaces before it are skipped, as Hugging Face's reader does (`skipinitialspace=True`). */
  field(): string {
    while (this.s.charCodeAt(this.pos) === SPACE) this.pos++;
    return this.s.charCodeAt(this.pos) === QUOTE ? this.quoted() : this.plain();
  }

  /** A quoted field, `""` read as one quote. Jumps from quote to quote with indexOf: fast on long text. */
  quoted(): string {
    const { s } = this;
    const open = this.pos;
    let from = open + 1;
    let value = "";
    for (;;) {
      const q = s.indexOf('"', from);
      if (q === -1) this.fail(open, "a quoted field is never closed (unterminated quote at end of file)");
      if (s.charCodeAt(q + 1) !== QUOTE) {
        value += s.slice(from, q);
        this.pos = q + 1;
        break;
      }
      value += s.slice(from, q + 1);
      from = q + 2;
    }
    const c = s.charCodeAt(this.pos);
    if (this.pos < s.length && c !== COMMA && c !== LF && c !== CR) {
      this.fail(
        this.pos,
        `bad quoting: ${JSON.stringify(s.slice(this.pos, this.pos + 20))} follows a closing quote`,
      );
    }
    return value;
  }

  /** An unquoted field, up to the next comma or line break; a quote in it is an error. */
  plain(): string {
    const { s } = this;
    const start = this.pos;
    let pos = start;
    for (; pos < s.length; pos++) {
      const c = s.charCodeAt(pos);
      if (c === COMMA || c === LF || c === CR) break;
      if (c === QUOTE) this.fail(pos, "bad quoting: a quote inside an unquoted field");
    }
    this.pos = pos;
    return s.slice(start, pos);
  }
}

/** The record of a row's fields, or what is wrong with them. */
function rowRecord(fields: string[]): NewsRecord | string {
  if (fields.length !== 3) {
    const empty = fields.length === 1 && fields[0] === "" ? " (an empty line)" : "";
    return `expected 3 fields (class, title, description), found ${fields.length}${empty}`;
  }
  const cls = fields[0];
  const label = cls.length === 1 ? cls.charCodeAt(0) - 0x31 : -1; // "1" -> 0
  if (label < 0 || label >= NUM_CLASSES) {
    return `class must be one of 1..${NUM_CLASSES}, found ${JSON.stringify(cls)}`;
  }
  return { text: agNewsText(fields[1], fields[2]), label };
}

/**
 * Parses the original AG News CSV (already decoded) into records. RFC 4180: fields separated by commas,
 * rows by LF, CRLF or CR; a field in double quotes may hold commas, line breaks and doubled quotes. As in
 * Hugging Face's reader (`skipinitialspace=True`), spaces before a field are skipped. Python's csv module
 * tolerates more; here a quote inside an unquoted field, text after a closing quote, a quote left open at
 * the end, a row without exactly 3 fields (an empty line included) and a class other than 1..4 are
 * AgNewsFormatErrors that name `file` and the line where the row starts.
 */
export function parseAgNewsCsv(s: string, file = "<csv>"): NewsRecord[] {
  const scanner: CsvScanner = new CsvScanner(s, file); // typed, so fail() narrows as `never`
  const records: NewsRecord[] = [];
  const fields: string[] = [];
  while (scanner.pos < s.length) {
    const rowStart = scanner.pos;
    scanner.row(fields);
    const record = rowRecord(fields);
    if (typeof record === "string") scanner.fail(rowStart, record);
    records.push(record);
  }
  return records;
}

/** Reads a whole file; a missing one is named as an AG News file. */
async function readInput(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error(`AG News file not found: ${path}`, { cause: err });
    }
    throw err;
  }
}

const errText = (err: unknown) => err instanceof Error ? err.message : String(err);

/** Reads a file whole, gunzipping it when it starts with the gzip magic bytes. */
async function readMaybeGzip(path: string): Promise<Uint8Array> {
  const bytes = await readInput(path);
  const gzip = bytes[0] === 0x1f && bytes[1] === 0x8b;
  if (!gzip) {
    if (/\.gz$/i.test(path)) throw new AgNewsFormatError(path, {}, "named .gz but not gzip-compressed");
    return bytes;
  }
  try {
    const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
      new DecompressionStream("gzip"),
    );
    return new Uint8Array(await new Response(stream).arrayBuffer());
  } catch (err) {
    throw new AgNewsFormatError(path, {}, `broken gzip data (${errText(err)})`);
  }
}

/** Decodes UTF-8 strictly (as Python's open(..., encoding="utf-8") does); a bad byte names its line. */
function decodeUtf8(bytes: Uint8Array, file: string): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    const lossy = new TextDecoder("utf-8").decode(bytes);
    const bad = lossy.indexOf("\uFFFD");
    throw new AgNewsFormatError(file, { line: lineAt(lossy, Math.max(bad, 0)) }, "not valid UTF-8");
  }
}

/**
 * Loads an original AG News CSV file (`train.csv`, `test.csv`; gzip-compressed too, recognised by its magic
 * bytes). Throws AgNewsFormatError naming the file and line for any malformed row.
 */
export async function loadAgNewsCsv(path: string): Promise<NewsRecord[]> {
  return parseAgNewsCsv(decodeUtf8(await readMaybeGzip(path), path), path);
}

// ---------------------------------------------------------------------------------------------------------
// Parquet

/**
 * Loads a Hugging Face AG News parquet file (columns `text`: string, `label`: integer 0..3; other columns
 * are ignored). Throws AgNewsFormatError naming the file for a missing column, and the row for a null
 * text or a label out of range.
 */
export async function loadAgNewsParquet(path: string): Promise<NewsRecord[]> {
  const bytes = await readInput(path);
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  let metadata;
  try {
    metadata = parquetMetadata(buffer);
  } catch (err) {
    throw new AgNewsFormatError(path, {}, `not a parquet file (${errText(err)})`);
  }
  const columns = parquetSchema(metadata).children.map((c) => c.element.name);
  const missing = ["text", "label"].filter((c) => !columns.includes(c));
  if (missing.length) {
    throw new AgNewsFormatError(
      path,
      {},
      `missing column${missing.length > 1 ? "s" : ""} ${missing.map((c) => `"${c}"`).join(", ")} ` +
        `(found ${columns.map((c) => `"${c}"`).join(", ")}); AG News parquet has "text" and "label" (0..3)`,
    );
  }
  let rows: unknown[][] = [];
  try {
    await parquetRead({
      file: buffer,
      metadata,
      columns: ["text", "label"],
      onComplete: (r) => rows = r,
    });
  } catch (err) {
    throw new AgNewsFormatError(
      path,
      {},
      `unreadable parquet data (${errText(err)})`,
    );
  }
  return rows.map(([text, label], row) => parquetRecord(text, label, path, row));
}

function parquetRecord(text: unknown, label: unknown, path: string, row: number): NewsRecord {
  if (text instanceof Uint8Array) text = new TextDecoder().decode(text); // a BYTE_ARRAY without UTF8 type
  if (typeof text !== "string") {
    throw new AgNewsFormatError(path, { row }, `text must be a string, found ${describe(text)}`);
  }
  // ClassLabel is stored as int64, which hyparquet reads as bigint.
  const n = typeof label === "bigint" ? Number(label) : label;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 0 || n >= NUM_CLASSES) {
    throw new AgNewsFormatError(
      path,
      { row },
      `label must be an integer 0..${NUM_CLASSES - 1}, found ${describe(label)}`,
    );
  }
  return { text, label: n };
}

function describe(v: unknown): string {
  if (v === null || v === undefined) return "null";
  return typeof v === "string" ? JSON.stringify(v.slice(0, 40)) : `${typeof v} ${String(v)}`;
}

// ---------------------------------------------------------------------------------------------------------
// Hub

/** Options of loadAgNewsFromHub: the split, and where and how to fetch (see HubFileOptions). */
export interface AgNewsHubOptions extends Omit<HubFileOptions, "repoType" | "hint"> {
  split: AgNewsSplit;
}

function checkSplit(split: unknown): AgNewsSplit {
  if (split !== "train" && split !== "test") {
    throw new Error(`AG News split must be "train" or "test", got ${JSON.stringify(split)}`);
  }
  return split;
}

/**
 * Loads a split from the Hugging Face Hub dataset `fancyzhx/ag_news`: its parquet file is downloaded once
 * into the Hugging Face cache (HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE are
 * respected; see hf_hub.ts) and read from there afterwards, without any request.
 */
export async function loadAgNewsFromHub(options: AgNewsHubOptions): Promise<NewsRecord[]> {
  const split = checkSplit(options.split);
  const file = AG_NEWS_HUB_FILES[split];
  const hubOptions: HubFileOptions = { ...options, repoType: "dataset" };
  const hint = `- or use local files instead of "hub": pass the path of that parquet file, of the original ` +
    `AG News ${split}.csv or ${split}.csv.gz, or of a directory holding one of them, as the data source`;
  const path = await hubDownload(AG_NEWS_REPO, file, { ...hubOptions, hint });
  return await loadAgNewsParquet(path);
}

/** For error messages and docs: the URL and the hand-placed cache path of a split's parquet file. */
export function agNewsHubLocations(
  split: AgNewsSplit,
  options: Omit<AgNewsHubOptions, "split"> = {},
): { url: string; cachePath: string } {
  const file = AG_NEWS_HUB_FILES[checkSplit(split)];
  const o: HubFileOptions = { ...options, repoType: "dataset" };
  return { url: hubFileUrl(AG_NEWS_REPO, file, o), cachePath: manualCachePath(AG_NEWS_REPO, file, o) };
}

// ---------------------------------------------------------------------------------------------------------
// Any source

/** Options of loadAgNews: the split (needed for directories and "hub") and the Hub options. */
export interface LoadAgNewsOptions extends Omit<AgNewsHubOptions, "split"> {
  split?: AgNewsSplit;
}

/** The files of `split` in `dir` (or its `data/` folder), best first: parquet shards, then CSV. */
async function splitFiles(dir: string, split: AgNewsSplit): Promise<{ files: string[]; looked: string[] }> {
  const looked: string[] = [];
  for (const folder of [dir, join(dir, "data")]) {
    if (!(await isDirectory(folder))) continue;
    // HF names shards train-00000-of-00003.parquet; train.parquet is the usual single-file name.
    const shard = new RegExp(`^${split}(-\\d+-of-\\d+)?\\.parquet$`);
    const names: string[] = [];
    for await (const entry of Deno.readDir(folder)) {
      if (entry.isFile && shard.test(entry.name)) names.push(entry.name);
    }
    looked.push(join(folder, `${split}[-NNNNN-of-NNNNN].parquet`));
    if (names.length) return { files: names.sort().map((n) => join(folder, n)), looked };
    for (const name of [`${split}.csv`, `${split}.csv.gz`]) {
      looked.push(join(folder, name));
      if (await isFile(join(folder, name))) return { files: [join(folder, name)], looked };
    }
  }
  return { files: [], looked };
}

/** Loads one file by its kind: `.parquet`, else CSV (plain or gzip). */
function loadFile(path: string): Promise<NewsRecord[]> {
  return /\.parquet$/i.test(path) ? loadAgNewsParquet(path) : loadAgNewsCsv(path);
}

/**
 * Loads AG News from `source`:
 * - `"hub"`: the Hugging Face Hub (needs `split`; see loadAgNewsFromHub);
 * - a `.csv`, `.csv.gz` or `.parquet` file (`split` is not needed and not checked);
 * - a directory (needs `split`) holding `<split>.parquet` or HF shards `<split>-NNNNN-of-NNNNN.parquet`
 *   (read in name order), else `<split>.csv`, else `<split>.csv.gz`; its `data/` folder is searched too.
 */
export async function loadAgNews(source: string, options: LoadAgNewsOptions = {}): Promise<NewsRecord[]> {
  if (source === "hub") {
    if (!options.split) throw new Error(`loading AG News from the Hub needs a split ("train" or "test")`);
    return await loadAgNewsFromHub({ ...options, split: options.split });
  }
  if (await isFile(source)) {
    if (!/\.(parquet|csv|csv\.gz)$/i.test(source)) {
      throw new Error(`AG News source ${source}: expected a .csv, .csv.gz or .parquet file`);
    }
    return await loadFile(source);
  }
  if (await isDirectory(source)) {
    if (!options.split) throw new Error(`AG News directory ${source}: a split ("train" or "test") is needed`);
    const { files, looked } = await splitFiles(source, checkSplit(options.split));
    if (!files.length) {
      throw new Error(
        `AG News directory ${source} has no ${options.split} split; looked for:\n  ${looked.join("\n  ")}`,
      );
    }
    const parts = await Promise.all(files.map(loadFile));
    return parts.flat();
  }
  throw new Error(
    `AG News source not found: ${source} (expected a .csv, .csv.gz or .parquet file, a directory, or "hub")`,
  );
}

// ---------------------------------------------------------------------------------------------------------
// Subsets

/** Which records subset keeps: the first `first`, or a seeded `stratified` sample of that many. */
export type SubsetSpec = { first: number } | { stratified: number; seed: number };

/** Number of records per label, indexed by label (length = number of classes). */
export function classCounts(records: readonly NewsRecord[]): number[] {
  const counts = new Array<number>(NUM_CLASSES).fill(0);
  for (const r of records) counts[r.label]++;
  return counts;
}

/**
 * How many of each class a stratified sample of `n` takes: equal shares, the remainder going to the lowest
 * labels; a class with too few records gives all it has and the others share its shortfall.
 */
export function stratifiedQuotas(available: readonly number[], n: number): number[] {
  const quotas = available.map(() => 0);
  let remaining = n;
  while (remaining > 0) {
    const open = available.map((_, c) => c).filter((c) => quotas[c] < available[c]);
    const share = Math.floor(remaining / open.length);
    if (share === 0) {
      for (const c of open.slice(0, remaining)) quotas[c]++;
      break;
    }
    for (const c of open) {
      const take = Math.min(share, available[c] - quotas[c]);
      quotas[c] += take;
      remaining -= take;
    }
  }
  return quotas;
}

/**
 * A subset of `records`, in their original order (the records themselves, not copies):
 * - `{ first: n }`: the first n records;
 * - `{ stratified: n, seed }`: n records with classes as equal as possible (stratifiedQuotas), chosen within
 *   each class by a seeded shuffle. The same records, seed and n give the same subset on every machine.
 * Throws when n is not a non-negative integer or exceeds the number of records.
 */
export function subset(records: readonly NewsRecord[], spec: SubsetSpec): NewsRecord[] {
  const n = "first" in spec ? spec.first : spec.stratified;
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RangeError(`subset size must be an integer >= 0, got ${n}`);
  }
  if (n > records.length) throw new RangeError(`subset of ${n} records asked from only ${records.length}`);
  if ("first" in spec) return records.slice(0, n);
  if (!Number.isSafeInteger(spec.seed)) {
    throw new RangeError(`subset seed must be an integer, got ${spec.seed}`);
  }

  const byClass: number[][] = Array.from({ length: NUM_CLASSES }, () => []);
  for (let i = 0; i < records.length; i++) {
    const label = records[i].label;
    if (!byClass[label]) {
      throw new RangeError(`record ${i} has label ${label}, outside 0..${NUM_CLASSES - 1}`);
    }
    byClass[label].push(i);
  }
  const quotas = stratifiedQuotas(byClass.map((ix) => ix.length), n);
  const rand = mulberry32(spec.seed);
  const chosen: number[] = [];
  byClass.forEach((indices, c) => {
    // Partial Fisher-Yates: the first quota slots end up a uniform sample of the class.
    for (let i = 0; i < quotas[c]; i++) {
      const j = i + Math.floor(rand() * (indices.length - i));
      [indices[i], indices[j]] = [indices[j], indices[i]];
      chosen.push(indices[i]);
    }
  });
  return chosen.sort((a, b) => a - b).map((i) => records[i]);
}
