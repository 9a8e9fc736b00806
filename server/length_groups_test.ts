// planLengthGroups: a partition of the batch into length groups, shortest first, whose cost (one call
// overhead per group plus group size times the group's longest length) is the least possible.
import assert from "node:assert/strict";
import { type GroupingOptions, planLengthGroups } from "./length_groups.ts";
import { mulberry32 } from "../util/random.ts";

/** The cost the planner minimizes. */
function cost(lengths: readonly number[], groups: number[][], overhead: number): number {
  return groups.reduce((sum, g) => sum + overhead + g.length * Math.max(...g.map((i) => lengths[i])), 0);
}

/** Every index in [0, n) exactly once, and no group larger than maxGroupSize or empty. */
function assertPartition(groups: number[][], n: number, maxGroupSize: number): void {
  const all = groups.flat().sort((a, b) => a - b);
  assert.deepEqual(all, [...Array(n).keys()], "every index exactly once");
  for (const g of groups) {
    assert.ok(g.length >= 1, "no empty group");
    assert.ok(g.length <= maxGroupSize, `group of ${g.length} > maxGroupSize ${maxGroupSize}`);
  }
}

/** Groups come shortest first, each group sorted: the concatenation is sorted by length. */
function assertShortestFirst(groups: number[][], lengths: readonly number[]): void {
  const flat = groups.flat().map((i) => lengths[i]);
  for (let k = 1; k < flat.length; k++) assert.ok(flat[k - 1] <= flat[k], `lengths out of order: ${flat}`);
}

/** The cheapest cost over every contiguous partition of the sorted order (by exhaustive recursion). */
function bruteForceContiguous(
  sortedLengths: readonly number[],
  overhead: number,
  maxGroupSize: number,
): number {
  const n = sortedLengths.length;
  const from = (start: number): number => {
    if (start === n) return 0;
    let best = Infinity;
    for (let end = start + 1; end <= Math.min(n, start + maxGroupSize); end++) {
      // Sorted ascending: the group's longest is its last.
      best = Math.min(best, overhead + (end - start) * sortedLengths[end - 1] + from(end));
    }
    return best;
  };
  return from(0);
}

/** The cheapest cost over every set partition (not only contiguous ones) into groups of <= maxGroupSize. */
function bruteForceAnyPartition(lengths: readonly number[], overhead: number, maxGroupSize: number): number {
  let best = Infinity;
  const groups: number[][] = [];
  const place = (i: number): void => {
    if (i === lengths.length) {
      best = Math.min(best, cost(lengths, groups, overhead));
      return;
    }
    for (const g of groups) {
      if (g.length < maxGroupSize) {
        g.push(i);
        place(i + 1);
        g.pop();
      }
    }
    groups.push([i]);
    place(i + 1);
    groups.pop();
  };
  place(0);
  return best;
}

Deno.test("planLengthGroups: empty input gives no groups", () => {
  assert.deepEqual(planLengthGroups([], { callOverheadTokens: 10, maxGroupSize: 4 }), []);
  assert.deepEqual(planLengthGroups([], { callOverheadTokens: 0, maxGroupSize: 1 }), []);
});

Deno.test("planLengthGroups: one item is one group", () => {
  assert.deepEqual(planLengthGroups([42], { callOverheadTokens: 100, maxGroupSize: 8 }), [[0]]);
});

Deno.test("planLengthGroups: every index exactly once, groups sorted shortest first", () => {
  const lengths = [50, 12, 128, 12, 7, 90, 33, 128, 64, 20];
  for (const callOverheadTokens of [0, 1, 16, 64, 500, 1e6]) {
    for (const maxGroupSize of [1, 2, 3, 4, 10, 64]) {
      const groups = planLengthGroups(lengths, { callOverheadTokens, maxGroupSize });
      assertPartition(groups, lengths.length, maxGroupSize);
      assertShortestFirst(groups, lengths);
    }
  }
});

Deno.test("planLengthGroups: equal lengths keep their original index order", () => {
  const groups = planLengthGroups([5, 5, 5, 1, 5], { callOverheadTokens: 1e6, maxGroupSize: 8 });
  assert.deepEqual(groups, [[3, 0, 1, 2, 4]]);
});

Deno.test("planLengthGroups: the input array is not modified", () => {
  const lengths = [9, 3, 7, 1];
  planLengthGroups(lengths, { callOverheadTokens: 5, maxGroupSize: 2 });
  assert.deepEqual(lengths, [9, 3, 7, 1]);
});

