// DynamicBatcher with a real async runner: batches form from what arrives together, each caller gets its
// own output, failures reach exactly the callers they concern, and close() drains without hanging.
import assert from "node:assert/strict";
import {
  BatcherClosedError,
  type BatcherOptions,
  type BatchObserver,
  type BatchRunner,
  DynamicBatcher,
  QueueFullError,
} from "./batcher.ts";

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A runner that records every batch it runs and answers after an awaited delay. */
function recorder<I, O>(transform: (item: I) => O, options: { delayMs?: number } = {}) {
  const { delayMs = 5 } = options;
  const runs: I[][] = [];
  const runner: BatchRunner<I, O> = async (items) => {
    runs.push([...items]);
    await sleep(delayMs);
    return items.map(transform);
  };
  return { runner, runs };
}

function batcher<I, O>(
  runner: BatchRunner<I, O>,
  options: Partial<BatcherOptions>,
  observer?: BatchObserver,
) {
  return new DynamicBatcher<I, O>(
    runner,
    { maxBatchSize: 8, maxWaitMs: 20, maxQueue: 100, ...options },
    observer,
  );
}

/** Settles a promise into a record, so a test can look at callers that must not hang without awaiting them. */
function track<T>(promise: Promise<T>) {
  const state: { settled: boolean; value?: T; error?: unknown } = { settled: false };
  promise.then(
    (value) => Object.assign(state, { settled: true, value }),
    (error) => Object.assign(state, { settled: true, error }),
  );
  return state;
}

Deno.test("batcher: items submitted in the same tick coalesce into one batch", async () => {
  const { runner, runs } = recorder((x: number) => x * 10);
  // A long window: coalescing must come from submitting together, not from a timer that happens to fire
  // after all five are in.
  const b = batcher(runner, { maxBatchSize: 8, maxWaitMs: 10_000 });
  const started = performance.now();
  const outputs = await Promise.all([1, 2, 3, 4, 5].map((x) => b.submit(x)));
  assert.ok(performance.now() - started < 5_000, "ran without waiting out the window");
  assert.deepEqual(outputs, [10, 20, 30, 40, 50]);
  // One run call with all five, in submission order.
  assert.deepEqual(runs, [[1, 2, 3, 4, 5]]);
  assert.equal(b.inFlight, 0);
  assert.equal(b.queued, 0);
});

Deno.test("batcher: maxBatchSize caps a batch; the overflow goes to the next batches", async () => {
  const { runner, runs } = recorder((x: number) => -x);
  const b = batcher(runner, { maxBatchSize: 2, maxWaitMs: 20 });
  const outputs = await Promise.all([0, 1, 2, 3, 4].map((x) => b.submit(x)));
  assert.deepEqual(outputs, [-0, -1, -2, -3, -4]);
  // A full batch goes at once; the rest waits for the running one and splits by the cap, oldest first.
  assert.deepEqual(runs, [[0, 1], [2, 3], [4]]);
});

Deno.test("batcher: a full batch goes at once, without waiting maxWaitMs", async () => {
  const { runner, runs } = recorder((x: number) => x);
  // A 10 s wait: if the full batch waited for the timer, this test would take 10 s (and fail below).
  const b = batcher(runner, { maxBatchSize: 3, maxWaitMs: 10_000 });
  const started = performance.now();
  const outputs = await Promise.all([7, 8, 9].map((x) => b.submit(x)));
  assert.deepEqual(outputs, [7, 8, 9]);
  assert.deepEqual(runs, [[7, 8, 9]]);
  assert.ok(performance.now() - started < 5_000, "the full batch did not wait for the 10 s timer");
});

Deno.test("batcher: a lone item on an idle batcher runs at once: no company is coming", async () => {
  let ranAt: number | undefined;
  const b = batcher<string, string>((items) => {
    ranAt = performance.now();
    return Promise.resolve(items.map((s) => s.toUpperCase()));
  }, { maxBatchSize: 8, maxWaitMs: 10_000 });
  const submitted = performance.now();
  assert.equal(await b.submit("solo"), "SOLO");
  // With a 10 s window, anything under 5 s proves the batcher did not wait for it.
  assert.ok(ranAt! - submitted < 5_000, `ran after ${ranAt! - submitted} ms`);
});

