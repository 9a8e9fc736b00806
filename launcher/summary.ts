/**
 * The end of a launch as a value: how each rank ended (exit code or signal, how long it ran, in which state
 * the supervisor had it), which rank failed first, and the launcher's exit code. Pure: the supervisor fills
 * it in, the launcher prints {@link summaryLines} and exits with {@link RunSummary.code}.
 *
 * Why "failed first" matters: in DDP one rank's crash makes the others fail too (a collective times out, a
 * peer's socket closes), so the ranks that fail later are symptoms; the first failure is the cause, and its
 * exit code is the job's.
 * @module
 */

/** How one rank ended. */
export interface RankExit {
  /** Global rank (RANK). */
  rank: number;
  /** Rank on this node (LOCAL_RANK). */
  localRank: number;
  /** Process id (also the id of the rank's process group). */
  pid: number;
  /** Exit code; 128 + signal number when killed by a signal; -1 if it never exited (gave up after SIGKILL). */
  code: number;
  /** The signal that killed it, if any. */
  signal: Deno.Signal | null;
}

/** A rank's line in the summary. */
export interface RankReport extends RankExit {
  /** Milliseconds from its start to its exit (to giving up on it, for code -1). */
  durationMs: number;
  /**
   * The supervisor's state for the rank when it ended (launcher/supervisor.ts): `running` (it ended on its
   * own), `stopping` (after the launcher's SIGTERM or forwarded signal) or `killing` (after SIGKILL).
   */
  endedIn: "running" | "stopping" | "killing";
  /** This rank's failure (non-zero exit or a signal, while nothing was being stopped) stopped the job. */
  failedFirst: boolean;
}

/** What a launch ends with (also what `launch()` resolves to). */
export interface RunSummary {
  /** The launcher's exit code: 0, the first failed rank's code, or 128 + a signal the launcher received. */
  code: number;
  /** Global rank of the first rank that failed (non-zero exit or killed by a signal). */
  failedRank?: number;
  /** Signal received by the launcher (or SIGTERM for an abort) that stopped the run. */
  signal?: Deno.Signal;
  /** Every rank's end, in local rank order. */
  ranks: RankReport[];
}

/** Numbers of the signals the launcher handles (its exit code is 128 + the number, as a shell's). */
const SIGNAL_NUMBERS: Partial<Record<Deno.Signal, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGTERM: 15,
};

/** The number of a signal the launcher forwards (15 for any other). */
export function signalNumber(signal: Deno.Signal): number {
  return SIGNAL_NUMBERS[signal] ?? 15;
}

/**
 * The summary of ranks that ended, `received` being the signal that stopped the launcher, if any. The exit
 * code is the first failure's code; else 128 + the received signal's number (as a shell reports a process
 * killed by it); else 0.
 */
export function summarize(ranks: RankReport[], received?: Deno.Signal): RunSummary {
  const failed = ranks.find((r) => r.failedFirst);
  if (failed) return { code: failed.code, failedRank: failed.rank, ranks };
  if (received) return { code: 128 + signalNumber(received), signal: received, ranks };
  return { code: 0, ranks };
}

/** How a rank ended, in words: "exited with code 3", "was killed by SIGKILL (exit code 137)". */
export function describeExit(e: RankExit): string {
  if (e.code === -1) return "did not exit after SIGKILL";
  return e.signal ? `was killed by ${e.signal} (exit code ${e.code})` : `exited with code ${e.code}`;
}

const ENDED_IN: Record<RankReport["endedIn"], string> = {
  running: "",
  stopping: " (while being stopped)",
  killing: " (while being killed)",
};

/** A duration for people: "850 ms", "12.3 s". */
function duration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** One line per rank, then the verdict (the line that names the first failure, or the signal, or success). */
export function summaryLines(summary: RunSummary): string[] {
  const lines = summary.ranks.map((r) => {
    if (r.code === -1) {
      return `rank ${r.rank} (pid ${r.pid}) did not exit after SIGKILL; leaving it (gave up after ` +
        `${duration(r.durationMs)})`;
    }
    return `rank ${r.rank} ${describeExit(r)} after ${duration(r.durationMs)}` +
      (r.failedFirst ? " (failed first)" : ENDED_IN[r.endedIn]);
  });
  const failed = summary.ranks.find((r) => r.failedFirst);
  if (failed) {
    lines.push(
      `FAILED: rank ${failed.rank} failed first (it ${describeExit(failed)}); exit code ${summary.code}`,
    );
  } else if (summary.signal) {
    lines.push(`stopped by ${summary.signal}; exit code ${summary.code}`);
  } else {
    lines.push(`all ${summary.ranks.length} rank(s) finished`);
  }
  return lines;
}
