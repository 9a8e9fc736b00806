/**
 * `deno task train [flags]`: fine-tunes DistilBERT on AG News, on one device or, when started by a launcher
 * (`deno task ddp --gpus N`, `./run_ddp.sh`, `torchrun --no-python`), as one rank of DistributedDataParallel.
 *
 * The loop reads top to bottom, one named phase after another: who am I (rank, device), the model, the data,
 * DDP, then per epoch: train, evaluate, save. Rank 0 alone prints, writes metrics and saves; every rank
 * computes. The flags are in training/options.ts, where the model comes from in training/model_setup.ts.
 *
 * Each epoch's line says where its time went (compute, waiting on the gradients' all-reduce, building
 * batches: training/trace_breakdown.ts), and `--trace FILE` records the whole run as a timeline, one track per
 * rank, with every gradient bucket's all-reduce (training/trace.ts).
 * @module
 */

import { join } from "node:path";
import { positiveInt, runCli } from "./cli/args.ts";
import { DistilBertClassifier, monotonicNs, setNumThreads, trimHostMemory } from "./ffi/model.ts";
import { ProcessGroup, type ProcessGroupOptions, processGroupOptionsFromEnv } from "./ffi/process_group.ts";
import { loadAgNews, subset } from "./data/ag_news.ts";
import type { BertTokenizer } from "./data/tokenizer.ts";
import { TokenizedDataset } from "./data/dataset.ts";
import { DistributedSampler } from "./data/sampler.ts";
import { shardBatches } from "./data/batches.ts";
import { linearScheduleWithWarmup, warmupSteps } from "./training/schedule.ts";
import { type MetricsRecord, MetricsWriter, readMetrics, RunningMetrics } from "./training/metrics.ts";
import { evaluate } from "./training/evaluate.ts";
import { Progress } from "./training/progress.ts";
import { pointsFromMetrics, renderChart } from "./training/chart.ts";
import { TensorBoardWriter } from "./training/tensorboard.ts";
import { parseTrainOptions, TRAIN_USAGE, type TrainOptions } from "./training/options.ts";
import { describeTrace, finishTrace, traced, TraceRecorder } from "./training/trace.ts";
import { TimeBreakdown } from "./training/trace_breakdown.ts";
import {
  checkBf16,
  chooseDevice,
  chooseModel,
  loadStartingWeights,
  type Log,
} from "./training/model_setup.ts";
import { loadTrainState, type LoopState, saveTrainState, trainStatePath } from "./training/train_state.ts";
import { saveCheckpoint } from "./weights/checkpoint.ts";
import { exists, writeFileAtomic } from "./util/fs.ts";
import { peakRssBytes } from "./util/memory.ts";

/** Who this process is in the job, from torchrun's environment contract (no WORLD_SIZE: a lone process). */
interface Rank {
  rank: number;
  worldSize: number;
  /** The rank-0 guard: one process prints and writes, all of them compute. */
  isMain: boolean;
  log: Log;
  /** Where to rendezvous, when there are peers. */
  group?: ProcessGroupOptions;
}

function whoAmI(): Rank {
  const group = processGroupOptionsFromEnv();
  const rank = group?.rank ?? 0, worldSize = group?.worldSize ?? 1;
  const isMain = rank === 0;
  return { rank, worldSize, isMain, log: (m) => isMain && console.log(m), group };
}

/** libtorch's thread count: --threads, else OMP_NUM_THREADS (as in PyTorch), else libtorch's own choice. */
async function setThreads(threads: number | undefined): Promise<void> {
  const omp = Deno.env.get("OMP_NUM_THREADS");
  if (threads) await setNumThreads(threads);
  else if (omp) await setNumThreads(positiveInt("OMP_NUM_THREADS", omp, 1));
}

/** The tokenized training and test sets. Every rank loads the same records; the token cache has one writer. */
async function loadData(options: TrainOptions, tokenizer: BertTokenizer, maxLength: number, log: Log) {
  const split = async (which: "train" | "test", size: number | undefined) => {
    const records = await loadAgNews(options.data, { split: which });
    return size === undefined || size >= records.length
      ? records
      : subset(records, { stratified: size, seed: options.seed });
  };
  const [trainRecords, testRecords] = await Promise.all([
    split("train", options.trainSubset),
    split("test", options.evalSubset),
  ]);
  const [train, test] = await Promise.all([
    TokenizedDataset.build(trainRecords, tokenizer, { maxLength }),
    TokenizedDataset.build(testRecords, tokenizer, { maxLength }),
  ]);
  log(`data: ${train.length} training rows, ${test.length} test rows (max length ${maxLength})`);
  return { train, test };
}

