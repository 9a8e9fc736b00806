/**
 * Benchmark: classification throughput in process (no HTTP), the ceiling any server on this machine can
 * reach. DistriNews (tokenizer in TypeScript, one native call per batch on the unpadded path) against
 * transformers' eager model in Python (fast tokenizer padding each batch to its longest, one forward pass),
 * on the same full-size checkpoint, the same real AG News texts, the same torch and thread count, at batch 1
 * (what a one-request-per-forward server does) and batch 64 (what dynamic batching gives), fp32 and bf16.
 * Rounds alternate between the two sides so that drift in machine speed hits both alike.
 *
 *   deno task bench:inference [--data PATH] [--seconds 8] [--rounds 2] [--threads N] [--out benchmarks/results]
 *
 * Prints texts/s and ratios and writes inference_cpu.md and .json with the hardware and versions.
 * @module
 */

import { join, relative, resolve } from "node:path";
import { DISTILBERT_BASE_UNCASED } from "../model/config.ts";
import { DistilBertClassifier, setNumThreads, torchVersion } from "../ffi/model.ts";
import { BertTokenizer } from "../data/tokenizer.ts";
import { loadAgNews } from "../data/ag_news.ts";
import { saveCheckpoint } from "../weights/checkpoint.ts";
import { TextClassifier } from "../inference/text_classifier.ts";
import { venvPython } from "../tests/helpers.ts";
import { parseFlags, positiveInt, runCli } from "../cli/args.ts";
import { hardwareLine, median, writeResults } from "./common.ts";

const USAGE = "Usage: deno task bench:inference [--data PATH] [--seconds N] [--rounds N] [--threads N] " +
  "[--out DIR]";
const ROOT = resolve(new URL("..", import.meta.url).pathname);
const FIXTURE = join(ROOT, "data", "fixtures", "ag_news_test_head300.csv");
const BATCHES = [1, 64];
const PRECISIONS = ["fp32", "bf16"] as const;

async function oursRate(
  classifier: TextClassifier,
  ids: number[][],
  batch: number,
  bf16: boolean,
  seconds: number,
): Promise<number> {
  await classifier.classifyIdsAsync(ids.slice(0, batch), { bf16 }); // warm-up
  let done = 0, i = 0;
  const start = performance.now();
  while (performance.now() - start < seconds * 1000) {
    const chunk = i + batch <= ids.length ? ids.slice(i, i + batch) : ids.slice(0, batch);
    i = (i + batch) % ids.length;
    await classifier.classifyIdsAsync(chunk, { bf16 });
    done += chunk.length;
  }
  return done / ((performance.now() - start) / 1000);
}

