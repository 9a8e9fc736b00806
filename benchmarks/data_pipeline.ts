/**
 * Benchmark of the data pipeline on AG News: tokenizer throughput against transformers' `BertTokenizerFast`
 * (Hugging Face `tokenizers`, Rust) in the same run, the time to load a cached tokenized dataset of 120k
 * rows, and the tokens an epoch computes with dynamic padding (and length grouping) against padding to 128.
 *
 *   deno run -A benchmarks/data_pipeline.ts [--data DIR] [--rounds N] [--batch-size N] [--out DIR]
 *
 * DIR holds `ag_news/test.csv.gz` and, optionally, `ag_news/train_subset.csv.gz` (default: $DISTRINEWS_DATA,
 * else ../shared/data next to the repository). Needs the venv's Python (transformers) for the baseline.
 * Prints the figures with ratios and writes data_pipeline.md and data_pipeline.json to `--out`
 * (default benchmarks/results) with the hardware and versions. A script, not a test; nothing depends on it.
 * @module
 */

import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { BertTokenizer } from "../data/tokenizer.ts";
import { type TextRecord, TokenizedDataset } from "../data/dataset.ts";
import { batchIndices, lengthGroupedIndices, paddingCost } from "../data/batches.ts";
import { seededPermutation } from "../util/random.ts";
import { parseFlags, positiveInt, runCli, UsageError } from "../cli/args.ts";
import { venvPython } from "../tests/helpers.ts";
import { loadAgNewsCsv } from "../data/ag_news.ts";
import { hardwareLine, median, writeResults } from "./common.ts";

const USAGE =
  "Usage: deno run -A benchmarks/data_pipeline.ts [--data DIR] [--rounds N] [--batch-size N] [--out DIR]";
const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const VOCAB = join(ROOT, "data", "vocab", "bert-base-uncased-vocab.txt");
const MAX_LENGTH = 128;
const CACHED_ROWS = 120_000;

/**
 * transformers' BertTokenizerFast on the texts of `textsPath`, once with Rust's thread pool (the default) and
 * once with TOKENIZERS_PARALLELISM=false (tokenizers reads it at each call): seconds of the transformers call
 * and of the bare Rust `encode_batch` under it, and the ids of the transformers call.
 */
const PYTHON_BASELINE = `
import json, os, sys, time
import tokenizers, transformers
from transformers import BertTokenizerFast
from transformers.models.bert.tokenization_bert import load_vocab
texts_path, vocab_path, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
with open(texts_path) as f:
    texts = json.load(f)
result = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
          "python": sys.version.split()[0]}
for mode, flag in (("parallel", "true"), ("serial", "false")):
    os.environ["TOKENIZERS_PARALLELISM"] = flag
    # vocab_file= is silently ignored by transformers 5.x (a 5-token vocab results): pass the vocab itself.
    tok = BertTokenizerFast(vocab=load_vocab(vocab_path), do_lower_case=True)
    assert len(tok.get_vocab()) == 30522, len(tok.get_vocab())
    t = time.perf_counter()
    enc = tok(texts, truncation=True, max_length=${MAX_LENGTH})
    call = time.perf_counter() - t
    t = time.perf_counter()
    tok._tokenizer.encode_batch(texts)  # the same truncation, now set on the Rust tokenizer
    rust = time.perf_counter() - t
    result[mode] = {"call": call, "rust": rust}
    result["ids"] = enc["input_ids"]
with open(out_path, "w") as f:
    json.dump(result, f)
`;

interface PythonRound {
  parallel: { call: number; rust: number };
  serial: { call: number; rust: number };
  ids: number[][];
  transformers: string;
  tokenizers: string;
  python: string;
}

