// The job plan as a value: no process is started, no port bound, no library loaded.
import assert from "node:assert/strict";
import { UsageError } from "../cli/args.ts";
import { CONTRACT_KEYS } from "./contract.ts";
import { parseLaunchArgs } from "./options.ts";
import {
  checkLaunchOptions,
  DEFAULT_GRACE_MS,
  DEFAULT_SCRIPT,
  describeStart,
  DRAIN_MS,
  type HostFacts,
  KILL_WAIT_MS,
  planJob,
  pretrainedSpec,
} from "./plan.ts";

/** A machine with 8 CPUs, no GPU, and an environment without a launcher's variables. */
function host(facts: Partial<HostFacts> = {}): HostFacts {
  return {
    cudaDevices: 0,
    cpus: 8,
    env: { HOME: "/home/me" },
    freePort: 40000,
    denoPath: "/bin/deno",
    ...facts,
  };
}

Deno.test("plan: CPU ranks share the cores, run train flags untouched, and get the contract and a prefix", () => {
  const options = parseLaunchArgs(["--cpu", "--gpus", "2", "--", "--epochs", "1", "--", "--help"])!;
  const plan = planJob(options, host());
  assert.equal(plan.backend, "gloo");
  assert.deepEqual(plan.job, {
    nprocPerNode: 2,
    nnodes: 1,
    nodeRank: 0,
    masterAddr: "127.0.0.1",
    masterPort: 40000,
  });
  assert.deepEqual(plan.ranks.map((r) => [r.rank, r.localRank, r.prefix]), [[0, 0, "[rank 0] "], [
    1,
    1,
    "[rank 1] ",
  ]]);
  for (const r of plan.ranks) {
    assert.deepEqual(r.argv, ["/bin/deno", "run", "-A", DEFAULT_SCRIPT, "--epochs", "1", "--", "--help"]);
    assert.deepEqual(
      Object.keys(r.env).sort(),
      [...CONTRACT_KEYS, "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"].sort(),
    );
    assert.equal(r.env.RANK, String(r.rank));
    assert.equal(r.env.MASTER_PORT, "40000");
    assert.equal(r.env.CUDA_VISIBLE_DEVICES, "", "--cpu hides the GPUs");
    assert.equal(r.env.OMP_NUM_THREADS, "4", "8 CPUs shared by 2 ranks");
  }
  assert.deepEqual([plan.graceMs, plan.killWaitMs, plan.drainMs], [DEFAULT_GRACE_MS, KILL_WAIT_MS, DRAIN_MS]);
  assert.equal(plan.pretrained, undefined);
  assert.deepEqual(plan.notes, [
    "--cpu: running 2 CPU rank(s) over Gloo (CUDA devices hidden)",
    "OMP_NUM_THREADS=4 for each rank (set OMP_NUM_THREADS to choose)",
  ]);
  assert.equal(
    describeStart(plan),
    `starting ranks 0..1 of 2 (node 0 of 1, master 127.0.0.1:40000): /bin/deno run -A ${DEFAULT_SCRIPT} ` +
      "--epochs 1 -- --help",
  );
});

Deno.test("plan: one rank per GPU by default over NCCL, OMP_NUM_THREADS=1 as torchrun; too many ranks refused", () => {
  const plan = planJob({}, host({ cudaDevices: 4 }));
  assert.equal(plan.backend, "nccl");
  assert.equal(plan.ranks.length, 4);
  assert.ok(plan.ranks.every((r) => r.env.OMP_NUM_THREADS === "1" && !("CUDA_VISIBLE_DEVICES" in r.env)));
  assert.equal(plan.notes[0], "running 4 rank(s) on 4 of 4 CUDA device(s) over NCCL");
  assert.equal(planJob({ nprocPerNode: 2 }, host({ cudaDevices: 4 })).ranks.length, 2);
  assert.throws(
    () => planJob({ nprocPerNode: 5 }, host({ cudaDevices: 4 })),
    (e: Error) =>
      e instanceof UsageError && /more ranks than this node has CUDA devices \(4 visible\)/.test(e.message),
  );
  // Without GPUs, 2 CPU ranks; --cpu with GPUs still plans CPU ranks.
  assert.equal(planJob({}, host()).ranks.length, 2);
  assert.equal(planJob({ cpu: true }, host({ cudaDevices: 4 })).backend, "gloo");
});

