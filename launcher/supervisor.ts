/**
 * The rank supervisor: starts the planned ranks, copies their output, and stops them together — as one
 * state machine whose states you can see ({@link Supervisor.phase}, {@link Supervisor.state}) and whose every
 * change is recorded ({@link Supervisor.transitions}).
 *
 * Each rank goes
 *
 * ```
 * running  ──it exits────────────────────────────────▶ done
 * running  ──stop: SIGTERM, or the forwarded signal──▶ stopping
 * stopping ──it exits────────────────────────────────▶ done
 * stopping ──grace period over, or a 2nd signal──────▶ killing  (SIGKILL sent)
 * killing  ──it exits────────────────────────────────▶ done
 * killing  ──still there after killWaitMs────────────▶ done     (given up on: code -1)
 * ```
 *
 * and the supervisor as a whole goes `starting` → `running` → (`stopping` → `killing`) → `done`. A stop is
 * job-wide: it moves every rank that has not ended.
 *
 * Why the ranks are stopped together: DDP ranks wait for each other in every all-reduce. When one rank dies
 * the others do not notice by themselves until a collective times out (minutes, holding GPUs), so a failure
 * of one rank (non-zero exit or a signal) stops all of them at once, and the job's exit code is that first
 * failure's. SIGTERM first, so ranks can clean up (destroy the process group, flush logs); SIGKILL after the
 * grace period, because a rank blocked inside a collective may never get to handle SIGTERM.
 *
 * Each rank leads a process group of its own (`detached`: setsid, as torchrun's `start_new_session`), and
 * signals go to the whole group, so stopping a rank also stops whatever it started.
 * @module
 */

import { LinePrefixer, type Pump, pump } from "./output.ts";
import type { JobPlan, RankPlan } from "./plan.ts";
import { describeExit, type RankReport, type RunSummary, summarize } from "./summary.ts";

/** Where one rank is: see the module's diagram. */
export type RankState = "running" | "stopping" | "killing" | "done";

/**
 * Where the supervisor is: `starting` (ranks being started; before {@link Supervisor.run} too), `running`
 * (all started, none stopped), `stopping` (SIGTERM sent, grace timer set), `killing` (SIGKILL sent), `done`
 * ({@link Supervisor.run} has returned).
 */
export type SupervisorPhase = "starting" | "running" | "stopping" | "killing" | "done";

/** One change of a rank's state. */
export interface Transition {
  /** Global rank. */
  rank: number;
  from: RankState;
  to: RankState;
  /** Milliseconds since the supervisor was created. */
  atMs: number;
}

/** Where the supervisor writes: the ranks' prefixed output and its own log lines. */
export interface SupervisorIO {
  /** Prefixed rank stdout. */
  stdout: (bytes: Uint8Array) => void;
  /** Prefixed rank stderr. */
  stderr: (bytes: Uint8Array) => void;
  /** The supervisor's messages, one line each (no newline). */
  log: (line: string) => void;
  /** Hears every transition as it happens (they are in {@link Supervisor.transitions} too). */
  onTransition?: (t: Transition) => void;
}

/** What the supervisor takes from the plan: the ranks and the timeouts of stopping. */
export type SupervisedJob = Pick<JobPlan, "ranks" | "cwd" | "graceMs" | "killWaitMs" | "drainMs">;

/** Signals the launcher forwards to its ranks (torchrun's TORCHELASTIC_SIGNALS_TO_HANDLE). */
export const FORWARDED_SIGNALS: readonly Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"];

interface LiveRank {
  plan: RankPlan;
  child: Deno.ChildProcess;
  state: RankState;
  startedAt: number;
  report?: RankReport;
  pumps: Pump[];
}

/**
 * Supervises the ranks of one job, once: {@link run} starts them and resolves, when every rank has ended,
 * to the {@link RunSummary}. Meanwhile {@link receive} (a signal the launcher got) and {@link abort} stop the
 * ranks from outside.
 *
 * ```ts
 * const supervisor = new Supervisor(plan, { stdout, stderr, log });
 * const summary = await supervisor.run();
 * ```
 */