async function main() {
  const { values } = parseFlags(Deno.args, {
    data: { type: "string" },
    seconds: { type: "string" },
    rounds: { type: "string" },
    threads: { type: "string" },
    out: { type: "string", default: join("benchmarks", "results") },
  });
  const seconds = positiveInt("seconds", values.seconds, 8);
  const rounds = positiveInt("rounds", values.rounds, 2);
  const threads = positiveInt("threads", values.threads, navigator.hardwareConcurrency);
  await setNumThreads(threads);

  const dataPath = resolve(values.data ?? Deno.env.get("DISTRINEWS_BENCH_DATA") ?? FIXTURE);
  // Shuffled with a fixed stride so that each batch mixes short and long texts, as live traffic does.
  const all = (await loadAgNews(dataPath)).map((r) => r.text);
  const texts = all.map((_, i) => all[(i * 7919) % all.length]).slice(0, 2048);

  const dir = await Deno.makeTempDir({ prefix: "distrinews-bench-inference-" });
  try {
    const checkpoint = join(dir, "ckpt");
    {
      using model = await DistilBertClassifier.create(
        { ...DISTILBERT_BASE_UNCASED, id2label: [...DISTILBERT_BASE_UNCASED.id2label] },
        { device: "cpu", seed: 0 },
      );
      await saveCheckpoint(checkpoint, model, { tokenizer: await BertTokenizer.bundled() });
    }
    const textsPath = join(dir, "texts.json");
    await Deno.writeTextFile(textsPath, JSON.stringify(texts));
    using classifier = await TextClassifier.load(checkpoint, { device: "cpu" });
    const ids = texts.map((t) => classifier.encode(t, 128));
    const meanTokens = ids.reduce((s, x) => s + x.length, 0) / ids.length;

    const keys = BATCHES.flatMap((b) => PRECISIONS.map((p) => `${b}-${p}`));
    const ours: Record<string, number[]> = Object.fromEntries(keys.map((k) => [k, []]));
    const python: Record<string, number[]> = Object.fromEntries(keys.map((k) => [k, []]));
    let pyInfo = { torch: "?", transformers: "?", threads: 0 };
    const spec = JSON.stringify({
      checkpoint,
      vocab: join(checkpoint, "vocab.txt"),
      texts: textsPath,
      batches: BATCHES,
      precisions: PRECISIONS,
      seconds,
      threads,
    });
    for (let r = 0; r < rounds; r++) {
      console.error(`round ${r + 1}/${rounds}: DistriNews`);
      for (const b of BATCHES) {
        for (const p of PRECISIONS) {
          ours[`${b}-${p}`].push(await oursRate(classifier, ids, b, p === "bf16", seconds));
        }
      }
      console.error(`round ${r + 1}/${rounds}: Python transformers`);
      const out = await new Deno.Command(venvPython(), {
        args: [join("benchmarks", "inference_cpu.py"), spec],
        stdout: "piped",
        stderr: "piped",
        env: { TRANSFORMERS_VERBOSITY: "error" },
      }).output();
      if (!out.success) throw new Error(`Python baseline failed:\n${new TextDecoder().decode(out.stderr)}`);
      const result = JSON.parse(new TextDecoder().decode(out.stdout));
      for (const k of keys) python[k].push(result.rates[k]);
      pyInfo = result;
    }

    const hardware = await hardwareLine();
    const med = (xs: number[]) => median(xs);
    const rows = keys.map((k) => {
      const [b, p] = k.split("-");
      return `| ${b} | ${p} | ${med(ours[k]).toFixed(1)} | ${med(python[k]).toFixed(1)} | ${
        (med(ours[k]) / med(python[k])).toFixed(2)
      } |`;
    });
    const lines = [
      "# In-process inference throughput: DistriNews vs transformers (CPU)",
      "",
      `Measured by \`deno task bench:inference\` (benchmarks/inference_cpu.ts) on ${
        new Date().toISOString().slice(0, 10)
      }.`,
      "",
      `- Hardware: ${hardware}`,
      `- Versions: DistriNews libtorch ${await torchVersion()}, Deno ${Deno.version.deno}; Python torch ` +
      `${pyInfo.torch}, transformers ${pyInfo.transformers}; ${threads} intra-op threads on both sides`,
      "- Model: random distilbert-base-uncased (66M parameters, seed 0); speed does not depend on the weights",
      `- Data: ${relative(ROOT, dataPath) || dataPath}: ${texts.length} AG News texts (mixed order), ` +
      `${meanTokens.toFixed(1)} tokens on average after truncation to 128`,
      `- Method: ${rounds} alternating rounds of ${seconds} s per configuration, medians; tokenization included ` +
      "on both sides; DistriNews runs batches on its unpadded path, transformers pads each batch to its longest",
      "",
      "| batch | precision | DistriNews texts/s | transformers texts/s | ratio |",
      "|---:|---|---:|---:|---:|",
      ...rows,
      "",
      "The batch-64 rate is about the most any server on this machine can answer with this model (a server " +
      "also spends CPU on HTTP, and its load generator shares the cores); a server that runs one forward pass " +
      "per request can do at most the batch-1 rate. benchmarks/results/serve_http.md measures the servers.",
      "",
    ];
    console.log(lines.join("\n"));
    const { md, json } = await writeResults(values.out!, "inference_cpu", lines.join("\n"), {
      date: new Date().toISOString(),
      hardware,
      threads,
      seconds,
      rounds,
      ours,
      python,
      pyInfo,
    });
    console.error(`wrote ${md} and ${json}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await runCli(USAGE, main);
