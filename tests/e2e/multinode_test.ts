// Multi-node DDP across a real network. Two Linux network namespaces joined by a veth pair stand for two
// machines: each has its own interface and address (10.77.0.1 and 10.77.0.2), its own ports and loopback,
// and runs its own launcher (`launch.ts --nnodes 2 --node-rank R --master-addr 10.77.0.1`), so rendezvous
// and Gloo's all-reduces go over that link exactly as between two hosts. Checked:
//   (a) the job gives the same model as the same world size on one node;
//   (b) when node 1 dies, node 0 stops promptly with a message naming the failure, instead of waiting in
//       an all-reduce;
//   (c) a master address that nobody has fails after the rendezvous timeout with a message naming it.
//
// Namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN); where they cannot be made the test is skipped and
// says why. CI runs as root. Nothing leaves the two namespaces: they have no route anywhere else.
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadSafetensors } from "../../weights/safetensors.ts";
import { exists } from "../../util/fs.ts";
import { fixtureDataDir, ROOT, tempDir } from "../helpers.ts";

const TINY = join(ROOT, "tests", "fixtures", "tiny_config.json");
/** Local ranks per node: two, so that each all-reduce has peers on the same node and across the link. */
const RANKS_PER_NODE = 2;
/** Each namespace has its own ports: the rendezvous port cannot clash with the host or another test. */
const MASTER_PORT = 29500;
/** The same interface name on both sides of the pair, so one GLOO_SOCKET_IFNAME fits every node. */
const IFACE = "dn0";
/** An address in the nodes' subnet that no interface has: connections to it fail with "no route to host". */
const NOBODY = "10.77.0.99";
/**
 * The rendezvous timeout a wrong master address runs into, shortened from the default 300 s through
 * DISTRINEWS_RENDEZVOUS_TIMEOUT_S (every node of the test gets it); (c) allows a minute on top of it.
 */
const RENDEZVOUS_TIMEOUT_S = 20;

// Names unique to this run: a test killed halfway leaves namespaces that the next run does not trip over.
const NODES = [
  { ns: `dn-node0-${Deno.pid}`, addr: "10.77.0.1" },
  { ns: `dn-node1-${Deno.pid}`, addr: "10.77.0.2" },
];

const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/** Runs `ip` with `args`; throws with its stderr when it fails. */
async function ip(...args: string[]): Promise<string> {
  const out = await new Deno.Command("ip", { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`ip ${args.join(" ")} failed: ${decode(out.stderr).trim()}`);
  return decode(out.stdout);
}

/** Why namespaces cannot be made here, or undefined when they can (one is made and removed to be sure). */
async function whyNoNamespaces(): Promise<string | undefined> {
  if (Deno.build.os !== "linux") return "network namespaces are Linux-only";
  if (Deno.uid() !== 0) return "not root: making network namespaces needs CAP_SYS_ADMIN";
  const probe = `dn-probe-${Deno.pid}`;
  try {
    await ip("netns", "add", probe);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return "the ip command (iproute2) is not installed";
    return err instanceof Error ? err.message : String(err);
  }
  await ip("netns", "del", probe);
  return undefined;
}

const skipReason = await whyNoNamespaces();
if (skipReason) console.log(`multinode_test: skipped: ${skipReason}`);

/** Two namespaces, a veth pair between them, addresses on it, and loopback up in each. */
async function makeNetwork(): Promise<void> {
  for (const { ns } of NODES) await ip("netns", "add", ns);
  await ip(
    "link",
    "add",
    IFACE,
    "netns",
    NODES[0].ns,
    "type",
    "veth",
    "peer",
    "name",
    IFACE,
    "netns",
    NODES[1].ns,
  );
  for (const { ns, addr } of NODES) {
    await ip("-n", ns, "addr", "add", `${addr}/24`, "dev", IFACE);
    await ip("-n", ns, "link", "set", "lo", "up");
    await ip("-n", ns, "link", "set", IFACE, "up");
  }
}

/** SIGKILLs every process in `ns`: a node losing power, as far as its peers can tell. */
async function killNode(ns: string): Promise<number> {
  const pids = (await ip("netns", "pids", ns)).split("\n").filter(Boolean).map(Number);
  for (const pid of pids) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* already gone */ }
  }
  return pids.length;
}

