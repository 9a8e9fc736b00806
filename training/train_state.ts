/**
 * The training state every rank saves at the end of each epoch, so `--resume` continues exactly: the
 * weights, AdamW's moments and steps, the rank's dropout RNG stream, and where the loop stood. Unlike the
 * checkpoint (rank 0 only), every rank writes its own file: the dropout streams differ per rank.
 * @module
 */

import { join } from "node:path";
import type { DistilBertClassifier } from "../ffi/model.ts";
import type { StateDict } from "../model/tensor.ts";
import { exists } from "../util/fs.ts";
import { describeShape } from "../weights/pretrained.ts";
import { readSafetensors, readSafetensorsMetadata, writeSafetensorsFile } from "../weights/safetensors.ts";

/** Where the loop stands, saved with the training state at the end of every epoch. */
export interface LoopState {
  epoch: number;
  step: number;
  bestLoss: number;
  sinceBest: number;
}

/**
 * Each rank saves its own training state: the weights, AdamW's moments and steps, and its dropout RNG
 * stream, which differs per rank (the one file every rank writes, not just rank 0).
 */
export function trainStatePath(logDir: string, rank: number): string {
  return join(logDir, "train_state", `rank${rank}.safetensors`);
}

/** Writes one rank's training state (a safetensors file; the loop state and world size in its metadata). */
export async function saveTrainState(
  path: string,
  model: DistilBertClassifier,
  loop: LoopState,
  worldSize: number,
): Promise<void> {
  const entries: StateDict = new Map();
  for (const [name, t] of model.stateDict()) entries.set(`model.${name}`, t);
  for (const [name, t] of model.trainState()) entries.set(name, t);
  await Deno.mkdir(join(path, ".."), { recursive: true });
  const metadata = {
    format: "pt",
    ...Object.fromEntries(Object.entries(loop).map(([k, v]) => [k, String(v)])),
    // The network it belongs to, so that --resume with other --model/--pretrained flags says so plainly.
    model: describeShape(model.config),
  };
  await writeSafetensorsFile(path, entries, { ...metadata, world_size: String(worldSize) });
}

/**
 * Restores one rank's training state into `model` and returns where the loop stood.
 * @throws Error when the file is missing, or was saved by another world size or another network.
 */
export async function loadTrainState(
  path: string,
  model: DistilBertClassifier,
  worldSize: number,
): Promise<LoopState> {
  if (!await exists(path)) throw new Error(`--resume: no training state at ${path} (no epoch finished yet?)`);
  const bytes = await Deno.readFile(path);
  const meta = readSafetensorsMetadata(bytes, path);
  if (Number(meta.world_size) !== worldSize) {
    throw new Error(`--resume: ${path} was saved by ${meta.world_size} rank(s), this run has ${worldSize}`);
  }
  if (meta.model !== undefined && meta.model !== describeShape(model.config)) {
    throw new Error(
      `--resume: ${path} was saved for another network (${meta.model}); this run builds ` +
        `${describeShape(model.config)}: pass the --model/--pretrained of the run being resumed`,
    );
  }
  const state = readSafetensors(bytes, path);
  const weights: StateDict = new Map(), rest: StateDict = new Map();
  for (const [name, t] of state) {
    (name.startsWith("model.") ? weights : rest).set(name.slice(name.startsWith("model.") ? 6 : 0), t);
  }
  model.loadStateDict(weights, { source: path });
  model.loadTrainState(rest, path);
  return {
    epoch: Number(meta.epoch),
    step: Number(meta.step),
    bestLoss: Number(meta.bestLoss),
    sinceBest: Number(meta.sinceBest),
  };
}
