// The event files we write, read back by TensorBoard's own reader (the `tensorboard` package's
// EventAccumulator, and the data provider `tensorboard --logdir` serves the charts from), and their TFRecord
// framing re-parsed here with the CRCs checked independently of the writer.
import assert from "node:assert/strict";
import { basename, join } from "node:path";
import { crc32c } from "../util/crc32c.ts";
import { pythonJson, tempDir } from "../tests/helpers.ts";
import { TensorBoardWriter } from "./tensorboard.ts";

// Reads one event file with TensorBoard and reports every scalar (value as float32 bits, so NaN and -0
// survive JSON; steps as strings, so int64 survives), every text tensor with its metadata, and whether
// each raw record is exactly what Python's protobuf serializes for the event it parses to.
const READ_EVENTS = `
import json, struct, sys
try:
    from tensorboard.backend.event_processing import event_accumulator as ea_mod
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
except ImportError as e:
    print(json.dumps({"missing": repr(e)}))
    sys.exit()
path = json.load(sys.stdin)["path"]
sizes = {k: 0 for k in (ea_mod.COMPRESSED_HISTOGRAMS, ea_mod.IMAGES, ea_mod.AUDIO, ea_mod.SCALARS,
                        ea_mod.HISTOGRAMS, ea_mod.TENSORS)}
ea = ea_mod.EventAccumulator(path, size_guidance=sizes)
ea.Reload()
bits = lambda v: struct.unpack("<I", struct.pack("<f", v))[0]
tags = ea.Tags()
def text(tag):
    meta = ea.SummaryMetadata(tag)
    return {"plugin": meta.plugin_data.plugin_name, "content": meta.plugin_data.content.hex(),
            "dataClass": meta.data_class,
            "events": [{"wallTime": e.wall_time, "step": str(e.step), "dtype": e.tensor_proto.dtype,
                        "dims": [d.size for d in e.tensor_proto.tensor_shape.dim],
                        "strings": [s.decode("utf-8") for s in e.tensor_proto.string_val]}
                       for e in ea.Tensors(tag)]}
raw = list(RawEventFileLoader(path).Load())
# What the server (tensorboard --logdir) would list for the run: its scalar and text tags.
mux = plugin_event_multiplexer.EventMultiplexer()
mux.AddRun(path, "run")
mux.Reload()
provider = data_provider.MultiplexerDataProvider(mux, path)
ctx = context.RequestContext()
served = {"scalars": sorted(provider.list_scalars(ctx, experiment_id="", plugin_name="scalars").get("run", {})),
          "text": sorted(provider.list_tensors(ctx, experiment_id="", plugin_name="text").get("run", {}))}
print(json.dumps({
    "fileVersion": ea.file_version,
    "scalars": {t: [[e.wall_time, str(e.step), bits(e.value)] for e in ea.Scalars(t)] for t in tags["scalars"]},
    "texts": {t: text(t) for t in tags["tensors"]},
    "otherTags": sorted(k for k, v in tags.items() if v and k not in ("scalars", "tensors")),
    "records": len(raw),
    "notCanonical": [i for i, r in enumerate(raw) if Event.FromString(r).SerializeToString() != r],
    "served": served,
}))
`;

interface TextRead {
  plugin: string;
  content: string;
  dataClass: number;
  events: { wallTime: number; step: string; dtype: number; dims: number[]; strings: string[] }[];
}
interface EventsRead {
  fileVersion: number | null;
  scalars: Record<string, [number, string, number][]>;
  texts: Record<string, TextRead>;
  otherTags: string[];
  records: number;
  notCanonical: number[];
  served: { scalars: string[]; text: string[] };
}

async function readWithTensorBoard(path: string): Promise<EventsRead> {
  const out = await pythonJson(READ_EVENTS, { path }) as EventsRead & { missing?: string };
  if (out.missing !== undefined) {
    throw new Error(`the tensorboard Python package is missing (${out.missing}): run ./setup.sh`);
  }
  return out;
}