Deno.test("plan: a second node's ranks, a given master, OMP_NUM_THREADS and extra variables left as set", () => {
  const options = parseLaunchArgs([
    "--nproc_per_node",
    "2",
    "--nnodes",
    "2",
    "--node-rank",
    "1",
    "--master-addr",
    "10.0.0.1",
    "--master-port",
    "29500",
  ])!;
  const plan = planJob(
    { ...options, env: { OMP_NUM_THREADS: "3", RANK: "99", EXTRA: "x" } },
    host({ freePort: undefined, env: { TORCH_NCCL_ASYNC_ERROR_HANDLING: "3" } }),
  );
  assert.deepEqual(plan.ranks.map((r) => [r.rank, r.localRank, r.prefix]), [[2, 0, "[rank 2] "], [
    3,
    1,
    "[rank 3] ",
  ]]);
  for (const r of plan.ranks) {
    assert.equal(r.env.RANK, String(r.rank), "the contract wins over the extra variables");
    assert.equal(r.env.WORLD_SIZE, "4");
    assert.equal(r.env.GROUP_RANK, "1");
    assert.equal(r.env.MASTER_ADDR, "10.0.0.1");
    assert.equal(r.env.MASTER_PORT, "29500");
    assert.equal(r.env.OMP_NUM_THREADS, "3");
    assert.equal(r.env.EXTRA, "x");
    assert.equal(r.env.TORCH_NCCL_ASYNC_ERROR_HANDLING, "3", "inherited, as torchrun");
  }
  assert.ok(!plan.notes.some((n) => n.startsWith("OMP_NUM_THREADS")));
  assert.match(describeStart(plan), /^starting ranks 2\.\.3 of 4 \(node 1 of 2, master 10\.0\.0\.1:29500\)/);
  // Set in the launcher's environment: the ranks inherit it, the plan adds nothing.
  const inherited = planJob({ cpu: true }, host({ env: { OMP_NUM_THREADS: "6" } }));
  assert.ok(inherited.ranks.every((r) => !("OMP_NUM_THREADS" in r.env)));
});

Deno.test("plan: pure — same inputs, same plan; options and facts are left as they were", () => {
  const options = { cpu: true, env: { A: "1" }, args: ["--pretrained", "minilm"], graceMs: 250 };
  const facts = host();
  const before = structuredClone({ options, facts });
  const a = planJob(options, facts);
  const b = planJob(options, facts);
  assert.deepEqual(a, b);
  assert.notEqual(a.ranks[0].env, b.ranks[0].env, "fresh objects each time");
  assert.deepEqual({ options, facts }, before);
  assert.equal(a.pretrained, "minilm");
  assert.equal(a.graceMs, 250);
  a.ranks[0].argv.push("mutated");
  assert.notDeepEqual(a.ranks[1].argv, a.ranks[0].argv, "ranks do not share their argv");
});

Deno.test("plan: a command instead of deno run, a working directory", () => {
  const plan = planJob({ cpu: true, nprocPerNode: 1, command: ["sh", "-c", "true"], cwd: "/tmp" }, host());
  assert.deepEqual(plan.ranks[0].argv, ["sh", "-c", "true"]);
  assert.equal(plan.cwd, "/tmp");
  assert.equal(plan.ranks[0].env.OMP_NUM_THREADS, undefined, "one rank keeps libtorch's default");
});

Deno.test("plan: inconsistent options are refused before anything is asked of the machine", () => {
  for (
    const bad of [
      { nnodes: 0 },
      { nnodes: 2, nodeRank: 2, masterPort: 1 },
      { nnodes: 2 },
      { nprocPerNode: 1.5 },
      { masterPort: 70000 },
      { graceMs: -1 },
    ]
  ) {
    assert.throws(() => checkLaunchOptions(bad), UsageError, JSON.stringify(bad));
    assert.throws(() => planJob(bad, host()), UsageError, JSON.stringify(bad));
  }
  assert.throws(() => planJob({ command: [] }, host()), /command is empty/);
  assert.throws(() => planJob({}, host({ freePort: undefined })), /no master port/);
});

Deno.test("pretrainedSpec: --pretrained X and --pretrained=X; absent or valueless means nothing to warm", () => {
  assert.equal(
    pretrainedSpec(["--epochs", "1", "--pretrained", "distilbert-base-uncased"]),
    "distilbert-base-uncased",
  );
  assert.equal(pretrainedSpec(["--pretrained=owner/name@abc"]), "owner/name@abc");
  assert.equal(pretrainedSpec(["--epochs", "1"]), undefined);
  assert.equal(pretrainedSpec(["--pretrained"]), undefined);
  assert.equal(pretrainedSpec(["--pretrained="]), undefined);
});
