/**
 * Checkpoint directories in Hugging Face's layout, so that DistriNews, `deno task predict`/`serve` and
 * transformers' `from_pretrained(dir)` all read the same folder:
 *
 *   config.json            DistilBertConfig with id2label
 *   model.safetensors      the weights (Hugging Face's preferred format)
 *   distilbert_agnews.pt   the same state_dict as a PyTorch file (torch.load(..., weights_only=True))
 *   vocab.txt, tokenizer_config.json, special_tokens_map.json   the tokenizer
 *
 * Reading also accepts a lone weights file (.safetensors, .pt, .bin) with a config.json beside it, and
 * Hugging Face's pytorch_model.bin, in torch.save's zip or legacy format. Formats are told apart by their
 * bytes (weights/format.ts), not by file extensions.
 * @module
 */

import { basename, dirname, join } from "node:path";
import { configToJson, type DistilBertConfig, parseConfig } from "../model/config.ts";
import { type DeviceSpec, DistilBertClassifier, type LoadReport } from "../ffi/model.ts";
import { isDirectory, isFile, writeFileAtomic } from "../util/fs.ts";
import { detectFormat, WeightsFormatError } from "./format.ts";
import { readSafetensors, writeSafetensorsFile } from "./safetensors.ts";
import type { StateDict } from "../model/tensor.ts";
import { readTorchCheckpoint } from "./torch_checkpoint.ts";

/** File name of the bare PyTorch state_dict inside a checkpoint directory. */
export const PT_FILE = "distilbert_agnews.pt";
/** Weight files looked for in a directory, in order of preference. */
export const WEIGHT_FILES = ["model.safetensors", PT_FILE, "pytorch_model.bin"] as const;

/** Something that can write its tokenizer files into a directory (data/tokenizer.ts's BertTokenizer). */
export interface SavableTokenizer {
  saveHuggingFace(dir: string): Promise<void>;
}

/**
 * Parses weight bytes in any format DistriNews reads (safetensors, torch.save's zip or legacy container),
 * chosen by weights/format.ts's {@link detectFormat} from the bytes, never from the file name.
 * @param source the file name for error messages
 * @throws {WeightsFormatError} when the bytes are none of the formats (the message says what was seen);
 *   the format's own reader's error when they are one but malformed
 */
export function readStateDict(bytes: Uint8Array, source: string): StateDict {
  const detected = detectFormat(bytes);
  switch (detected.format) {
    case "safetensors":
      return readSafetensors(bytes, source);
    case "torch-zip":
    case "torch-legacy":
      return readTorchCheckpoint(bytes, source);
    default:
      throw new WeightsFormatError(source, detected.reason);
  }
}

/**
 * Reads a weights file of any format (see {@link readStateDict}): what `--pretrained`, `serve` and `predict`
 * load through {@link loadModel} and weights/pretrained.ts.
 */
export async function loadStateDictFile(path: string): Promise<StateDict> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    throw new Error(`cannot read weights ${path}: ${err instanceof Error ? err.message : err}`);
  }
  return readStateDict(bytes, path);
}

/** Where a checkpoint's pieces are: its config.json and its weights file. */
export interface CheckpointFiles {
  configPath: string;
  weightsPath: string;
  /** The directory (where tokenizer files are, too). */
  dir: string;
}

/** Locates config.json and the weights for a checkpoint directory or a weights file. */
export async function locateCheckpoint(path: string): Promise<CheckpointFiles> {
  if (await isDirectory(path)) {
    const configPath = join(path, "config.json");
    if (!await isFile(configPath)) throw new Error(`${path} is not a checkpoint directory: no config.json`);
    for (const name of WEIGHT_FILES) {
      const weightsPath = join(path, name);
      if (await isFile(weightsPath)) return { configPath, weightsPath, dir: path };
    }
    throw new Error(`${path} has no weights: expected one of ${WEIGHT_FILES.join(", ")}`);
  }
  if (await isFile(path)) {
    const dir = dirname(path);
    const configPath = join(dir, "config.json");
    if (!await isFile(configPath)) {
      throw new Error(`no config.json beside ${path}: the model's shape is unknown`);
    }
    return { configPath, weightsPath: path, dir };
  }
  const leftovers = await interruptedSaves(path);
  if (leftovers.length) {
    throw new Error(
      `checkpoint not found: ${path}, but an interrupted save left ${leftovers.join(" and ")}: ` +
        `the .staging folder is the complete new checkpoint, the .old folder the previous one; rename one to ${path}`,
    );
  }
  throw new Error(`checkpoint not found: ${path}`);
}

