import assert from "node:assert/strict";
import { percentile, runLoad } from "./http_load.ts";

const DELAY_MS = 20;

/**
 * A real server on an ephemeral port: each request waits DELAY_MS, then answers 500 when its body's `i` is
 * a multiple of 4 and 200 otherwise. Records the bodies it received, in order.
 */
function testServer() {
  const received: number[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const { i } = await req.json();
    received.push(i);
    await new Promise((r) => setTimeout(r, DELAY_MS));
    return i % 4 === 0 ? new Response("boom", { status: 500 }) : Response.json({ ok: true });
  });
  return { server, received, url: `http://127.0.0.1:${server.addr.port}/predict` };
}

const BODIES = Array.from({ length: 8 }, (_, i) => JSON.stringify({ i }));

Deno.test("runLoad counts successes and errors in the window and orders its percentiles", async () => {
  const { server, received, url } = testServer();
  try {
    const r = await runLoad({ url, concurrency: 4, durationMs: 600, warmupMs: 150, bodies: BODIES });
    assert(r.requests > 0, "some requests succeeded");
    assert(r.errors > 0, "the 500s were counted");
    assert.match(r.firstError ?? "", /^HTTP 500: boom/);
    // Measured requests are a subset of what the server handled (warm-up and stragglers excluded).
    assert(r.requests + r.errors <= received.length, `${r.requests} + ${r.errors} <= ${received.length}`);
    // Bodies 0 and 4 of the 8 fail, so every run of 4 consecutive requests holds exactly one error. Each
    // worker's measured requests are consecutive, so its error count is within 1 of a quarter of them.
    const total = r.requests + r.errors;
    assert(Math.abs(r.errors - total / 4) <= 4, `errors ${r.errors} of ${total}`);
    assert(r.p50 <= r.p95 && r.p95 <= r.p99, `p50 ${r.p50} <= p95 ${r.p95} <= p99 ${r.p99}`);
    // Timers do not fire early, so no successful request can be faster than the server's delay.
    assert(r.p50 >= DELAY_MS - 1, `p50 ${r.p50} >= ${DELAY_MS}`);
    assert(r.mean >= DELAY_MS - 1 && Number.isFinite(r.mean));
    assert(r.rps > 0);
  } finally {
    await server.shutdown();
  }
});

Deno.test("runLoad starts each worker at a different body", async () => {
  const { server, received, url } = testServer();
  try {
    await runLoad({ url, concurrency: 4, durationMs: 100, warmupMs: 0, bodies: BODIES });
    // Every worker sends its first request at once, from offsets 0, 2, 4 and 6.
    assert.deepEqual(received.slice(0, 4).toSorted((a, b) => a - b), [0, 2, 4, 6]);
  } finally {
    await server.shutdown();
  }
});

Deno.test("runLoad counts network errors and reports NaN latencies when nothing succeeds", async () => {
  // A port that was just free and is closed again: every connection is refused.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const r = await runLoad({
    url: `http://127.0.0.1:${port}/`,
    concurrency: 2,
    durationMs: 200,
    warmupMs: 0,
    bodies: ["{}"],
  });
  assert.equal(r.requests, 0);
  assert(r.errors > 0);
  assert(r.firstError !== undefined && !r.firstError.startsWith("HTTP"), r.firstError);
  assert.equal(r.rps, 0);
  assert(Number.isNaN(r.p50) && Number.isNaN(r.p99) && Number.isNaN(r.mean));
});

Deno.test("percentile uses the nearest rank and runLoad validates its options", async () => {
  const xs = Array.from({ length: 100 }, (_, i) => i + 1);
  const qs = [0.5, 0.95, 0.99, 1].map((q) => percentile(xs, q));
  assert.deepEqual(qs, [50, 95, 99, 100]);
  assert.equal(percentile([7], 0.99), 7);
  assert(Number.isNaN(percentile([], 0.5)));
  const base = { url: "http://127.0.0.1:1/", concurrency: 1, durationMs: 10, warmupMs: 0, bodies: ["{}"] };
  for (const bad of [{ concurrency: 0 }, { durationMs: 0 }, { warmupMs: -1 }, { bodies: [] }]) {
    await assert.rejects(runLoad({ ...base, ...bad }), /must/, JSON.stringify(bad));
  }
});
