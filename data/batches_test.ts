import assert from "node:assert/strict";
import {
  batchIndices,
  collateBatch,
  lengthGroupedIndices,
  paddingCost,
  shardBatches,
  type TokenizedRows,
} from "./batches.ts";
import { TokenizedDataset } from "./dataset.ts";
import { mulberry32, seededPermutation } from "../util/random.ts";
import { BertTokenizer } from "./tokenizer.ts";
import { venvPython } from "../tests/helpers.ts";

/** A dataset whose row i is `[101, i, i, …, 102]` with `lengths[i]` ids and label `i % 4`. */
function fakeRows(lengths: number[], padId = 0): TokenizedRows {
  return {
    length: lengths.length,
    lengths,
    labels: lengths.map((_, i) => i % 4),
    padId,
    ids: (i) =>
      Array.from({ length: lengths[i] }, (_, k) => (k === 0 ? 101 : k === lengths[i] - 1 ? 102 : 1000 + i)),
  };
}

/** Deterministic pseudo-random lengths in [lo, hi] (the tests only need variety). */
function someLengths(n: number, lo: number, hi: number, seed = 1): number[] {
  const next = mulberry32(seed);
  return Array.from({ length: n }, () => lo + Math.floor(next() * (hi - lo + 1)));
}

/** The shard DistributedSampler (no shuffle) gives `rank` of `world`: every world-th index. */
function strideShard(n: number, rank: number, world: number): Int32Array {
  return Int32Array.from({ length: Math.floor(n / world) }, (_, k) => rank + k * world);
}

const sorted = (a: ArrayLike<number>) => Array.from(a).sort((x, y) => x - y);

Deno.test("batchIndices cuts in order, with or without the last short batch", () => {
  const shard = [9, 3, 7, 1, 5, 0, 2];
  assert.deepEqual(batchIndices(shard, 3).map((b) => Array.from(b)), [[9, 3, 7], [1, 5, 0], [2]]);
  assert.deepEqual(batchIndices(shard, 3, { dropLast: true }).map((b) => Array.from(b)), [[9, 3, 7], [
    1,
    5,
    0,
  ]]);
  assert.deepEqual(batchIndices(shard, 7, { dropLast: true }).map((b) => Array.from(b)), [shard]);
  assert.deepEqual(batchIndices([], 4), []);
  assert.throws(() => batchIndices(shard, 0), /batchSize must be a positive integer/);
});

