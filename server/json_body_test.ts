// The jsonBody middleware on its own, in a tiny Hono app with the real error handler: a good body reaches
// the handler as c.var.jsonBody; each bad one is answered with the API's 4xx JSON error and the handler
// never runs.
import assert from "node:assert/strict";
import { Hono } from "hono";
import { errorHandler } from "./errors.ts";
import { jsonBody, type JsonBodyEnv } from "./json_body.ts";
import type { RequestIdEnv } from "./request_id.ts";

const LIMIT = 64;

function tinyApp() {
  const app = new Hono<RequestIdEnv & JsonBodyEnv>();
  const seen: unknown[] = [];
  const logged: string[] = [];
  app.post("/echo", jsonBody(LIMIT), (c) => {
    seen.push(c.var.jsonBody);
    return c.json({ got: c.var.jsonBody });
  });
  app.onError(errorHandler((line) => logged.push(line)));
  return { app, seen, logged };
}

function post(body: BodyInit, headers: Record<string, string> = { "content-type": "application/json" }) {
  return { method: "POST", body, headers };
}

/** The status, the error body and a few headers of a response. */
async function answer(res: Response) {
  return {
    status: res.status,
    type: res.headers.get("content-type"),
    connection: res.headers.get("connection"),
    body: await res.json(),
  };
}

Deno.test("jsonBody: a JSON body within the limit reaches the handler as c.var.jsonBody", async () => {
  const { app, seen } = tinyApp();
  const res = await app.request("/echo", post('{"text": "Stocks rally", "n": [1, 2]}'));
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { got: { text: "Stocks rally", n: [1, 2] } });
  // Not only objects: the middleware parses, the route's schema validates.
  const scalar = await app.request("/echo", post("42", { "content-type": "application/vnd.api+json" }));
  assert.deepEqual(await scalar.json(), { got: 42 });
  assert.deepEqual(seen, [{ text: "Stocks rally", n: [1, 2] }, 42]);
});

Deno.test("jsonBody: a body over the limit is 413 payload_too_large with Connection: close", async () => {
  const { app, seen } = tinyApp();
  const big = JSON.stringify({ text: "x".repeat(LIMIT) });
  const expected = {
    status: 413,
    type: "application/json",
    connection: "close",
    body: {
      error: {
        code: "payload_too_large",
        message: `the request body is over the limit of ${LIMIT} bytes`,
        details: { limit_bytes: LIMIT },
      },
    },
  };
  // Declared by Content-Length, and streamed without one: the same answer.
  assert.deepEqual(await answer(await app.request("/echo", post(big))), expected);
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode(big));
      controller.close();
    },
  });
  assert.deepEqual(await answer(await app.request("/echo", post(stream))), expected);
  // Exactly at the limit is fine.
  const fits = JSON.stringify({ t: "x".repeat(LIMIT - 8) });
  assert.equal(fits.length, LIMIT);
  assert.equal((await app.request("/echo", post(fits))).status, 200);
  assert.equal(seen.length, 1);
});

Deno.test("jsonBody: a wrong or missing content type is 415 unsupported_media_type", async () => {
  const { app, seen } = tinyApp();
  assert.deepEqual(
    await answer(await app.request("/echo", post('{"text": "a"}', { "content-type": "text/plain" }))),
    {
      status: 415,
      type: "application/json",
      connection: null,
      body: {
        error: {
          code: "unsupported_media_type",
          message: 'send the body as application/json (UTF-8), not "text/plain"',
          details: { content_type: "text/plain" },
        },
      },
    },
  );
  const none = await answer(await app.request("/echo", post(new TextEncoder().encode('{"text": "a"}'), {})));
  assert.equal(none.status, 415);
  assert.deepEqual(none.body.error.details, { content_type: null });
  assert.equal(
    none.body.error.message,
    "send the body as application/json (UTF-8), not without a Content-Type",
  );
  assert.deepEqual(seen, []);
});

Deno.test("jsonBody: malformed JSON, an empty body, bad UTF-8 and duplicate keys are 400s", async () => {
  const { app, seen, logged } = tinyApp();
  const cases: [string, BodyInit, string][] = [
    ["truncated", '{"text": ', "invalid_json"],
    ["trailing comma", '{"text": "a",}', "invalid_json"],
    ["empty", "", "invalid_json"],
    ["bad UTF-8", new Uint8Array([0x22, 0xff, 0x22]), "invalid_utf8"],
    ["duplicate key", '{"text": "a", "text": "b"}', "duplicate_key"],
  ];
  for (const [what, body, code] of cases) {
    const got = await answer(await app.request("/echo", post(body)));
    assert.equal(got.status, 400, what);
    assert.equal(got.type, "application/json", what);
    assert.equal(got.body.error.code, code, what);
  }
  const truncated = await answer(await app.request("/echo", post('{"text": ')));
  assert.match(truncated.body.error.message, /^the request body is not valid JSON: /);
  assert.deepEqual(truncated.body.error.details, {});
  const duplicate = await answer(await app.request("/echo", post('{"a": 1, "a": 2}')));
  assert.deepEqual(duplicate.body.error, {
    code: "duplicate_key",
    message: 'the JSON object repeats the key "a"',
    details: { key: "a" },
  });
  assert.deepEqual(seen, [], "the handler never ran");
  assert.deepEqual(logged, [], "a client's mistake is not a server fault");
});
