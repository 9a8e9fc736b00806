/**
 * `DistributedSampler`: which examples each DDP process (rank) trains on, index for index and in the same
 * order as PyTorch's `torch.utils.data.DistributedSampler`.
 *
 * ## What it is for
 *
 * In DistributedDataParallel every process holds a full replica of the model and trains on its own slice of
 * each epoch. After every backward pass the replicas all-reduce (average) their gradients, so they stay
 * identical. For that average to be worth `numReplicas` times the data, the slices must be
 * *disjoint* (no rank repeats another's examples) and *equally long* (every rank must run the same number of
 * steps, or the ranks that still have data block forever in an all-reduce the finished ranks never join).
 *
 * The sampler gets both without any communication: every rank computes the same permutation of the whole
 * dataset from the shared `seed + epoch`, pads or trims it to a multiple of `numReplicas`, and keeps every
 * `numReplicas`-th index starting at its own `rank`:
 *
 * ```
 * N = 10, numReplicas = 4, shuffle: the permutation of seed + epoch is, say, [6 1 8 3 0 9 2 5 7 4]
 * pad to 12 (dropLast = false) with the first indices again:  [6 1 8 3 0 9 2 5 7 4 | 6 1]
 * rank 0: 6 0 7   rank 1: 1 9 4   rank 2: 8 2 6   rank 3: 3 5 1
 * ```
 *
 * Padding means a few examples are seen twice per epoch (at most `numReplicas - 1` of them, or more when the
 * dataset is smaller than the world); `dropLast: true` instead drops the tail of the permutation so no
 * example repeats and up to `numReplicas - 1` are skipped that epoch (a different few each epoch, since the
 * permutation changes).
 *
 * ## Fidelity
 *
 * The permutation is libtorch's own `torch.randperm(N, generator=torch.Generator().manual_seed(seed + epoch))`
 * (via {@link randperm}), so a rank here reads exactly the examples, in exactly the order, that the same rank
 * of a Python PyTorch job would; data/sampler_test.ts checks this against Python on a grid of sizes, world
 * sizes, ranks, seeds, epochs and both `shuffle` and `dropLast` settings.
 *
 * @example
 * ```ts
 * const sampler = new DistributedSampler(dataset, { seed: 42 }); // numReplicas / rank from torchrun's env
 * for (let epoch = 0; epoch < epochs; epoch++) {
 *   sampler.setEpoch(epoch); // before drawing the epoch's indices, on every rank
 *   const order = await sampler.indices(); // sampler.length dataset indices for this rank
 *   // ... batch `order` and train
 * }
 * ```
 * @module
 */

import { randperm, randpermSync } from "../ffi/model.ts";

/** A dataset's size: a count, or anything with a `length` (an array, a dataset object). */
export type DatasetSize = number | { readonly length: number };

/** Options of {@link DistributedSampler}: PyTorch's keyword arguments, in camelCase. */
export interface DistributedSamplerOptions {
  /**
   * Number of processes in the job (the world size). Default: the `WORLD_SIZE` environment variable that
   * torchrun (and our launcher) sets in every process, or 1 when it is not set (a single process is a world
   * of one). PyTorch reads the same number from the initialised process group.
   */
  numReplicas?: number;
  /**
   * This process's rank, in `[0, numReplicas)`. Default: the `RANK` environment variable, or 0 when it is not
   * set. (Global rank, not `LOCAL_RANK`: the data are split across all processes of all machines.)
   */
  rank?: number;
  /** Shuffle the indices, with a new permutation each epoch (see {@link DistributedSampler.setEpoch}). Default: true. */
  shuffle?: boolean;
  /**
   * Seed of the shuffle. It must be the same on every rank, or the ranks' slices stop being disjoint. Any
   * integer in `[-2^63, 2^64)` (PyTorch's `Generator.manual_seed` range; negative seeds wrap as in
   * PyTorch). Default: 0.
   */
  seed?: number | bigint;
  /**
   * true: drop the tail of the permutation so it divides evenly among the ranks (no example repeats).
   * false: pad it with indices from its start (every example is seen). Default: false.
   */
  dropLast?: boolean;
  /**
   * Where `WORLD_SIZE` and `RANK` are looked up when `numReplicas` / `rank` are not given. Default:
   * `Deno.env.get` (which needs `--allow-env`). Not in PyTorch; for launchers and tests.
   */
  env?: (name: string) => string | undefined;
}

const MIN_SEED = -(2n ** 63n);
const MAX_SEED = 2n ** 64n - 1n;
/** Indices are returned as an Int32Array. */
const MAX_DATASET_SIZE = 2 ** 31 - 1;