Deno.test("batcher: when items arrive close together, a batch waits up to maxWaitMs to fill", async () => {
  const maxWaitMs = 60;
  const gate = Promise.withResolvers<void>();
  const runs: { items: string[]; at: number }[] = [];
  const b = batcher<string, string>(async (items) => {
    runs.push({ items: [...items], at: performance.now() });
    if (items[0] === "warm") await gate.promise;
    return items;
  }, { maxBatchSize: 8, maxWaitMs });
  const warm = b.submit("warm"); // idle batcher: runs at once, then holds the model until the gate opens
  await sleep(1);
  const bSubmitted = performance.now();
  const later = [b.submit("b")];
  await sleep(5);
  later.push(b.submit("c")); // 5 ms after "b": arrivals are dense now
  gate.resolve();
  await warm;
  await sleep(10);
  later.push(b.submit("d")); // still inside b's window: joins the same batch
  assert.deepEqual(await Promise.all(later), ["b", "c", "d"]);
  assert.deepEqual(runs.map((r) => r.items), [["warm"], ["b", "c", "d"]]);
  // Lower bound only (timers may be late, never early: the batcher re-checks the clock); 1 ms slack for
  // the clock reads on either side of submit.
  const waited = runs[1].at - bSubmitted;
  assert.ok(
    waited >= maxWaitMs - 1,
    `the batch ran ${waited} ms after its oldest item, expected >= ${maxWaitMs}`,
  );
});

Deno.test("batcher: maxBatchSize 1 runs each item alone, in arrival order", async () => {
  const { runner, runs } = recorder((x: string) => `${x}!`, { delayMs: 2 });
  const b = batcher(runner, { maxBatchSize: 1, maxWaitMs: 50 });
  const items = ["a", "b", "c", "d", "e"];
  const outputs = await Promise.all(items.map((x) => b.submit(x)));
  assert.deepEqual(outputs, ["a!", "b!", "c!", "d!", "e!"]);
  assert.deepEqual(runs, items.map((x) => [x]));
});

Deno.test("batcher: items arriving while a batch runs form the next batch together", async () => {
  const gate = Promise.withResolvers<void>();
  const runs: number[][] = [];
  const b = batcher<number, number>(async (items) => {
    runs.push([...items]);
    if (runs.length === 1) await gate.promise; // hold the first batch until the test lets it go
    return items.map((x) => x + 100);
  }, { maxBatchSize: 8, maxWaitMs: 5 });
  const first = b.submit(1);
  await sleep(20); // the first batch ([1]) is now running and blocked
  assert.deepEqual(runs, [[1]]);
  const later = [2, 3, 4].map((x) => b.submit(x));
  await sleep(20); // they have waited past maxWaitMs, but one batch runs at a time
  assert.equal(b.queued, 3);
  assert.equal(b.inFlight, 4);
  assert.deepEqual(runs, [[1]], "no second batch while the first runs");
  gate.resolve();
  assert.equal(await first, 101);
  assert.deepEqual(await Promise.all(later), [102, 103, 104]);
  assert.deepEqual(runs, [[1], [2, 3, 4]]);
});

Deno.test("batcher: a runner that throws rejects only its batch's callers; later batches still work", async () => {
  const b = batcher<string, string>(async (items) => {
    await sleep(2);
    if (items.includes("bad")) throw new Error(`cannot run ${items}`);
    return items.map((s) => s + "+");
  }, { maxBatchSize: 2, maxWaitMs: 20 });
  // maxBatchSize 2: [ok1, bad] fails together, [ok2, ok3] succeeds.
  const results = await Promise.allSettled(["ok1", "bad", "ok2", "ok3"].map((x) => b.submit(x)));
  assert.equal(results[0].status, "rejected");
  assert.equal(results[1].status, "rejected");
  assert.match(((results[0] as PromiseRejectedResult).reason as Error).message, /cannot run ok1,bad/);
  assert.deepEqual(results.slice(2), [
    { status: "fulfilled", value: "ok2+" },
    { status: "fulfilled", value: "ok3+" },
  ]);
  // The failure left no state behind.
  assert.deepEqual(await Promise.all(["x", "y"].map((x) => b.submit(x))), ["x+", "y+"]);
  assert.equal(b.inFlight, 0);
});