Deno.test("collateBatch pads to the longest row of the batch, mask 0 on padding, labels in row order", () => {
  const rows = fakeRows([3, 5, 2, 9, 4], 7);
  const b = collateBatch(rows, [4, 0, 1]);
  assert.equal(b.batchSize, 3);
  assert.equal(b.seqLen, 5, "the longest of rows 4, 0, 1 (not row 3's 9)");
  assert.deepEqual(Array.from(b.labels), [0, 0, 1]);
  const P = 7;
  assert.deepEqual(Array.from(b.inputIds), [
    ...[101, 1004, 1004, 102, P],
    ...[101, 1000, 102, P, P],
    ...[101, 1001, 1001, 1001, 102],
  ]);
  assert.deepEqual(Array.from(b.attentionMask), [1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1]);

  const rounded = collateBatch(rows, [2, 0], { padToMultipleOf: 8, padId: 0 });
  assert.equal(rounded.seqLen, 8);
  assert.deepEqual(Array.from(rounded.inputIds.subarray(0, 8)), [101, 102, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(Array.from(rounded.attentionMask.subarray(8, 16)), [1, 1, 1, 0, 0, 0, 0, 0]);

  assert.throws(() => collateBatch(rows, [0, 5]), /index 5 is outside the dataset/);
  assert.throws(() => collateBatch(rows, [1.5]), RangeError);
  assert.throws(() => collateBatch(rows, []), /empty batch/);
});

Deno.test("collateBatch on a TokenizedDataset equals the tokenizer's own padding", async () => {
  const tokenizer = await BertTokenizer.bundled();
  const texts = ["Oil prices climb", "Late goal wins the derby in extra time", "Fed pauses", "Chips!"];
  const ds = await TokenizedDataset.build(
    texts.map((text, i) => ({ text, label: 3 - i })),
    tokenizer,
    { cacheDir: null },
  );
  const b = collateBatch(ds, [1, 3, 0]);
  const expected = tokenizer.encodeBatch([texts[1], texts[3], texts[0]], { padding: "longest" });
  assert.deepEqual(Array.from(b.inputIds), expected.flatMap((e) => e.ids));
  assert.deepEqual(Array.from(b.attentionMask), expected.flatMap((e) => e.attentionMask));
  assert.deepEqual(Array.from(b.labels), [2, 0, 3]);
  assert.equal(b.seqLen, expected[0].ids.length);
});

Deno.test("lengthGroupedIndices keeps the shard's multiset, is deterministic per seed and epoch", () => {
  const lengths = someLengths(5000, 10, 128);
  const shard = strideShard(lengths.length, 1, 3);
  const a = lengthGroupedIndices(shard, lengths, 16, { seed: 42, epoch: 3 });
  assert.equal(a.length, shard.length);
  assert.deepEqual(sorted(a), sorted(shard));
  assert.deepEqual(lengthGroupedIndices(shard, lengths, 16, { seed: 42, epoch: 3 }), a);
  assert.notDeepEqual(lengthGroupedIndices(shard, lengths, 16, { seed: 42, epoch: 4 }), a);
  assert.notDeepEqual(lengthGroupedIndices(shard, lengths, 16, { seed: 7, epoch: 3 }), a);
  assert.deepEqual(
    lengthGroupedIndices(shard, lengths, 16, { seed: 40, epoch: 5 }),
    lengthGroupedIndices(shard, lengths, 16, { seed: 44, epoch: 1 }),
    "the generator is seeded with seed + epoch, as DistributedSampler",
  );
  // DistributedSampler pads a shard by repeating indices: duplicates stay duplicates.
  const padded = [...shard.subarray(0, 100), 5, 5, 8];
  assert.deepEqual(sorted(lengthGroupedIndices(padded, lengths, 4, { seed: 1 })), sorted(padded));
  assert.deepEqual(lengthGroupedIndices([], lengths, 4), new Int32Array(0));
  assert.throws(() => lengthGroupedIndices([0, 99999], lengths, 4), /outside the dataset/);
  assert.throws(() => lengthGroupedIndices(shard, lengths, 0), /batchSize/);
});

Deno.test("lengthGroupedIndices: longest row first, megabatches sorted, batches length-homogeneous", () => {
  const lengths = someLengths(20_000, 12, 128, 5);
  lengths[4242] = 129; // one row longer than all others, wherever the permutation puts it
  const batchSize = 16;
  const shard = strideShard(lengths.length, 0, 2); // 10,000 rows: megabatches of 50 × 16 = 800
  for (let seed = 0; seed < 8; seed++) {
    const first = lengthGroupedIndices(shard, lengths, batchSize, { seed })[0];
    assert.equal(first, 4242, `seed ${seed}: the longest row of the shard comes first`);
  }
  const grouped = lengthGroupedIndices(shard, lengths, batchSize, { seed: 1 });
  const mega = 50 * batchSize;
  for (let start = 0; start < grouped.length; start += mega) {
    const ls = Array.from(grouped.subarray(start, start + mega), (i) => lengths[i]);
    const body = ls.slice(1); // the first slot of two megabatches may hold the swapped row
    for (let k = 1; k < body.length; k++) assert.ok(body[k - 1] >= body[k], `megabatch at ${start} sorted`);
  }
  // Padding waste: grouped batches compute far fewer padded slots than batches in random order.
  const random = Array.from(seededPermutation(shard.length, 1), (p) => shard[p]);
  const grouping = paddingCost(lengths, batchIndices(grouped, batchSize), 128);
  const plain = paddingCost(lengths, batchIndices(random, batchSize), 128);
  assert.equal(grouping.real, plain.real);
  assert.ok(
    grouping.dynamic < 1.03 * grouping.real,
    `grouped: ${grouping.dynamic} slots for ${grouping.real}`,
  );
  assert.ok(plain.dynamic > 1.5 * plain.real, `random: ${plain.dynamic} slots for ${plain.real}`);
  // The first batch is the largest one.
  const batchMax = batchIndices(grouped, batchSize).map((b) => Math.max(...Array.from(b, (i) => lengths[i])));
  assert.equal(batchMax[0], Math.max(...batchMax));
});

Deno.test("grouping within each rank's shard keeps the ranks' batch lengths in step", () => {
  // Two ranks, disjoint equal shards: the same number of batches, and at each step similar lengths, since
  // every rank walks its own megabatches longest first.
  const lengths = someLengths(32_000, 12, 128, 9);
  const world = 2, batchSize = 16;
  const perRank = [0, 1].map((rank) =>
    batchIndices(
      lengthGroupedIndices(strideShard(lengths.length, rank, world), lengths, batchSize, { seed: 3 }),
      batchSize,
    )
      .map((b) => Math.max(...Array.from(b, (i) => lengths[i])))
  );
  assert.equal(perRank[0].length, perRank[1].length);
  let gap = 0, total = 0;
  for (let step = 0; step < perRank[0].length; step++) {
    gap += Math.abs(perRank[0][step] - perRank[1][step]);
    total += perRank[0][step];
  }
  assert.ok(gap / total < 0.05, `mean gap between ranks ${(gap / total).toFixed(3)} of the length`);
});

Deno.test("shardBatches: one epoch of collated batches covering the shard once", () => {
  const lengths = someLengths(1000, 3, 40, 2);
  const rows = fakeRows(lengths);
  const shard = strideShard(1000, 2, 4); // 250 rows
  const batches = [...shardBatches(rows, shard, { batchSize: 32, groupByLength: true, seed: 0, epoch: 1 })];
  assert.equal(batches.length, 8);
  assert.deepEqual(sorted(batches.flatMap((b) => Array.from(b.indices))), sorted(shard));
  for (const b of batches) {
    assert.equal(b.seqLen, Math.max(...Array.from(b.indices, (i) => lengths[i])));
    assert.deepEqual(Array.from(b.labels), Array.from(b.indices, (i) => i % 4));
  }
  const dropped = [...shardBatches(rows, shard, { batchSize: 32, dropLast: true })];
  assert.equal(dropped.length, 7);
  assert.deepEqual(
    Array.from(dropped[0].indices),
    Array.from(shard.subarray(0, 32)),
    "no grouping: shard order",
  );
});

Deno.test("with torch's permutation, lengthGroupedIndices equals transformers' get_length_grouped_indices", async () => {
  // Many ties (lengths 5..12) check the stable sort; 1003 rows leave a short last megabatch.
  const lengths = someLengths(3000, 5, 12, 4);
  const shard = Int32Array.from(seededPermutation(3000, 8).subarray(0, 1003));
  lengths[shard[700]] = 13; // a unique longest row, so the swap to the front matters
  const shardLengths = Array.from(shard, (i) => lengths[i]);
  const cases = [{ batchSize: 8, seed: 11 }, { batchSize: 8, seed: 12, mult: 3 }, {
    batchSize: 64,
    seed: 13,
  }];
  const script = `
import json, sys, torch
from transformers.trainer_pt_utils import get_length_grouped_indices
spec = json.load(sys.stdin)
out = []
for c in spec["cases"]:
    perm = torch.randperm(len(spec["lengths"]), generator=torch.Generator().manual_seed(c["seed"])).tolist()
    grouped = get_length_grouped_indices(spec["lengths"], c["batchSize"], c.get("mult"),
                                         generator=torch.Generator().manual_seed(c["seed"]))
    out.append({"perm": perm, "grouped": grouped})
print(json.dumps(out))
`;
  const child = new Deno.Command(venvPython(), {
    args: ["-c", script],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { TRANSFORMERS_VERBOSITY: "error", PYTHONWARNINGS: "ignore" },
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(JSON.stringify({ lengths: shardLengths, cases })));
  await writer.close();
  const out = await child.output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const results: { perm: number[]; grouped: number[] }[] = JSON.parse(new TextDecoder().decode(out.stdout));
  cases.forEach((c, k) => {
    const ours = lengthGroupedIndices(shard, lengths, c.batchSize, {
      permutation: results[k].perm,
      megaBatchMult: c.mult,
    });
    assert.deepEqual(Array.from(ours), results[k].grouped.map((p) => shard[p]), `case ${JSON.stringify(c)}`);
  });
  assert.throws(
    () => lengthGroupedIndices(shard, lengths, 8, { permutation: [0, 0, 1] }),
    /permutation has 3 entries/,
  );
  const bad = Array.from({ length: shard.length }, (_, i) => i);
  bad[5] = 4;
  assert.throws(() => lengthGroupedIndices(shard, lengths, 8, { permutation: bad }), /not a permutation/);
});

Deno.test("paddingCost counts real, dynamic and fixed slots", () => {
  const lengths = [3, 5, 2, 9];
  const cost = paddingCost(lengths, [[0, 1], [2, 3]], 16, 4);
  assert.deepEqual(cost, { real: 19, dynamic: 2 * 8 + 2 * 12, fixed: 64 });
});
