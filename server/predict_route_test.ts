// The /predict handler on its own, over a real (small) model: it takes c.var.jsonBody from whatever set it
// (here a stand-in middleware, not the body reader), validates, classifies and maps batcher failures.
import assert from "node:assert/strict";
import { Hono } from "hono";
import { createMiddleware } from "hono/factory";
import { serverFixture } from "../tests/server_fixture.ts";
import { errorHandler } from "./errors.ts";
import type { JsonBodyEnv } from "./json_body.ts";
import { predictHandler } from "./predict_route.ts";
import type { RequestIdEnv } from "./request_id.ts";

type Fixture = Awaited<ReturnType<typeof serverFixture>>;

/**
 * A tiny app in which a stand-in middleware sets c.var.jsonBody to the value `send` was given: the request
 * itself has no body, so the handler cannot have read one.
 */
function tinyApp(s: Fixture) {
  let body: unknown;
  const app = new Hono<RequestIdEnv>();
  const given = createMiddleware<JsonBodyEnv>(async (c, next) => {
    c.set("jsonBody", body);
    await next();
  });
  app.post("/predict", given, predictHandler(s));
  app.onError(errorHandler((line) => s.errors.push(line)));
  return (value: unknown) => {
    body = value;
    return app.request("/predict", { method: "POST" });
  };
}

Deno.test("predictHandler: classifies c.var.jsonBody and counts the texts", async () => {
  await using s = await serverFixture();
  const send = tinyApp(s);
  const one = await send({ text: "Stocks rally" });
  assert.equal(one.status, 200);
  assert.equal(
    (await one.json()).label_id,
    s.classifier.classify(["Stocks rally"], { maxLength: 64 })[0].label_id,
  );
  const many = await send({ texts: ["a b", "c d", "e f"] });
  assert.equal((await many.json()).predictions.length, 3);
  assert.equal(s.metrics.texts.get(), 4);
});

Deno.test("predictHandler: schema and blank-text failures are 422 validation_error with their paths", async () => {
  await using s = await serverFixture();
  const send = tinyApp(s);
  const wrong = await send({ texts: ["ok", 3] });
  assert.equal(wrong.status, 422);
  assert.deepEqual(await wrong.json(), {
    error: {
      code: "validation_error",
      message: "the request does not match the API",
      details: { issues: [{ path: "$.texts[1]", message: "must be a string, not a number" }] },
    },
  });
  // Passes the schema (not blank to trim()), but encodes to [CLS] [SEP] only.
  const blank = await send({ texts: ["fine", "\u200b\u200d"] });
  assert.equal(blank.status, 422);
  assert.deepEqual((await blank.json()).error.details, {
    issues: [{ path: "$.texts[1]", message: "has no words (only control or format characters)" }],
  });
  assert.equal(s.metrics.texts.get(), 0, "nothing classified");
  assert.deepEqual(s.errors, []);
});

Deno.test("predictHandler: a closed predictor is 503 shutting_down, not a server fault", async () => {
  await using s = await serverFixture();
  const send = tinyApp(s);
  await s.predictor.close();
  const res = await send({ text: "too late" });
  assert.equal(res.status, 503);
  assert.equal(res.headers.get("retry-after"), "5");
  assert.equal(res.headers.get("connection"), "close");
  assert.equal((await res.json()).error.code, "shutting_down");
  assert.deepEqual(s.errors, []);
});
