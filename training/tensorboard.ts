/**
 * Writes TensorBoard event files: scalars (loss, learning rate, throughput) and text (the run's flags) that
 * `tensorboard --logdir <dir>` charts while the run is going. No npm package writes this format, and it is
 * small enough to write by hand: this module is that, and nothing else.
 *
 * What TensorBoard reads is a file named `events.out.tfevents.*` in the log directory, holding a sequence
 * of TFRecords, each one a serialized `Event` protocol buffer (tensorflow/core/util/event.proto):
 *
 * - The first event says `file_version: "brain.Event:2"`. With it TensorBoard treats a step that goes
 *   backwards as just data; without it, it assumes the run crashed and restarted, and discards the events
 *   with larger steps it already showed ("orphaned data").
 * - A scalar is `Event{wall_time, step, summary: Summary{value: [Value{tag, simple_value}]}}`; the tag
 *   names the chart ("train/loss" lands in a "train" section) and the step is its x axis.
 * - Text is a `Value` whose `tensor` is a string tensor, with `metadata.plugin_data.plugin_name = "text"`
 *   telling TensorBoard that its text plugin renders it (as Markdown).
 *
 * Each TFRecord is framed as `uint64 length | uint32 masked CRC of length | data | uint32 masked CRC of
 * data` (little endian). The reader needs the length to find where an event ends, and the CRCs to trust
 * what it read: TensorBoard reads files that are still being written, and files of runs that were killed
 * or disks that failed, so it must tell a complete record from a torn or damaged one. The length has a CRC
 * of its own because a damaged length would send the reader off by a wrong number of bytes (or have it
 * wait for gigabytes that never come) before any data CRC could be checked. The stored CRCs are "masked"
 * (rotated, plus a constant), a rule TFRecord took from LevelDB: the CRC of bytes followed by their own
 * CRC is a constant, so data that embeds plain CRCs (a record of records) checksums badly.
 *
 * So that a killed run leaves a readable file, the file is only ever appended to, each flush appends whole
 * records, and nothing is rewritten: a kill mid-append leaves complete records followed by one partial
 * one, which readers ignore. The protobuf encoding is hand-written below (varints, length-delimited
 * fields, fixed-width floats): four messages with a handful of fields do not need a protobuf library.
 * @module
 */

import { join } from "node:path";
import { crc32c } from "../util/crc32c.ts";

/** Options of {@link TensorBoardWriter.open}. */
export interface TensorBoardWriterOptions {
  /** Host name in the file name, as TensorBoard's own writers put it there. Default: `Deno.hostname()`. */
  hostname?: string;
  /**
   * Wall clock in seconds since the Unix epoch (fractions allowed): the file name's timestamp, each event's
   * default `wall_time` (TensorBoard's "relative" and "wall" x axes), and the flush cadence. Default:
   * `Date.now() / 1000`.
   */
  now?: () => number;
  /** Flush when this many events are waiting. Default 10. */
  flushEvents?: number;
  /** Flush on a write when the last flush is at least this many seconds old. Default 10. */
  flushSeconds?: number;
}

/** A value of Event.step: int64. Numbers must be safe integers; a bigint covers the whole int64 range. */
export type Step = number | bigint;

/**
 * A TensorBoard event file open for appending. Events are buffered and appended in whole records every
 * `flushEvents` events, whenever `flushSeconds` have passed at a write, on {@link flush} and on
 * {@link close}; close also fsyncs. Writing is synchronous: a flush appends a few hundred bytes to the
 * page cache (microseconds), and a synchronous append keeps the records in call order with no promise for
 * a training loop to forget. Use it from one process (rank 0 in DDP): each writer has a file of its own.
 */
export class TensorBoardWriter implements Disposable, AsyncDisposable {
  /** The event file's path: `<logDir>/events.out.tfevents.<seconds>.<host>.<pid>.<n>`. */
  readonly path: string;
  #file: Deno.FsFile | undefined;
  #pending: Uint8Array[] = [];
  #lastFlush: number;
  #failed: unknown = undefined;
  readonly #now: () => number;
  readonly #flushEvents: number;
  readonly #flushSeconds: number;

  private constructor(path: string, file: Deno.FsFile, now: () => number, options: TensorBoardWriterOptions) {
    this.path = path;
    this.#file = file;
    this.#now = now;
    this.#flushEvents = options.flushEvents ?? 10;
    this.#flushSeconds = options.flushSeconds ?? 10;
    this.#lastFlush = now();
  }