/** Joins the process group and hands the model to c10d's Reducer, which averages gradients during backward. */
async function joinDdp(me: Rank, model: DistilBertClassifier, backend: TrainOptions["backend"]) {
  if (!me.group || me.worldSize < 2) return undefined;
  // NCCL moves CUDA tensors between GPUs; Gloo moves CPU tensors (the override flag picks either).
  const group = await ProcessGroup.create({
    ...me.group,
    backend: backend ?? (model.deviceIndex >= 0 ? "nccl" : "gloo"),
  });
  await group.attachDdp(model);
  return group;
}

/** metrics.jsonl (rank 0): a resumed run keeps the records of the epochs it is not repeating. */
async function openMetrics(me: Rank, logDir: string, resumed: LoopState | undefined) {
  const path = join(logDir, "metrics.jsonl");
  if (!me.isMain) return { history: [] as MetricsRecord[], writer: undefined };
  await Deno.mkdir(logDir, { recursive: true });
  const history: MetricsRecord[] = resumed && await exists(path)
    ? (await readMetrics(path)).filter((r) => r.epoch <= resumed.epoch)
    : [];
  if (resumed) await writeFileAtomic(path, history.map((r) => JSON.stringify(r) + "\n").join(""));
  return { history, writer: await MetricsWriter.open(path, { append: resumed !== undefined }) };
}

/** What one epoch of training needs besides the model. */
interface EpochPlan {
  options: TrainOptions;
  me: Rank;
  train: TokenizedDataset;
  sampler: DistributedSampler;
  schedule: (step: number) => number;
  microBatches: number;
  stepsPerEpoch: number;
  maxLength: number;
  signal: AbortSignal;
  /** Rank 0's TensorBoard event file (undefined on other ranks and with --no-tensorboard). */
  tensorboard?: TensorBoardWriter;
  /** This rank's timeline, with --trace. */
  tracer?: TraceRecorder;
}

/**
 * One pass over this rank's shard. Each micro-batch is one native call: forward, backward (during which
 * DDP all-reduces gradient buckets) and, every --grad-accum micro-batches, clipping and AdamW.
 * Returns the optimizer step count after the epoch, this rank's running loss and accuracy, and where its
 * time went.
 */
async function trainOneEpoch(model: DistilBertClassifier, plan: EpochPlan, epoch: number, step: number) {
  const { options, me, sampler, tracer } = plan;
  const time = new TimeBreakdown();
  // set_epoch: every rank draws the same permutation this epoch (shards stay disjoint) and a new one next
  // epoch. Forgetting it repeats epoch 0's order forever.
  sampler.setEpoch(epoch);
  const shuffleStarted = performance.now();
  const shard = await sampler.indices();
  const shuffled = performance.now();
  time.addDataMs(shuffled - shuffleStarted);
  tracer?.span("shuffle shard", "data", shuffleStarted, shuffled, { epoch: epoch + 1 });
  const running = new RunningMetrics();
  const progress = me.isMain
    ? new Progress({ total: plan.stepsPerEpoch, label: `epoch ${epoch + 1}/${options.epochs}` })
    : undefined;
  let micro = 0;
  // The optimizer step's micro-batches, for its TensorBoard point. Like nanoGPT's printed loss, it is rank 0's
  // own shard: averaging it over ranks would cost an all-reduce per step (the epoch figures are global).
  let sinceStep = new RunningMetrics();
  let stepStarted = performance.now();
  const batches = shardBatches(plan.train, shard, {
    batchSize: options.batchSize,
    groupByLength: options.groupByLength,
    // Fixed padding = rounding every batch up to a multiple of the maximum length.
    padToMultipleOf: options.padToMax ? plan.maxLength : undefined,
    seed: options.seed,
    epoch,
  });
  for (;;) {
    if (plan.signal.aborted) break;
    // Batches are collated on demand: timing the iterator is timing the data pipeline.
    const dataStarted = performance.now();
    const next = batches.next();
    const dataEnded = performance.now();
    if (next.done) break;
    const batch = next.value;
    time.addDataMs(dataEnded - dataStarted);
    micro++;
    const apply = micro % options.gradAccum === 0 || micro === plan.microBatches;
    const result = await model.trainStepAsync(batch, {
      lr: plan.schedule(step),
      maxGradNorm: options.maxGradNorm,
      lossScale: 1 / options.gradAccum,
      apply,
      bf16: options.bf16,
      padded: options.paddedCompute,
    });
    time.addStep(result.timing);
    tracer?.step(
      {
        epoch: epoch + 1,
        step: step + 1,
        micro: (micro - 1) % options.gradAccum,
        sync: apply,
        rows: batch.batchSize,
        seqLen: batch.seqLen,
      },
      dataStarted,
      dataEnded,
      result.timing,
      model.drainTrace(),
    );
    running.add(result);
    sinceStep.add(result);
    if (apply) {
      const now = performance.now();
      plan.tensorboard?.scalars({
        "train/loss": sinceStep.meanLoss,
        "train/accuracy": sinceStep.accuracy,
        "train/lr": plan.schedule(step),
        // All ranks step together, each on its own batch: the job's rate is this rank's times the world size.
        "train/samples_per_s": (sinceStep.count * me.worldSize) / ((now - stepStarted) / 1000),
        // The norm of the averaged (all-reduced) gradients, before clipping: the same on every rank.
        "train/grad_norm": result.gradNorm,
      }, step + 1);
      sinceStep = new RunningMetrics();
      step++;
      // Every few steps, hand the memory the allocator keeps free back to the OS: with batches of changing
      // lengths its arenas otherwise grow all run long (benchmarks/results/agnews_finetune_cpu.md).
      if (options.trimMemoryEvery && step % options.trimMemoryEvery === 0) {
        await traced(tracer, "trim host memory", "io", trimHostMemory);
      }
      stepStarted = performance.now();
      progress?.update({
        step: step - epoch * plan.stepsPerEpoch,
        samples: running.count * me.worldSize,
        loss: result.loss,
      });
    }
  }
  progress?.finish();
  return { step, running, time };
}

