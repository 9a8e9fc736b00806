/**
 * Benchmark: ms per training step and per inference batch of the full-size DistilBERT on the CPU
 * (batch 8, sequence length 128), DistriNews (one native call per step) against the same step in Python
 * PyTorch (transformers' model, torch.optim.AdamW) on the same torch, same thread count, in one run.
 * Rounds alternate between the two so that drift in machine load hits both alike.
 *
 *   deno task bench [--steps 10] [--warmup 2] [--rounds 3] [--threads 2] [--out benchmarks/results]
 *
 * Prints a table and ratios (ours / Python: below 1.0 means DistriNews is faster) and writes
 * train_step_cpu.json and .md with the hardware and versions.
 * @module
 */

import { join } from "node:path";
import { DISTILBERT_BASE_UNCASED } from "../model/config.ts";
import { DistilBertClassifier, setNumThreads, torchVersion } from "../ffi/model.ts";
import { hfConfigJson, makeBatch, venvPython, writeBatchJson } from "../tests/helpers.ts";
import { parseFlags, positiveInt, runCli } from "../cli/args.ts";
import { hardwareLine, median, writeResults } from "./common.ts";

const USAGE = "Usage: deno task bench [--steps N] [--warmup N] [--rounds N] [--threads N] [--out DIR]";
const BATCH = 8, SEQ = 128;

function timed(fn: () => void, warmup: number, steps: number): number[] {
  for (let i = 0; i < warmup; i++) fn();
  const out: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t = performance.now();
    fn();
    out.push(performance.now() - t);
  }
  return out;
}

async function main() {
  const { values } = parseFlags(Deno.args, {
    steps: { type: "string" },
    warmup: { type: "string" },
    rounds: { type: "string" },
    threads: { type: "string" },
    out: { type: "string", default: join("benchmarks", "results") },
  });
  const steps = positiveInt("steps", values.steps, 10);
  const warmup = positiveInt("warmup", values.warmup, 2);
  const rounds = positiveInt("rounds", values.rounds, 3);
  const threads = positiveInt("threads", values.threads, navigator.hardwareConcurrency);
  await setNumThreads(threads);

  const config = { ...DISTILBERT_BASE_UNCASED, id2label: [...DISTILBERT_BASE_UNCASED.id2label] };
  // Synthetic token ids, every row the full 128 tokens: the step's cost depends on shapes, not on words.
  const batch = makeBatch(config, BATCH, SEQ, 1);
  batch.attentionMask.fill(1);
  for (let i = 0; i < batch.inputIds.length; i++) batch.inputIds[i] ||= 1000 + (i % 2000);
  const dir = await Deno.makeTempDir({ prefix: "distrinews-bench-" });
  const batchPath = join(dir, "batch.json");
  await writeBatchJson(batchPath, batch);

  using model = await DistilBertClassifier.create(config, { device: "cpu", seed: 0 });
  model.configureOptimizer({ weightDecay: 0.01 });
  const ours = { train: [] as number[], predict: [] as number[] };
  const python = { train: [] as number[], predict: [] as number[] };
  let pyInfo = { torch: "?", transformers: "?", threads: 0 };
  const spec = JSON.stringify({ threads, warmup, steps, batch: batchPath, config: hfConfigJson(config) });
  for (let r = 0; r < rounds; r++) {
    console.error(`round ${r + 1}/${rounds}: DistriNews`);
    ours.train.push(...timed(() => model.trainStep(batch, { lr: 5e-5, maxGradNorm: 1 }), warmup, steps));
    ours.predict.push(...timed(() => model.predict(batch), warmup, steps));
    console.error(`round ${r + 1}/${rounds}: Python PyTorch`);
    const out = await new Deno.Command(venvPython(), {
      args: [join("benchmarks", "train_step_cpu.py"), spec],
      stdout: "piped",
      stderr: "piped",
      env: { TRANSFORMERS_VERBOSITY: "error" },
    }).output();
    if (!out.success) throw new Error(`Python baseline failed:\n${new TextDecoder().decode(out.stderr)}`);
    const result = JSON.parse(new TextDecoder().decode(out.stdout));
    python.train.push(...result.train_ms);
    python.predict.push(...result.predict_ms);
    pyInfo = result;
  }
  await Deno.remove(dir, { recursive: true });

  const rows = [
    { what: "training step (fwd+bwd+clip+AdamW)", ours: median(ours.train), python: median(python.train) },
    { what: "inference batch (eval, softmax)", ours: median(ours.predict), python: median(python.predict) },
  ];
  const hardware = await hardwareLine();
  const versions = `DistriNews libtorch ${await torchVersion()}, Python torch ${pyInfo.torch}, ` +
    `transformers ${pyInfo.transformers}, Deno ${Deno.version.deno}`;
  const lines = [
    `# CPU training step and inference: DistriNews vs Python PyTorch`,
    "",
    `Measured by \`deno task bench\` (benchmarks/train_step_cpu.ts) on ${
      new Date().toISOString().slice(0, 10)
    }.`,
    "",
    `- Hardware: ${hardware}`,
    `- Versions: ${versions}`,
    `- Model: distilbert-base-uncased shape (66M parameters, 4 labels), fp32, random weights`,
    `- Data: synthetic token ids, batch ${BATCH} x ${SEQ} tokens, no padding`,
    `- Threads: ${threads} intra-op on both sides (Python: ${pyInfo.threads})`,
    `- Method: ${rounds} alternating rounds of ${warmup} warm-up + ${steps} timed steps per side; medians`,
    "",
    "| | DistriNews ms | Python PyTorch ms | ratio (ours / Python) |",
    "|---|---:|---:|---:|",
    ...rows.map((r) =>
      `| ${r.what} | ${r.ours.toFixed(1)} | ${r.python.toFixed(1)} | ${(r.ours / r.python).toFixed(3)} |`
    ),
    "",
  ];
  console.log(lines.join("\n"));
  await writeResults(values.out!, "train_step_cpu", lines.join("\n"), {
    hardware,
    versions,
    threads,
    batch: BATCH,
    seq: SEQ,
    ours,
    python,
    rows,
  });
}

if (import.meta.main) await runCli(USAGE, main);
