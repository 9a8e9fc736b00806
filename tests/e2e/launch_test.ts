// The DDP launcher with real processes: the environment contract (against torchrun's), output prefixing,
// failure propagation, signals, no leftover processes, and run_ddp.sh's choice of launcher.
import assert from "node:assert/strict";
import { join } from "node:path";
import { CONTRACT_KEYS, findFreePort, launch, LinePrefixer, parseLaunchArgs, rankEnv } from "../../launch.ts";
import { UsageError } from "../../cli/args.ts";
import { ROOT } from "../helpers.ts";

const FIXTURES = join(ROOT, "tests", "launch_fixtures");
const RANK_SCRIPT = join(FIXTURES, "rank.ts");
const ENV_SCRIPT = join(FIXTURES, "env.ts");
const decode = (b: Uint8Array) => new TextDecoder().decode(b);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The environment of the test process without the variables a launcher sets (so both start clean). */
function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env = Deno.env.toObject();
  for (const key of [...CONTRACT_KEYS, "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES"]) delete env[key];
  for (const key of Object.keys(env)) if (key.startsWith("TORCHELASTIC_")) delete env[key];
  return { ...env, ...extra };
}

interface Run {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

/** Starts the launcher CLI as a user would; `onStart` may poke the running process. */
async function runLauncher(
  args: string[],
  opts: { env?: Record<string, string>; onStart?: (child: Deno.ChildProcess) => Promise<void> } = {},
): Promise<Run> {
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "launch.ts"), ...args],
    cwd: ROOT,
    clearEnv: true,
    env: cleanEnv(opts.env),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // A hung launcher fails the test instead of hanging it.
  const watchdog = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    const [out] = await Promise.all([child.output(), opts.onStart?.(child)]);
    return {
      code: out.code,
      signal: out.signal,
      stdout: decode(out.stdout),
      stderr: decode(out.stderr),
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    clearTimeout(watchdog);
  }
}

/** Whether `pid` is a live process (a zombie counts as gone: it only waits to be reaped). */
function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

/** The pids a rank fixture wrote into `dir` (pid-R: the ranks; child-R: their grandchildren). */
function recordedPids(dir: string): Map<string, number> {
  const pids = new Map<string, number>();
  for (const entry of Deno.readDirSync(dir)) {
    if (/^(pid|child)-\d+$/.test(entry.name)) {
      pids.set(entry.name, Number(Deno.readTextFileSync(join(dir, entry.name))));
    }
  }
  return pids;
}

/** Asserts that none of the recorded processes is alive. */
async function assertNoneAlive(dir: string, expected: number): Promise<void> {
  const pids = recordedPids(dir);
  assert.equal(pids.size, expected, `pid files in ${dir}: ${[...pids.keys()].join(", ")}`);
  let survivors: string[] = [];
  // Grandchildren of a killed rank are reaped by init, which may take a moment.
  for (let i = 0; i < 20; i++) {
    survivors = [...pids].filter(([, pid]) => alive(pid)).map(([name, pid]) => `${name}=${pid}`);
    if (survivors.length === 0) return;
    await sleep(50);
  }
  assert.fail(`processes still running after the launcher exited: ${survivors.join(", ")}`);
}

/** A temporary directory for pid files; on disposal, kills whatever recorded process survived (so a failing
 * test leaks nothing) and removes the directory. */
async function fixtureDir(prefix: string): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    async [Symbol.asyncDispose]() {
      for (const [, pid] of recordedPids(path)) {
        if (!alive(pid)) continue;
        try {
          Deno.kill(pid, "SIGKILL");
        } catch { /* gone meanwhile */ }
      }
      await Deno.remove(path, { recursive: true });
    },
  };
}

async function waitForFiles(dir: string, names: string[], timeoutMs = 15_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (names.every((n) => recordedPids(dir).has(n))) return;
    await sleep(25);
  }
  throw new Error(`timed out waiting for ${names.join(", ")} in ${dir}`);
}

function readEnvs(dir: string, world: number): Record<string, string>[] {
  return Array.from(
    { length: world },
    (_, r) => JSON.parse(Deno.readTextFileSync(join(dir, `env-${r}.json`))) as Record<string, string>,
  );
}