Deno.test("batcher: a runner that throws synchronously is handled like one that rejects", async () => {
  let calls = 0;
  const b = batcher<number, number>((items) => {
    if (calls++ === 0) throw new TypeError("sync failure");
    return Promise.resolve(items);
  }, { maxBatchSize: 2, maxWaitMs: 20 });
  await assert.rejects(Promise.all([1, 2].map((x) => b.submit(x))), TypeError);
  assert.deepEqual(await Promise.all([3, 4].map((x) => b.submit(x))), [3, 4]);
});

Deno.test("batcher: a runner returning the wrong number of outputs rejects that batch's callers", async () => {
  let calls = 0;
  const b = batcher<number, number>((items) => {
    calls++;
    // Too few on the first call, too many on the second, right on the third.
    if (calls === 1) return Promise.resolve(items.slice(1));
    if (calls === 2) return Promise.resolve([...items, 99]);
    return Promise.resolve(items);
  }, { maxBatchSize: 2, maxWaitMs: 20 });
  const tooFew = await Promise.allSettled([1, 2].map((x) => b.submit(x)));
  for (const r of tooFew) {
    assert.equal(r.status, "rejected");
    assert.match(((r as PromiseRejectedResult).reason as Error).message, /returned 1 outputs for 2 items/);
  }
  const tooMany = await Promise.allSettled([1, 2].map((x) => b.submit(x)));
  for (const r of tooMany) {
    assert.equal(r.status, "rejected");
    assert.match(((r as PromiseRejectedResult).reason as Error).message, /returned 3 outputs for 2 items/);
  }
  assert.deepEqual(await Promise.all([5, 6].map((x) => b.submit(x))), [5, 6]);
});

Deno.test("batcher: submit refuses with QueueFullError beyond maxQueue waiting items", async () => {
  const { runner, runs } = recorder((x: number) => x);
  const b = batcher(runner, { maxBatchSize: 8, maxWaitMs: 10_000, maxQueue: 3 });
  const accepted = [1, 2, 3].map((x) => b.submit(x));
  assert.equal(b.queued, 3);
  const refused = b.submit(4);
  await assert.rejects(refused, (err: unknown) => {
    assert.ok(err instanceof QueueFullError);
    assert.equal(err.limit, 3);
    assert.match(err.message, /queue is full \(3 waiting\)/);
    return true;
  });
  // A refused item is not counted as in flight, and the accepted ones are unaffected.
  assert.equal(b.inFlight, 3);
  await b.close(); // flushes the three without waiting 10 s
  assert.deepEqual(await Promise.all(accepted), [1, 2, 3]);
  assert.deepEqual(runs, [[1, 2, 3]]);
});

Deno.test("batcher: maxQueue counts waiting items only, not the running batch", async () => {
  const gate = Promise.withResolvers<void>();
  const b = batcher<number, number>(async (items) => {
    await gate.promise;
    return items;
  }, { maxBatchSize: 2, maxWaitMs: 10_000, maxQueue: 2 });
  const running = [1, 2].map((x) => b.submit(x)); // a full batch: runs at once, blocked on the gate
  assert.equal(b.queued, 0);
  const waiting = [3, 4].map((x) => b.submit(x)); // room for two more while the batch runs
  assert.equal(b.queued, 2);
  await assert.rejects(b.submit(5), QueueFullError);
  gate.resolve();
  assert.deepEqual(await Promise.all([...running, ...waiting]), [1, 2, 3, 4]);
});

