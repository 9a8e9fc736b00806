/**
 * Where the entry points put and look for checkpoints by default, in one place: `deno task train` writes
 * checkpoints/distilbert_agnews, `./setup.sh` fine-tunes the demo classifier into checkpoints/minilm_agnews,
 * and `deno task predict`/`serve` take the first of those that exists.
 * @module
 */

import { join } from "node:path";
import { exists } from "../util/fs.ts";

/** Where `deno task train` writes its checkpoint directory. */
export const TRAIN_OUTPUT = join("checkpoints", "distilbert_agnews");

/** Where `./setup.sh` writes the classifier it fine-tunes from MiniLM on the bundled AG News sample. */
export const DEMO_CHECKPOINT = join("checkpoints", "minilm_agnews");

/**
 * The checkpoint predict and serve use without --checkpoint: your own training run, else setup's demo.
 * Neither there is an error that says how to make one (never a guess sent to the Hub).
 */
export async function defaultCheckpoint(): Promise<string> {
  for (const dir of [TRAIN_OUTPUT, DEMO_CHECKPOINT]) if (await exists(dir)) return dir;
  throw new Error(
    `no checkpoint yet: neither ${TRAIN_OUTPUT} nor ${DEMO_CHECKPOINT} exists here. Run ./setup.sh (it ` +
      `fine-tunes the demo classifier) or deno task train, or pass --checkpoint`,
  );
}

/** The help text's description of the default. */
export const DEFAULT_CHECKPOINT_HELP = `${TRAIN_OUTPUT}, else ${DEMO_CHECKPOINT} (made by ./setup.sh)`;
