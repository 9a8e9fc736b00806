/**
 * From one rank's shard of indices (what the DistributedSampler hands this rank for an epoch) to padded,
 * labelled batches: {@link batchIndices} cuts the shard into batches, {@link collateBatch} pads one batch to
 * its longest row ({@link collate}), and {@link lengthGroupedIndices} optionally reorders the shard so that
 * rows of similar length share a batch, like transformers' `group_by_length`.
 *
 * ## Why length grouping happens inside the shard
 * The sampler's contract is PyTorch's DistributedSampler, bit for bit: for an epoch, every rank gets its own
 * disjoint shard, and all shards have the same size. Grouping only *reorders* a shard, so that contract is
 * untouched: the set of rows each rank sees is exactly PyTorch's, and every rank still has the same number
 * of rows, hence the same number of batches and optimizer steps. That matters for DDP, where a rank that runs
 * out of batches early leaves the others blocked in an all-reduce. Grouping the whole dataset first and then
 * sharding (as transformers' old `DistributedLengthGroupedSampler` did) would change which rows each rank
 * trains on, so the sampler could no longer be checked against PyTorch's.
 *
 * Ranks do not wait much for each other either: each megabatch is sorted longest first, so at step k every
 * rank is at the same position of its own sorted megabatch, a random sample from the same length
 * distribution, and the ranks' batch lengths at a step track each other closely.
 *
 * ## Randomness
 * The megabatches are cut from a random permutation of the shard. By default it comes from the project's
 * one seeded generator (util/random.ts's seededPermutation) with `seed + epoch` (the same seed rule as
 * DistributedSampler): a Fisher–Yates shuffle with unbiased (rejection-sampled) bounded draws. That is deterministic for a seed and
 * epoch on every machine, but not PyTorch's stream. To reproduce transformers' `get_length_grouped_indices`
 * exactly, pass `permutation: await randperm(shard.length, seed + epoch)` from ffi/model.ts, which is
 * `torch.randperm` with a seeded generator.
 * @module
 */

import { collate } from "./collate.ts";
import { seededPermutation } from "../util/random.ts";
import type { LabeledBatch } from "../model/batch.ts";

/** What batching needs from a dataset (a {@link TokenizedDataset} has all of it). */
export interface TokenizedRows {
  readonly length: number;
  /** Label of each row. */
  readonly labels: ArrayLike<number>;
  /** Token count of each row. */
  readonly lengths: ArrayLike<number>;
  /** The `[PAD]` id (default 0). */
  readonly padId?: number;
  /** The ids of row `i`. */
  ids(i: number): ArrayLike<number>;
}

/** Options of {@link batchIndices}. */
export interface BatchIndicesOptions {
  /** Leave out a last batch smaller than `batchSize` (default false, as DataLoader). */
  dropLast?: boolean;
}

/** Cuts `indices` into consecutive batches of `batchSize` (the last one smaller unless `dropLast`). */
export function batchIndices(
  indices: ArrayLike<number>,
  batchSize: number,
  options: BatchIndicesOptions = {},
): Int32Array[] {
  checkPositiveInt("batchSize", batchSize);
  const all = Int32Array.from(indices);
  const batches: Int32Array[] = [];
  for (let start = 0; start < all.length; start += batchSize) {
    const end = Math.min(all.length, start + batchSize);
    if (end - start < batchSize && options.dropLast) break;
    batches.push(all.subarray(start, end));
  }
  return batches;
}

/** Options of {@link collateBatch}. */
export interface CollateBatchOptions {
  /** Round the padded length up to a multiple of this (8 suits tensor cores); default 1. */
  padToMultipleOf?: number;
  /** The `[PAD]` id; default the dataset's `padId`, else 0. */
  padId?: number;
}

/**
 * The rows `indices` of `dataset` as one batch, in that order, padded to the longest of them (dynamic
 * padding) with attention mask 0 on the padding, and their labels.
 */
export function collateBatch(
  dataset: TokenizedRows,
  indices: ArrayLike<number>,
  options: CollateBatchOptions = {},
): LabeledBatch {
  const rows = Array.from(indices);
  const labels = new Int32Array(rows.length);
  const sequences = rows.map((index, k) => {
    checkIndex(index, dataset.length);
    labels[k] = dataset.labels[index];
    return dataset.ids(index);
  });
  const batch = collate(sequences, {
    padId: options.padId ?? dataset.padId ?? 0,
    padToMultipleOf: options.padToMultipleOf ?? 1,
  });
  return { ...batch, labels };
}

/** Options of {@link lengthGroupedIndices}. */
export interface LengthGroupOptions {
  /** Seed of the permutation (default 0); the generator is seeded with `seed + epoch`. */
  seed?: number;
  /** The epoch (default 0), so that each epoch groups differently. */
  epoch?: number;
  /**
   * Batches per megabatch. Default as transformers: `min(floor(n / (4 × batchSize)), 50)`, at least 1.
   */
  megaBatchMult?: number;
  /**
   * A permutation of `0 … indices.length - 1` to use instead of the built-in generator, e.g.
   * `await randperm(indices.length, seed + epoch)` to match transformers bit for bit.
   */
  permutation?: ArrayLike<number | bigint>;
}

