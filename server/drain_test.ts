// The refuseWhileDraining middleware on its own, in a tiny Hono app with the real error handler: while
// draining, requests are answered 503 shutting_down before the handler runs or the body is read.
import assert from "node:assert/strict";
import { Hono } from "hono";
import { refuseWhileDraining } from "./drain.ts";
import { errorHandler } from "./errors.ts";
import type { RequestIdEnv } from "./request_id.ts";

function tinyApp() {
  let draining = false;
  let handled = 0;
  const app = new Hono<RequestIdEnv>();
  app.post("/work", refuseWhileDraining(() => draining), async (c) => {
    handled++;
    return c.text(await c.req.text());
  });
  app.onError(errorHandler(() => assert.fail("no server fault expected")));
  return { app, setDraining: (value: boolean) => void (draining = value), handled: () => handled };
}

Deno.test("refuseWhileDraining: passes requests through while not draining", async () => {
  const { app, handled } = tinyApp();
  const request = new Request("http://localhost/work", { method: "POST", body: "payload" });
  const res = await app.request(request);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "payload");
  assert.equal(handled(), 1);
  // The handler reads this very Request: so bodyUsed below tells whether a refused body was read.
  assert.equal(request.bodyUsed, true);
});

Deno.test("refuseWhileDraining: while draining, 503 shutting_down with Retry-After and Connection: close", async () => {
  const { app, setDraining, handled } = tinyApp();
  setDraining(true);
  const request = new Request("http://localhost/work", { method: "POST", body: "not to be read" });
  const res = await app.request(request);
  assert.equal(res.status, 503);
  assert.equal(res.headers.get("retry-after"), "5");
  assert.equal(res.headers.get("connection"), "close");
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  assert.deepEqual(await res.json(), {
    error: {
      code: "shutting_down",
      message: "the server is shutting down; retry on another replica",
      details: {},
    },
  });
  assert.equal(handled(), 0, "the handler never ran");
  assert.equal(request.bodyUsed, false, "the body was never read");

  // The check is made per request, not once: back to serving when the flag clears.
  setDraining(false);
  const later = await app.request("/work", { method: "POST", body: "again" });
  assert.equal(later.status, 200);
  assert.equal(handled(), 1);
});