/** The float32 with these bits. */
function fromBits(bits: number): number {
  return new Float32Array(Uint32Array.of(bits).buffer)[0];
}

/** The one event file in `dir`. */
async function eventFile(dir: string): Promise<string> {
  const names = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name);
  assert.equal(names.length, 1, `one event file in ${dir}: ${names}`);
  return join(dir, names[0]);
}

/**
 * The TFRecord framing, re-parsed from the spec: `uint64 length | uint32 masked crc32c(length) | data |
 * uint32 masked crc32c(data)`, little endian. Throws on a CRC mismatch; a truncated last record (a kill
 * mid-write) is left as `trailing` bytes, as TensorBoard's reader leaves it.
 */
function readRecords(bytes: Uint8Array): { records: Uint8Array[]; trailing: number } {
  const masked = (data: Uint8Array) => {
    const c = crc32c(data);
    return (((c >>> 15) | (c << 17)) + 0xa282ead8) >>> 0;
  };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const records: Uint8Array[] = [];
  let at = 0;
  while (bytes.length - at >= 12) {
    if (view.getUint32(at + 8, true) !== masked(bytes.subarray(at, at + 8))) {
      throw new Error(`record ${records.length} at byte ${at}: length CRC mismatch`);
    }
    const length = Number(view.getBigUint64(at, true));
    if (at + 12 + length + 4 > bytes.length) break;
    const data = bytes.subarray(at + 12, at + 12 + length);
    if (view.getUint32(at + 12 + length, true) !== masked(data)) {
      throw new Error(`record ${records.length} at byte ${at}: data CRC mismatch`);
    }
    records.push(data);
    at += 12 + length + 4;
  }
  return { records, trailing: bytes.length - at };
}

const FLAGS_MARKDOWN = [
  "| flag | value |",
  "|---|---|",
  "| `--lr` | 5e-5 |",
  "| `--batch-size` | 32 |",
  '| note | ünïcödé ✓, "quotes" & <angles> |',
].join("\n");