/**
 * transformers' `get_length_grouped_indices` applied to one shard: `indices` reordered so that consecutive
 * runs of `batchSize` rows have similar lengths. The shard is permuted, cut into megabatches of
 * `megaBatchMult × batchSize` rows, each megabatch is sorted by length, longest first (stable, so ties keep
 * the permutation's order), and the row with the greatest length of all is swapped to the very front, so
 * the first batch is the largest (an out-of-memory error shows at step 1, not hours in).
 *
 * Returns the same multiset of indices as `indices`. `lengths[i]` is the length of dataset row `i`.
 */
export function lengthGroupedIndices(
  indices: ArrayLike<number>,
  lengths: ArrayLike<number>,
  batchSize: number,
  options: LengthGroupOptions = {},
): Int32Array {
  checkPositiveInt("batchSize", batchSize);
  const n = indices.length;
  const out = new Int32Array(n);
  if (n === 0) return out;
  const { seed = 0, epoch = 0 } = options;
  const mult = options.megaBatchMult ?? Math.max(1, Math.min(Math.floor(n / (batchSize * 4)), 50));
  checkPositiveInt("megaBatchMult", mult);
  const perm = options.permutation === undefined
    ? seededPermutation(n, seed + epoch)
    : checkedPermutation(options.permutation, n);
  const shardLengths = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    checkIndex(indices[k], lengths.length);
    shardLengths[k] = lengths[indices[k]];
  }
  const lengthOf = (position: number) => shardLengths[position];

  const megaSize = mult * batchSize;
  const megaStarts: number[] = [];
  for (let start = 0; start < n; start += megaSize) {
    const chunk = Array.from(perm.subarray(start, Math.min(n, start + megaSize)));
    chunk.sort((a, b) => lengthOf(b) - lengthOf(a)); // Array.prototype.sort is stable, as Python's sorted
    out.set(chunk, start);
    megaStarts.push(start);
  }
  // The megabatch whose first row is longest (the first one on ties, as torch.argmax) gives it to the front.
  let best = 0;
  for (const start of megaStarts) if (lengthOf(out[start]) > lengthOf(out[best])) best = start;
  [out[0], out[best]] = [out[best], out[0]];
  for (let k = 0; k < n; k++) out[k] = indices[out[k]];
  return out;
}

/** Options of {@link shardBatches}. */
export interface ShardBatchOptions extends BatchIndicesOptions, CollateBatchOptions, LengthGroupOptions {
  batchSize: number;
  /** Reorder the shard with {@link lengthGroupedIndices} first (default false). */
  groupByLength?: boolean;
}

/** A batch and the dataset rows it holds. */
export interface IndexedBatch extends LabeledBatch {
  indices: Int32Array;
}

/**
 * One epoch of one rank: its shard (optionally length-grouped), cut into batches, each collated on demand.
 * Every rank with a shard of the same size yields the same number of batches.
 */
export function* shardBatches(
  dataset: TokenizedRows,
  shard: ArrayLike<number>,
  options: ShardBatchOptions,
): Generator<IndexedBatch> {
  const order = options.groupByLength
    ? lengthGroupedIndices(shard, dataset.lengths, options.batchSize, options)
    : shard;
  for (const indices of batchIndices(order, options.batchSize, options)) {
    yield { ...collateBatch(dataset, indices, options), indices };
  }
}

/** Token slots of a set of batches: real tokens, and what dynamic and fixed padding compute. */
export interface PaddingCost {
  /** Tokens that are not padding. */
  real: number;
  /** Slots with padding to each batch's longest row (rounded up to `padToMultipleOf`). */
  dynamic: number;
  /** Slots with every row padded to `fixedLength`. */
  fixed: number;
}

/** Counts the token slots of `batches` over rows with `lengths`, dynamically padded or padded to `fixedLength`. */
export function paddingCost(
  lengths: ArrayLike<number>,
  batches: readonly ArrayLike<number>[],
  fixedLength: number,
  padToMultipleOf = 1,
): PaddingCost {
  let real = 0, dynamic = 0, fixed = 0;
  for (const batch of batches) {
    let longest = 0;
    for (let k = 0; k < batch.length; k++) {
      const length = lengths[batch[k]];
      real += length;
      longest = Math.max(longest, length);
    }
    dynamic += batch.length * Math.ceil(longest / padToMultipleOf) * padToMultipleOf;
    fixed += batch.length * fixedLength;
  }
  return { real, dynamic, fixed };
}

function checkedPermutation(permutation: ArrayLike<number | bigint>, n: number): Int32Array {
  if (permutation.length !== n) {
    throw new RangeError(`permutation has ${permutation.length} entries, the shard ${n}`);
  }
  const perm = new Int32Array(n);
  const seen = new Uint8Array(n);
  for (let k = 0; k < n; k++) {
    const v = Number(permutation[k]);
    if (!Number.isInteger(v) || v < 0 || v >= n || seen[v]) {
      throw new RangeError(`permutation is not a permutation of 0..${n - 1} (entry ${k} is ${v})`);
    }
    seen[v] = 1;
    perm[k] = v;
  }
  return perm;
}

function checkIndex(index: number, length: number): void {
  if (!Number.isInteger(index) || index < 0 || index >= length) {
    throw new RangeError(`index ${index} is outside the dataset (length ${length})`);
  }
}

function checkPositiveInt(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
}