/** The run's settings as a Markdown table, for TensorBoard's text tab. */
function flagsMarkdown(options: TrainOptions, worldSize: number): string {
  const rows = Object.entries({ ...options, worldSize }).filter(([, v]) => v !== undefined);
  return ["| setting | value |", "| --- | --- |", ...rows.map(([k, v]) => `| ${k} | ${String(v)} |`)].join(
    "\n",
  );
}

async function main(args: string[]): Promise<void> {
  const options = parseTrainOptions(args);
  if (!options) return console.log(TRAIN_USAGE);
  const tracePath = options.trace;

  // --- who am I? torchrun's environment contract decides; the device comes first because it decides
  // whether bf16 is allowed, before anything is downloaded.
  const me = whoAmI();
  const { log, rank, worldSize, isMain } = me;
  await setThreads(options.threads);
  const device = await chooseDevice(options.device, worldSize, Number(Deno.env.get("LOCAL_RANK") ?? 0));
  await checkBf16(device, options);

  // --- the model's shape and starting weights: they bound the sequence length and bring the tokenizer.
  const { config, pretrained, tokenizer } = await chooseModel(options, log);
  const maxLength = Math.min(options.maxLength, config.max_position_embeddings);
  if (maxLength < options.maxLength) log(`max length capped at the model's ${maxLength} positions`);

  // --- data
  const { train, test } = await loadData(options, tokenizer, maxLength, log);

  // --- the model: a different seed per rank on purpose, DDP's broadcast from rank 0 makes them equal.
  using model = await DistilBertClassifier.create(config, { device, seed: options.seed + rank });
  loadStartingWeights(model, pretrained, options.resume, log);
  model.configureOptimizer({ weightDecay: options.weightDecay });
  const resumed = options.resume
    ? await loadTrainState(trainStatePath(options.logDir, rank), model, worldSize)
    : undefined;
  if (resumed) log(`resuming after epoch ${resumed.epoch} (optimizer step ${resumed.step})`);
  log(
    `model: ${model.parameterCount().toLocaleString()} parameters on ${model.device}, ${worldSize} process(es)`,
  );

  // --- DDP. A traced model must be tracing before DDP is attached: that is when the Reducer gets the hook
  // that times each bucket's all-reduce (an untraced run keeps the Reducer's default path, untouched).
  if (tracePath) model.enableTracing();
  const group = await joinDdp(me, model, options.backend);
  // Clock calibration and the start-of-run barrier readings that align the ranks' clocks (every rank).
  const tracer = tracePath
    ? await TraceRecorder.start({
      rank,
      worldSize,
      parameters: model.parameterCount(),
      nativeNs: monotonicNs,
      group,
    })
    : undefined;
  const interrupt = new AbortController();
  const stop = () => interrupt.abort();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);

  try {
    // --- the schedule lives in TypeScript: one learning rate per optimizer step.
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
    const { history, writer } = await openMetrics(me, options.logDir, resumed);
    using _metrics = writer;
    // TensorBoard's event file beside metrics.jsonl (rank 0): `tensorboard --logdir <log dir>`. A resumed run
    // opens a new file in the same folder; TensorBoard reads them as one run.
    using tensorboard = me.isMain && options.tensorboard
      ? await TensorBoardWriter.open(options.logDir)
      : undefined;
    tensorboard?.text("run/flags", flagsMarkdown(options, worldSize), resumed?.step ?? 0);
    const plan: EpochPlan = {
      options,
      me,
      train,
      sampler,
      schedule,
      microBatches,
      stepsPerEpoch,
      maxLength,
      signal: interrupt.signal,
      tensorboard,
      tracer,
    };
    const record = (r: MetricsRecord) => {
      history.push(r);
      writer?.write(r);
    };

    let { step, bestLoss, sinceBest } = resumed ?? { step: 0, bestLoss: Infinity, sinceBest: 0 };
    for (let epoch = resumed?.epoch ?? 0; epoch < options.epochs && !interrupt.signal.aborted; epoch++) {
      // --- one epoch of training
      const started = performance.now();
      const trained = await trainOneEpoch(model, plan, epoch, step);
      step = trained.step;
      if (interrupt.signal.aborted) break;
      // Each rank saw only its shard: sum loss, correct and count over ranks so rank 0 logs global figures.
      // The time breakdown rides along in the same all-reduce (its sums become rank means).
      const local = Float64Array.of(...trained.running.toArray(), ...trained.time.toArray());
      const sums = group
        ? await traced(tracer, "all-reduce metrics", "sync", () => group.allReduceSum(local))
        : local;
      const global = RunningMetrics.fromArray(sums.subarray(0, RunningMetrics.LENGTH));
      const time = TimeBreakdown.fromArray(sums.subarray(RunningMetrics.LENGTH)).scaled(1 / worldSize);
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

      // --- evaluate: each rank scores a disjoint slice of the test set (no padding duplicates), then the
      // sums and the confusion matrix are all-reduced.
      const evaluation = await traced(
        tracer,
        "evaluate",
        "eval",
        () => evaluate(model, test, { rank, worldSize, group, bf16: options.bf16 }),
      );
      // Evaluation's batches are freed now too.
      if (options.trimMemoryEvery) await traced(tracer, "trim host memory", "io", trimHostMemory);
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
      // Where the epoch's training time went (rank means): when adding ranks stops paying, comm wait grows.
      tensorboard?.scalars({
        "train/time_compute_s": time.computeS,
        "train/time_comm_wait_s": time.commWaitS,
        "train/time_data_s": time.dataS,
      }, step);
      tensorboard?.scalars({
        "eval/loss": evalLoss,
        "eval/accuracy": report.accuracy,
        "eval/macro_f1": report.macroF1,
        ...Object.fromEntries(config.id2label.map((name, c) => [`eval/f1_${name}`, report.perClass[c].f1])),
      }, step);
      tensorboard?.flush();
      const peak = peakRssBytes();
      log(
        `epoch ${epoch + 1}: train loss ${global.meanLoss.toFixed(4)} acc ${
          (global.accuracy * 100).toFixed(2)
        }% ` +
          `| ${(global.count / seconds).toFixed(1)} samples/s, ${seconds.toFixed(1)} s ` +
          `| ${time.format(seconds)}${worldSize > 1 ? " (rank means)" : ""} ` +
          `| eval loss ${evalLoss.toFixed(4)} acc ${(report.accuracy * 100).toFixed(2)}% ` +
          `macro-F1 ${report.macroF1.toFixed(4)}` +
          (peak
            ? ` | peak memory ${(peak / 2 ** 30).toFixed(2)} GiB${worldSize > 1 ? " (rank 0)" : ""}`
            : ""),
      );

      // --- save: rank 0 writes the checkpoint when the eval loss improved; every rank writes its own
      // training state; the barrier keeps anyone from racing ahead (or exiting) while a file is half written.
      if (evalLoss < bestLoss) {
        bestLoss = evalLoss;
        sinceBest = 0;
        if (isMain) {
          await traced(
            tracer,
            "save checkpoint",
            "io",
            () => saveCheckpoint(options.output, model, { tokenizer }),
          );
          log(`saved ${options.output} (best eval loss so far)`);
        }
      } else sinceBest++;
      const loop = { epoch: epoch + 1, step, bestLoss, sinceBest };
      await traced(
        tracer,
        "save training state",
        "io",
        () => saveTrainState(trainStatePath(options.logDir, rank), model, loop, worldSize),
      );
      if (group) await traced(tracer, "barrier", "sync", () => group.barrier());
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
    if (interrupt.signal.aborted) throw new Error("interrupted by a signal; the last checkpoint is kept");
    // The timeline: every rank writes its part, rank 0 merges them on one clock (training/trace.ts).
    if (tracer && tracePath) {
      const merged = await finishTrace(tracer, tracePath, group);
      if (merged) log(describeTrace(tracePath, merged));
    }
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

if (import.meta.main) await runCli(TRAIN_USAGE, () => main(Deno.args));
