/**
 * AG News loading: CSV and parquet against Python's csv module running Hugging Face's ag_news builder rule
 * (data/fixtures/ag_news/make_fixtures.py), malformed files, sources and subsets. The Hub download is
 * tested in hf_hub_test.ts. The parquet fixtures are committed (made by make_fixtures.py); one test also
 * writes a fresh one with pyarrow.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { tempDir, venvPython } from "../tests/helpers.ts";
import {
  AgNewsFormatError,
  classCounts,
  loadAgNews,
  loadAgNewsCsv,
  loadAgNewsParquet,
  type NewsRecord,
  parseAgNewsCsv,
  stratifiedQuotas,
  subset,
} from "./ag_news.ts";

const FIXTURES = join(import.meta.dirname!, "fixtures", "ag_news");
const fixture = (name: string) => join(FIXTURES, name);
const SCRIPT = fixture("make_fixtures.py");

const present = (path: string) => {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
};
/** A data file of the workspace's shared folder (not part of the repository): its path, if present. */
const shared = (name: string) =>
  [
    join(import.meta.dirname!, "..", "..", "shared", "data", "ag_news", name),
    `/work/shared/data/ag_news/${name}`,
  ].find(present);
/** The full original test split (DISTRINEWS_AG_NEWS_TEST, else the shared copy); tests skip without it. */
const FULL_TEST = Deno.env.get("DISTRINEWS_AG_NEWS_TEST") ?? shared("test.csv.gz") ?? "";
/** 32,311 rows of the original train.csv (see the shared folder's README). */
const TRAIN_SUBSET = shared("train_subset.csv.gz") ?? "";

/** Runs make_fixtures.py with `args` in the venv's Python. */
async function python(...args: string[]): Promise<void> {
  const out = await new Deno.Command(venvPython(), { args: [SCRIPT, ...args], stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`make_fixtures.py ${args[0]} failed:\n${new TextDecoder().decode(out.stderr)}`);
  }
}

/** The records Hugging Face's ag_news builder makes from `csv` (Python's csv module). */
async function hfRecords(csv: string, dir: string): Promise<NewsRecord[]> {
  const out = join(dir, `records-${crypto.randomUUID()}.json`);
  await python("records", csv, out);
  return JSON.parse(await Deno.readTextFile(out));
}

async function rejectsFormat(p: Promise<unknown>, file: string, where: RegExp): Promise<AgNewsFormatError> {
  const err = await p.then(() => undefined, (e) => e);
  assert.ok(err instanceof AgNewsFormatError, `expected AgNewsFormatError, got ${err}`);
  assert.ok(err.message.startsWith(file), `message names the file: ${err.message}`);
  assert.match(err.message, where);
  return err;
}

Deno.test("CSV rows become the records of the HF builder rule run on Python's csv module", async () => {
  await using dir = await tempDir();
  for (const name of ["test_sample.csv", "train_sample.csv", "edge_cases.csv"]) {
    const ours = await loadAgNewsCsv(fixture(name));
    assert.deepEqual(ours, await hfRecords(fixture(name), dir.path), name);
  }
  const first = (await loadAgNewsCsv(fixture("train_sample.csv")))[0];
  // The rule, visibly: title + " " + description, class - 1, backslash sequences kept verbatim.
  assert.deepEqual(first, {
    text: "Wall St. Bears Claw Back Into the Black (Reuters) Reuters - Short-sellers, Wall Street's " +
      "dwindling\\band of ultra-cynics, are seeing green again.",
    label: 2,
  });
  const edge = await loadAgNewsCsv(fixture("edge_cases.csv"));
  assert.equal(edge.length, 10);
  assert.equal(edge[1].text, '日本 wins Tokyo – a dash, an emoji 🏆, and "quoted" text');
  assert.equal(edge[2].text, " Empty title");
  assert.equal(edge[4].text, "space before quote two spaces before"); // skipinitialspace
  assert.equal(edge[5].text, "Line\nbreak inside a quoted field may span lines");
});

