import assert from "node:assert/strict";
import { formatDuration, Progress, type ProgressOptions } from "./progress.ts";

/** A progress display on a fake clock that records what it writes. */
function harness(options: Omit<ProgressOptions, "write" | "now">) {
  const clock = { ms: 1_000 };
  const writes: string[] = [];
  const progress = new Progress({ ...options, write: (s) => writes.push(s), now: () => clock.ms });
  return { progress, writes, clock };
}

// deno-lint-ignore no-control-regex
const ANSI = /\x1b|\r/;

Deno.test("plain mode: a line every N steps with throughput, elapsed and ETA, and no ANSI", () => {
  const { progress, writes, clock } = harness({
    total: 100,
    label: "epoch 1/3",
    isTerminal: false,
    everySteps: 25,
    everySeconds: 1e6,
  });
  for (let step = 1; step <= 100; step++) {
    clock.ms += 250; // 4 steps/s at 32 samples a step: 128 samples/s
    progress.update({ step, samples: step * 32, loss: 1 / step, lr: 2e-5 });
  }
  progress.finish();
  progress.finish();
  assert.equal(writes.length, 4, writes.join(""));
  assert.equal(
    writes[0],
    "epoch 1/3 step 25/100 (25.0%) | 128.0 samples/s | loss 0.0400 | lr 2.00e-5 | elapsed 00:06 | eta 00:19\n",
  );
  assert.match(
    writes[3],
    /^epoch 1\/3 step 100\/100 \(100\.0%\) \| 128\.0 samples\/s .* elapsed 00:25 \| eta 00:00\n$/,
  );
  for (const w of writes) assert.doesNotMatch(w, ANSI);
  assert.throws(() => progress.update({ step: 101 }), /finished/);
});

Deno.test("plain mode: a line every ~everySeconds when steps are slow, steps/s without samples", () => {
  const { progress, writes, clock } = harness({ total: 1000, isTerminal: false, everySeconds: 10 });
  for (let step = 1; step <= 9; step++) {
    clock.ms += 3_000;
    progress.update({ step });
  }
  // Due at 12 s (step 4) and 24 s (step 8); everySteps defaults to 100 and never triggers here.
  assert.deepEqual(writes.map((w) => w.split(" | ")[0]), ["step 4/1000 (0.4%)", "step 8/1000 (0.8%)"]);
  assert.match(writes[0], /\| 0\.33 steps\/s \|/);
  assert.match(writes[0], /eta 49:48\n$/); // 996 steps at 3 s
  progress.finish(); // step 9 was not printed yet: finish prints it
  assert.equal(writes.length, 3);
  assert.match(writes[2], /^step 9\/1000/);
});

Deno.test("terminal mode: one redrawn line, throttled, cut to the width, newline at finish", () => {
  const { progress, writes, clock } = harness({
    total: 200,
    label: "epoch 2/3",
    isTerminal: true,
    columns: 120,
  });
  for (let step = 1; step <= 200; step++) {
    clock.ms += 10; // 100 steps/s, redraws at most every 100 ms
    progress.update({ step, samples: step * 16, loss: 0.5, lr: 1e-4 });
  }
  progress.finish();
  const draws = writes.slice(0, -1);
  assert.equal(writes.at(-1), "\n");
  assert.ok(draws.length >= 19 && draws.length <= 22, `${draws.length} redraws for 2 s at 100 ms`);
  for (const d of draws) {
    assert.ok(d.startsWith("\r") && d.endsWith("\x1b[K"), JSON.stringify(d));
    assert.ok(!d.includes("\n"));
    const visible = d.slice(1, -3);
    assert.ok(Array.from(visible).length <= 119, `${Array.from(visible).length} columns: ${visible}`);
  }
  assert.match(draws[0], /^\repoch 2\/3 {3}0% \[/, "the first step draws at once");
  const last = draws.at(-1)!;
  assert.match(last, /100% \[█+\] 200\/200 {2}1600 samples\/s {2}loss 0\.5000 {2}lr 1\.00e-4 {2}00:02<00:00/);
  const mid = draws[Math.floor(draws.length / 2)];
  assert.match(mid, /[▏▎▍▌▋▊▉█]+ +\]/, "a half-full bar has blank cells");
});