/**
 * Restricts each DDP rank to its own equal, disjoint (up to padding) share of a dataset, exactly as
 * `torch.utils.data.DistributedSampler` does.
 *
 * The dataset's size is read once, at construction (PyTorch, too, assumes it never changes). Draw an
 * epoch's indices with {@link DistributedSampler.indices} (async: the first call may load the native
 * library), or {@link DistributedSampler.indicesSync} once the library is loaded. Both return a fresh
 * `Int32Array` of {@link DistributedSampler.length} dataset indices; for 120k examples that is one libtorch
 * `randperm` (about 2 ms) and one strided pass.
 */
export class DistributedSampler {
  /** Number of examples in the dataset (`len(dataset)`). */
  readonly datasetSize: number;
  /** Number of processes sharing the dataset (PyTorch's `num_replicas`). */
  readonly numReplicas: number;
  /** This process's rank in `[0, numReplicas)`. */
  readonly rank: number;
  /** Whether indices are shuffled. */
  readonly shuffle: boolean;
  /** Seed of the shuffle, shared by all ranks. */
  readonly seed: bigint;
  /** Whether the tail is dropped (true) or the permutation padded (false) to a multiple of `numReplicas`. */
  readonly dropLast: boolean;
  /** Indices per rank per epoch (PyTorch's `num_samples`, `len(sampler)`): the same on every rank. */
  readonly length: number;
  /** Indices per epoch over all ranks: `length * numReplicas` (PyTorch's `total_size`). */
  readonly totalSize: number;
  #epoch = 0;

  /**
   * @param dataset the dataset, or its size.
   * @param options PyTorch's arguments; `numReplicas` and `rank` default to torchrun's `WORLD_SIZE` and
   * `RANK` (1 and 0 without them).
   * @throws Error naming the option, for a non-integer or out-of-range size, world size, rank or seed.
   */
  constructor(dataset: DatasetSize, options: DistributedSamplerOptions = {}) {
    const size = typeof dataset === "number" ? dataset : dataset?.length;
    if (!Number.isInteger(size) || size < 0 || size > MAX_DATASET_SIZE) {
      throw new Error(
        `DistributedSampler: dataset size must be an integer in [0, ${MAX_DATASET_SIZE}], got ${size}`,
      );
    }
    const { shuffle = true, seed = 0, dropLast = false } = options;
    const env = options.env ?? readEnv;
    const numReplicas = options.numReplicas ?? fromEnv(env, "WORLD_SIZE", "RANK", "numReplicas", 1);
    if (!Number.isSafeInteger(numReplicas) || numReplicas < 1) {
      throw new Error(`DistributedSampler: numReplicas must be an integer >= 1, got ${numReplicas}`);
    }
    const rank = options.rank ?? fromEnv(env, "RANK", "WORLD_SIZE", "rank", 0);
    if (!Number.isSafeInteger(rank) || rank < 0 || rank >= numReplicas) {
      // PyTorch's message, for the same mistake.
      throw new Error(
        `DistributedSampler: invalid rank ${rank}, rank should be in the interval [0, ${numReplicas - 1}]`,
      );
    }
    if (typeof shuffle !== "boolean") throw new Error(`DistributedSampler: shuffle must be a boolean`);
    if (typeof dropLast !== "boolean") throw new Error(`DistributedSampler: dropLast must be a boolean`);
    if (!(typeof seed === "bigint" || Number.isSafeInteger(seed))) {
      throw new Error(`DistributedSampler: seed must be an integer (a safe number or a bigint), got ${seed}`);
    }
    this.datasetSize = size;
    this.numReplicas = numReplicas;
    this.rank = rank;
    this.shuffle = shuffle;
    this.seed = BigInt(seed);
    this.dropLast = dropLast;
    this.#generatorSeed(0); // the seed's range, checked now rather than at the first draw
    // With dropLast and a size that does not divide, round *down* to a multiple of the world size:
    // ceil((N - R) / R) = floor(N / R) for N % R != 0 (and 0, not negative, when N < R). Otherwise round up;
    // the indices() padding fills the gap.
    this.length = dropLast && size % numReplicas !== 0
      ? Math.max(0, Math.ceil((size - numReplicas) / numReplicas))
      : Math.ceil(size / numReplicas);
    this.totalSize = this.length * numReplicas;
  }

  /** The epoch set by {@link DistributedSampler.setEpoch} (0 until then). */
  get epoch(): number {
    return this.#epoch;
  }