Deno.test("CSV and parquet give identical records for the same rows", async () => {
  for (const name of ["test_sample", "train_sample", "edge_cases"]) {
    const csv = await loadAgNewsCsv(fixture(`${name}.csv`));
    const parquet = await loadAgNewsParquet(fixture(`${name}.parquet`)); // 3 row groups for the samples
    assert.equal(parquet.length, csv.length, name);
    assert.deepEqual(parquet, csv, name);
  }
  // And a parquet file freshly written by pyarrow, one row group per 7 rows.
  await using dir = await tempDir();
  const out = join(dir.path, "fresh.parquet");
  await python("parquet", fixture("test_sample.csv"), out, "7");
  assert.deepEqual(await loadAgNewsParquet(out), await loadAgNewsCsv(fixture("test_sample.csv")));
});

Deno.test("gzip and plain CSV give identical records; gzip is recognised by its bytes", async () => {
  const plain = await loadAgNewsCsv(fixture("test_sample.csv"));
  assert.equal(plain.length, 120);
  assert.deepEqual(await loadAgNewsCsv(fixture("test_sample.csv.gz")), plain);

  await using dir = await tempDir();
  const gz = await Deno.readFile(fixture("test_sample.csv.gz"));
  const unnamed = join(dir.path, "renamed.csv");
  await Deno.writeFile(unnamed, gz);
  assert.deepEqual(await loadAgNewsCsv(unnamed), plain);

  const cut = join(dir.path, "cut.csv.gz");
  await Deno.writeFile(cut, gz.subarray(0, gz.length - 100));
  await rejectsFormat(loadAgNewsCsv(cut), cut, /gzip/);
  const fake = join(dir.path, "fake.csv.gz");
  await Deno.copyFile(fixture("test_sample.csv"), fake);
  await rejectsFormat(loadAgNewsCsv(fake), fake, /not gzip/);
});

Deno.test("malformed CSV files fail with the file and the line", async () => {
  const cases: [string, number, RegExp][] = [
    ["bad_field_count.csv", 3, /expected 3 fields .* found 2/],
    ["bad_quote.csv", 2, /bad quoting: "quote\\" here/],
    ["bad_class.csv", 4, /class must be one of 1\.\.4, found "5"/],
    ["bad_unterminated.csv", 2, /never closed .*end of file/],
    ["bad_empty_line.csv", 2, /found 1 \(an empty line\)/],
    ["bad_utf8.csv", 2, /not valid UTF-8/],
  ];
  for (const [name, line, message] of cases) {
    const err = await rejectsFormat(
      loadAgNewsCsv(fixture(name)),
      fixture(name),
      new RegExp(`, line ${line}: `),
    );
    assert.equal(err.line, line, name);
    assert.match(err.message, message, name);
  }
});

Deno.test("CSV parser: RFC 4180 corners and line numbers after multi-line fields", () => {
  assert.deepEqual(parseAgNewsCsv('"1","a ""b"" c",""\r\n2,"x,y","z"'), [
    { text: 'a "b" c ', label: 0 },
    { text: "x,y z", label: 1 },
  ]);
  assert.deepEqual(parseAgNewsCsv(""), []);
  const bad = (s: string, line: number, message: RegExp) =>
    assert.throws(() => parseAgNewsCsv(s, "f.csv"), (e: unknown) => {
      assert.ok(e instanceof AgNewsFormatError);
      assert.equal(e.line, line, s);
      assert.match(e.message, message);
      assert.match(e.message, new RegExp(`^f\\.csv, line ${line}: `));
      return true;
    });
  bad('"1","two\nlines","ok"\n"9","x","y"\n', 3, /found "9"/);
  bad('"1","a","b"\n"0","x","y"', 2, /found "0"/);
  bad('"1","a","b"\n"12","x","y"', 2, /found "12"/);
  bad('"World","x","y"', 1, /found "World"/);
  bad('"1","a","b"\n1,x"y,z\n', 2, /quote inside an unquoted field/);
  bad('"1","a"b,"c"', 1, /follows a closing quote/);
  bad('"1","a","b","c"\n', 1, /found 4/);
  bad('"1","a","b"\n"2","c","never closed', 2, /never closed/);
});