/** The variables a launcher added or changed, compared with the environment it was started with. */
function addedByLauncher(
  env: Record<string, string>,
  parent: Record<string, string>,
): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter(([k, v]) => parent[k] !== v));
}

Deno.test("rankEnv: global rank, world size and node fields for node 1 of 2", () => {
  const env = rankEnv(
    { nprocPerNode: 4, nnodes: 2, nodeRank: 1, masterAddr: "10.0.0.1", masterPort: 29400 },
    2,
    {},
  );
  assert.deepEqual(env, {
    RANK: "6",
    LOCAL_RANK: "2",
    WORLD_SIZE: "8",
    LOCAL_WORLD_SIZE: "4",
    GROUP_RANK: "1",
    GROUP_WORLD_SIZE: "2",
    ROLE_RANK: "6",
    ROLE_NAME: "default",
    ROLE_WORLD_SIZE: "8",
    MASTER_ADDR: "10.0.0.1",
    MASTER_PORT: "29400",
    TORCHELASTIC_RUN_ID: "none",
    TORCHELASTIC_RESTART_COUNT: "0",
    TORCHELASTIC_MAX_RESTARTS: "0",
    TORCHELASTIC_USE_AGENT_STORE: "False",
    TORCH_NCCL_ASYNC_ERROR_HANDLING: "1",
  });
  assert.deepEqual(Object.keys(env).sort(), [...CONTRACT_KEYS].sort());
  const inherited = rankEnv({ nprocPerNode: 1, nnodes: 1, nodeRank: 0, masterAddr: "h", masterPort: 1 }, 0, {
    TORCH_NCCL_ASYNC_ERROR_HANDLING: "3",
  });
  assert.equal(inherited.TORCH_NCCL_ASYNC_ERROR_HANDLING, "3");
});

Deno.test("LinePrefixer: whole lines only, split UTF-8 kept, unfinished line flushed, long lines cut", () => {
  const writes: string[] = [];
  const lines = new LinePrefixer("[rank 1] ", (b) => writes.push(decode(b)), 16);
  const enc = new TextEncoder();
  const bytes = enc.encode("ab\ncd ü");
  lines.push(bytes.subarray(0, bytes.length - 1)); // "ü" split between chunks
  lines.push(bytes.subarray(bytes.length - 1));
  lines.push(enc.encode("!\n\nx"));
  lines.push(enc.encode("y"));
  assert.deepEqual(writes, ["[rank 1] ab\n", "[rank 1] cd ü!\n[rank 1] \n"]);
  lines.flush();
  assert.equal(writes.at(-1), "[rank 1] xy\n");
  lines.flush();
  assert.equal(writes.length, 3, "flushing twice writes nothing more");
  lines.push(enc.encode("0123456789abcdefXYZ"));
  assert.equal(writes.at(-1), "[rank 1] 0123456789abcdefXYZ\n", "a line over maxLine is cut");
});

Deno.test("parseLaunchArgs: torchrun's spellings, training flags after --", () => {
  const opts = parseLaunchArgs([
    "--nproc_per_node",
    "2",
    "--nnodes",
    "2",
    "--node_rank",
    "1",
    "--master_addr",
    "10.1.2.3",
    "--master_port",
    "29400",
    "--",
    "--epochs",
    "1",
    "--",
  ]);
  assert.deepEqual(opts, {
    nprocPerNode: 2,
    nnodes: 2,
    nodeRank: 1,
    masterAddr: "10.1.2.3",
    masterPort: 29400,
    script: undefined,
    cpu: false,
    args: ["--epochs", "1", "--"],
  });
  assert.equal(parseLaunchArgs(["--gpus", "3", "--nproc-per-node", "3"])?.nprocPerNode, 3);
  assert.equal(parseLaunchArgs(["--help"]), null);
  for (
    const bad of [
      ["--gpus", "0"],
      ["--gpus", "2", "--nproc-per-node", "3"],
      ["--nnodes", "2"],
      ["--nnodes", "2", "--node-rank", "2", "--master-port", "29400"],
      ["--master-port", "70000"],
      ["--node-rank", "-1"],
      ["train.ts"],
      ["--bogus"],
    ]
  ) {
    assert.throws(() => parseLaunchArgs(bad), UsageError, bad.join(" "));
  }
});