  /**
   * Creates `logDir` if needed and a new event file in it, named like torch.utils.tensorboard's and
   * tensorboardX's (`events.out.tfevents.<10-digit seconds>.<host>.<pid>.<n>`, n counting the writers of
   * this process), and writes the `file_version` event at once, so even a run killed before its first step
   * leaves a valid file. The file is created new, never reused: two writers never interleave records.
   */
  static async open(logDir: string, options: TensorBoardWriterOptions = {}): Promise<TensorBoardWriter> {
    if (!((options.flushEvents ?? 1) >= 1) || !((options.flushSeconds ?? 0) >= 0)) {
      throw new RangeError(`flushEvents must be >= 1 and flushSeconds >= 0`);
    }
    const now = options.now ?? (() => Date.now() / 1000);
    const host = options.hostname ?? defaultHostname();
    await Deno.mkdir(logDir, { recursive: true });
    const seconds = String(Math.floor(now())).padStart(10, "0");
    for (;;) {
      const path = join(logDir, `events.out.tfevents.${seconds}.${host}.${Deno.pid}.${writersOpened++}`);
      let file: Deno.FsFile;
      try {
        // Append mode: every write lands at the end, whatever happened to the offset; createNew: a name
        // that exists already (another process with the same pid on a shared disk) is left alone.
        file = await Deno.open(path, { append: true, createNew: true });
      } catch (err) {
        if (err instanceof Deno.errors.AlreadyExists) continue;
        throw err;
      }
      const writer = new TensorBoardWriter(path, file, now, options);
      try {
        writer.#pending.push(tfRecord(encodeEvent({ wallTime: now(), fileVersion: "brain.Event:2" })));
        writer.flush();
      } catch (err) {
        writer.close();
        throw err;
      }
      return writer;
    }
  }

  /**
   * Records `value` as the scalar `tag` (e.g. "train/loss") at `step`. The value is stored as a float32,
   * as in every TensorBoard writer (1e-50 becomes 0, 1e39 Infinity). NaN and ±Infinity are written as they are, not
   * skipped: a loss that turns NaN is exactly what the chart should show; TensorBoard reads them back as
   * nan/inf. `wallTime` (seconds since the epoch) defaults to now.
   */
  scalar(tag: string, value: number, step: Step, wallTime?: number): void {
    this.scalars({ [tag]: value }, step, wallTime);
  }

  /**
   * Records several scalars at one step in one event (one record), e.g. `{ "train/loss": 0.4,
   * "train/lr": 5e-5 }`; same rules as {@link scalar}. An empty record writes nothing.
   */
  scalars(values: Readonly<Record<string, number>>, step: Step, wallTime?: number): void {
    const entries = Object.entries(values);
    if (entries.length === 0) return;
    const encoded = entries.map(([tag, value]) => {
      if (typeof value !== "number") throw new TypeError(`scalar ${tag}: ${value} is not a number`);
      return encodeScalarValue(checkTag(tag), value);
    });
    this.#append(encodeEvent({ wallTime: wallTime ?? this.#now(), step, summary: encodeSummary(encoded) }));
  }

  /**
   * Records `markdown` as the text `tag` at `step` (default 0), shown in TensorBoard's Text tab rendered
   * as Markdown: the run's flags as a table, say. Stored as TensorBoard's text summaries are: a rank-0
   * DT_STRING tensor tagged for the "text" plugin.
   */
  text(tag: string, markdown: string, step: Step = 0, wallTime?: number): void {
    const value = encodeTextValue(checkTag(tag), markdown);
    this.#append(encodeEvent({ wallTime: wallTime ?? this.#now(), step, summary: encodeSummary([value]) }));
  }