/** Hidden siblings that saveCheckpoint leaves only when it dies between its two renames. */
async function interruptedSaves(path: string): Promise<string[]> {
  const prefix = `.${basename(path)}.`;
  const found: string[] = [];
  try {
    for await (const entry of Deno.readDir(dirname(path))) {
      if (entry.isDirectory && entry.name.startsWith(prefix) && /\.(staging|old)$/.test(entry.name)) {
        found.push(join(dirname(path), entry.name));
      }
    }
  } catch { /* no parent directory: nothing to report */ }
  return found.sort();
}

/** Reads and validates a config.json. */
export async function loadConfig(path: string): Promise<DistilBertConfig> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new Error(`cannot read ${path}: ${err instanceof Error ? err.message : err}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`${path} is not valid JSON: ${err instanceof Error ? err.message : err}`);
  }
  return parseConfig(json, path);
}

/** A model loaded from a checkpoint, with where it came from. */
export interface LoadedModel {
  model: DistilBertClassifier;
  files: CheckpointFiles;
  report: LoadReport;
}

/**
 * Creates a model from a checkpoint directory or weights file and loads its weights (strict by default:
 * every key present, nothing extra, every shape equal). The model is disposed if loading fails.
 */
export async function loadModel(
  path: string,
  options: { device?: DeviceSpec | string; strict?: boolean } = {},
): Promise<LoadedModel> {
  const files = await locateCheckpoint(path);
  const config = await loadConfig(files.configPath);
  const state = await loadStateDictFile(files.weightsPath);
  const model = await DistilBertClassifier.create(config, { device: options.device });
  try {
    const report = model.loadStateDict(state, { strict: options.strict, source: files.weightsPath });
    return { model, files, report };
  } catch (err) {
    model.dispose();
    throw err;
  }
}

async function fsyncDir(path: string): Promise<void> {
  // A rename is durable only once the directory holding the new name is flushed too.
  using dir = await Deno.open(path, { read: true });
  await dir.sync();
}

/**
 * Writes a checkpoint directory (config.json, model.safetensors, distilbert_agnews.pt and, when given,
 * the tokenizer files). Atomic as a whole: everything is written and flushed into a hidden sibling
 * directory, which then replaces `dir` by two renames (the old one steps aside, the new one takes its
 * name). A failure at any point leaves the previous checkpoint in place; only a crash between the two
 * renames leaves `dir` missing, and then {@link locateCheckpoint} says where both copies are.
 * Call it between steps: the model must not have a nonblocking step in flight, so that both weight
 * files hold the same parameters.
 */
export async function saveCheckpoint(
  dir: string,
  model: DistilBertClassifier,
  options: { tokenizer?: SavableTokenizer } = {},
): Promise<void> {
  if (model.busy) {
    throw new Error("cannot save a checkpoint while a nonblocking step is running on the model");
  }
  const parent = dirname(dir);
  await Deno.mkdir(parent, { recursive: true });
  const id = crypto.randomUUID().slice(0, 8);
  const staging = join(parent, `.${basename(dir)}.${id}.staging`);
  const retired = join(parent, `.${basename(dir)}.${id}.old`);
  await Deno.mkdir(staging);
  let movedOld = false;
  try {
    await writeFileAtomic(
      join(staging, "config.json"),
      JSON.stringify(configToJson(model.config), null, 2) + "\n",
    );
    await writeSafetensorsFile(join(staging, "model.safetensors"), model.stateDict());
    await model.savePt(join(staging, PT_FILE));
    if (options.tokenizer) await options.tokenizer.saveHuggingFace(staging);
    await fsyncDir(staging);
    if (await isDirectory(dir)) {
      await Deno.rename(dir, retired);
      movedOld = true;
    }
    await Deno.rename(staging, dir);
    await fsyncDir(parent);
  } catch (err) {
    // Put the previous checkpoint back under its name and drop the unfinished one.
    if (movedOld && !await isDirectory(dir)) await Deno.rename(retired, dir).catch(() => {});
    await Deno.remove(staging, { recursive: true }).catch(() => {});
    throw err;
  }
  if (movedOld) await Deno.remove(retired, { recursive: true });
}
