import assert from "node:assert/strict";
import { DistributedSampler, type DistributedSamplerOptions } from "./sampler.ts";
import { loadNative } from "../ffi/lib.ts";
import { pythonJson } from "../tests/helpers.ts";

/** One sampler configuration: dataset size, world size, rank, shuffle, dropLast, seed, epoch. */
type Case = [
  n: number,
  numReplicas: number,
  rank: number,
  shuffle: boolean,
  dropLast: boolean,
  seed: bigint,
  epoch: number,
];
/** What PyTorch's sampler says for a case: len(sampler), total_size, list(sampler). */
type Expected = [length: number, totalSize: number, indices: number[]];

const SIZES = [0, 1, 2, 3, 5, 7, 97, 100, 1000];
const SEEDS = [0n, 1234n];

function grid(): Case[] {
  const cases: Case[] = [];
  for (const n of SIZES) {
    for (let world = 1; world <= 4; world++) {
      for (let rank = 0; rank < world; rank++) {
        for (const shuffle of [false, true]) {
          for (const dropLast of [false, true]) {
            for (const seed of SEEDS) {
              for (let epoch = 0; epoch <= 3; epoch++) {
                cases.push([n, world, rank, shuffle, dropLast, seed, epoch]);
              }
            }
          }
        }
      }
    }
  }
  // The real dataset's scale (AG News train is 120k), and the generator's seed edges: a negative seed + epoch
  // (PyTorch wraps it modulo 2^64) and the largest seed.
  for (const dropLast of [false, true]) {
    for (let rank = 0; rank < 3; rank++) cases.push([120_000, 3, rank, true, dropLast, 42n, 5]);
  }
  // A world more than twice the dataset: the padding repeats the whole (shuffled) list several times.
  for (const [n, world] of [[2, 5], [2, 8], [3, 8]]) {
    for (let rank = 0; rank < world; rank++) {
      for (const dropLast of [false, true]) {
        for (let epoch = 0; epoch <= 1; epoch++) cases.push([n, world, rank, true, dropLast, 1234n, epoch]);
      }
    }
  }
  for (let rank = 0; rank < 4; rank++) {
    cases.push([10, 4, rank, true, false, -5n, 3]);
    cases.push([10, 4, rank, true, false, 2n ** 64n - 1n, 0]);
  }
  return cases;
}

/** Every case through torch.utils.data.DistributedSampler, in one Python process. */
const PYTHON = `
import json, sys
from torch.utils.data import DistributedSampler
out = []
for n, world, rank, shuffle, drop_last, seed, epoch in json.load(sys.stdin):
    s = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=int(seed),
                           drop_last=drop_last)
    s.set_epoch(epoch)
    out.append([len(s), s.total_size, list(s)])
json.dump(out, sys.stdout, separators=(",", ":"))
`;

async function pytorch(cases: Case[]): Promise<Expected[]> {
  return await pythonJson(PYTHON, cases) as Expected[];
}

function sampler(c: Case, extra: DistributedSamplerOptions = {}): DistributedSampler {
  const [n, numReplicas, rank, shuffle, dropLast, seed, epoch] = c;
  const s = new DistributedSampler(n, { numReplicas, rank, shuffle, dropLast, seed, ...extra });
  s.setEpoch(epoch);
  return s;
}

Deno.test("DistributedSampler gives PyTorch's indices, in PyTorch's order, over the whole grid", async () => {
  const cases = grid();
  const expected = await pytorch(cases);
  assert.equal(expected.length, cases.length);
  await loadNative();
  let compared = 0;
  for (let i = 0; i < cases.length; i++) {
    const s = sampler(cases[i]);
    const [length, totalSize, indices] = expected[i];
    const what = `case ${JSON.stringify(cases[i], (_k, v) => typeof v === "bigint" ? `${v}` : v)}`;
    assert.equal(s.length, length, `${what}: length`);
    assert.equal(s.totalSize, totalSize, `${what}: totalSize`);
    const got = await s.indices();
    assert.ok(got instanceof Int32Array);
    assert.deepEqual(Array.from(got), indices, what);
    // The sync path is the same draw.
    assert.deepEqual(Array.from(s.indicesSync()), indices, `${what} (indicesSync)`);
    compared += indices.length;
  }
  // Guard against a vacuous pass (an empty grid or empty reference lists).
  assert.ok(
    cases.length > 2800 && compared > 390_000,
    `compared ${compared} indices in ${cases.length} cases`,
  );
});