Deno.test("batcher: after close(), submit rejects with BatcherClosedError", async () => {
  const { runner } = recorder((x: number) => x);
  const b = batcher(runner, {});
  await b.close();
  await assert.rejects(b.submit(1), (err: unknown) => {
    assert.ok(err instanceof BatcherClosedError);
    assert.match(err.message, /shutting down/);
    return true;
  });
  assert.equal(b.inFlight, 0);
  // Closing twice is harmless.
  await b.close();
});

Deno.test("batcher: close() on an idle batcher resolves at once", async () => {
  const b = batcher<number, number>((items) => Promise.resolve(items), { maxWaitMs: 10_000 });
  await b.close();
});

Deno.test("batcher: close() resolves only after every accepted item has been answered", async () => {
  const answered: number[] = [];
  const b = batcher<number, number>(async (items) => {
    await sleep(30);
    answered.push(...items);
    return items.map((x) => x * 3);
  }, { maxBatchSize: 2, maxWaitMs: 10 });
  // Two running, three waiting behind them (they make two more batches).
  const callers = [1, 2, 3, 4, 5].map((x) => b.submit(x));
  assert.equal(b.inFlight, 5);
  assert.equal(b.queued, 3);
  await b.close();
  // Every runner call had returned when close() resolved; items submitted before close were not dropped.
  assert.deepEqual(answered, [1, 2, 3, 4, 5]);
  assert.equal(b.inFlight, 0);
  assert.equal(b.queued, 0);
  assert.deepEqual(await Promise.all(callers), [3, 6, 9, 12, 15]);
});

Deno.test("batcher: close() waits for callers whose batch failed, too", async () => {
  const b = batcher<number, number>(async () => {
    await sleep(10);
    throw new Error("model failed");
  }, { maxBatchSize: 4, maxWaitMs: 10_000 });
  const callers = [1, 2].map((x) => track(b.submit(x)));
  await b.close();
  await sleep(0);
  for (const c of callers) assert.match((c.error as Error).message, /model failed/);
  assert.equal(b.inFlight, 0);
});

Deno.test("batcher: close() flushes waiting items at once instead of waiting maxWaitMs", async () => {
  const gate = Promise.withResolvers<void>();
  const runs: number[][] = [];
  // With a 10 s wait, only close() can make the waiting items run within the test's time.
  const b = batcher<number, number>(async (items) => {
    runs.push([...items]);
    if (items[0] === 0) await gate.promise;
    return items.map((x) => x + 1);
  }, { maxBatchSize: 8, maxWaitMs: 10_000 });
  const warm = b.submit(0); // runs at once and holds the model
  await sleep(1);
  const callers = [1, 2, 3].map((x) => b.submit(x)); // dense arrivals: they will wait for company
  gate.resolve();
  await warm;
  await sleep(10);
  assert.deepEqual(runs, [[0]], "waiting for company before close");
  const started = performance.now();
  await b.close();
  assert.ok(performance.now() - started < 5_000, "close() did not wait out maxWaitMs");
  assert.deepEqual(await Promise.all(callers), [2, 3, 4]);
  assert.deepEqual(runs, [[0], [1, 2, 3]]);
});

Deno.test("batcher: close() flushes a queue longer than maxBatchSize in successive full batches", async () => {
  const gate = Promise.withResolvers<void>();
  const runs: number[][] = [];
  const b = batcher<number, number>(async (items) => {
    runs.push([...items]);
    if (runs.length === 1) await gate.promise;
    return items;
  }, { maxBatchSize: 2, maxWaitMs: 10_000 });
  const callers = [1, 2, 3, 4, 5].map((x) => b.submit(x)); // [1, 2] runs; 3, 4, 5 wait
  const closed = b.close();
  const late = b.submit(6);
  await assert.rejects(late, BatcherClosedError);
  gate.resolve();
  await closed;
  assert.deepEqual(runs, [[1, 2], [3, 4], [5]]);
  assert.deepEqual(await Promise.all(callers), [1, 2, 3, 4, 5]);
});

