// The end of a launch as a value: exit-code rules and the printed lines.
import assert from "node:assert/strict";
import { describeExit, type RankReport, signalNumber, summarize, summaryLines } from "./summary.ts";

function report(rank: number, fields: Partial<RankReport> = {}): RankReport {
  return {
    rank,
    localRank: rank,
    pid: 1000 + rank,
    code: 0,
    signal: null,
    durationMs: 1500,
    endedIn: "running",
    failedFirst: false,
    ...fields,
  };
}

Deno.test("summarize: the first failure's code, else 128 + the received signal, else 0", () => {
  assert.deepEqual(summarize([report(0), report(1)]), { code: 0, ranks: [report(0), report(1)] });
  const failed = [
    report(0, { code: 143, signal: "SIGTERM", endedIn: "stopping" }),
    report(1, { code: 7, failedFirst: true }),
    report(2, { code: 1, endedIn: "stopping" }),
  ];
  assert.deepEqual(summarize(failed), { code: 7, failedRank: 1, ranks: failed });
  const stopped = [report(0, { code: 130, signal: "SIGINT", endedIn: "stopping" })];
  assert.deepEqual(summarize(stopped, "SIGINT"), { code: 130, signal: "SIGINT", ranks: stopped });
  assert.equal(summarize([], "SIGHUP").code, 129);
  assert.equal(summarize([], "SIGQUIT").code, 131);
  assert.equal(signalNumber("SIGUSR1"), 15, "a signal the launcher does not handle counts as SIGTERM");
});

Deno.test("summaryLines: one line per rank with how and when it ended, then the verdict", () => {
  const summary = summarize([
    report(0, { code: 137, signal: "SIGKILL", endedIn: "killing", durationMs: 4210 }),
    report(1, { code: 139, signal: "SIGSEGV", failedFirst: true, durationMs: 820 }),
    report(2, { code: -1, endedIn: "killing", durationMs: 6000 }),
  ]);
  assert.deepEqual(summaryLines(summary), [
    "rank 0 was killed by SIGKILL (exit code 137) after 4.2 s (while being killed)",
    "rank 1 was killed by SIGSEGV (exit code 139) after 820 ms (failed first)",
    "rank 2 (pid 1002) did not exit after SIGKILL; leaving it (gave up after 6.0 s)",
    "FAILED: rank 1 failed first (it was killed by SIGSEGV (exit code 139)); exit code 139",
  ]);
  assert.deepEqual(summaryLines(summarize([report(0)])), [
    "rank 0 exited with code 0 after 1.5 s",
    "all 1 rank(s) finished",
  ]);
  assert.equal(describeExit(report(0, { code: 3 })), "exited with code 3");
});
