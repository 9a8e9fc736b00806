/**
 * Splitting one collected batch into length groups. A padded forward pass costs roughly a fixed amount
 * per call (on a CPU, mostly streaming the weights through the cache) plus an amount per padded token.
 * News texts vary from ~10 to 128+ tokens, so padding 64 random texts to the longest wastes about half
 * the compute, while one call per text pays the fixed cost 64 times. Sorting by length and cutting the
 * sorted list where it pays (dynamic programming over the cut points) gets most of both.
 * @module
 */

/** How to cut a batch into groups. */
export interface GroupingOptions {
  /** The fixed cost of one forward call, in padded-token equivalents (see measureCallOverhead). */
  callOverheadTokens: number;
  /** The most texts in one group. */
  maxGroupSize: number;
}

/**
 * Groups item indices so that the total cost, one `callOverheadTokens` per group plus group size times
 * the group's longest length, is minimal. Groups come out shortest first (their callers finish soonest).
 */
export function planLengthGroups(lengths: readonly number[], options: GroupingOptions): number[][] {
  const { callOverheadTokens, maxGroupSize } = options;
  if (!(callOverheadTokens >= 0 && callOverheadTokens < Infinity)) {
    throw new Error(`callOverheadTokens must be a finite number >= 0, got ${callOverheadTokens}`);
  }
  if (!Number.isInteger(maxGroupSize) || maxGroupSize < 1) {
    throw new Error(`maxGroupSize must be a positive integer, got ${maxGroupSize}`);
  }
  const n = lengths.length;
  const order = [...lengths.keys()].sort((a, b) => lengths[a] - lengths[b] || a - b);
  // best[i]: the cheapest cost of the first i sorted items; cut[i]: where its last group starts. In sorted
  // order a group's longest item is its last one, so the cost of items j..i-1 is known in O(1).
  const best = new Float64Array(n + 1).fill(Infinity);
  const cut = new Int32Array(n + 1);
  best[0] = 0;
  for (let i = 1; i <= n; i++) {
    const longest = lengths[order[i - 1]];
    for (let j = Math.max(0, i - maxGroupSize); j < i; j++) {
      const cost = best[j] + callOverheadTokens + (i - j) * longest;
      if (cost < best[i]) {
        best[i] = cost;
        cut[i] = j;
      }
    }
  }
  const groups: number[][] = [];
  for (let i = n; i > 0; i = cut[i]) groups.push(order.slice(cut[i], i));
  return groups.reverse();
}
