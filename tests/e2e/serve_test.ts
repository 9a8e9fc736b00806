// The server as users run it: over real HTTP, with 200 concurrent clients, and `deno task serve` as a
// process (start-up failures, SIGTERM draining).
import assert from "node:assert/strict";
import { join } from "node:path";
import { makeServingCheckpoint, serverFixture } from "../server_fixture.ts";
import { ROOT, tempDir } from "../helpers.ts";
import { loadAgNewsCsv } from "../../data/ag_news.ts";

const FIXTURE_CSV = join(ROOT, "data", "fixtures", "ag_news_test_head300.csv");

Deno.test("200 concurrent HTTP requests are all answered, each equal to its one-at-a-time answer", async () => {
  await using s = await serverFixture({ maxBatchSize: 32, maxWaitMs: 10 });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, s.app.fetch);
  try {
    const url = `http://127.0.0.1:${server.addr.port}/predict`;
    const texts = (await loadAgNewsCsv(FIXTURE_CSV)).slice(0, 200).map((r) => r.text);
    const responses = await Promise.all(texts.map(async (text) => {
      const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ text }),
      });
      return { status: res.status, body: await res.json() };
    }));
    // One at a time: each text alone, no padding, no batch.
    const alone = texts.map((text) => s.classifier.classify([text], { maxLength: 64 })[0]);
    responses.forEach(({ status, body }, i) => {
      assert.equal(status, 200, JSON.stringify(body));
      for (const [name, p] of Object.entries(alone[i].probabilities)) {
        const diff = Math.abs(body.probabilities[name] - p);
        assert.ok(diff < 1e-5, `text ${i} ${name}: ${body.probabilities[name]} vs ${p}`);
      }
      assert.equal(body.label_id, alone[i].label_id, `text ${i}`);
    });
    // Batching really happened: fewer batches than requests, and some held many texts.
    const batches = s.metrics.batchSize.count();
    assert.ok(batches < 100, `${batches} batches for 200 requests`);
    assert.match(s.metrics.batchSize.render(), /distrinews_batch_size_bucket\{le="32"\} \d+/);
  } finally {
    await server.shutdown();
  }
});

interface ServeProcess {
  child: Deno.ChildProcess;
  /** The port from the "listening on" log line; rejects if the process exits before it. */
  port: Promise<number>;
  /** Exit code, once the process has exited and its log has been read to the end. */
  exited: () => Promise<number>;
  stderr: () => string;
}

function startServe(args: string[]): ServeProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "serve.ts", "--port", "0", ...args],
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const { promise: port, resolve: listening, reject: failed } = Promise.withResolvers<number>();
  port.catch(() => {}); // a start-up failure is asserted through the exit code and the log
  // Read stderr to its end (the child must never block on a full pipe), resolving the port on the way.
  const logRead = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) {
      log += decoder.decode(chunk, { stream: true });
      const match = /listening on http:\/\/[^:]+:(\d+)/.exec(log);
      if (match) listening(Number(match[1]));
    }
    failed(new Error(`serve exited before listening:\n${log}`));
  })();
  return {
    child,
    port,
    exited: async () => ((await logRead), (await child.status).code),
    stderr: () => log,
  };
}

Deno.test("serve refuses to start on a missing or corrupt checkpoint, with a message and exit 1", async () => {
  await using tmp = await tempDir();
  const missing = startServe(["--checkpoint", join(tmp.path, "nope")]);
  assert.equal(await missing.exited(), 1);
  assert.match(
    missing.stderr(),
    /error: .*nope is neither an existing path nor a model id: no such file or folder/,
  );
  assert.ok(!missing.stderr().includes("    at "), "no stack trace");

  const dir = await makeServingCheckpoint(join(tmp.path, "ckpt"));
  const weights = join(dir, "model.safetensors");
  const bytes = await Deno.readFile(weights);
  await Deno.writeFile(weights, bytes.subarray(0, bytes.length >> 1));
  const corrupt = startServe(["--checkpoint", dir]);
  assert.equal(await corrupt.exited(), 1);
  assert.match(corrupt.stderr(), /error: .*model\.safetensors/);

  for (
    const [flags, message] of [
      [["--max-batch", "0"], /--max-batch must be a positive integer/],
      [["--max-length", "2"], /--max-length must be at least 3/],
      [["--max-queue", "8", "--max-texts", "16"], /--max-queue \(8\) must be at least --max-texts \(16\)/],
      [["--port", "0x1F90"], /the port must be an integer in 0\.\.65535/],
    ] as const
  ) {
    const badFlag = startServe(["--checkpoint", dir, ...flags]);
    assert.equal(await badFlag.exited(), 2, flags.join(" "));
    assert.match(badFlag.stderr(), message);
  }
});

Deno.test("SIGTERM drains: requests in flight are answered at once, then exit 0 and the port closes", async () => {
  await using tmp = await tempDir();
  const dir = await makeServingCheckpoint(join(tmp.path, "ckpt"));
  // A long batching window holds the requests in the queue when the signal arrives.
  const serve = startServe(["--checkpoint", dir, "--max-wait-ms", "3000"]);
  const port = await serve.port;
  const url = `http://127.0.0.1:${port}`;
  const health = await fetch(`${url}/health`);
  assert.equal(health.status, 200);
  assert.equal((await health.json()).checkpoint.weights_sha256.length, 64);
  const inFlight = Array.from({ length: 5 }, (_, i) =>
    fetch(`${url}/predict`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ text: `Markets rally on day ${i}` }),
    }).then(async (r) => ({ status: r.status, body: await r.json() })));
  // The first text may go at once (a lone client pays no wait); the others then wait for company in the
  // 3 s window. Signal once all five have reached the server and some are waiting (the gauges say so).
  for (let tries = 0;; tries++) {
    const metrics = await (await fetch(`${url}/metrics`)).text();
    const served = Number(/distrinews_predictions_total (\d+)/.exec(metrics)?.[1] ?? 0);
    const inFlight = Number(/distrinews_in_flight (\d+)/.exec(metrics)?.[1]);
    const queued = Number(/distrinews_queue_depth (\d+)/.exec(metrics)?.[1]);
    if (served + inFlight === 5 && queued > 0) break;
    assert.ok(tries < 200, "requests never reached the batcher");
    await new Promise((r) => setTimeout(r, 10));
  }
  const signalledAt = performance.now();
  serve.child.kill("SIGTERM");
  const answers = await Promise.all(inFlight);
  for (const { status, body } of answers) assert.equal(status, 200, JSON.stringify(body));
  // Answered at once: draining flushes the queue instead of waiting out the 3 s window.
  assert.ok(performance.now() - signalledAt < 2500, "drain did not wait for the batching window");
  assert.equal(await serve.exited(), 0, serve.stderr());
  assert.match(serve.stderr(), /SIGTERM: draining [1-5] text\(s\) in flight/);
  assert.match(serve.stderr(), /stopped/);
  await fetch(`${url}/health`).then(
    () => assert.fail("the server still accepts connections after exit"),
    () => {},
  );
});