Deno.test("batcher: the observer gets each batch's size and the runner's duration", async () => {
  const batches: [number, number][] = [];
  const { runner } = recorder((x: number) => x, { delayMs: 15 });
  const b = batcher(runner, { maxBatchSize: 4, maxWaitMs: 20 }, {
    onBatch: (size, durationMs) => batches.push([size, durationMs]),
  });
  await Promise.all([1, 2, 3, 4, 5].map((x) => b.submit(x)));
  assert.deepEqual(batches.map(([size]) => size), [4, 1]);
  // Each batch awaited a 15 ms delay inside the runner; the duration covers it (lower bound, 1 ms slack).
  for (const [, ms] of batches) assert.ok(ms >= 14, `batch duration ${ms} ms`);
});

Deno.test("batcher: onBatch is reported for failed batches too, and a failing observer strands no caller", async () => {
  const sizes: number[] = [];
  const failing = batcher<number, number>(() => Promise.reject(new Error("no")), { maxBatchSize: 2 }, {
    onBatch: (size) => sizes.push(size),
  });
  await Promise.allSettled([1, 2].map((x) => failing.submit(x)));
  assert.deepEqual(sizes, [2]);
  const b = batcher<number, number>((items) => Promise.resolve(items), { maxBatchSize: 2 }, {
    onBatch: () => {
      throw new Error("metrics broke");
    },
  });
  assert.deepEqual(await Promise.all([1, 2, 3].map((x) => b.submit(x))), [1, 2, 3]);
  await b.close();
  assert.equal(b.inFlight, 0);
});

Deno.test("batcher: invalid options throw", () => {
  const runner: BatchRunner<number, number> = (items) => Promise.resolve(items);
  const good: BatcherOptions = { maxBatchSize: 4, maxWaitMs: 5, maxQueue: 10 };
  const bad: [Partial<BatcherOptions>, RegExp][] = [
    [{ maxBatchSize: 0 }, /maxBatchSize/],
    [{ maxBatchSize: -1 }, /maxBatchSize/],
    [{ maxBatchSize: 1.5 }, /maxBatchSize/],
    [{ maxBatchSize: NaN }, /maxBatchSize/],
    [{ maxBatchSize: Infinity }, /maxBatchSize/],
    [{ maxWaitMs: -1 }, /maxWaitMs/],
    [{ maxWaitMs: NaN }, /maxWaitMs/],
    [{ maxWaitMs: Infinity }, /maxWaitMs/],
    [{ maxQueue: 0 }, /maxQueue/],
    [{ maxQueue: 2.5 }, /maxQueue/],
    [{ maxQueue: NaN }, /maxQueue/],
  ];
  for (const [change, message] of bad) {
    assert.throws(() => new DynamicBatcher(runner, { ...good, ...change }), message, JSON.stringify(change));
  }
  // The edges that are valid: no waiting at all, batches of one, a queue of one.
  new DynamicBatcher(runner, { maxBatchSize: 1, maxWaitMs: 0, maxQueue: 1 });
});

Deno.test("batcher: maxWaitMs 0 runs each item as soon as it arrives", async () => {
  const { runner, runs } = recorder((x: number) => x, { delayMs: 5 });
  const b = batcher(runner, { maxBatchSize: 8, maxWaitMs: 0 });
  const first = b.submit(1); // a lone client: runs as soon as this code yields (a microtask, no timer)
  assert.deepEqual(runs, []);
  await null;
  assert.deepEqual(runs, [[1]]);
  const rest = [2, 3].map((x) => b.submit(x)); // queue behind the running batch, then go together
  assert.equal(b.queued, 2);
  assert.deepEqual(await Promise.all([first, ...rest]), [1, 2, 3]);
  assert.deepEqual(runs, [[1], [2, 3]]);
});

