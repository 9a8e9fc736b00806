/**
 * Evaluation on a test set, single process or as one rank of a DDP job: each rank scores a disjoint slice
 * of the rows, then the loss sum and the confusion matrix are all-reduced so every rank holds the global
 * figures (rank 0 logs them).
 * @module
 */

import type { DistilBertClassifier } from "../ffi/model.ts";
import { collateBatch, type TokenizedRows } from "../data/batches.ts";
import { type ClassificationReport, classificationReport, ConfusionMatrix } from "./metrics.ts";
import { argmaxRows } from "../util/argmax.ts";

/** Sums across ranks: a ProcessGroup, or nothing for a single process. */
export interface SumReducer {
  allReduceSum(values: Float64Array): Promise<Float64Array>;
}

/** Options of {@link evaluate}. */
export interface EvaluateOptions {
  /** This process's rank and the number of ranks (default 0 of 1). */
  rank?: number;
  worldSize?: number;
  /** Reduces the sums across ranks; required when worldSize > 1. */
  group?: SumReducer;
  /** Rows per forward pass (default 64). */
  batchSize?: number;
  /** bf16 autocast for the forward passes. */
  bf16?: boolean;
}

/** What {@link evaluate} measured, over all ranks. */
export interface EvaluationResult {
  /** Mean cross-entropy of the model's probabilities against the labels. */
  loss: number;
  confusion: ConfusionMatrix;
  report: ClassificationReport;
  /** This rank's rows (dataset indices) and its predicted label for each. */
  rows: Int32Array;
  predictions: Int32Array;
  seconds: number;
}

/** The rows rank `rank` scores: every worldSize-th row from its own offset, so slices never overlap. */
export function evaluationRows(length: number, rank: number, worldSize: number): Int32Array {
  return Int32Array.from(
    { length: Math.max(0, Math.ceil((length - rank) / worldSize)) },
    (_, i) => rank + i * worldSize,
  );
}

/**
 * Scores `dataset` with the model in eval mode (no dropout). Rows are taken shortest first so each batch
 * pads little; the order does not change any figure. Every rank must call this together under DDP.
 */
export async function evaluate(
  model: DistilBertClassifier,
  dataset: TokenizedRows,
  options: EvaluateOptions = {},
): Promise<EvaluationResult> {
  const started = performance.now();
  const { rank = 0, worldSize = 1, batchSize = 64 } = options;
  if (worldSize > 1 && !options.group) {
    throw new Error("evaluate: worldSize > 1 needs a group to reduce with");
  }
  const k = model.numLabels;
  const rows = evaluationRows(dataset.length, rank, worldSize);
  const byLength = rows.slice().sort((a, b) => dataset.lengths[a] - dataset.lengths[b] || a - b);
  const predicted = new Map<number, number>();
  const confusion = new ConfusionMatrix(k);
  let lossSum = 0;
  for (let i = 0; i < byLength.length; i += batchSize) {
    const indices = byLength.subarray(i, i + batchSize);
    const batch = collateBatch(dataset, indices);
    const { probabilities } = await model.predictAsync(batch, { bf16: options.bf16 });
    const labels = argmaxRows(probabilities, k);
    for (let r = 0; r < indices.length; r++) {
      lossSum -= Math.log(Math.max(probabilities[r * k + batch.labels[r]], 1e-30));
      predicted.set(indices[r], labels[r]);
    }
    confusion.add(batch.labels, labels);
  }
  // One all-reduce carries the loss sum and the confusion matrix: rank 0 then reports the whole test set.
  const local = Float64Array.of(lossSum, ...confusion.toArray());
  const reduced = options.group && worldSize > 1 ? await options.group.allReduceSum(local) : local;
  const all = ConfusionMatrix.fromArray(reduced.subarray(1));
  return {
    loss: reduced[0] / all.total,
    confusion: all,
    report: classificationReport(all, { labels: "all" }),
    rows,
    predictions: Int32Array.from(rows, (row) => predicted.get(row)!),
    seconds: (performance.now() - started) / 1000,
  };
}