Deno.test("terminal mode: narrow terminals drop lr and loss, then the bar; log() does not tear it", () => {
  const at80 = harness({ total: 3750, label: "epoch 2/3", isTerminal: true, columns: 80 });
  at80.clock.ms += 1000;
  at80.progress.update({ step: 1500, samples: 48000, loss: 0.4123, lr: 1.5e-5 });
  assert.equal(
    at80.writes[0],
    "\repoch 2/3  40% [████████▊             ] 1500/3750  48000 samples/s  00:01<00:02\x1b[K",
  );
  const { progress, writes, clock } = harness({ total: 10, isTerminal: true, columns: 50 });
  clock.ms += 500;
  progress.update({ step: 1, samples: 8, loss: 2 });
  assert.doesNotMatch(writes[0], /[█\]]/);
  assert.match(writes[0], /loss 2\.0000/);
  const long = harness({ total: 10, label: "x".repeat(200), isTerminal: true, columns: 50 });
  long.progress.update({ step: 1 });
  assert.equal(long.writes[0], `\r${"x".repeat(49)}\x1b[K`, "never wider than the terminal: it would wrap");
  assert.match(writes[0], /1\/10/);
  progress.log("checkpoint saved");
  assert.equal(writes[1], `\r\x1b[Kcheckpoint saved\n${writes[0].slice(1, -3)}`);
});

Deno.test("rates come from a recent window, so a slow first step stops skewing the ETA", () => {
  const { progress, clock } = harness({
    total: 1000,
    isTerminal: false,
    windowSeconds: 30,
    everySeconds: 1e9,
  });
  clock.ms += 20_000; // 20 s first step: loading, compiling
  progress.update({ step: 1, samples: 32 });
  assert.equal(Math.round(progress.rates().etaSeconds), 999 * 20);
  for (let step = 2; step <= 500; step++) {
    clock.ms += 100;
    progress.update({ step, samples: step * 32 });
  }
  const r = progress.rates();
  assert.ok(Math.abs(r.stepsPerSecond - 10) < 0.01, `${r.stepsPerSecond} steps/s`);
  assert.ok(Math.abs(r.samplesPerSecond - 320) < 0.5, `${r.samplesPerSecond} samples/s`);
  assert.ok(Math.abs(r.etaSeconds - 50) < 0.1, `eta ${r.etaSeconds}`);
  assert.equal(r.elapsedSeconds, 20 + 49.9);
});

Deno.test("resumed bars count from `initial`; empty bars still print once", () => {
  const { progress, writes, clock } = harness({
    total: 10,
    isTerminal: false,
    initial: { step: 6, samples: 60 },
  });
  clock.ms += 1000;
  progress.update({ step: 7, samples: 70 });
  assert.equal(progress.rates().samplesPerSecond, 10);
  assert.equal(progress.rates().etaSeconds, 3);
  const empty = harness({ total: 0, isTerminal: false });
  empty.progress.finish();
  assert.equal(empty.writes.length, 1);
  assert.match(empty.writes[0], /step 0\/0 \(100\.0%\)/);
  assert.equal(writes.length, 1);
  assert.throws(() => new Progress({ total: -1, write: () => {} }), RangeError);
});

Deno.test("formatDuration", () => {
  assert.equal(formatDuration(0), "00:00");
  assert.equal(formatDuration(59.4), "00:59");
  assert.equal(formatDuration(61), "01:01");
  assert.equal(formatDuration(3600 * 2 + 5), "2:00:05");
  assert.equal(formatDuration(NaN), "--:--");
  assert.equal(formatDuration(Infinity), "--:--");
});