/** All ranks' indices for one configuration. */
async function allRanks(
  n: number,
  world: number,
  options: DistributedSamplerOptions = {},
): Promise<Int32Array[]> {
  const out: Int32Array[] = [];
  for (let rank = 0; rank < world; rank++) {
    out.push(await new DistributedSampler(n, { ...options, numReplicas: world, rank }).indices());
  }
  return out;
}

Deno.test("the ranks cover the dataset, and overlap only by padding", async () => {
  for (const n of [1, 3, 7, 97, 100, 1000]) {
    for (let world = 1; world <= 5; world++) {
      for (const shuffle of [false, true]) {
        const what = `n=${n} world=${world} shuffle=${shuffle}`;
        const counts = new Map<number, number>();
        const ranks = await allRanks(n, world, { shuffle, seed: 7 });
        const total = Math.ceil(n / world) * world;
        for (const r of ranks) {
          assert.equal(r.length, Math.ceil(n / world), `${what}: equal share per rank`);
          for (const i of r) counts.set(i, (counts.get(i) ?? 0) + 1);
        }
        assert.equal(counts.size, n, `${what}: every index appears`);
        for (const [i] of counts) assert.ok(i >= 0 && i < n, `${what}: index ${i} in range`);
        // Repeats are exactly the padding: total - n extra draws.
        const extra = [...counts.values()].reduce((a, c) => a + c - 1, 0);
        assert.equal(extra, total - n, `${what}: repeats = padding`);

        const dropped = await allRanks(n, world, { shuffle, seed: 7, dropLast: true });
        const seen = new Set<number>();
        for (const r of dropped) {
          assert.equal(r.length, Math.floor(n / world), `${what} dropLast: equal share per rank`);
          for (const i of r) {
            assert.ok(!seen.has(i), `${what} dropLast: ${i} on two ranks`);
            seen.add(i);
          }
        }
        assert.equal(seen.size, n - (n % world), `${what} dropLast: only the tail is dropped`);
      }
    }
  }
});

Deno.test("setEpoch reshuffles, the same way on every rank; without shuffle it changes nothing", async () => {
  const s = new DistributedSampler(100, { numReplicas: 2, rank: 1, seed: 3 });
  const e0 = Array.from(await s.indices());
  assert.deepEqual(Array.from(await s.indices()), e0, "same epoch, same order");
  s.setEpoch(1);
  assert.equal(s.epoch, 1);
  const e1 = Array.from(await s.indices());
  assert.notDeepEqual(e1, e0, "a new epoch, a new order");
  assert.equal(e1.length, 50);
  // Another process with the same seed and epoch agrees: the slices stay disjoint.
  const other = new DistributedSampler(100, { numReplicas: 2, rank: 1, seed: 3 });
  other.setEpoch(1);
  assert.deepEqual(Array.from(await other.indices()), e1);
  // A different seed is a different order.
  const reseeded = new DistributedSampler(100, { numReplicas: 2, rank: 1, seed: 4 });
  reseeded.setEpoch(1);
  assert.notDeepEqual(Array.from(await reseeded.indices()), e1);

  const plain = new DistributedSampler(10, { numReplicas: 3, rank: 2, shuffle: false });
  assert.deepEqual(Array.from(plain.indicesSync()), [2, 5, 8, 1]);
  plain.setEpoch(9);
  assert.deepEqual(Array.from(plain.indicesSync()), [2, 5, 8, 1]);
});

Deno.test("the dataset may be an object with a length; the size is read once", async () => {
  const data = ["a", "b", "c", "d", "e"];
  const s = new DistributedSampler(data, { numReplicas: 2, rank: 0, shuffle: false });
  data.push("f");
  assert.equal(s.datasetSize, 5);
  assert.deepEqual(Array.from(await s.indices()), [0, 2, 4]);
});

