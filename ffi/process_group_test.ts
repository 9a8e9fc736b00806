// DDP through c10d with real processes over Gloo: equivalence with single-process training on the same
// global batches, identical parameters across ranks, no_sync during gradient accumulation, metric
// all-reduce, and errors that do not hang.
import assert from "node:assert/strict";
import { join } from "node:path";
import { DistilBertClassifier } from "./model.ts";
import { ProcessGroup, processGroupOptionsFromEnv } from "./process_group.ts";
import { findFreePort } from "../launch.ts";
import { loadSafetensors } from "../weights/safetensors.ts";
import { assertClose, makeBatch, runRankScripts, sliceRows, tempDir, tinyConfig } from "../tests/helpers.ts";

async function singleProcess(steps: number, globalBatch: number, seqLen: number, lr: number) {
  const config = tinyConfig({ dropout: 0, attention_dropout: 0, seq_classif_dropout: 0 });
  const model = await DistilBertClassifier.create(config, { device: "cpu", seed: 100 });
  model.configureOptimizer({ weightDecay: 0.01 });
  for (let step = 0; step < steps; step++) {
    model.trainStep(sliceRows(makeBatch(config, globalBatch, seqLen, 1000 + step), 0, globalBatch), { lr });
  }
  return model;
}

async function compareWithSingle(tmp: string, steps: number, perRank: number, accumulate: number) {
  const seqLen = 12, lr = 5e-3, worldSize = 2;
  const out = join(tmp, "run");
  await runRankScripts("rank.ts", worldSize, { steps, perRank, seqLen, lr, accumulate, out });
  const reports = await Promise.all(
    [0, 1].map(async (r) => JSON.parse(await Deno.readTextFile(`${out}.rank${r}.json`))),
  );
  // Parameters are identical on both ranks after every step, including before the first (broadcast).
  assert.deepEqual(reports[0].checksums, reports[1].checksums);
  assert.deepEqual(reports[0].summed, [3, 2], "all-reduce sums rank+1 and 1 over 2 ranks");
  using single = await singleProcess(steps, perRank * worldSize * accumulate, seqLen, lr);
  const reference = single.stateDict();
  for (const r of [0, 1]) {
    const state = await loadSafetensors(`${out}.rank${r}.safetensors`);
    for (const [name, t] of reference) {
      const got = state.get(name)!;
      assertClose(
        new Float32Array(got.data.slice().buffer),
        new Float32Array(t.data.slice().buffer),
        1e-5,
        `rank ${r} ${name}`,
      );
    }
  }
  return reports;
}

Deno.test("DDP: 2 ranks x batch B equal 1 process x batch 2B, step for step, from different seeds", async () => {
  await using tmp = await tempDir();
  const reports = await compareWithSingle(tmp.path, 4, 3, 1);
  // Training moved the parameters (so the comparison is not trivially about the initial weights).
  assert.notEqual(reports[0].checksums[0], reports[0].checksums.at(-1));
});

Deno.test("DDP with gradient accumulation (no_sync on micro-steps) equals one large batch", async () => {
  await using tmp = await tempDir();
  await compareWithSingle(tmp.path, 2, 2, 2);
});

Deno.test("process group options come from torchrun's environment", () => {
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  assert.equal(processGroupOptionsFromEnv(env({})), undefined);
  const contract = { WORLD_SIZE: "2", RANK: "1", MASTER_PORT: "29500" };
  assert.equal(processGroupOptionsFromEnv(env(contract))?.timeoutMs, undefined);
  assert.equal(
    processGroupOptionsFromEnv(env({ ...contract, DISTRINEWS_RENDEZVOUS_TIMEOUT_S: "20" }))?.timeoutMs,
    20_000,
  );
  assert.throws(
    () => processGroupOptionsFromEnv(env({ ...contract, DISTRINEWS_RENDEZVOUS_TIMEOUT_S: "soon" })),
    /DISTRINEWS_RENDEZVOUS_TIMEOUT_S must be a number of seconds > 0/,
  );
  assert.deepEqual(
    processGroupOptionsFromEnv(
      env({ WORLD_SIZE: "4", RANK: "2", MASTER_ADDR: "10.0.0.1", MASTER_PORT: "29500" }),
    ),
    { rank: 2, worldSize: 4, masterAddr: "10.0.0.1", masterPort: 29500, hostStore: undefined },
  );
  assert.throws(
    () => processGroupOptionsFromEnv(env({ WORLD_SIZE: "2", RANK: "x", MASTER_PORT: "1" })),
    /RANK/,
  );
  // Under torchrun the agent serves the store: rank 0 must connect as a client like the others.
  const underTorchrun = {
    WORLD_SIZE: "2",
    RANK: "0",
    MASTER_PORT: "1",
    TORCHELASTIC_USE_AGENT_STORE: "True",
  };
  assert.equal(processGroupOptionsFromEnv(env(underTorchrun))?.hostStore, false);
});

Deno.test("bad process group arguments fail fast with clear errors; a missing peer times out", async () => {
  const base = { masterAddr: "127.0.0.1", masterPort: findFreePort() };
  await assert.rejects(
    () => ProcessGroup.create({ ...base, rank: 2, worldSize: 2 }),
    /rank 2 is outside \[0, 2\)/,
  );
  await assert.rejects(
    () => ProcessGroup.create({ ...base, rank: 0, worldSize: 0 }),
    /world size must be >= 1/,
  );
  await assert.rejects(
    () => ProcessGroup.create({ ...base, rank: 0, worldSize: 1, backend: "nccl" as "gloo" }),
    /backend "nccl" is not available/,
  );
  // A world of 2 where the second rank never comes: the rendezvous gives up at the timeout.
  const started = performance.now();
  await assert.rejects(() => ProcessGroup.create({ ...base, rank: 0, worldSize: 2, timeoutMs: 1500 }));
  assert.ok(performance.now() - started < 15_000);
  // A world of one works on its own: all-reduce is the identity.
  using group = await ProcessGroup.create({ ...base, masterPort: findFreePort(), rank: 0, worldSize: 1 });
  assert.deepEqual([...await group.allReduceSum(new Float64Array([1.5, 2]))], [1.5, 2]);
  await group.barrier();
});