/** Removes the namespaces (the veth pair goes with them), after killing whatever still runs in them. */
async function removeNetwork(): Promise<void> {
  for (const { ns } of NODES) {
    try {
      await killNode(ns);
      await ip("netns", "del", ns);
    } catch { /* never made */ }
  }
}

interface NodeRun {
  child: Deno.ChildProcess;
  /** Collected from the start, so that a full pipe never blocks the launcher. */
  output: Promise<Deno.CommandOutput>;
}

/**
 * Starts node `rank`'s launcher inside its namespace. Each node has its own cache, as separate machines
 * would; GLOO_SOCKET_IFNAME makes Gloo use the link (its default, the address of the host name, is not in
 * a namespace).
 */
function startNode(
  rank: number,
  trainFlags: string[],
  opts: { cache: string; masterAddr?: string; ns?: string },
): NodeRun {
  const child = new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      opts.ns ?? NODES[rank].ns,
      Deno.execPath(),
      "run",
      "-A",
      "launch.ts",
      "--gpus",
      String(RANKS_PER_NODE),
      "--cpu",
      "--nnodes",
      "2",
      "--node-rank",
      String(rank),
      "--master-addr",
      opts.masterAddr ?? NODES[0].addr,
      "--master-port",
      String(MASTER_PORT),
      "--",
      ...trainFlags,
    ],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: {
      DISTRINEWS_CACHE: opts.cache,
      GLOO_SOCKET_IFNAME: IFACE,
      DISTRINEWS_RENDEZVOUS_TIMEOUT_S: String(RENDEZVOUS_TIMEOUT_S),
    },
  }).spawn();
  return { child, output: child.output() };
}

/** The float parameters of a checkpoint folder's model.safetensors. */
async function parameters(dir: string): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [name, t] of await loadSafetensors(join(dir, "model.safetensors"))) {
    // A copy: the bytes of a tensor in the file need not be 4-byte aligned.
    if (t.dtype === "F32") out.set(name, new Float32Array(t.data.slice().buffer));
  }
  return out;
}

/** What a failed run printed, for assertion messages. */
function tail(out: Deno.CommandOutput): string {
  return `stdout:\n${decode(out.stdout).slice(-3000)}\nstderr:\n${decode(out.stderr).slice(-3000)}`;
}