Deno.test("planLengthGroups: zero call overhead with distinct lengths gives singletons, shortest first", () => {
  // Without a fixed cost, padding is pure waste: each text alone costs exactly its own length.
  const lengths = [30, 10, 20, 50, 40];
  const groups = planLengthGroups(lengths, { callOverheadTokens: 0, maxGroupSize: 8 });
  assert.deepEqual(groups, [[1], [2], [0], [4], [3]]);
});

Deno.test("planLengthGroups: zero call overhead with ties pads nothing", () => {
  // Equal lengths may share a call for free; whatever the grouping, no token is padded.
  const lengths = [8, 3, 8, 3, 8, 1];
  const groups = planLengthGroups(lengths, { callOverheadTokens: 0, maxGroupSize: 8 });
  assertPartition(groups, lengths.length, 8);
  for (const g of groups) assert.equal(new Set(g.map((i) => lengths[i])).size, 1, "a group mixes lengths");
  assert.equal(cost(lengths, groups, 0), lengths.reduce((a, b) => a + b, 0));
});

Deno.test("planLengthGroups: a huge call overhead gives as few groups as maxGroupSize allows", () => {
  const lengths = Array.from({ length: 23 }, (_, i) => 10 + ((i * 37) % 100));
  for (const maxGroupSize of [1, 2, 4, 5, 8, 23, 64]) {
    const groups = planLengthGroups(lengths, { callOverheadTokens: 1e9, maxGroupSize });
    assertPartition(groups, lengths.length, maxGroupSize);
    assert.equal(groups.length, Math.ceil(lengths.length / maxGroupSize), `maxGroupSize ${maxGroupSize}`);
    assertShortestFirst(groups, lengths);
  }
});

Deno.test("planLengthGroups: a large overhead keeps one group when it fits", () => {
  const lengths = [10, 128, 12, 64];
  assert.deepEqual(planLengthGroups(lengths, { callOverheadTokens: 1e6, maxGroupSize: 4 }), [[0, 2, 3, 1]]);
});

Deno.test("planLengthGroups: it cuts where padding costs more than a call", () => {
  // Four short (10) and four long (100) texts. One group: 8 * 100 + c. Two groups: 4 * 10 + 4 * 100 + 2c.
  // Cutting pays when 360 > c.
  const lengths = [100, 10, 100, 10, 100, 10, 100, 10];
  const twoGroups = [[1, 3, 5, 7], [0, 2, 4, 6]];
  assert.deepEqual(planLengthGroups(lengths, { callOverheadTokens: 300, maxGroupSize: 8 }), twoGroups);
  assert.deepEqual(planLengthGroups(lengths, { callOverheadTokens: 400, maxGroupSize: 8 }), [
    [1, 3, 5, 7, 0, 2, 4, 6],
  ]);
});

Deno.test("planLengthGroups: maxGroupSize is respected whatever the overhead", () => {
  const rand = mulberry32(7);
  for (let trial = 0; trial < 200; trial++) {
    const n = 1 + Math.floor(rand() * 40);
    const lengths = Array.from({ length: n }, () => 2 + Math.floor(rand() * 127));
    const maxGroupSize = 1 + Math.floor(rand() * 10);
    const callOverheadTokens = [0, 4, 64, 4096, 1e12][trial % 5];
    const groups = planLengthGroups(lengths, { callOverheadTokens, maxGroupSize });
    assertPartition(groups, n, maxGroupSize);
    assertShortestFirst(groups, lengths);
  }
});

Deno.test("planLengthGroups: the cost is optimal among all contiguous partitions (random, seeded)", () => {
  const rand = mulberry32(20240917);
  for (let trial = 0; trial < 300; trial++) {
    const n = 1 + Math.floor(rand() * 10);
    // Small length range on purpose: many ties.
    const lengths = Array.from({ length: n }, () => 1 + Math.floor(rand() * 20));
    const maxGroupSize = 1 + Math.floor(rand() * (n + 1));
    const callOverheadTokens = [0, 0.5, 3, 7.25, 17, 60, 1000][Math.floor(rand() * 7)];
    const options: GroupingOptions = { callOverheadTokens, maxGroupSize };
    const groups = planLengthGroups(lengths, options);
    assertPartition(groups, n, maxGroupSize);
    assertShortestFirst(groups, lengths);
    const sorted = [...lengths].sort((a, b) => a - b);
    const optimum = bruteForceContiguous(sorted, callOverheadTokens, maxGroupSize);
    const got = cost(lengths, groups, callOverheadTokens);
    assert.ok(
      Math.abs(got - optimum) < 1e-9,
      `${JSON.stringify({ lengths, options })}: ${got} vs ${optimum}`,
    );
  }
});

