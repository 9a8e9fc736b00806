/**
 * Where a training run's network comes from: the device it runs on, its shape (--model or the pretrained
 * source's config), its starting weights (--pretrained, a resumed state, or a fresh initialisation) and the
 * tokenizer that goes with them. The classes are always AG News's, whatever the source was trained for.
 * @module
 */

import { UsageError } from "../cli/args.ts";
import { DISTILBERT_BASE_UNCASED, type DistilBertConfig, PRESETS } from "../model/config.ts";
import { AG_NEWS_LABELS } from "../model/labels.ts";
import { cudaDeviceCount, type DistilBertClassifier, resolveDevice } from "../ffi/model.ts";
import { BertTokenizer } from "../data/tokenizer.ts";
import { loadConfig } from "../weights/checkpoint.ts";
import {
  checkSameShape,
  loadPretrained,
  pretrainedTokenizer,
  type PretrainedWeights,
} from "../weights/pretrained.ts";
import { bf16Units, cpuHasNativeBf16 } from "../util/cpu.ts";

/** Prints on rank 0 only (the rank-0 guard). */
export type Log = (message: string) => void;

/**
 * The device this rank trains on. Under DDP each process owns one GPU, cuda:LOCAL_RANK (its index on this
 * node), when there are GPUs; otherwise every rank uses the CPU.
 */
export async function chooseDevice(requested: string, worldSize: number, localRank: number): Promise<string> {
  const wantsCuda = requested === "auto" || requested === "cuda";
  if (worldSize > 1 && wantsCuda) return await cudaDeviceCount() > 0 ? `cuda:${localRank}` : "cpu";
  return requested;
}

/**
 * bf16 on a CPU pays only where the CPU multiplies bf16 natively (AVX-512-BF16 or AMX): there our bf16
 * training step measured 2.2x the samples/s of fp32 at the same accuracy (benchmarks/results/
 * agnews_finetune_cpu.md, a CPU with AVX-512-BF16 and no AMX). Elsewhere bf16 is converted to fp32 and back
 * and autocast's casts make it slower, so the flag is refused there, with the reason, unless forced.
 * Checked before anything is downloaded.
 */
export async function checkBf16(
  device: string,
  options: { bf16: boolean; forceBf16: boolean },
): Promise<void> {
  if (!options.bf16 || options.forceBf16 || await resolveDevice(device) >= 0 || cpuHasNativeBf16()) return;
  throw new UsageError(
    `--bf16 would make training slower on this CPU, so it stays fp32: it has no native bf16 instructions ` +
      `(neither avx512_bf16 nor amx_bf16${
        bf16Units().length ? `; it has ${bf16Units().join(", ")}` : ""
      }), ` +
      `so bf16 values would be converted to fp32 for every product and back, on top of autocast's casts. ` +
      `Pass --force-bf16 to measure it anyway.`,
  );
}

async function presetOrFile(name: string): Promise<DistilBertConfig> {
  const preset = PRESETS[name];
  if (preset) return structuredClone(preset) as DistilBertConfig;
  if (name.endsWith(".json")) return await loadConfig(name);
  throw new UsageError(`--model must be one of ${Object.keys(PRESETS).join(", ")} or a config.json path`);
}

/** The network to build, the weights to start from (if any) and the tokenizer that matches them. */
export interface ModelChoice {
  config: DistilBertConfig;
  pretrained?: PretrainedWeights;
  tokenizer: BertTokenizer;
}

/**
 * Resolves --model and --pretrained: --model names a shape, --pretrained brings weights (and, without
 * --model, the shape too). Both given must agree.
 */
export async function chooseModel(
  options: { model?: string; pretrained?: string },
  log: Log,
): Promise<ModelChoice> {
  const explicit = options.model ? await presetOrFile(options.model) : undefined;
  const pretrained = options.pretrained
    ? await loadPretrained(options.pretrained, { id2label: [...AG_NEWS_LABELS] })
    : undefined;
  if (explicit && pretrained) checkSameShape(explicit, pretrained.config, pretrained.source.description);
  const config: DistilBertConfig = {
    ...(explicit ?? pretrained?.config ?? structuredClone(DISTILBERT_BASE_UNCASED) as DistilBertConfig),
    id2label: [...AG_NEWS_LABELS],
  };
  const tokenizer = pretrained
    ? await pretrainedTokenizer(pretrained.source.dir, config, log)
    : await BertTokenizer.bundled();
  return { config, pretrained, tokenizer };
}

/** Names for a log line: all of them when few, else their top-level modules ("pooler.*, cls.*"). */
function summarizeKeys(keys: string[]): string {
  if (keys.length <= 4) return keys.join(", ");
  return [...new Set(keys.map((k) => `${k.replace(/^bert\./, "").split(".")[0]}.*`))].join(", ");
}

/**
 * Puts the starting weights into a freshly initialised model and says where they came from. On --resume
 * the training state brings every weight instead, so the pretrained ones are not loaded at all.
 */
export function loadStartingWeights(
  model: DistilBertClassifier,
  pretrained: PretrainedWeights | undefined,
  resume: boolean,
  log: Log,
): void {
  if (pretrained && resume) {
    log(`weights: from the training state (started from ${pretrained.source.description})`);
  } else if (pretrained) {
    const report = model.loadStateDict(pretrained.state, {
      strict: false,
      source: pretrained.source.weightsPath,
    });
    const mapped = pretrained.family === "bert" ? ", BERT weights mapped onto DistilBERT" : "";
    log(`weights: ${pretrained.source.description}${mapped} (${pretrained.source.weightsPath})`);
    if (pretrained.keptHead) {
      log(`  kept the source's ${model.config.id2label.length}-class head (same number of classes)`);
    }
    log(
      `  newly initialised: ${report.missing.join(", ") || "none"}; ` +
        `not used: ${pretrained.dropped.length + report.unexpected.length} tensors` +
        (pretrained.dropped.length ? ` (${summarizeKeys(pretrained.dropped)})` : ""),
    );
  } else {
    log("weights: none given, training from scratch (pass --pretrained for a fine-tuning run)");
  }
  // The weights live in the native model now: drop the TypeScript copies rather than carry them
  // (90 MB for MiniLM, 270 MB for DistilBERT) through the whole run.
  pretrained?.state.clear();
}
