// The requestId middleware on its own, in a tiny Hono app: a safe client id is kept and echoed, anything
// else is replaced by a fresh UUID, and error responses carry the id too.
import assert from "node:assert/strict";
import { Hono } from "hono";
import { errorHandler } from "./errors.ts";
import { requestId, type RequestIdEnv } from "./request_id.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function tinyApp() {
  const app = new Hono<RequestIdEnv>();
  const logged: string[] = [];
  app.use(requestId());
  app.get("/id", (c) => c.text(c.var.requestId));
  app.get("/boom", () => {
    throw new Error("broken on purpose");
  });
  app.onError(errorHandler((line) => logged.push(line)));
  return { app, logged };
}

async function idsOf(
  app: Hono<RequestIdEnv>,
  sent?: string,
): Promise<{ header: string | null; seen: string }> {
  const res = await app.request("/id", { headers: sent === undefined ? {} : { "x-request-id": sent } });
  assert.equal(res.status, 200);
  return { header: res.headers.get("x-request-id"), seen: await res.text() };
}

Deno.test("requestId: a safe client id is kept, seen by the handler and echoed", async () => {
  const { app } = tinyApp();
  for (const id of ["trace-42.a:b", "a", "A_b-c.d:e", "x".repeat(128)]) {
    assert.deepEqual(await idsOf(app, id), { header: id, seen: id }, id);
  }
});

Deno.test("requestId: no id, or an unsafe one, gets a fresh UUID per request", async () => {
  const { app } = tinyApp();
  const unsafe = ["", "bad id", "bad id\u00e9<script>", "a/b", "x".repeat(129), "line\nbreak"];
  const made: string[] = [];
  for (const sent of [undefined, ...unsafe]) {
    // A header value with a newline cannot even be built; Request refuses it.
    if (sent?.includes("\n")) continue;
    const { header, seen } = await idsOf(app, sent);
    assert.match(header ?? "", UUID, JSON.stringify(sent));
    assert.equal(seen, header, "the handler sees the id that is sent back");
    made.push(header!);
  }
  assert.equal(new Set(made).size, made.length, "each request its own id");
});

Deno.test("requestId: an error response carries the id, and the 500 quotes it", async () => {
  const { app, logged } = tinyApp();
  const res = await app.request("/boom", { headers: { "x-request-id": "trace-7" } });
  assert.equal(res.status, 500);
  assert.equal(res.headers.get("x-request-id"), "trace-7");
  assert.deepEqual(await res.json(), {
    error: {
      code: "internal_error",
      message: "the server failed to answer; quote the request id when reporting it",
      details: { request_id: "trace-7" },
    },
  });
  assert.equal(logged.length, 1);
  assert.match(logged[0], /^\[trace-7\] GET \/boom failed: Error: broken on purpose\n\s+at /);
  // Not-found answers (no route ran) carry one as well.
  const missing = await app.request("/nowhere");
  assert.equal(missing.status, 404);
  assert.match(missing.headers.get("x-request-id") ?? "", UUID);
});