async function pythonTokenize(textsPath: string, dir: string): Promise<PythonRound> {
  const outPath = join(dir, "hf.json");
  const out = await new Deno.Command(venvPython(), {
    args: ["-c", PYTHON_BASELINE, textsPath, VOCAB, outPath],
    stdout: "piped",
    stderr: "piped",
    env: { TRANSFORMERS_VERBOSITY: "error", PYTHONWARNINGS: "ignore" },
  }).output();
  if (!out.success) throw new Error(`Python baseline failed:\n${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(await Deno.readTextFile(outPath));
}

/** Ours: a fresh tokenizer (its word cache starts cold, as a run's first epoch does); seconds and ids. */
function oursTokenize(vocabText: string, texts: string[]): { seconds: number; ids: number[][] } {
  const tokenizer = BertTokenizer.fromVocabText(vocabText);
  const t = performance.now();
  const ids = tokenizer.encodeBatch(texts, { maxLength: MAX_LENGTH }).map((e) => e.ids);
  return { seconds: (performance.now() - t) / 1000, ids };
}

function mismatches(a: number[][], b: number[][]): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i].length !== b[i].length || a[i].some((id, k) => id !== b[i][k])) n++;
  }
  return n;
}

interface Split {
  name: string;
  file: string;
  records: TextRecord[];
}

/** Tokenizer speed on one split: `rounds` alternating rounds of ours and of one Python process. */
async function benchTokenizing(split: Split, vocabText: string, rounds: number, work: string) {
  const texts = split.records.map((r) => r.text);
  const textsPath = join(work, "texts.json");
  await Deno.writeTextFile(textsPath, JSON.stringify(texts));
  console.error(`tokenizing ${split.name}: ${texts.length} texts, ${rounds} alternating rounds`);
  const seconds = { ours: [] as number[], call: [] as number[], rust: [] as number[] };
  const serial = { call: [] as number[], rust: [] as number[] };
  let ids: number[][] = [], mismatchedRows = 0;
  let versions = { transformers: "?", tokenizers: "?", python: "?" };
  for (let r = 0; r < rounds; r++) {
    const ours = oursTokenize(vocabText, texts);
    const hf = await pythonTokenize(textsPath, work);
    ids = ours.ids;
    mismatchedRows = Math.max(mismatchedRows, mismatches(ours.ids, hf.ids));
    versions = { transformers: hf.transformers, tokenizers: hf.tokenizers, python: hf.python };
    seconds.ours.push(ours.seconds);
    seconds.call.push(hf.parallel.call);
    seconds.rust.push(hf.parallel.rust);
    serial.call.push(hf.serial.call);
    serial.rust.push(hf.serial.rust);
  }
  const tokens = ids.reduce((sum, row) => sum + row.length, 0);
  const rate = (xs: number[]) => texts.length / median(xs);
  const row = {
    split: split.name,
    texts: texts.length,
    tokens,
    meanTokens: tokens / texts.length,
    truncated: ids.filter((row) => row.length === MAX_LENGTH).length,
    mismatchedRows,
    textsPerS: {
      ours: rate(seconds.ours),
      hfCall: rate(seconds.call),
      hfRust: rate(seconds.rust),
      hfCall1Thread: rate(serial.call),
      hfRust1Thread: rate(serial.rust),
    },
    seconds: { ...seconds, hfCall1Thread: serial.call, hfRust1Thread: serial.rust },
  };
  const t = row.textsPerS;
  console.error(
    `  texts/s: ours ${t.ours.toFixed(0)}, transformers call ${t.hfCall.toFixed(0)}, Rust encode_batch ` +
      `${t.hfRust.toFixed(0)} (1 thread: ${t.hfCall1Thread.toFixed(0)}, ${t.hfRust1Thread.toFixed(0)}); ` +
      `rows whose ids differ: ${mismatchedRows}`,
  );
  return { row, versions };
}

/** A dataset of CACHED_ROWS rows (the source rows repeated): first build, cached builds, plain loads. */
async function benchCache(source: Split, vocabText: string, rounds: number, work: string) {
  const big = Array.from({ length: CACHED_ROWS }, (_, i) => source.records[i % source.records.length]);
  const tokenizer = BertTokenizer.fromVocabText(vocabText);
  const cacheDir = join(work, "cache");
  let t = performance.now();
  const built = await TokenizedDataset.build(big, tokenizer, { cacheDir });
  const firstBuildS = (performance.now() - t) / 1000;
  if (built.cacheHit) throw new Error("internal: the first build cannot hit a fresh cache");
  const hitS: number[] = [], loadS: number[] = [];
  let dataset = built;
  for (let r = 0; r < Math.max(rounds, 5); r++) {
    t = performance.now();
    dataset = await TokenizedDataset.build(big, tokenizer, { cacheDir });
    hitS.push((performance.now() - t) / 1000);
    if (!dataset.cacheHit) throw new Error("internal: a second build must hit the cache");
    t = performance.now();
    await TokenizedDataset.load(built.cachePath!);
    loadS.push((performance.now() - t) / 1000);
  }
  const fileBytes = (await Deno.stat(built.cachePath!)).size;
  const cached = {
    rows: big.length,
    source: source.name,
    tokens: dataset.totalTokens,
    fileBytes,
    bytesPerToken: fileBytes / dataset.totalTokens,
    firstBuildS,
    cachedBuildS: median(hitS),
    loadS: median(loadS),
    seconds: { cachedBuild: hitS, load: loadS },
  };
  console.error(
    `cached dataset: ${cached.rows} rows, ${(fileBytes / 2 ** 20).toFixed(1)} MiB; first build ` +
      `${firstBuildS.toFixed(2)} s, build with a cache hit ${(cached.cachedBuildS * 1000).toFixed(0)} ms, ` +
      `load ${(cached.loadS * 1000).toFixed(0)} ms`,
  );
  return { cached, dataset };
}

/** Token slots one epoch computes (one rank, shuffled as the sampler would) with each kind of padding. */
function benchPadding(lengths: Int32Array, batchSize: number) {
  const order = seededPermutation(lengths.length, 0);
  const shuffled = batchIndices(order, batchSize);
  const grouped = batchIndices(lengthGroupedIndices(order, lengths, batchSize, { seed: 0 }), batchSize);
  const variants = [
    { what: `padding to ${MAX_LENGTH}`, slots: paddingCost(lengths, shuffled, MAX_LENGTH).fixed },
    { what: "dynamic (longest in batch)", slots: paddingCost(lengths, shuffled, MAX_LENGTH).dynamic },
    { what: "dynamic, multiple of 8", slots: paddingCost(lengths, shuffled, MAX_LENGTH, 8).dynamic },
    { what: "dynamic + group by length", slots: paddingCost(lengths, grouped, MAX_LENGTH).dynamic },
    {
      what: "dynamic + group by length, multiple of 8",
      slots: paddingCost(lengths, grouped, MAX_LENGTH, 8).dynamic,
    },
  ];
  const realTokens = paddingCost(lengths, shuffled, MAX_LENGTH).real;
  return {
    realTokens,
    variants: variants.map((v) => ({
      ...v,
      ofFixed: v.slots / variants[0].slots,
      padShare: 1 - realTokens / v.slots,
    })),
  };
}

async function main() {
  const { values } = parseFlags(Deno.args, {
    data: { type: "string" },
    rounds: { type: "string" },
    "batch-size": { type: "string" },
    out: { type: "string", default: join(ROOT, "benchmarks", "results") },
  });
  const rounds = positiveInt("rounds", values.rounds, 3);
  const batchSize = positiveInt("batch-size", values["batch-size"], 32);
  const dataDir = resolve(
    values.data ?? Deno.env.get("DISTRINEWS_DATA") ?? join(ROOT, "..", "shared", "data"),
  );
  const testPath = join(dataDir, "ag_news", "test.csv.gz");
  const trainPath = join(dataDir, "ag_news", "train_subset.csv.gz");
  if (!await Deno.stat(testPath).then(() => true, () => false)) {
    throw new UsageError(`${testPath} not found: pass --data DIR (a folder with ag_news/test.csv.gz)`);
  }
  const splits: Split[] = [{ name: "test", file: testPath, records: await loadAgNewsCsv(testPath) }];
  if (await Deno.stat(trainPath).then(() => true, () => false)) {
    splits.push({ name: "train_subset", file: trainPath, records: await loadAgNewsCsv(trainPath) });
  }
  const vocabText = await Deno.readTextFile(VOCAB);
  const work = await Deno.makeTempDir({ prefix: "distrinews-bench-data-" });
  try {
    const tokenizing = [];
    let versions = { transformers: "?", tokenizers: "?", python: "?" };
    for (const split of splits) {
      const result = await benchTokenizing(split, vocabText, rounds, work);
      tokenizing.push(result.row);
      versions = result.versions;
    }
    const { cached, dataset } = await benchCache(splits[splits.length - 1], vocabText, rounds, work);
    const padding = benchPadding(dataset.lengths, batchSize);

    const hardware = await hardwareLine();
    const results = {
      date: new Date().toISOString(),
      hardware,
      versions: { deno: Deno.version.deno, v8: Deno.version.v8, ...versions },
      data: splits.map((s) => ({ name: s.name, file: relative(dataDir, s.file), rows: s.records.length })),
      maxLength: MAX_LENGTH,
      rounds,
      batchSize,
      tokenizing,
      cached,
      padding,
    };
    const report = markdown(results);
    console.log(report);
    await writeResults(values.out!, "data_pipeline", report, results);
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

type Results = {
  date: string;
  hardware: string;
  versions: { deno: string; v8: string; transformers: string; tokenizers: string; python: string };
  data: { name: string; file: string; rows: number }[];
  rounds: number;
  batchSize: number;
  tokenizing: Awaited<ReturnType<typeof benchTokenizing>>["row"][];
  cached: Awaited<ReturnType<typeof benchCache>>["cached"];
  padding: ReturnType<typeof benchPadding>;
};

function markdown(r: Results): string {
  const n = (x: number) => Math.round(x).toLocaleString("en-US");
  const ratio = (a: number, b: number) => (a / b).toFixed(2);
  const { cached, padding } = r;
  return [
    "# Data pipeline: tokenizer, tokenized cache, padding",
    "",
    `Measured by \`deno run -A benchmarks/data_pipeline.ts\` on ${r.date.slice(0, 10)}.`,
    "",
    `- Hardware: ${r.hardware}`,
    `- Versions: Deno ${r.versions.deno} (V8 ${r.versions.v8}), Python ${r.versions.python}, ` +
    `transformers ${r.versions.transformers}, tokenizers ${r.versions.tokenizers}`,
    `- Data: ${r.data.map((d) => `${d.file} (${n(d.rows)} rows)`).join(", ")}; ` +
    `text = title + " " + description; at most ${MAX_LENGTH} tokens with [CLS] and [SEP], truncated`,
    `- Method: ${r.rounds} alternating rounds (ours, then one Python process), medians. Ours: ` +
    "`encodeBatch` on one thread, a fresh tokenizer each round (cold word cache, as in a first epoch). " +
    "transformers: `BertTokenizerFast(vocab=load_vocab(...))` (30,522 tokens; `vocab_file=` is ignored by " +
    `transformers 5), one batched call \`tok(texts, truncation=True, max_length=${MAX_LENGTH})\`, with ` +
    "Rust's thread pool (the default) and again with TOKENIZERS_PARALLELISM=false.",
    "",
    "## Tokenizing (texts per second)",
    "",
    "| split | texts | mean tokens | truncated | rows differing | ours | transformers call | ours / call | " +
    "Rust encode_batch | ours / Rust | call, 1 thread | Rust, 1 thread | ours / Rust 1 thread |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...r.tokenizing.map((t) => {
      const s = t.textsPerS;
      return `| ${t.split} | ${n(t.texts)} | ${t.meanTokens.toFixed(1)} | ${n(t.truncated)} | ` +
        `${t.mismatchedRows} | ${n(s.ours)} | ${n(s.hfCall)} | ${ratio(s.ours, s.hfCall)} | ${
          n(s.hfRust)
        } | ` +
        `${ratio(s.ours, s.hfRust)} | ${n(s.hfCall1Thread)} | ${n(s.hfRust1Thread)} | ` +
        `${ratio(s.ours, s.hfRust1Thread)} |`;
    }),
    "",
    'Ratios above 1 mean ours is faster. "transformers call" is `tok(texts, ...)` as a user writes it (Rust ' +
    'encoding, then Python lists); "Rust encode_batch" is the `tokenizers` call under it alone, which also ' +
    'computes offsets, token strings and type ids that ours skips. "rows differing": rows whose ids differ ' +
    "from transformers' (0: identical on every row).",
    "",
    "## Tokenized cache",
    "",
    `${n(cached.rows)} rows (the ${cached.source} rows, repeated), ${n(cached.tokens)} tokens; the file is ` +
    `${(cached.fileBytes / 2 ** 20).toFixed(1)} MiB (${cached.bytesPerToken.toFixed(2)} bytes per token).`,
    "",
    "| step | time |",
    "|---|---:|",
    `| first build: tokenize and write | ${cached.firstBuildS.toFixed(2)} s |`,
    "| `TokenizedDataset.build` with a cache hit (hash the 120k texts for the key, read, verify) | " +
    `${(cached.cachedBuildS * 1000).toFixed(0)} ms |`,
    `| \`TokenizedDataset.load(path)\` (read, verify checksum, offsets and ids) | ${
      (cached.loadS * 1000).toFixed(0)
    } ms |`,
    `| cached build / first build | ${(cached.cachedBuildS / cached.firstBuildS).toFixed(3)} |`,
    "",
    "## Tokens computed per epoch",
    "",
    `The same ${n(cached.rows)} rows, batch ${r.batchSize}, in a shuffled order as one rank sees them; ` +
    `${n(padding.realTokens)} real tokens.`,
    "",
    "| padding | token slots | of padding to 128 | padding share |",
    "|---|---:|---:|---:|",
    ...padding.variants.map((v) =>
      `| ${v.what} | ${n(v.slots)} | ${v.ofFixed.toFixed(3)} | ${(100 * v.padShare).toFixed(1)} % |`
    ),
    "",
  ].join("\n");
}

if (import.meta.main) await runCli(USAGE, main);