  /**
   * Appends the waiting events to the file in one write of whole records. They are then in the operating
   * system's hands: a killed process loses nothing flushed (a machine crash can, until {@link close}'s
   * fsync). Call it before a long pause in logging (evaluation, a checkpoint) so the chart is current.
   */
  flush(): void {
    const file = this.#open();
    this.#lastFlush = this.#now();
    if (this.#pending.length === 0) return;
    const bytes = concat(this.#pending);
    this.#pending = [];
    try {
      // writeSync may write less than asked (a signal, a full pipe); loop until every byte is out.
      for (let done = 0; done < bytes.length;) done += file.writeSync(bytes.subarray(done));
    } catch (err) {
      // A failed write may have left part of a record; anything appended after it would be unreadable
      // (readers stop at the first torn record), so this writer refuses to write any more.
      this.#failed = err;
      throw err;
    }
  }

  /** Flushes, fsyncs and closes the file. Safe to call twice; writing after it throws. */
  close(): void {
    const file = this.#file;
    if (file === undefined) return;
    try {
      if (this.#failed === undefined) {
        this.flush();
        file.syncSync();
      }
    } finally {
      this.#file = undefined;
      file.close();
    }
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#file === undefined;
  }

  /** {@link close}, for `using tb = await TensorBoardWriter.open(dir)`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** {@link close}, for `await using tb = await TensorBoardWriter.open(dir)`. */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  /** Frames one encoded Event as a TFRecord and queues it; flushes on the cadence. */
  #append(event: Uint8Array): void {
    this.#open();
    // Framing each event now means a flush only concatenates: every write appends whole records.
    this.#pending.push(tfRecord(event));
    if (this.#pending.length >= this.#flushEvents || this.#now() - this.#lastFlush >= this.#flushSeconds) {
      this.flush();
    }
  }

  #open(): Deno.FsFile {
    if (this.#failed !== undefined) {
      throw new Error(`TensorBoard writer for ${this.path} stopped after a failed write`, {
        cause: this.#failed,
      });
    }
    if (this.#file === undefined) throw new Error(`TensorBoard writer for ${this.path} is closed`);
    return this.#file;
  }
}

/** Writers opened by this process: the last part of the file name, as in TensorBoard's own writers. */
let writersOpened = 0;

function defaultHostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "localhost"; // no --allow-sys: the name only has to be unique together with the pid and n
  }
}

function checkTag(tag: string): string {
  if (tag === "") throw new RangeError("a TensorBoard tag must not be empty");
  return tag;
}

// ---------------------------------------------------------------------------------------------------
// TFRecord framing

/** TFRecord's CRC: CRC-32C rotated right by 15 bits plus a constant (see the module doc for why). */
function maskedCrc32c(data: Uint8Array): number {
  const crc = crc32c(data);
  return (((crc >>> 15) | (crc << 17)) + 0xa282ead8) >>> 0;
}

/** `data` framed as one TFRecord: length, masked CRC of the length's 8 bytes, data, masked CRC of data. */
function tfRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + 4 + data.length + 4);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(data.length), true);
  view.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  view.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Protocol buffers, by hand
//
// A protobuf message is a sequence of fields, each a key (field number * 8 + wire type, as a varint) and
// a value. The wire type tells a reader how long the value is without knowing the schema, which is how
// readers skip fields they do not know:
//   0 varint: an integer in 7-bit groups, least significant first, high bit set on all but the last byte;
//   1 fixed64: 8 bytes little endian (double);
//   2 length-delimited: a varint byte count, then the bytes (strings, bytes, nested messages);
//   5 fixed32: 4 bytes little endian (float).
// Like protobuf's own serializers, fields equal to their proto3 default (0, "", empty) are left out, and
// fields are written in field-number order: the bytes are what Python's protobuf writes for the same
// message (the tests check this), and a reader sees the default either way.

const VARINT = 0, FIXED64 = 1, LENGTH_DELIMITED = 2, FIXED32 = 5;

/** Appends fields of one message; {@link finish} returns its bytes, to be nested with {@link message}. */
class ProtoEncoder {
  #bytes: number[] = [];

  /** An unsigned integer or enum field (varint); skipped when 0. */
  uint(field: number, n: number): this {
    if (n !== 0) this.#key(field, VARINT).#varint(n);
    return this;
  }

  /** An int64 field (varint); skipped when 0. Negative values take ten bytes (two's complement). */
  int64(field: number, n: Step): this {
    if (typeof n === "number") {
      if (!Number.isSafeInteger(n)) throw new RangeError(`step ${n} is not a safe integer (use a bigint)`);
      n = BigInt(n);
    }
    if (n < -(2n ** 63n) || n >= 2n ** 63n) throw new RangeError(`step ${n} does not fit in an int64`);
    if (n !== 0n) this.#key(field, VARINT).#varint(BigInt.asUintN(64, n));
    return this;
  }

