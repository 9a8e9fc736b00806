// The supervisor's state machine with tiny real processes (sh, sleep) and short real timeouts: nothing of
// the supervisor is replaced, only the jobs are small.
import assert from "node:assert/strict";
import type { RankPlan } from "./plan.ts";
import { type SupervisedJob, Supervisor, type SupervisorPhase } from "./supervisor.ts";
import { summaryLines } from "./summary.ts";

const decode = (b: Uint8Array) => new TextDecoder().decode(b);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Exits 0 at once, after one line on stdout. */
const OK = ["sh", "-c", 'echo "hello from $RANK"'];
/** Exits with `code` after `seconds`. */
const failAfter = (seconds: number, code: number) => ["sh", "-c", `sleep ${seconds}; exit ${code}`];
/** Ignores SIGTERM (the ignored disposition is inherited by its sleep): only SIGKILL ends it. */
const IGNORES_SIGTERM = ["sh", "-c", "trap '' TERM; sleep 30"];
/** Ends at SIGTERM, as a well-behaved rank. */
const OBEYS_SIGTERM = ["sleep", "30"];

function job(argvs: string[][], timeouts: Partial<SupervisedJob> = {}): SupervisedJob {
  const ranks = argvs.map((argv, i): RankPlan => ({
    rank: i,
    localRank: i,
    argv,
    env: { RANK: String(i) },
    prefix: `[rank ${i}] `,
  }));
  return { ranks, graceMs: 300, killWaitMs: 5000, drainMs: 500, ...timeouts };
}

/** A supervisor of `j` whose output, log and phase at each transition are kept for the test. */
function supervise(j: SupervisedJob) {
  const out: string[] = [], logs: string[] = [];
  const phases: SupervisorPhase[] = [];
  const supervisor: Supervisor = new Supervisor(j, {
    stdout: (b) => out.push(decode(b)),
    stderr: (b) => out.push(decode(b)),
    log: (l) => logs.push(l),
    onTransition: () => phases.push(supervisor.phase),
  });
  /** Rank `rank`'s path through the states, as "running→stopping" steps. */
  const path = (rank: number) =>
    supervisor.transitions.filter((t) => t.rank === rank).map((t) => `${t.from}→${t.to}`);
  const at = (rank: number, to: string) =>
    supervisor.transitions.find((t) => t.rank === rank && t.to === to)!.atMs;
  return { supervisor, out, logs, phases, path, at };
}

Deno.test("supervisor: a clean run ends with every rank done, nothing stopped, exit code 0", async () => {
  const { supervisor, out, path } = supervise(job([OK, OK]));
  assert.equal(supervisor.phase, "starting");
  const summary = await supervisor.run();
  assert.equal(supervisor.phase, "done");
  assert.deepEqual([supervisor.state(0), supervisor.state(1)], ["done", "done"]);
  assert.deepEqual([path(0), path(1)], [["running→done"], ["running→done"]]);
  assert.equal(summary.code, 0);
  assert.equal(summary.failedRank, undefined);
  assert.equal(summary.signal, undefined);
  assert.deepEqual(
    summary.ranks.map((r) => [r.rank, r.code, r.signal, r.endedIn, r.failedFirst]),
    [[0, 0, null, "running", false], [1, 0, null, "running", false]],
  );
  assert.ok(summary.ranks.every((r) => r.durationMs >= 0 && r.pid > 0));
  assert.deepEqual(out.sort(), ["[rank 0] hello from 0\n", "[rank 1] hello from 1\n"]);
  assert.equal(summaryLines(summary).at(-1), "all 2 rank(s) finished");
  await assert.rejects(supervisor.run(), /runs once/);
});

Deno.test("supervisor: a failing rank moves the others to stopping, then those ignoring SIGTERM to killing", async () => {
  // Rank 0 fails after 1 s (time enough for rank 1 to ignore SIGTERM); rank 2 ends at SIGTERM.
  const { supervisor, logs, phases, path, at } = supervise(
    job([failAfter(1, 3), IGNORES_SIGTERM, OBEYS_SIGTERM], { graceMs: 400 }),
  );
  const summary = await supervisor.run();
  assert.deepEqual(path(0), ["running→done"]);
  assert.deepEqual(path(1), ["running→stopping", "stopping→killing", "killing→done"]);
  assert.deepEqual(path(2), ["running→stopping", "stopping→done"]);
  assert.ok(at(1, "killing") - at(1, "stopping") >= 400 - 5, "SIGKILL only after the grace period");
  assert.deepEqual(phases, ["running", "stopping", "stopping", "stopping", "killing", "killing"]);

  assert.equal(summary.code, 3, "the first failure's code");
  assert.equal(summary.failedRank, 0);
  assert.deepEqual(
    summary.ranks.map((r) => [r.code, r.signal, r.endedIn, r.failedFirst]),
    [[3, null, "running", true], [137, "SIGKILL", "killing", false], [143, "SIGTERM", "stopping", false]],
  );
  // It lived through the grace period at least (not 1000 + 400 ms: under load it may start after rank 0).
  assert.ok(summary.ranks[1].durationMs >= 400 - 5);
  assert.deepEqual(logs, [
    "rank 0 exited with code 3: stopping the other ranks",
    "sending SIGKILL to the remaining ranks",
  ]);
  const lines = summaryLines(summary);
  assert.equal(lines.length, 4, "one line per rank and the verdict");
  assert.match(lines[0], /^rank 0 exited with code 3 after \d\.\d s \(failed first\)$/);
  assert.match(lines[1], /^rank 1 was killed by SIGKILL \(exit code 137\) after .* \(while being killed\)$/);
  assert.match(lines[2], /^rank 2 was killed by SIGTERM \(exit code 143\) after .* \(while being stopped\)$/);
  assert.equal(lines[3], "FAILED: rank 0 failed first (it exited with code 3); exit code 3");
});