Deno.test("planLengthGroups: the cost is optimal among all partitions, not only contiguous ones", () => {
  // Exhaustive over every set partition (Bell(7) = 877 for n = 7): sorting then cutting loses nothing.
  const rand = mulberry32(99);
  for (let trial = 0; trial < 120; trial++) {
    const n = 1 + Math.floor(rand() * 7);
    const lengths = Array.from({ length: n }, () => 1 + Math.floor(rand() * 30));
    const maxGroupSize = 1 + Math.floor(rand() * n);
    const callOverheadTokens = [0, 2, 9, 25, 200][Math.floor(rand() * 5)];
    const groups = planLengthGroups(lengths, { callOverheadTokens, maxGroupSize });
    const optimum = bruteForceAnyPartition(lengths, callOverheadTokens, maxGroupSize);
    const got = cost(lengths, groups, callOverheadTokens);
    assert.ok(
      Math.abs(got - optimum) < 1e-9,
      `${JSON.stringify({ lengths, callOverheadTokens, maxGroupSize })}: ${got} vs ${optimum}`,
    );
  }
});

Deno.test("planLengthGroups: a large batch (256 texts, groups of up to 64) costs what an independent DP finds", () => {
  const rand = mulberry32(5);
  const lengths = Array.from({ length: 256 }, () => 5 + Math.floor(rand() * 124));
  const groups = planLengthGroups(lengths, { callOverheadTokens: 300, maxGroupSize: 64 });
  assertPartition(groups, 256, 64);
  assertShortestFirst(groups, lengths);
  const sorted = groups.flat().map((i) => lengths[i]);
  // Same DP on the sorted lengths, written independently (O(n * maxGroupSize)), as the reference cost.
  const best = [0];
  for (let i = 1; i <= sorted.length; i++) {
    best[i] = Infinity;
    for (let j = Math.max(0, i - 64); j < i; j++) {
      best[i] = Math.min(best[i], best[j] + 300 + (i - j) * sorted[i - 1]);
    }
  }
  assert.ok(Math.abs(cost(lengths, groups, 300) - best[sorted.length]) < 1e-6);
});

Deno.test("planLengthGroups: invalid options throw", () => {
  const lengths = [1, 2, 3];
  const bad: [GroupingOptions, RegExp][] = [
    [{ callOverheadTokens: -1, maxGroupSize: 4 }, /callOverheadTokens/],
    [{ callOverheadTokens: NaN, maxGroupSize: 4 }, /callOverheadTokens/],
    [{ callOverheadTokens: -Infinity, maxGroupSize: 4 }, /callOverheadTokens/],
    [{ callOverheadTokens: 10, maxGroupSize: 0 }, /maxGroupSize/],
    [{ callOverheadTokens: 10, maxGroupSize: -2 }, /maxGroupSize/],
    [{ callOverheadTokens: 10, maxGroupSize: 2.5 }, /maxGroupSize/],
    [{ callOverheadTokens: 10, maxGroupSize: NaN }, /maxGroupSize/],
    [{ callOverheadTokens: 10, maxGroupSize: Infinity }, /maxGroupSize/],
  ];
  for (const [options, message] of bad) {
    assert.throws(() => planLengthGroups(lengths, options), message, JSON.stringify(options));
    // Checked even when there is nothing to plan.
    assert.throws(() => planLengthGroups([], options), message);
  }
});

Deno.test("planLengthGroups: an infinite call overhead is refused or still respects maxGroupSize", () => {
  // With an infinite overhead every candidate cost is Infinity, `cost < best[i]` never holds, and a planner
  // that let it through would return the whole batch as one group, ignoring maxGroupSize. Either rejecting
  // Infinity or planning ceil(5 / 2) = 3 groups is right.
  const lengths = [1, 2, 3, 4, 5];
  const options = { callOverheadTokens: Infinity, maxGroupSize: 2 };
  let groups: number[][];
  try {
    groups = planLengthGroups(lengths, options);
  } catch (err) {
    assert.match((err as Error).message, /callOverheadTokens/);
    return;
  }
  assertPartition(groups, lengths.length, 2);
  assert.equal(groups.length, 3);
});