Deno.test("tensorboard: TensorBoard reads back every scalar and the text, at float32 precision", async () => {
  await using dir = await tempDir();
  const logDir = join(dir.path, "runs", "exp1"); // created by open
  // [tag, step, value]: negative, tiny (normal and subnormal float32), large, beyond float32, -0, NaN and
  // ±Infinity (written, not skipped), an int64 step beyond 2^53 and a negative step.
  const written: [string, bigint, number][] = [
    ["train/loss", 0n, 2.302585092994046],
    ["train/loss", 1n, -1.5],
    ["train/loss", 2n, 1e-30],
    ["train/loss", 3n, 1e-40],
    ["train/loss", 4n, 3.4e38],
    ["train/loss", 5n, 1e39],
    ["train/loss", 6n, -0],
    ["train/loss", 7n, NaN],
    ["train/loss", 8n, Infinity],
    ["train/loss", 9n, -Infinity],
    ["train/lr", 1n, 5e-5],
    ["train/lr", 2n ** 53n + 1n, 123456789.123],
    ["train/lr", -3n, 0.1],
    ["eval/accuracy", 1000n, 0.9375],
  ];
  const walls = new Map<string, number>();
  {
    using tb = await TensorBoardWriter.open(logDir, { hostname: "testhost", flushEvents: 4 });
    assert.match(
      basename(tb.path),
      new RegExp(`^events\\.out\\.tfevents\\.\\d{10}\\.testhost\\.${Deno.pid}\\.\\d+$`),
    );
    tb.text("flags", FLAGS_MARKDOWN);
    written.forEach(([tag, step, value], i) => {
      const wall = 1_700_000_000.25 + i; // explicit wall times, checked exactly (a double)
      walls.set(`${tag}@${step}`, wall);
      // Numbers where they are safe, bigints beyond: both are accepted.
      tb.scalar(tag, value, step <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(step) : step, wall);
    });
    tb.scalars({ "throughput/samples_per_s": 812.5, "throughput/steps_per_s": 25.4 }, 10, 1_700_000_100);
    tb.text("notes", "second *text*", 5);
  }
  const read = await readWithTensorBoard(await eventFile(logDir));

  assert.equal(read.fileVersion, 2, "the first record is file_version brain.Event:2");
  assert.deepEqual(read.notCanonical, [], "records re-serialize to the same bytes in Python's protobuf");
  assert.equal(read.records, 1 + written.length + 1 + 2);
  assert.deepEqual(read.otherTags, []);

  const expected: Record<string, [number, string, number][]> = {};
  for (const [tag, step, value] of written) {
    (expected[tag] ??= []).push([walls.get(`${tag}@${step}`)!, `${step}`, value]);
  }
  expected["throughput/samples_per_s"] = [[1_700_000_100, "10", 812.5]];
  expected["throughput/steps_per_s"] = [[1_700_000_100, "10", 25.4]];
  assert.deepEqual(Object.keys(read.scalars).sort(), Object.keys(expected).sort());
  for (const [tag, events] of Object.entries(expected)) {
    const got = read.scalars[tag];
    assert.equal(got.length, events.length, tag);
    events.forEach(([wall, step, value], i) => {
      const [gotWall, gotStep, gotBits] = got[i];
      assert.equal(gotWall, wall, `${tag}[${i}] wall_time`);
      assert.equal(gotStep, step, `${tag}[${i}] step`);
      // Object.is: NaN equals NaN, and -0 must stay -0.
      assert.ok(
        Object.is(fromBits(gotBits), Math.fround(value)),
        `${tag}@${step}: ${fromBits(gotBits)} != ${Math.fround(value)}`,
      );
    });
  }

  assert.deepEqual(read.served, { scalars: Object.keys(expected).sort(), text: ["flags", "notes"] });

  const flags = read.texts["flags"];
  assert.equal(flags.plugin, "text");
  assert.equal(flags.content, "", "TextPluginData version 0 encodes as no bytes");
  assert.equal(flags.dataClass, 2, "DATA_CLASS_TENSOR");
  assert.equal(flags.events.length, 1);
  assert.deepEqual(
    { ...flags.events[0], wallTime: undefined },
    { wallTime: undefined, step: "0", dtype: 7, dims: [], strings: [FLAGS_MARKDOWN] },
  );
  assert.ok(Math.abs(flags.events[0].wallTime - Date.now() / 1000) < 600, "default wall time is now");
  assert.deepEqual(read.texts["notes"].events.map((e) => [e.step, e.strings]), [["5", ["second *text*"]]]);
});

Deno.test("tensorboard: a kill mid-write leaves every complete event readable", async () => {
  await using dir = await tempDir();
  let path: string;
  {
    using tb = await TensorBoardWriter.open(dir.path, {
      hostname: "h",
      flushEvents: 1000,
      flushSeconds: 1e9,
    });
    path = tb.path;
    for (let step = 0; step < 5; step++) tb.scalar("loss", 1 / (step + 1), step, 100 + step);
    tb.flush();
  }
  const whole = await Deno.readFile(path);
  const { records } = readRecords(whole);
  assert.equal(records.length, 6);
  // A kill in the middle of appending the next record: its length and half its data made it to disk.
  const torn = whole.subarray(whole.length - (16 + records[5].length)).subarray(0, 12 + 9);
  await Deno.writeFile(path, torn, { append: true });
  assert.deepEqual(readRecords(await Deno.readFile(path)).trailing, torn.length);

  const read = await readWithTensorBoard(path);
  assert.equal(read.fileVersion, 2);
  assert.deepEqual(
    read.scalars["loss"].map(([wall, step, bits]) => [wall, step, fromBits(bits)]),
    [0, 1, 2, 3, 4].map((s) => [100 + s, `${s}`, Math.fround(1 / (s + 1))]),
  );
});