Deno.test("numReplicas and rank default to torchrun's WORLD_SIZE and RANK, else a world of one", () => {
  const envOf = (vars: Record<string, string>) => (name: string) => vars[name];
  const s = new DistributedSampler(10, { env: envOf({ WORLD_SIZE: "4", RANK: "3" }) });
  assert.equal(s.numReplicas, 4);
  assert.equal(s.rank, 3);
  const alone = new DistributedSampler(10, { env: envOf({}) });
  assert.equal(alone.numReplicas, 1);
  assert.equal(alone.rank, 0);
  assert.equal(alone.length, 10);
  // Explicit options win, and the environment is then not read at all.
  const explicit = new DistributedSampler(10, {
    numReplicas: 2,
    rank: 1,
    env: () => {
      throw new Error("env read");
    },
  });
  assert.equal(explicit.rank, 1);
  assert.equal(new DistributedSampler(10, { rank: 2, env: envOf({ WORLD_SIZE: "3" }) }).numReplicas, 3);

  assert.throws(
    () => new DistributedSampler(10, { env: envOf({ WORLD_SIZE: "4" }) }),
    /WORLD_SIZE is set but RANK is not/,
  );
  assert.throws(
    () => new DistributedSampler(10, { env: envOf({ RANK: "1" }) }),
    /RANK is set but WORLD_SIZE is not/,
  );
  assert.throws(
    () => new DistributedSampler(10, { env: envOf({ WORLD_SIZE: "two", RANK: "0" }) }),
    /WORLD_SIZE="two"/,
  );
  assert.throws(
    () => new DistributedSampler(10, { env: envOf({ WORLD_SIZE: "2", RANK: "2" }) }),
    /invalid rank 2.*\[0, 1\]/,
  );
});

Deno.test("invalid options throw errors that name them", () => {
  const bad: [unknown, DistributedSamplerOptions, RegExp][] = [
    [10, { numReplicas: 4, rank: 4 }, /invalid rank 4, rank should be in the interval \[0, 3\]/],
    [10, { numReplicas: 4, rank: -1 }, /invalid rank -1/],
    [10, { numReplicas: 4, rank: 1.5 }, /invalid rank 1.5/],
    [10, { numReplicas: 0, rank: 0 }, /numReplicas must be an integer >= 1, got 0/],
    [10, { numReplicas: 2.5, rank: 0 }, /numReplicas must be an integer >= 1, got 2.5/],
    [10, { numReplicas: NaN, rank: 0 }, /numReplicas must be an integer >= 1, got NaN/],
    [-1, { numReplicas: 1, rank: 0 }, /dataset size must be an integer in \[0, 2147483647\], got -1/],
    [1.5, { numReplicas: 1, rank: 0 }, /dataset size .* got 1.5/],
    [{}, { numReplicas: 1, rank: 0 }, /dataset size .* got undefined/],
    [2 ** 31, { numReplicas: 1, rank: 0 }, /dataset size/],
    [10, { numReplicas: 1, rank: 0, seed: 0.5 }, /seed must be an integer/],
    [10, { numReplicas: 1, rank: 0, seed: 2n ** 64n }, /seed \+ epoch = 18446744073709551616 is outside/],
    [10, { numReplicas: 1, rank: 0, seed: -(2n ** 63n) - 1n }, /outside the generator's seed range/],
    [10, { numReplicas: 1, rank: 0, shuffle: "yes" as unknown as boolean }, /shuffle must be a boolean/],
    [10, { numReplicas: 1, rank: 0, dropLast: 1 as unknown as boolean }, /dropLast must be a boolean/],
  ];
  for (const [dataset, options, message] of bad) {
    assert.throws(
      () => new DistributedSampler(dataset as number, options),
      message,
      JSON.stringify(options, (_k, v) => typeof v === "bigint" ? `${v}` : v),
    );
  }
  const s = new DistributedSampler(10, { numReplicas: 1, rank: 0, seed: 2n ** 64n - 2n });
  assert.throws(() => s.setEpoch(0.5), /epoch must be an integer, got 0.5/);
  s.setEpoch(1); // seed + 1 = 2^64 - 1: the largest seed
  assert.throws(() => s.setEpoch(2), /seed \+ epoch = 18446744073709551616 is outside/);
  assert.equal(s.epoch, 1, "a rejected epoch leaves the sampler as it was");
});