Deno.test("batcher: two closed-loop clients end up sharing every batch", async () => {
  // Each client sends its next item as soon as the last is answered. Run one after the other, they would
  // alternate forever (each arriving while the other's batch runs); waiting for company once the model is
  // free lets the answered client catch up, and from then on they travel together.
  const { runner, runs } = recorder((x: number) => x, { delayMs: 10 });
  const b = batcher(runner, { maxBatchSize: 8, maxWaitMs: 50 });
  const client = async (id: number) => {
    await sleep(id * 3); // staggered start
    for (let i = 0; i < 6; i++) await b.submit(id * 100 + i);
  };
  await Promise.all([client(0), client(1)]);
  // Client 0 starts alone; once client 1 has caught up they share every batch; client 0 finishes one item
  // ahead, so client 1's last item goes alone.
  // (On an idle machine exactly [1, 2, 2, 2, 2, 2, 1]; the bound leaves room for a loaded CI runner.)
  const sizes = runs.map((r) => r.length);
  assert.equal(sizes.reduce((a, n) => a + n, 0), 12);
  assert.ok(sizes.filter((n) => n === 2).length >= 4, `batch sizes ${sizes}`);
});

Deno.test("batcher: submitMany is all or none: a request that does not fit is refused before any work", async () => {
  const { runner, runs } = recorder((x: number) => x);
  const b = batcher(runner, { maxBatchSize: 32, maxQueue: 16 });
  const refused = await Promise.allSettled(b.submitMany(Array.from({ length: 20 }, (_, i) => i)));
  for (const r of refused) {
    assert.equal(r.status, "rejected");
    assert.ok((r as PromiseRejectedResult).reason instanceof QueueFullError);
  }
  assert.equal(b.inFlight, 0);
  assert.deepEqual(await Promise.all(b.submitMany([1, 2, 3])), [1, 2, 3]);
  assert.deepEqual(runs, [[1, 2, 3]], "the refused request computed nothing");
});

Deno.test("batcher: one request's texts are never split, even with maxWaitMs 0 among competing clients", async () => {
  const { runner, runs } = recorder((x: number) => x, { delayMs: 2 });
  const b = batcher(runner, { maxBatchSize: 16, maxWaitMs: 0 });
  await Promise.all(b.submitMany([1, 2, 3])); // a batch of three: clients count as competing now
  await Promise.all(b.submitMany([10, 11, 12, 13, 14, 15, 16, 17]));
  assert.deepEqual(runs, [[1, 2, 3], [10, 11, 12, 13, 14, 15, 16, 17]]);
});

Deno.test("batcher: a lone client sending several texts per request pays no wait", async () => {
  const { runner, runs } = recorder((x: number) => x, { delayMs: 1 });
  // With a 10 s window, any wait for company would show.
  const b = batcher(runner, { maxBatchSize: 16, maxWaitMs: 10_000 });
  const started = performance.now();
  for (let i = 0; i < 4; i++) await Promise.all(b.submitMany([i * 10, i * 10 + 1]));
  assert.ok(performance.now() - started < 5_000, "a lone client waited for company");
  assert.deepEqual(runs, [[0, 1], [10, 11], [20, 21], [30, 31]]);
});

Deno.test("batcher: after flushFromNowOn, waiting items run at once and new ones are still accepted", async () => {
  const gate = Promise.withResolvers<void>();
  const runs: number[][] = [];
  const b = batcher<number, number>(async (items) => {
    runs.push([...items]);
    if (items[0] === 0) await gate.promise;
    return items;
  }, { maxBatchSize: 8, maxWaitMs: 10_000 });
  const warm = b.submit(0); // runs at once and holds the model
  await null;
  const waiting = [1, 2].map((x) => b.submit(x)); // competing now: would wait 10 s for company
  gate.resolve();
  await warm;
  const started = performance.now();
  b.flushFromNowOn();
  const late = b.submit(3); // e.g. a request whose body was still being read when shutdown began
  assert.deepEqual(await Promise.all([...waiting, late]), [1, 2, 3]);
  assert.ok(performance.now() - started < 5_000, "flushFromNowOn did not stop the wait");
  await b.close();
});