  /** A double field (fixed64); skipped when 0. */
  double(field: number, x: number): this {
    if (!Object.is(x, 0)) this.#key(field, FIXED64).#fixed(8, (v) => v.setFloat64(0, x, true));
    return this;
  }

  /**
   * A float field (fixed32), rounded to float32. Always written: it is only used for a oneof member, whose
   * presence (even at 0) says which member is set.
   */
  float(field: number, x: number): this {
    return this.#key(field, FIXED32).#fixed(4, (v) => v.setFloat32(0, x, true));
  }

  /** A string field (UTF-8, length-delimited); skipped when empty. */
  string(field: number, s: string): this {
    return s === "" ? this : this.bytes(field, new TextEncoder().encode(s));
  }

  /** A bytes field, or one element of a repeated bytes field; always written. */
  bytes(field: number, b: Uint8Array): this {
    this.#key(field, LENGTH_DELIMITED).#varint(b.length);
    for (const byte of b) this.#bytes.push(byte);
    return this;
  }

  /** A nested message (its {@link finish}ed bytes); always written, even empty, as message fields are. */
  message(field: number, encoded: Uint8Array): this {
    return this.bytes(field, encoded);
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.#bytes);
  }

  #key(field: number, wireType: number): this {
    return this.#varint(field * 8 + wireType);
  }

  #varint(n: number | bigint): this {
    if (typeof n === "number") {
      for (; n >= 0x80; n = Math.floor(n / 0x80)) this.#bytes.push((n % 0x80) | 0x80);
      this.#bytes.push(n);
    } else {
      for (; n >= 0x80n; n >>= 7n) this.#bytes.push(Number(n & 0x7fn) | 0x80);
      this.#bytes.push(Number(n));
    }
    return this;
  }

  #fixed(size: number, set: (view: DataView) => void): this {
    const view = new DataView(new ArrayBuffer(size));
    set(view);
    for (let i = 0; i < size; i++) this.#bytes.push(view.getUint8(i));
    return this;
  }
}

// Field numbers from tensorflow/core/util/event.proto, core/framework/summary.proto, tensor.proto,
// tensor_shape.proto and types.proto.

/** `Event`: wall_time = 1 (double), step = 2 (int64), file_version = 3 (string), summary = 5 (Summary). */
function encodeEvent(
  e: { wallTime: number; step?: Step; fileVersion?: string; summary?: Uint8Array },
): Uint8Array {
  const out = new ProtoEncoder().double(1, e.wallTime).int64(2, e.step ?? 0);
  if (e.fileVersion !== undefined) out.string(3, e.fileVersion);
  if (e.summary !== undefined) out.message(5, e.summary);
  return out.finish();
}

/** `Summary`: repeated Value value = 1. */
function encodeSummary(values: readonly Uint8Array[]): Uint8Array {
  const out = new ProtoEncoder();
  for (const v of values) out.message(1, v);
  return out.finish();
}

/** `Summary.Value` of a scalar: tag = 1, simple_value = 2 (float, a member of the `value` oneof). */
function encodeScalarValue(tag: string, value: number): Uint8Array {
  return new ProtoEncoder().string(1, tag).float(2, value).finish();
}

/** `DataType.DT_STRING` (types.proto). */
const DT_STRING = 7;
/** `DataClass.DATA_CLASS_TENSOR` (summary.proto): "a tensor whose value changes over steps". */
const DATA_CLASS_TENSOR = 2;

/**
 * `Summary.Value` of text: tag = 1, tensor = 8 (TensorProto), metadata = 9 (SummaryMetadata).
 * TensorProto: dtype = 1 (DT_STRING), tensor_shape = 2 (no dims: a scalar), string_val = 8 (bytes).
 * SummaryMetadata: plugin_data = 1 (PluginData: plugin_name = 1, content = 2), data_class = 4. The text
 * plugin's content is its TextPluginData proto at version 0, whose encoding is empty.
 */
function encodeTextValue(tag: string, markdown: string): Uint8Array {
  const tensor = new ProtoEncoder()
    .uint(1, DT_STRING)
    .message(2, new ProtoEncoder().finish())
    .bytes(8, new TextEncoder().encode(markdown))
    .finish();
  const pluginData = new ProtoEncoder().string(1, "text").finish();
  const metadata = new ProtoEncoder().message(1, pluginData).uint(4, DATA_CLASS_TENSOR).finish();
  return new ProtoEncoder().string(1, tag).message(8, tensor).message(9, metadata).finish();
}
