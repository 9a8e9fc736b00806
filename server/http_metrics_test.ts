// The httpMetrics middleware on its own, in a tiny Hono app with a real ServerMetrics: requests counted by
// route, method and status (error answers included), timed by route, and unknown paths and methods folded
// into one label value each.
import assert from "node:assert/strict";
import { Hono } from "hono";
import { ApiError, errorHandler } from "./errors.ts";
import { httpMetrics } from "./http_metrics.ts";
import { ServerMetrics } from "./metrics.ts";
import type { RequestIdEnv } from "./request_id.ts";

function tinyApp() {
  const metrics = new ServerMetrics();
  const app = new Hono<RequestIdEnv>();
  app.use(httpMetrics(metrics, ["/fast", "/slow", "/refused"]));
  app.get("/fast", (c) => c.text("ok"));
  app.all("/fast", (c) => c.text("any method", 202));
  app.get("/slow", async (c) => {
    await new Promise((r) => setTimeout(r, 60));
    return c.text("late");
  });
  app.post("/refused", () => {
    throw new ApiError("overloaded", "busy", {}, { "retry-after": "1" });
  });
  app.onError(errorHandler(() => {}));
  return { app, metrics };
}

Deno.test("httpMetrics: counts each request by route, method and status", async () => {
  const { app, metrics } = tinyApp();
  for (let i = 0; i < 3; i++) await (await app.request("/fast")).text();
  await (await app.request("/fast", { method: "HEAD" })).text();
  const refused = await app.request("/refused", { method: "POST" });
  assert.equal(refused.status, 503);
  await refused.text();
  assert.equal(metrics.requests.get({ route: "/fast", method: "GET", status: "200" }), 3);
  assert.equal(metrics.requests.get({ route: "/fast", method: "HEAD", status: "200" }), 1);
  // An error answered by the error handler is counted with the status the client saw.
  assert.equal(metrics.requests.get({ route: "/refused", method: "POST", status: "503" }), 1);
  assert.equal(metrics.latency.count({ route: "/fast" }), 4);
  assert.equal(metrics.latency.count({ route: "/refused" }), 1);
});

Deno.test("httpMetrics: unknown paths are 'unmatched' and unknown methods 'other', never raw", async () => {
  const { app, metrics } = tinyApp();
  for (const path of ["/nowhere", "/fast/", "/" + "x".repeat(300), "/fast?x=1"]) {
    await (await app.request(path)).text();
  }
  await (await app.request("/fast", { method: "PROPFIND" })).text();
  // The query string is not part of the path: /fast?x=1 is /fast.
  assert.equal(metrics.requests.get({ route: "/fast", method: "GET", status: "200" }), 1);
  assert.equal(metrics.requests.get({ route: "unmatched", method: "GET", status: "404" }), 3);
  assert.equal(metrics.requests.get({ route: "/fast", method: "other", status: "202" }), 1);
  const text = metrics.render();
  assert.ok(!text.includes("nowhere") && !text.includes("xxx") && !text.includes("PROPFIND"), text);
});

Deno.test("httpMetrics: the duration covers the handler's time", async () => {
  const { app, metrics } = tinyApp();
  await (await app.request("/slow")).text();
  assert.equal(metrics.latency.count({ route: "/slow" }), 1);
  const sum = Number(
    /distrinews_http_request_duration_seconds_sum\{route="\/slow"\} (\S+)/.exec(
      metrics.render(),
    )?.[1],
  );
  // Timers may fire a little early, never much: 50 ms of a 60 ms sleep is a safe floor.
  assert.ok(sum >= 0.05 && sum < 10, `${sum} s`);
});