Deno.test("malformed parquet files fail with the file, the column or the row", async () => {
  const missing = await rejectsFormat(
    loadAgNewsParquet(fixture("bad_missing_label.parquet")),
    fixture("bad_missing_label.parquet"),
    /missing column "label" \(found "text", "target"\)/,
  );
  assert.equal(missing.row, undefined);
  const label = await rejectsFormat(
    loadAgNewsParquet(fixture("bad_label.parquet")),
    fixture("bad_label.parquet"),
    /, row 2 \(0-based\): label must be an integer 0\.\.3, found bigint 4/,
  );
  assert.equal(label.row, 2);
  const nul = await rejectsFormat(
    loadAgNewsParquet(fixture("bad_null_text.parquet")),
    fixture("bad_null_text.parquet"),
    /, row 1 \(0-based\): text must be a string, found null/,
  );
  assert.equal(nul.row, 1);
  await using dir = await tempDir();
  const notParquet = join(dir.path, "x.parquet");
  await Deno.copyFile(fixture("test_sample.csv"), notParquet);
  await rejectsFormat(loadAgNewsParquet(notParquet), notParquet, /not a parquet file/);
  await assert.rejects(
    loadAgNewsParquet(join(dir.path, "none.parquet")),
    /AG News file not found: .*none\.parquet/,
  );
});

Deno.test("loadAgNews reads files and directories of either layout", async () => {
  const train = await loadAgNewsCsv(fixture("train_sample.csv"));
  const test = await loadAgNewsCsv(fixture("test_sample.csv"));
  assert.deepEqual(await loadAgNews(fixture("train_sample.parquet")), train);
  assert.deepEqual(await loadAgNews(fixture("test_sample.csv.gz")), test);

  // The original release: train.csv and test.csv (or gzipped) side by side.
  await using csvDir = await tempDir();
  await Deno.copyFile(fixture("train_sample.csv"), join(csvDir.path, "train.csv"));
  await Deno.copyFile(fixture("test_sample.csv.gz"), join(csvDir.path, "test.csv.gz"));
  assert.deepEqual(await loadAgNews(csvDir.path, { split: "train" }), train);
  assert.deepEqual(await loadAgNews(csvDir.path, { split: "test" }), test);

  // The Hub layout: data/<split>-NNNNN-of-NNNNN.parquet, shards read in name order.
  await using hubDir = await tempDir();
  await Deno.mkdir(join(hubDir.path, "data"));
  await Deno.copyFile(
    fixture("test_sample.parquet"),
    join(hubDir.path, "data", "train-00001-of-00002.parquet"),
  );
  await Deno.copyFile(
    fixture("train_sample.parquet"),
    join(hubDir.path, "data", "train-00000-of-00002.parquet"),
  );
  assert.deepEqual(await loadAgNews(hubDir.path, { split: "train" }), [...train, ...test]);
  await assert.rejects(loadAgNews(hubDir.path, { split: "test" }), /no test split; looked for:\n.*test/);

  await assert.rejects(loadAgNews(hubDir.path), /a split \("train" or "test"\) is needed/);
  await assert.rejects(loadAgNews("hub"), /needs a split/);
  await assert.rejects(loadAgNews(join(hubDir.path, "nope.csv")), /AG News source not found: .*nope\.csv/);
  await assert.rejects(loadAgNews(SCRIPT), /expected a \.csv, \.csv\.gz or \.parquet file/);
  await assert.rejects(
    loadAgNews(csvDir.path, { split: "validation" as "test" }),
    /split must be "train" or "test", got "validation"/,
  );
});

