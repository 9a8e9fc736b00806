/**
 * A small seeded pseudo-random generator for reproducible sampling (subsets, test data). Not for anything
 * that must match PyTorch's streams: those come from libtorch itself (ffi/model.ts's randperm).
 * @module
 */

/** mulberry32: a fast 32-bit generator; returns numbers in [0, 1), the same sequence for the same seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
