/**
 * The project's one seeded pseudo-random generator (mulberry32), for what must be reproducible from a seed
 * but need not match PyTorch: stratified subsets, the megabatch order of length grouping, test data.
 * Whatever must match PyTorch's streams (DistributedSampler's shuffle, weights, dropout) comes from libtorch
 * itself (ffi/model.ts's randperm).
 * @module
 */

/**
 * mulberry32 as raw draws: a fast generator with 32 bits of state returning uint32s, the same sequence for
 * the same seed. A bigint or large seed is taken modulo 2^32.
 */
export function seededUint32(seed: number | bigint): () => number {
  let a = typeof seed === "bigint" ? Number(BigInt.asUintN(32, seed)) : seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** mulberry32 as numbers in [0, 1): the same sequence for the same seed. */
export function mulberry32(seed: number | bigint): () => number {
  const next = seededUint32(seed);
  return () => next() / 4294967296;
}

/**
 * A permutation of `0 … n-1` that depends only on `n` and `seed`: Fisher–Yates driven by
 * {@link seededUint32}, each index drawn without modulo bias.
 */
export function seededPermutation(n: number, seed: number | bigint): Int32Array {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`permutation size must be a non-negative integer`);
  const next = seededUint32(seed);
  const perm = new Int32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  for (let i = n - 1; i > 0; i--) {
    // An unbiased draw in [0, i]: reject the top sliver of the 32-bit range that does not divide evenly.
    const bound = i + 1;
    const limit = 0x1_0000_0000 - (0x1_0000_0000 % bound);
    let r = next();
    while (r >= limit) r = next();
    const j = r % bound;
    const t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  return perm;
}