  /**
   * Sets the epoch whose permutation the next {@link DistributedSampler.indices} draws (PyTorch's
   * `set_epoch`). Call it at the start of every epoch, on every rank, with the same number.
   *
   * Why DDP needs it: the shuffle is seeded with `seed + epoch`, and nothing else. Each rank computes the
   * permutation on its own, with no communication, so the ranks' slices are disjoint only because every
   * rank draws the *same* permutation, hence the shared seed and epoch. But a sampler whose epoch never
   * changes draws that same permutation every epoch: each rank would see the same examples in the same
   * order forever, which is no shuffling at all. Advancing the epoch gives a *different* permutation per
   * epoch that is still the same on every rank. It also makes a resumed run reproducible: set the epoch you
   * resume at and you get the order the original run had.
   *
   * @throws Error if `epoch` is not an integer, or `seed + epoch` leaves the generator's seed range.
   */
  setEpoch(epoch: number): void {
    if (!Number.isSafeInteger(epoch)) {
      throw new Error(`DistributedSampler: epoch must be an integer, got ${epoch}`);
    }
    this.#generatorSeed(epoch);
    this.#epoch = epoch;
  }

  /**
   * This rank's dataset indices for the current epoch, in order: `length` of them, values in
   * `[0, datasetSize)`. The same call on every rank yields disjoint slices (up to padding).
   */
  async indices(): Promise<Int32Array> {
    const perm = this.shuffle ? await randperm(this.datasetSize, this.#generatorSeed(this.#epoch)) : null;
    return this.#subsample(perm);
  }

  /**
   * {@link DistributedSampler.indices} without awaiting: with `shuffle` it needs the native library to be
   * loaded already (`await loadNative()` from ffi/lib.ts, or any earlier `indices()` call).
   * @throws Error if shuffling and the native library is not loaded.
   */
  indicesSync(): Int32Array {
    const perm = this.shuffle ? randpermSync(this.datasetSize, this.#generatorSeed(this.#epoch)) : null;
    return this.#subsample(perm);
  }

  /**
   * `torch.Generator().manual_seed(seed + epoch)`'s seed as the native uint64: PyTorch accepts
   * `[-2^63, 2^64)` and wraps negatives modulo 2^64.
   */
  #generatorSeed(epoch: number): bigint {
    const s = this.seed + BigInt(epoch);
    if (s < MIN_SEED || s > MAX_SEED) {
      throw new Error(
        `DistributedSampler: seed + epoch = ${s} is outside the generator's seed range [-2^63, 2^64)`,
      );
    }
    return BigInt.asUintN(64, s);
  }

  /**
   * PyTorch's padding/truncation and `indices[rank:total_size:num_replicas]`, without materialising the
   * padded list: padded position j holds `perm[j % N]`. (Padding appends the list's start, repeated as many
   * times as needed when the world is larger than the dataset; truncation keeps positions j < totalSize <=
   * N, where j % N = j.)
   */
  #subsample(perm: BigInt64Array | null): Int32Array {
    const { datasetSize: n, numReplicas, rank, length, totalSize } = this;
    // PyTorch asserts these too; they hold by construction of `length`.
    if (this.dropLast ? totalSize > n : totalSize < n) {
      throw new Error(`DistributedSampler: total size ${totalSize} does not fit dataset size ${n}`);
    }
    const out = new Int32Array(length);
    for (let i = 0, j = rank; i < length; i++, j += numReplicas) {
      const k = j % n;
      out[i] = perm ? Number(perm[k]) : k;
    }
    return out;
  }
}

/** `Deno.env.get`, with a hint when the permission is missing. */
function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch (e) {
    throw new Error(
      `DistributedSampler: cannot read ${name} (${(e as Error).message}); ` +
        `run with --allow-env or pass numReplicas and rank`,
    );
  }
}

/**
 * A non-negative integer from the environment, as torchrun sets it; `fallback` when neither it nor its
 * partner is set (not launched by torchrun: one process). One of WORLD_SIZE / RANK without the other is a
 * broken launch, reported instead of guessed.
 */
function fromEnv(
  env: (name: string) => string | undefined,
  name: string,
  partner: string,
  option: string,
  fallback: number,
): number {
  const raw = env(name);
  if (raw === undefined || raw === "") {
    if (env(partner) !== undefined && env(partner) !== "") {
      throw new Error(
        `DistributedSampler: ${partner} is set but ${name} is not; pass ${option} or set both (torchrun does)`,
      );
    }
    return fallback;
  }
  if (!/^\s*\d+\s*$/.test(raw)) {
    throw new Error(`DistributedSampler: ${name}=${JSON.stringify(raw)} is not a non-negative integer`);
  }
  return Number(raw);
}
