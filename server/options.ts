/**
 * `deno task serve`'s flags: one table that parses them, checks them and prints the usage, so every
 * default is written once (the request limits' defaults are {@link DEFAULT_LIMITS}, the checkpoint's is
 * model/checkpoints.ts's). Checks that involve two flags, or the environment, follow the table as code.
 * @module
 */

import { UsageError } from "../cli/args.ts";
import { flags, parseFlagTable, usage } from "../cli/flags.ts";
import { CHECKPOINT_FLAG, DEVICE_FLAG, THREADS_FLAG } from "../inference/flags.ts";
import type { PredictorOptions } from "./predictor.ts";
import { DEFAULT_LIMITS, type RequestLimits } from "./schemas.ts";

const HEADER = `Usage: deno task serve [options]

Serves the classifier over HTTP: POST /predict, GET /health, /metrics, /openapi.json, and a page at /.`;

/** The port when neither --port nor $PORT gives one: the port Hugging Face Spaces expects. */
const DEFAULT_PORT = 7860;

/** The flags of `deno task serve`, in the order the usage lists them. */
export const SERVE_FLAGS = {
  checkpoint: CHECKPOINT_FLAG,
  host: flags.string({
    placeholder: "HOST",
    help: "interface to listen on",
    default: "127.0.0.1",
    defaultText: "127.0.0.1; 0.0.0.0 in a container",
  }),
  // A string, not an int: $PORT stands in for it, and both get the same check after parsing.
  port: flags.optionalString({
    placeholder: "N",
    help: "port",
    defaultText: `$PORT, else ${DEFAULT_PORT}, the Hugging Face Spaces port`,
  }),
  device: DEVICE_FLAG,
  "max-batch": flags.int({ help: "most texts per batch; 1 turns dynamic batching off", default: 64 }),
  "max-wait-ms": flags.number({
    placeholder: "MS",
    help: "longest a batch waits for company once the model is free",
    default: 5,
  }),
  "max-queue": flags.int({
    help: "texts waiting before requests get 503; at least --max-texts",
    default: 1024,
  }),
  "max-length": flags.int({
    help: "tokens per text, [CLS] and [SEP] included, at least 3 and at most the model's " +
      "max_position_embeddings; longer texts are truncated",
    default: 128,
  }),
  "max-text-chars": flags.int({
    help: "longest accepted text, characters",
    default: DEFAULT_LIMITS.maxTextChars,
  }),
  "max-texts": flags.int({
    help: 'most texts in one {"texts": [...]} request',
    default: DEFAULT_LIMITS.maxTexts,
  }),
  "max-body-bytes": flags.int({ help: "largest request body", default: DEFAULT_LIMITS.maxBodyBytes }),
  bf16: flags.boolean({
    help: "bf16 autocast: on CPUs with AMX or AVX-512-BF16 and on GPUs, batches run faster (2.5x in " +
      "process on a 2-vCPU Xeon); probabilities move slightly (up to 5e-4 in the benchmark's check). " +
      "Without it: fp32",
  }),
  threads: THREADS_FLAG,
  "drain-timeout-s": flags.number({
    placeholder: "N",
    help: "on SIGTERM, longest wait for requests in flight; a second signal exits at once",
    default: 30,
  }),
};

/** The help text of `deno task serve`. */
export const SERVE_USAGE: string = usage(HEADER, SERVE_FLAGS);

/** A server's settings, checked. */
export interface ServeOptions {
  /** Undefined: the default checkpoint (model/checkpoints.ts's defaultCheckpoint()). */
  checkpoint?: string;
  host: string;
  port: number;
  device: string;
  limits: RequestLimits;
  /** Batching, token length and precision. */
  predictor: PredictorOptions;
  threads?: number;
  drainTimeoutMs: number;
}

/**
 * Parses serve's command line; `envPort` is $PORT, used when --port is absent (empty counts as unset).
 * Undefined means `--help` was asked for.
 * @throws UsageError naming the flag, for an unknown flag, a bad value or flags that contradict each other.
 */
export function parseServeOptions(args: string[], envPort?: string): ServeOptions | undefined {
  const { values: v, positionals, help } = parseFlagTable(args, SERVE_FLAGS);
  if (help) return undefined;
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const portText = v.port ?? (envPort || undefined);
  // Decimal digits only: Number() would also take "0x1F90", "1e3" or " 80".
  const port = portText === undefined ? DEFAULT_PORT : /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 0 && port <= 65535)) {
    throw new UsageError(`the port must be an integer in 0..65535, got "${portText}"`);
  }
  const limits: RequestLimits = {
    maxTextChars: v["max-text-chars"],
    maxTexts: v["max-texts"],
    maxBodyBytes: v["max-body-bytes"],
  };
  const maxLength = v["max-length"];
  if (maxLength < 3) {
    throw new UsageError(`--max-length must be at least 3 ([CLS], one token, [SEP]), got ${maxLength}`);
  }
  if (v["max-queue"] < limits.maxTexts) {
    throw new UsageError(
      `--max-queue (${
        v["max-queue"]
      }) must be at least --max-texts (${limits.maxTexts}), or a full request could never be queued`,
    );
  }
  return {
    checkpoint: v.checkpoint,
    host: v.host,
    port,
    device: v.device,
    limits,
    predictor: {
      maxBatchSize: v["max-batch"],
      maxWaitMs: v["max-wait-ms"],
      maxQueue: v["max-queue"],
      maxLength,
      bf16: v.bf16,
    },
    threads: v.threads,
    drainTimeoutMs: 1000 * v["drain-timeout-s"],
  };
}