export class Supervisor {
  #job: SupervisedJob;
  #io: SupervisorIO;
  #phase: SupervisorPhase = "starting";
  #ranks: LiveRank[] = [];
  #transitions: Transition[] = [];
  #timers = new Set<ReturnType<typeof setTimeout>>();
  #created = performance.now();
  /** The signal received from outside (receive/abort) that stopped the job, if one did. */
  #received?: Deno.Signal;
  #startError?: Error;
  #ended = Promise.withResolvers<void>();
  #ran = false;

  /** Nothing starts before {@link run}. */
  constructor(job: SupervisedJob, io: SupervisorIO) {
    this.#job = job;
    this.#io = io;
  }

  /** Where the supervisor is. */
  get phase(): SupervisorPhase {
    return this.#phase;
  }

  /** The state of global rank `rank`; undefined if it was not started (yet). */
  state(rank: number): RankState | undefined {
    return this.#ranks.find((r) => r.plan.rank === rank)?.state;
  }

  /** Every rank's state change so far, in order. */
  get transitions(): readonly Transition[] {
    return this.#transitions;
  }

  /**
   * Starts the ranks, supervises them until all have ended, lets their output drain, and returns the
   * summary. A rank that cannot be started stops those already started; then this throws.
   */
  async run(): Promise<RunSummary> {
    if (this.#ran) throw new Error("a Supervisor runs once");
    this.#ran = true;
    try {
      for (const plan of this.#job.ranks) {
        // Stopped while starting (a signal, an abort, a rank that could not start): start no more.
        if (this.#phase !== "starting" || !this.#start(plan)) break;
      }
      if (this.#phase === "starting") this.#phase = "running";
      this.#checkEnded();
      await this.#ended.promise;
      // Let each pipe drain, but not forever: a grandchild might keep it open.
      const pumps = this.#ranks.flatMap((r) => r.pumps);
      await Promise.race([
        Promise.all(pumps.map((p) => p.done)),
        new Promise<void>((resolve) => this.#later(this.#job.drainMs, resolve)),
      ]);
      await Promise.all(pumps.map((p) => p.cancel()));
    } finally {
      for (const id of this.#timers) clearTimeout(id);
      this.#timers.clear();
      // A stopped rank's children may outlive it in its process group: nothing of a stopped job stays.
      if (this.#phase === "stopping" || this.#phase === "killing") this.#signalAll("SIGKILL");
      this.#phase = "done";
    }
    if (this.#startError) throw this.#startError;
    return summarize(this.#ranks.map((r) => r.report!), this.#received);
  }

  /**
   * A signal the launcher received. The first is forwarded to every rank (the ranks stop as they would under
   * torchrun, and the job's exit code becomes 128 + its number); one more while stopping kills them now,
   * without waiting for the grace period (the user pressing Ctrl-C twice).
   */
  receive(signal: Deno.Signal): void {
    if (this.#phase === "starting" || this.#phase === "running") {
      this.#received = signal;
      this.#io.log(`received ${signal}: forwarding it to the ranks`);
      this.#stop(signal);
    } else if (this.#phase === "stopping" || this.#phase === "killing") {
      this.#io.log(`received ${signal} while stopping the ranks: killing them now`);
      this.#kill();
    }
  }

  /** Stops the ranks as a SIGTERM would (the exit code becomes 143); nothing starts after an abort. */
  abort(): void {
    if (this.#phase !== "starting" && this.#phase !== "running") return;
    this.#received = "SIGTERM";
    this.#io.log("aborted: stopping the ranks");
    this.#stop("SIGTERM");
  }

  /** Starts one rank; false (and the job stopping) if it could not be started. */
  #start(plan: RankPlan): boolean {
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(plan.argv[0], {
        args: plan.argv.slice(1),
        cwd: this.#job.cwd,
        env: plan.env,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        detached: true, // setsid: a process group per rank, like torchrun's start_new_session
      }).spawn();
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      this.#startError = new Error(`cannot start rank ${plan.rank} (${plan.argv[0]}): ${why}`);
      this.#io.log(`${this.#startError.message}: stopping the other ranks`);
      this.#stop("SIGTERM");
      return false;
    }
    const live: LiveRank = {
      plan,
      child,
      state: "running",
      startedAt: performance.now(),
      pumps: [
        pump(child.stdout, new LinePrefixer(plan.prefix, this.#io.stdout)),
        pump(child.stderr, new LinePrefixer(plan.prefix, this.#io.stderr)),
      ],
    };
    this.#ranks.push(live);
    child.status.then((status) => this.#onExit(live, status));
    return true;
  }

  /** A rank exited. The first failure while all is well stops the others (see the module's description). */
  #onExit(r: LiveRank, status: Deno.CommandStatus): void {
    if (r.state === "done") return; // given up on already
    const signal = status.signal ?? null;
    const failedFirst = (signal !== null || status.code !== 0) &&
      (this.#phase === "starting" || this.#phase === "running");
    // Deno reports 128 + the signal's number as the code of a killed process.
    const report = this.#end(r, status.code, signal, failedFirst);
    if (failedFirst) {
      this.#io.log(`rank ${r.plan.rank} ${describeExit(report)}: stopping the other ranks`);
      this.#stop("SIGTERM");
    }
  }

  /** running → stopping, for every rank still running: `signal` now, SIGKILL after the grace period. */
  #stop(signal: Deno.Signal): void {
    if (this.#phase !== "starting" && this.#phase !== "running") return;
    this.#phase = "stopping";
    for (const r of this.#ranks) if (r.state === "running") this.#move(r, "stopping");
    this.#signalAll(signal);
    this.#later(this.#job.graceMs, () => this.#kill());
  }

  /** stopping → killing: SIGKILL to every rank; those still there after killWaitMs are given up on. */
  #kill(): void {
    if (this.#phase !== "stopping") return;
    this.#phase = "killing";
    const remaining = this.#ranks.filter((r) => r.state !== "done");
    if (remaining.length > 0) this.#io.log("sending SIGKILL to the remaining ranks");
    for (const r of remaining) this.#move(r, "killing");
    this.#signalAll("SIGKILL");
    this.#later(this.#job.killWaitMs, () => {
      // A process that survives SIGKILL is stuck in the kernel (uninterruptible I/O, a wedged driver); the
      // launcher cannot do more than report it.
      for (const r of this.#ranks) if (r.state !== "done") this.#end(r, -1, null, false);
    });
  }

  /** Any state → done, with the rank's report. */
  #end(r: LiveRank, code: number, signal: Deno.Signal | null, failedFirst: boolean): RankReport {
    const endedIn = r.state as RankReport["endedIn"];
    r.report = {
      rank: r.plan.rank,
      localRank: r.plan.localRank,
      pid: r.child.pid,
      code,
      signal,
      durationMs: performance.now() - r.startedAt,
      endedIn,
      failedFirst,
    };
    this.#move(r, "done");
    this.#checkEnded();
    return r.report;
  }

  #move(r: LiveRank, to: RankState): void {
    const t: Transition = { rank: r.plan.rank, from: r.state, to, atMs: performance.now() - this.#created };
    r.state = to;
    this.#transitions.push(t);
    this.#io.onTransition?.(t);
  }

  #checkEnded(): void {
    if (this.#phase !== "starting" && this.#ranks.every((r) => r.state === "done")) this.#ended.resolve();
  }

  /** Signals every rank's process group (an ended rank's too: whatever it started may still run). */
  #signalAll(signal: Deno.Signal): void {
    for (const r of this.#ranks) {
      try {
        // The rank leads its own process group: signal the group, so its children stop too.
        Deno.kill(-r.child.pid, signal);
      } catch {
        try {
          if (r.state !== "done") r.child.kill(signal);
        } catch { /* already gone */ }
      }
    }
  }

  #later(ms: number, fn: () => void): void {
    const id = setTimeout(() => {
      this.#timers.delete(id);
      fn();
    }, ms);
    this.#timers.add(id);
  }
}

/**
 * Hands the signals a user sends the launcher (Ctrl-C, `kill`, a closed terminal, a scheduler's SIGTERM)
 * to `supervisor`, until disposed. Without this, the launcher would die and leave its ranks running — each
 * in a process group of its own, out of reach of the terminal's Ctrl-C.
 */
export function forwardSignals(
  supervisor: Supervisor,
  signals: readonly Deno.Signal[] = FORWARDED_SIGNALS,
): Disposable {
  const listeners: [Deno.Signal, () => void][] = [];
  for (const signal of signals) {
    const listener = () => supervisor.receive(signal);
    try {
      Deno.addSignalListener(signal, listener);
      listeners.push([signal, listener]);
    } catch { /* not supported on this platform */ }
  }
  return {
    [Symbol.dispose]() {
      for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
    },
  };
}