Deno.test("tensorboard: the framing's CRCs catch any flipped byte", async () => {
  await using dir = await tempDir();
  let path: string;
  {
    using tb = await TensorBoardWriter.open(dir.path, { hostname: "h" });
    path = tb.path;
    tb.scalar("a", 1, 1, 1);
    tb.text("t", "hello", 2, 2);
  }
  const bytes = await Deno.readFile(path);
  const { records, trailing } = readRecords(bytes);
  assert.equal(records.length, 3);
  assert.equal(trailing, 0);
  assert.ok(new TextDecoder().decode(records[0]).includes("brain.Event:2"));
  for (let i = 0; i < bytes.length; i++) {
    const damaged = bytes.slice();
    damaged[i] ^= 0xff;
    assert.throws(() => readRecords(damaged), /CRC mismatch/, `flipped byte ${i} of ${bytes.length}`);
  }
});

Deno.test("tensorboard: flushes every N events, after N seconds, on flush() and on close", async () => {
  await using dir = await tempDir();
  let clock = 1_700_000_000;
  const tb = await TensorBoardWriter.open(dir.path, {
    hostname: "h",
    now: () => clock,
    flushEvents: 3,
    flushSeconds: 30,
  });
  const onDisk = async () => readRecords(await Deno.readFile(tb.path)).records.length;
  assert.equal(basename(tb.path).split(".")[3], "1700000000");
  assert.equal(await onDisk(), 1, "file_version is written at open");
  tb.scalar("x", 1, 1);
  tb.scalar("x", 2, 2);
  assert.equal(await onDisk(), 1, "buffered");
  tb.scalar("x", 3, 3);
  assert.equal(await onDisk(), 4, "the third event flushes");
  tb.scalar("x", 4, 4);
  clock += 29;
  assert.equal(await onDisk(), 4);
  tb.scalar("x", 5, 5);
  assert.equal(await onDisk(), 4, "29 s is not yet 30");
  clock += 1;
  tb.scalar("x", 6, 6);
  assert.equal(await onDisk(), 7, "30 s since the last flush");
  tb.text("t", "x", 7);
  tb.flush();
  assert.equal(await onDisk(), 8);
  tb.scalar("x", 8, 8);
  tb.close();
  assert.equal(await onDisk(), 9, "close flushes");
  assert.ok(tb.closed);
  tb.close(); // twice is fine
  assert.throws(() => tb.scalar("x", 9, 9), /closed/);
});

Deno.test("tensorboard: each writer gets a new file; bad tags and steps are refused", async () => {
  await using dir = await tempDir();
  await using a = await TensorBoardWriter.open(dir.path, { now: () => 5 });
  await using b = await TensorBoardWriter.open(dir.path, { now: () => 5 });
  assert.notEqual(a.path, b.path);
  const [na, nb] = [a.path, b.path].map((p) => basename(p).split("."));
  assert.equal(na[3], "0000000005");
  assert.equal(Number(nb.at(-1)), Number(na.at(-1)) + 1, "the last part counts this process's writers");
  assert.throws(() => a.scalar("", 1, 1), RangeError);
  assert.throws(() => a.scalar("x", 1, 1.5), RangeError);
  assert.throws(() => a.scalar("x", 1, 2 ** 53), RangeError);
  assert.throws(() => a.scalar("x", 1, 2n ** 63n), RangeError);
  assert.throws(() => a.scalar("x", "1" as unknown as number, 1), TypeError);
  await assert.rejects(() => TensorBoardWriter.open(dir.path, { flushEvents: 0 }), RangeError);
  a.scalar("x", 1, -(2n ** 63n));
  a.close();
  assert.equal(readRecords(await Deno.readFile(a.path)).records.length, 2);
});