Deno.test("CLI: each rank gets torchrun's environment contract; no GPUs means CPU ranks over Gloo", async () => {
  const dir = await Deno.makeTempDir({ prefix: "launch_env_" });
  try {
    // An unloadable native library counts as no GPU (and keeps the test from building the shim).
    const run = await runLauncher(["--gpus", "2", "--script", ENV_SCRIPT], {
      env: { FIXTURE_OUT: dir, DISTRINEWS_LIB: join(dir, "missing.so") },
    });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /cannot load the native library .*missing\.so.*; assuming no CUDA devices/);
    assert.match(run.stderr, /no CUDA devices: running 2 CPU ranks over Gloo/);
    const envs = readEnvs(dir, 2);
    const port = envs[0].MASTER_PORT;
    assert.match(port, /^\d+$/);
    for (const [r, env] of envs.entries()) {
      for (const key of CONTRACT_KEYS) assert.ok(key in env, `rank ${r} lacks ${key}`);
      assert.equal(env.RANK, String(r));
      assert.equal(env.LOCAL_RANK, String(r));
      assert.equal(env.WORLD_SIZE, "2");
      assert.equal(env.LOCAL_WORLD_SIZE, "2");
      assert.equal(env.GROUP_RANK, "0");
      assert.equal(env.MASTER_ADDR, "127.0.0.1");
      assert.equal(env.MASTER_PORT, port, "every rank uses the same port");
      assert.equal(env.TORCHELASTIC_USE_AGENT_STORE, "False");
      assert.match(env.OMP_NUM_THREADS, /^[1-9]\d*$/);
      assert.equal(env.FIXTURE_OUT, dir, "the rest of the environment is inherited");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CLI: a second node's ranks get global ranks after the first node's", async () => {
  const dir = await Deno.makeTempDir({ prefix: "launch_env_" });
  try {
    const run = await runLauncher([
      "--cpu",
      "--nproc-per-node",
      "2",
      "--nnodes",
      "2",
      "--node-rank",
      "1",
      "--master-addr",
      "10.9.8.7",
      "--master-port",
      "29411",
      "--script",
      ENV_SCRIPT,
    ], { env: { FIXTURE_OUT: dir } });
    assert.equal(run.code, 0, run.stderr);
    for (const [local, global] of [[0, 2], [1, 3]]) {
      const env = JSON.parse(Deno.readTextFileSync(join(dir, `env-${global}.json`)));
      assert.equal(env.LOCAL_RANK, String(local));
      assert.equal(env.WORLD_SIZE, "4");
      assert.equal(env.GROUP_RANK, "1");
      assert.equal(env.GROUP_WORLD_SIZE, "2");
      assert.equal(env.MASTER_ADDR, "10.9.8.7");
      assert.equal(env.MASTER_PORT, "29411");
      assert.equal(env.CUDA_VISIBLE_DEVICES, "", "--cpu hides the GPUs");
    }
    assert.match(run.stdout, /^\[rank 2\] env of rank 2 written$/m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "torchrun gives its ranks the same variables as our launcher",
  ignore: (() => {
    try {
      return !Deno.statSync(join(ROOT, ".venv", "bin", "torchrun")).isFile;
    } catch {
      return true;
    }
  })(),
  fn: async () => {
    const ours = await Deno.makeTempDir({ prefix: "launch_ours_" });
    const theirs = await Deno.makeTempDir({ prefix: "launch_torchrun_" });
    try {
      const port = findFreePort();
      const env = cleanEnv({ FIXTURE_OUT: theirs });
      const torchrun = await new Deno.Command(join(ROOT, ".venv", "bin", "torchrun"), {
        args: [
          "--no-python",
          "--nproc_per_node",
          "2",
          "--master_port",
          String(port),
          Deno.execPath(),
          "run",
          "-A",
          ENV_SCRIPT,
        ],
        cwd: ROOT,
        clearEnv: true,
        env,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(torchrun.code, 0, decode(torchrun.stderr));
      const run = await runLauncher([
        "--gpus",
        "2",
        "--cpu",
        "--master-port",
        String(port),
        "--script",
        ENV_SCRIPT,
      ], {
        env: { FIXTURE_OUT: ours },
      });
      assert.equal(run.code, 0, run.stderr);

      const parent = cleanEnv();
      // torchrun's extras that are not part of the contract: its per-rank error-file path (we keep no error
      // files) and the list of signals its agent handles (an agent setting, inherited by the ranks).
      const torchrunOnly = new Set(["TORCHELASTIC_ERROR_FILE", "TORCHELASTIC_SIGNALS_TO_HANDLE"]);
      // Ours only: --cpu hides the GPUs. The test fixture's own variable is set on both sides.
      const oursOnly = new Set(["CUDA_VISIBLE_DEVICES"]);
      // Same keys, values differ on purpose: no agent store here; threads shared out among CPU ranks.
      const differentValue = new Set(["TORCHELASTIC_USE_AGENT_STORE", "OMP_NUM_THREADS", "FIXTURE_OUT"]);
      const theirEnvs = readEnvs(theirs, 2);
      const ourEnvs = readEnvs(ours, 2);
      for (let r = 0; r < 2; r++) {
        const t = addedByLauncher(theirEnvs[r], parent);
        const o = addedByLauncher(ourEnvs[r], parent);
        const theirKeys = Object.keys(t).filter((k) => !torchrunOnly.has(k)).sort();
        const ourKeys = Object.keys(o).filter((k) => !oursOnly.has(k)).sort();
        assert.deepEqual(ourKeys, theirKeys, `rank ${r}: variables set by our launcher vs torchrun`);
        for (const key of CONTRACT_KEYS) {
          assert.ok(key in t, `torchrun does not set ${key}: update CONTRACT_KEYS`);
        }
        for (const key of ourKeys) {
          if (!differentValue.has(key)) assert.equal(o[key], t[key], `rank ${r}: ${key}`);
        }
        assert.equal(t.TORCHELASTIC_USE_AGENT_STORE, "True");
        assert.equal(o.TORCHELASTIC_USE_AGENT_STORE, "False");
      }
    } finally {
      await Deno.remove(ours, { recursive: true });
      await Deno.remove(theirs, { recursive: true });
    }
  },
});

Deno.test("CLI: every line is prefixed with its rank, on its own stream, whole, unfinished lines included", async () => {
  await using tmp = await fixtureDir("launch_out_");
  const dir = tmp.path;
  const run = await runLauncher([
    "--cpu",
    "--gpus",
    "3",
    "--script",
    RANK_SCRIPT,
    "--",
    "--out",
    dir,
    "--print",
    "40",
  ]);
  assert.equal(run.code, 0, run.stderr);
  const outLines = run.stdout.trimEnd().split("\n");
  const errLines = run.stderr.trimEnd().split("\n").filter((l) => !l.startsWith("[launcher] "));
  for (let r = 0; r < 3; r++) {
    const mine = outLines.filter((l) => l.startsWith(`[rank ${r}] `));
    const expected = Array.from({ length: 40 }, (_, i) => `[rank ${r}] line ${i} of rank ${r} ü`);
    assert.deepEqual(mine, [...expected, `[rank ${r}] tail ${r}`]);
    const errs = errLines.filter((l) => l.startsWith(`[rank ${r}] `));
    assert.deepEqual(errs, Array.from({ length: 40 }, (_, i) => `[rank ${r}] err ${i} of rank ${r}`));
  }
  assert.equal(outLines.length, 3 * 41, "nothing but prefixed lines on stdout");
  assert.equal(errLines.length, 3 * 40, "nothing but prefixed lines and launcher lines on stderr");
  assert.match(run.stderr, /\[launcher\] all 3 rank\(s\) finished/);
});

Deno.test("CLI: a rank that crashes stops the others (SIGTERM, then SIGKILL) and sets the exit code", async () => {
  await using tmp = await fixtureDir("launch_crash_");
  const dir = tmp.path;
  // Rank 1 exits 3 after 0.5 s. Rank 0 would sleep 60 s; rank 2 too, but ignores SIGTERM. Every rank has a
  // `sleep 60` child in its process group.
  const run = await runLauncher([
    "--cpu",
    "--gpus",
    "3",
    "--script",
    RANK_SCRIPT,
    "--",
    "--out",
    dir,
    "--fail-rank",
    "1",
    "--code",
    "3",
    "--after",
    "500",
    "--sleep",
    "60000",
    "--spawn-child",
    "--ignore-sigterm",
  ]);
  assert.equal(run.code, 3, run.stderr);
  assert.ok(run.seconds < 10, `took ${run.seconds.toFixed(1)} s`);
  assert.match(run.stderr, /rank 1 failed first \(it exited with code 3\)/);
  assert.match(run.stderr, /sending SIGKILL/, "rank ignoring SIGTERM is killed after the grace period");
  await assertNoneAlive(dir, 6);
});

Deno.test("CLI: a rank killed by SIGKILL is reported, the launcher exits 137", async () => {
  await using tmp = await fixtureDir("launch_kill_");
  const dir = tmp.path;
  const run = await runLauncher([
    "--cpu",
    "--gpus",
    "2",
    "--script",
    RANK_SCRIPT,
    "--",
    "--out",
    dir,
    "--sigkill-rank",
    "1",
    "--after",
    "300",
    "--sleep",
    "60000",
  ]);
  assert.equal(run.code, 137, run.stderr);
  assert.ok(run.seconds < 10, `took ${run.seconds.toFixed(1)} s`);
  assert.match(run.stderr, /rank 1 failed first \(it was killed by SIGKILL \(exit code 137\)\)/);
  await assertNoneAlive(dir, 2);
});

Deno.test("CLI: SIGTERM to the launcher stops every rank and exits non-zero", async () => {
  await using tmp = await fixtureDir("launch_sigterm_");
  const dir = tmp.path;
  let signalledAt = 0;
  const run = await runLauncher(
    [
      "--cpu",
      "--gpus",
      "2",
      "--script",
      RANK_SCRIPT,
      "--",
      "--out",
      dir,
      "--sleep",
      "60000",
      "--spawn-child",
    ],
    {
      onStart: async (child) => {
        await waitForFiles(dir, ["pid-0", "pid-1"]);
        signalledAt = performance.now();
        child.kill("SIGTERM");
      },
    },
  );
  assert.equal(run.code, 143, run.stderr);
  assert.ok(performance.now() - signalledAt < 10_000);
  assert.match(run.stderr, /received SIGTERM: forwarding it to the ranks/);
  assert.match(run.stderr, /rank 0 was killed by SIGTERM/);
  await assertNoneAlive(dir, 4);
});

Deno.test("CLI: a second signal kills ranks that ignore the first, without waiting for the grace period", async () => {
  await using tmp = await fixtureDir("launch_sigterm2_");
  const dir = tmp.path;
  let signalledAt = 0;
  const run = await runLauncher(
    [
      "--cpu",
      "--gpus",
      "2",
      "--script",
      RANK_SCRIPT,
      "--",
      "--out",
      dir,
      "--sleep",
      "60000",
      "--ignore-sigterm",
    ],
    {
      onStart: async (child) => {
        await waitForFiles(dir, ["pid-0", "pid-1"]);
        signalledAt = performance.now();
        child.kill("SIGTERM");
        await sleep(300);
        child.kill("SIGINT");
      },
    },
  );
  assert.equal(run.code, 143, run.stderr);
  assert.ok(performance.now() - signalledAt < 2500, "did not wait for the 3 s grace period");
  assert.match(run.stderr, /received SIGINT while stopping the ranks: killing them now/);
  assert.match(run.stderr, /rank 0 was killed by SIGKILL/);
  await assertNoneAlive(dir, 2);
});

Deno.test("CLI: the summary has one line per rank and names the first failure", async () => {
  await using tmp = await fixtureDir("launch_summary_");
  const dir = tmp.path;
  // Rank 1 exits 4 after 0.3 s; rank 0 ends at the launcher's SIGTERM.
  const run = await runLauncher([
    "--cpu",
    "--gpus",
    "2",
    "--script",
    RANK_SCRIPT,
    "--",
    "--out",
    dir,
    "--fail-rank",
    "1",
    "--code",
    "4",
    "--after",
    "300",
    "--sleep",
    "60000",
  ]);
  assert.equal(run.code, 4, run.stderr);
  const summary = run.stderr.split("\n").filter((l) =>
    /^\[launcher\] (rank \d+ \S+ .* after |FAILED)/.test(l)
  );
  assert.equal(summary.length, 3, run.stderr);
  assert.match(
    summary[0],
    /^\[launcher\] rank 0 was killed by SIGTERM \(exit code 143\) after .* \(while being stopped\)$/,
  );
  assert.match(summary[1], /^\[launcher\] rank 1 exited with code 4 after .* \(failed first\)$/);
  assert.equal(summary[2], "[launcher] FAILED: rank 1 failed first (it exited with code 4); exit code 4");
  await assertNoneAlive(dir, 2);
});

Deno.test("CLI: --pretrained is fetched once, before any rank starts; a bad source starts nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "launch_pretrained_" });
  try {
    const model = join(dir, "model");
    Deno.mkdirSync(model);
    Deno.writeTextFileSync(join(model, "config.json"), "{}");
    Deno.writeTextFileSync(join(model, "model.safetensors"), "");
    const args = ["--cpu", "--gpus", "2", "--script", ENV_SCRIPT, "--", "--pretrained"];
    const run = await runLauncher([...args, model], { env: { FIXTURE_OUT: dir } });
    assert.equal(run.code, 0, run.stderr);
    const lines = run.stderr.split("\n");
    const ready = lines.filter((l) =>
      l.startsWith("[launcher] pretrained weights ready for every rank: local ")
    );
    assert.equal(ready.length, 1, run.stderr);
    assert.ok(
      lines.indexOf(ready[0]) < lines.findIndex((l) => l.startsWith("[launcher] starting ranks")),
      "warmed before the ranks start",
    );
    assert.equal(readEnvs(dir, 2).length, 2);

    const bad = await runLauncher([...args, join(dir, "missing", "model.safetensors")], {
      env: { FIXTURE_OUT: join(dir, "bad") },
    });
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(bad.stderr, /^error: .*missing\/model\.safetensors/m);
    assert.doesNotMatch(bad.stderr, /\[launcher\] starting/, "nothing was started");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CLI: bad flags exit 2 with the usage", async () => {
  for (
    const args of [
      ["--bogus"],
      ["--gpus", "0"],
      ["--gpus", "two"],
      ["--nnodes", "2"],
      ["--gpus", "2", "train.ts"],
    ]
  ) {
    const run = await runLauncher(args);
    assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
    assert.match(run.stderr, /^error: /);
    assert.match(run.stderr, /Usage: deno run -A launch\.ts/);
    assert.doesNotMatch(run.stderr, /\[launcher\] starting/, "nothing was started");
  }
  const help = await runLauncher(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--nproc-per-node N/);
});

Deno.test("launch(): more ranks than GPUs is refused before anything starts", async () => {
  const logs: string[] = [];
  await assert.rejects(
    launch({ nprocPerNode: 2, deviceCount: 1, command: ["false"], log: (l) => logs.push(l) }),
    (err: Error) =>
      err instanceof UsageError &&
      /more ranks than this node has CUDA devices \(1 visible\)/.test(err.message),
  );
  assert.ok(!logs.some((l) => l.startsWith("starting")));
});

Deno.test("launch(): with GPUs, one rank per GPU by default, OMP_NUM_THREADS=1 as torchrun", async () => {
  const dir = await Deno.makeTempDir({ prefix: "launch_gpu_" });
  try {
    const logs: string[] = [];
    const result = await launch({
      deviceCount: 3,
      command: [Deno.execPath(), "run", "-A", ENV_SCRIPT],
      env: { FIXTURE_OUT: dir },
      forwardSignals: false,
      stdout: () => {},
      log: (l) => logs.push(l),
    });
    assert.deepEqual({ code: result.code, failedRank: result.failedRank }, {
      code: 0,
      failedRank: undefined,
    });
    assert.equal(result.ranks.length, 3);
    assert.match(logs.join("\n"), /running 3 rank\(s\) on 3 of 3 CUDA device\(s\) over NCCL/);
    for (const env of readEnvs(dir, 3)) {
      assert.equal(env.LOCAL_WORLD_SIZE, "3");
      assert.equal(
        env.OMP_NUM_THREADS,
        Deno.env.get("OMP_NUM_THREADS") ?? "1",
        "torchrun's value, unless set",
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("launch(): a successful run resolves {code: 0}; an abort stops the ranks with 143", async () => {
  const ok = await launch({
    nprocPerNode: 2,
    cpu: true,
    command: ["sh", "-c", 'echo "hello from $RANK"'],
    forwardSignals: false,
    stdout: () => {},
    log: () => {},
  });
  assert.deepEqual(ok.ranks.map((r) => r.code), [0, 0]);
  assert.equal(ok.code, 0);

  const controller = new AbortController();
  const started = performance.now();
  const aborted = launch({
    nprocPerNode: 2,
    cpu: true,
    command: ["sleep", "60"],
    signal: controller.signal,
    graceMs: 500,
    log: () => {},
  });
  setTimeout(() => controller.abort(), 200);
  const result = await aborted;
  assert.equal(result.code, 143);
  assert.equal(result.signal, "SIGTERM");
  assert.equal(result.failedRank, undefined);
  assert.deepEqual(result.ranks.map((r) => r.signal), ["SIGTERM", "SIGTERM"]);
  assert.ok(performance.now() - started < 5000);
});

Deno.test("run_ddp.sh: torchrun when it is on PATH, else launch.ts; N from the GPUs, or 2", async () => {
  const bin = await Deno.makeTempDir({ prefix: "launch_bin_" });
  try {
    // Stand-ins that print how they were called.
    const fake = (name: string, body: string) => {
      Deno.writeTextFileSync(join(bin, name), `#!/bin/sh\n${body}\n`);
      Deno.chmodSync(join(bin, name), 0o755);
    };
    fake("deno", 'echo "deno $*"');
    const script = async (args: string[], env: Record<string, string> = {}) => {
      const base = cleanEnv({ PATH: `${bin}:/usr/bin:/bin`, ...env });
      const out = await new Deno.Command(join(ROOT, "run_ddp.sh"), {
        args,
        clearEnv: true,
        env: base,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(out.code, 0, decode(out.stderr));
      return decode(out.stdout).trim();
    };
    // No torchrun, no nvidia-smi: our launcher, 2 CPU ranks.
    assert.equal(await script(["--epochs", "1"]), `deno run -A ${ROOT}/launch.ts --gpus 2 -- --epochs 1`);
    assert.equal(
      await script(["3", "--epochs", "1"]),
      `deno run -A ${ROOT}/launch.ts --gpus 3 -- --epochs 1`,
    );
    fake("nvidia-smi", 'printf "GPU 0: H200 (UUID: a)\\nGPU 1: H200 (UUID: b)\\n"');
    assert.equal(await script([]), `deno run -A ${ROOT}/launch.ts --gpus 2 --`);
    assert.equal(
      await script([], { CUDA_VISIBLE_DEVICES: "1" }),
      `deno run -A ${ROOT}/launch.ts --gpus 1 --`,
    );
    fake("torchrun", 'echo "torchrun $*"');
    assert.equal(
      await script(["--lr", "3e-5"]),
      `torchrun --standalone --no-python --nproc_per_node 2 deno run -A ${ROOT}/train.ts --lr 3e-5`,
    );
    const usage = await script(["--help"]);
    assert.match(usage, /^Usage: \.\/run_ddp\.sh \[N\]/);
  } finally {
    await Deno.remove(bin, { recursive: true });
  }
});