Deno.test({
  name:
    "multi-node DDP over a veth pair: same model as one node, a lost node stops the job, a wrong master " +
    "address fails",
  ignore: skipReason !== undefined,
  async fn(t) {
    await using tmp = await tempDir();
    const data = await fixtureDataDir(tmp.path);
    const flags = (output: string, epochs: number, batch: number) => [
      "--data",
      data,
      "--model",
      TINY,
      "--epochs",
      String(epochs),
      "--batch-size",
      String(batch),
      "--lr",
      "1e-3",
      "--output",
      output,
    ];
    const cache = (name: string) => join(tmp.path, `cache-${name}`);
    const started: NodeRun[] = [];
    const start = (...args: Parameters<typeof startNode>) => {
      const run = startNode(...args);
      started.push(run);
      return run;
    };
    await makeNetwork();
    try {
      // (c) waits out the rendezvous timeout, doing nothing meanwhile: it runs alongside (a) and (b). It is
      // node 1 of a job whose master address nobody has, started on node 0's machine (which is on the
      // subnet, so the address is a real "no route to host", not an unroutable network); (b) kills
      // everything on node 1's machine, and must not kill this too.
      const lostStarted = performance.now();
      const lost = start(1, flags(join(tmp.path, "lost"), 1, 8), {
        cache: cache("lost"),
        masterAddr: NOBODY,
        ns: NODES[0].ns,
      });

      await t.step("(a) two nodes train the same model as one node with the same world size", async () => {
        const single = join(tmp.path, "single"), multi = join(tmp.path, "multi");
        const one = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            "launch.ts",
            "--gpus",
            String(2 * RANKS_PER_NODE),
            "--cpu",
            "--",
            ...flags(single, 2, 8),
          ],
          cwd: ROOT,
          stdout: "piped",
          stderr: "piped",
          env: { DISTRINEWS_CACHE: cache("single") },
        }).output();
        assert.equal(one.code, 0, tail(one));

        const nodes = [0, 1].map((r) => start(r, flags(multi, 2, 8), { cache: cache(`multi${r}`) }));
        const [node0, node1] = await Promise.all(nodes.map((n) => n.output));
        assert.equal(node0.code, 0, `node 0 failed\n${tail(node0)}`);
        assert.equal(node1.code, 0, `node 1 failed\n${tail(node1)}`);
        const world = 2 * RANKS_PER_NODE;
        assert.match(
          decode(node0.stdout),
          new RegExp(`\\[rank 0\\] model: [\\d,]+ parameters on cpu, ${world} process`),
        );
        assert.match(decode(node0.stdout), /\[rank 0\] epoch 2: .* eval loss/);
        // Global rank 0 is on node 0: node 1 prints no training lines and writes no checkpoint.
        assert.doesNotMatch(decode(node1.stdout), /epoch \d+:/);

        const a = await parameters(single), b = await parameters(multi);
        assert.ok(a.size > 0, "the checkpoint has float parameters");
        assert.deepEqual([...b.keys()], [...a.keys()]);
        let worst = 0, worstName = "";
        for (const [name, x] of a) {
          const y = b.get(name)!;
          for (let i = 0; i < x.length; i++) {
            const d = Math.abs(x[i] - y[i]);
            if (!(d <= worst)) [worst, worstName] = [d, name];
          }
        }
        assert.ok(worst <= 1e-5, `parameters differ by up to ${worst} (${worstName})`);
      });

      await t.step(
        "(b) node 1 dies mid-training: node 0 stops within 30 s, non-zero, naming the failure",
        async () => {
          const output = join(tmp.path, "crash");
          // Many tiny epochs keep the job busy long enough to pull the plug in the middle.
          const nodes = [0, 1].map((r) => start(r, flags(output, 200, 4), { cache: cache(`crash${r}`) }));
          // Training is under way once rank 0 has finished an epoch: every rank has joined and all-reduced.
          const metrics = join(`${output}-logs`, "metrics.jsonl");
          const deadline = performance.now() + 120_000;
          while (!await exists(metrics)) {
            assert.ok(performance.now() < deadline, "the two-node job did not finish an epoch within 120 s");
            await new Promise((r) => setTimeout(r, 100));
          }
          const killedAt = performance.now();
          assert.ok(
            await killNode(NODES[1].ns) >= 1 + RANKS_PER_NODE,
            "node 1's launcher and ranks were running",
          );
          const node0 = await nodes[0].output;
          const seconds = (performance.now() - killedAt) / 1000;
          await nodes[1].output;
          assert.notEqual(node0.code, 0, "node 0 must fail when node 1 is gone");
          assert.ok(seconds < 30, `node 0 took ${seconds.toFixed(1)} s to stop`);
          const stderr = decode(node0.stderr);
          // The launcher's verdict, and the rank's own reason: Gloo lost its connection to the other node.
          assert.match(stderr, /FAILED: rank \d+ failed first/, tail(node0));
          assert.match(stderr, /Connection (closed|reset) by peer|Broken pipe/i, tail(node0));
        },
      );

      await t.step(
        `(c) a master address nobody has: the node fails after the ${RENDEZVOUS_TIMEOUT_S} s rendezvous timeout, naming the address`,
        async () => {
          const out = await lost.output;
          const seconds = (performance.now() - lostStarted) / 1000;
          assert.notEqual(out.code, 0, tail(out));
          assert.ok(seconds < RENDEZVOUS_TIMEOUT_S + 60, `it took ${seconds.toFixed(0)} s to give up`);
          const stderr = decode(out.stderr);
          assert.match(
            stderr,
            new RegExp(
              `failed to connect to any network address of \\(${
                NOBODY.replaceAll(".", "\\.")
              }, ${MASTER_PORT}\\)`,
            ),
            tail(out),
          );
          assert.match(stderr, /FAILED: rank \d+ failed first/, tail(out));
        },
      );
    } finally {
      await removeNetwork();
      // Every launcher has ended (killed with its namespace, if not before): collect them, so that no
      // resource outlives the test.
      await Promise.allSettled(started.map((n) => n.output));
    }
  },
});