Deno.test("supervisor: ranks failing after the first are symptoms: the summary names the first", async () => {
  // Rank 1 exits 5 when told to stop (its background sleep is a leftover the supervisor kills at the end).
  const { supervisor } = supervise(
    job([failAfter(0.5, 3), ["sh", "-c", "trap 'exit 5' TERM; sleep 30 & wait"]]),
  );
  const summary = await supervisor.run();
  assert.deepEqual(summary.ranks.map((r) => [r.code, r.failedFirst, r.endedIn]), [
    [3, true, "running"],
    [5, false, "stopping"],
  ]);
  assert.equal(summary.code, 3);
  assert.equal(summary.failedRank, 0);
  assert.match(summaryLines(summary).at(-1)!, /^FAILED: rank 0 failed first/);
});

Deno.test("supervisor: a received signal is forwarded; a second one kills without waiting for the grace period", async () => {
  const { supervisor, logs, path } = supervise(job([IGNORES_SIGTERM, IGNORES_SIGTERM], { graceMs: 20_000 }));
  const started = performance.now();
  const running = supervisor.run();
  await sleep(300); // the ranks' shells have set their traps
  assert.equal(supervisor.phase, "running");
  supervisor.receive("SIGTERM");
  assert.equal(supervisor.phase, "stopping");
  assert.deepEqual([supervisor.state(0), supervisor.state(1)], ["stopping", "stopping"]);
  await sleep(200);
  assert.equal(supervisor.state(0), "stopping", "SIGTERM is ignored");
  supervisor.receive("SIGINT");
  assert.equal(supervisor.phase, "killing");
  const summary = await running;
  assert.ok(performance.now() - started < 10_000, "did not wait for the 20 s grace period");
  for (const r of [0, 1]) assert.deepEqual(path(r), ["running→stopping", "stopping→killing", "killing→done"]);
  assert.equal(summary.code, 143, "128 + SIGTERM, the signal that stopped the job");
  assert.equal(summary.signal, "SIGTERM");
  assert.equal(summary.failedRank, undefined, "a rank killed by the launcher did not fail first");
  assert.deepEqual(summary.ranks.map((r) => r.signal), ["SIGKILL", "SIGKILL"]);
  assert.deepEqual(logs, [
    "received SIGTERM: forwarding it to the ranks",
    "received SIGINT while stopping the ranks: killing them now",
    "sending SIGKILL to the remaining ranks",
  ]);
  assert.equal(summaryLines(summary).at(-1), "stopped by SIGTERM; exit code 143");
});

Deno.test("supervisor: aborted before it runs, it starts nothing and ends with 143", async () => {
  const { supervisor, logs } = supervise(job([OBEYS_SIGTERM, OBEYS_SIGTERM]));
  supervisor.abort();
  assert.equal(supervisor.phase, "stopping");
  const summary = await supervisor.run();
  assert.deepEqual(summary, { code: 143, signal: "SIGTERM", ranks: [] });
  assert.equal(supervisor.state(0), undefined, "never started");
  assert.deepEqual(logs, ["aborted: stopping the ranks"]);
});

Deno.test("supervisor: a rank that cannot start stops those already started, and run() throws", async () => {
  const { supervisor, logs, path } = supervise(job([OBEYS_SIGTERM, ["/nonexistent/rank-binary"], OK]));
  await assert.rejects(supervisor.run(), /cannot start rank 1 \(\/nonexistent\/rank-binary\)/);
  assert.equal(supervisor.phase, "done");
  assert.deepEqual(path(0), ["running→stopping", "stopping→done"]);
  assert.equal(supervisor.state(2), undefined, "nothing starts after a failed start");
  assert.match(logs[0], /^cannot start rank 1 .*: stopping the other ranks$/);
});