Deno.test("subset: first n, and seeded stratified samples: balanced, deterministic, ordered", async () => {
  const records = await loadAgNewsCsv(fixture("test_sample.csv")); // 120 rows, unequal classes
  assert.deepEqual(subset(records, { first: 5 }), records.slice(0, 5));
  assert.deepEqual(subset(records, { first: 0 }), []);
  assert.throws(() => subset(records, { first: 121 }), /121 records asked from only 120/);
  assert.throws(() => subset(records, { first: -1 }), /integer >= 0/);
  assert.throws(() => subset(records, { stratified: 4, seed: 0.5 }), /seed must be an integer/);

  const counts = classCounts(records);
  const a = subset(records, { stratified: 40, seed: 7 });
  assert.deepEqual(classCounts(a), [10, 10, 10, 10]);
  assert.deepEqual(subset(records, { stratified: 40, seed: 7 }), a, "same seed, same subset");
  const b = subset(records, { stratified: 40, seed: 8 });
  assert.notDeepEqual(b, a, "another seed, another subset");
  assert.deepEqual(classCounts(b), [10, 10, 10, 10]);
  // Original order kept, every record taken at most once.
  const positions = a.map((r) => records.indexOf(r));
  assert.deepEqual(positions, [...positions].sort((x, y) => x - y));
  assert.equal(new Set(positions).size, 40);
  // All of it: every record, in order.
  assert.deepEqual(subset(records, { stratified: records.length, seed: 1 }), records);
  // The smallest class runs out; the others share its shortfall evenly.
  const min = Math.min(...counts);
  const big = subset(records, { stratified: min * 4 + 6, seed: 3 });
  assert.equal(big.length, min * 4 + 6);
  assert.deepEqual(classCounts(big), stratifiedQuotas(counts, min * 4 + 6));

  assert.deepEqual(stratifiedQuotas([10, 10, 10, 10], 6), [2, 2, 1, 1]);
  assert.deepEqual(stratifiedQuotas([1, 10, 10, 10], 13), [1, 4, 4, 4]);
  assert.deepEqual(stratifiedQuotas([0, 2, 10, 10], 14), [0, 2, 6, 6]);
  assert.deepEqual(stratifiedQuotas([3, 3, 3, 3], 12), [3, 3, 3, 3]);
});

Deno.test("parsing 120k CSV rows takes well under two seconds", () => {
  // The test sample repeated to the size of the full training split (120,000 rows, ~30 MB).
  const text = Deno.readTextFileSync(fixture("test_sample.csv")).repeat(1000);
  const t0 = performance.now();
  const records = parseAgNewsCsv(text);
  const ms = performance.now() - t0;
  assert.equal(records.length, 120_000);
  assert.ok(ms < 2000, `parsing took ${ms.toFixed(0)} ms`);
});

Deno.test({
  name: "the full original test split: 7,600 rows, 1,900 per class, equal to the HF builder's records",
  ignore: !present(FULL_TEST),
  async fn() {
    const records = await loadAgNews(FULL_TEST);
    assert.equal(records.length, 7600);
    assert.deepEqual(classCounts(records), [1900, 1900, 1900, 1900]);
    assert.deepEqual(records[0], {
      text: "Fears for T N pension after talks Unions representing workers at Turner   Newall say they are " +
        "'disappointed' after talks with stricken parent firm Federal Mogul.",
      label: 2,
    });
    await using dir = await tempDir();
    assert.deepEqual(records, await hfRecords(FULL_TEST, dir.path));
    assert.deepEqual(classCounts(subset(records, { stratified: 400, seed: 42 })), [100, 100, 100, 100]);
  },
});

Deno.test({
  name: "the partial training split: 32,311 rows with the documented class counts",
  ignore: !present(TRAIN_SUBSET),
  async fn() {
    const records = await loadAgNewsCsv(TRAIN_SUBSET);
    assert.equal(records.length, 32_311);
    assert.deepEqual(classCounts(records), [8074, 8020, 8101, 8116]);
  },
});
