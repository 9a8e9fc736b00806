// The HTTP contract through app.request, against a real (small) model: every route and status, a table
// of bad inputs that must each get the right status and error shape, and results that do not depend on
// how requests were batched.
import assert from "node:assert/strict";
import { serverFixture } from "../tests/server_fixture.ts";

const JSON_HEADERS = { "content-type": "application/json" };
const LABELS = ["World", "Sports", "Business", "Sci/Tech"];

function post(body: BodyInit, headers: Record<string, string> = JSON_HEADERS): RequestInit {
  return { method: "POST", body, headers };
}

/** Asserts the one error shape, and returns its code. */
async function errorCode(response: Response, status: number, what: string): Promise<string> {
  const text = await response.text();
  assert.equal(response.status, status, `${what}: status ${response.status}, body ${text.slice(0, 300)}`);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/, what);
  const body = JSON.parse(text);
  assert.deepEqual(Object.keys(body), ["error"], what);
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "details", "message"], what);
  assert.equal(typeof body.error.code, "string", what);
  assert.ok(body.error.message.length > 0, what);
  assert.equal(typeof body.error.details, "object", what);
  assert.ok(!/\bat .+\.ts:\d+/.test(text), `${what}: a stack trace leaked: ${text}`);
  return body.error.code;
}

function assertPrediction(p: Record<string, unknown>, what = "prediction"): void {
  assert.deepEqual(Object.keys(p), ["label", "label_id", "confidence", "probabilities"], what);
  assert.equal(p.label, LABELS[p.label_id as number], what);
  const probs = p.probabilities as Record<string, number>;
  assert.deepEqual(Object.keys(probs), LABELS, what);
  assert.equal(p.confidence, Math.max(...Object.values(probs)), what);
  const sum = Object.values(probs).reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(sum - 1) < 1e-5, `${what}: probabilities sum to ${sum}`);
}

function assertSamePrediction(got: Record<string, number> | unknown, want: unknown, what: string): void {
  const g = got as { probabilities: Record<string, number>; label: string };
  const w = want as { probabilities: Record<string, number>; label: string };
  for (const name of LABELS) {
    const diff = Math.abs(g.probabilities[name] - w.probabilities[name]);
    // Padding and batch shape change the order of float sums inside libtorch's kernels, not the math:
    // answers agree to float32 rounding, far below the differences between texts.
    assert.ok(diff < 1e-5, `${what}: ${name} differs by ${diff}`);
  }
}

Deno.test("POST /predict classifies one text and a list, in order, like the model does alone", async () => {
  await using s = await serverFixture();
  const texts = ["Stocks rally as the central bank holds rates", "Late goal wins the derby", "New chip"];
  const one = await s.app.request("/predict", post(JSON.stringify({ text: texts[0] })));
  assert.equal(one.status, 200);
  assert.match(one.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/);
  const single = await one.json();
  assertPrediction(single);
  assertSamePrediction(single, s.classifier.classify([texts[0]])[0], "single");

  const many = await s.app.request("/predict", post(JSON.stringify({ texts })));
  assert.equal(many.status, 200);
  const { predictions } = await many.json();
  assert.equal(predictions.length, texts.length);
  predictions.forEach((p: Record<string, unknown>, i: number) => {
    assertPrediction(p, `texts[${i}]`);
    assertSamePrediction(p, s.classifier.classify([texts[i]])[0], `texts[${i}]`);
  });
  // The texts really get different answers, so an order mix-up would have been caught above.
  assert.notEqual(predictions[0].confidence, predictions[1].confidence);
});

Deno.test("a client's X-Request-Id is echoed; an unsafe one is replaced", async () => {
  await using s = await serverFixture();
  const kept = await s.app.request("/health", { headers: { "x-request-id": "trace-42.a:b" } });
  assert.equal(kept.headers.get("x-request-id"), "trace-42.a:b");
  await kept.body?.cancel();
  const replaced = await s.app.request("/health", { headers: { "x-request-id": "bad id\u00e9<script>" } });
  assert.match(replaced.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/);
  await replaced.body?.cancel();
});

Deno.test("GET /health reports readiness and identity; draining turns it 503 and refuses /predict", async () => {
  await using s = await serverFixture({ maxBatchSize: 8 });
  const ok = await s.app.request("/health");
  assert.equal(ok.status, 200);
  const health = await ok.json();
  assert.equal(health.status, "ok");
  assert.equal(health.ready, true);
  assert.equal(health.model_loaded, true);
  assert.equal(health.device, "cpu");
  assert.deepEqual(health.labels, LABELS);
  assert.equal(health.checkpoint.path, s.checkpoint);
  assert.equal(health.checkpoint.parameters, s.classifier.model.parameterCount());
  assert.equal(health.batching.max_batch_size, 8);
  assert.ok(health.uptime_s >= 0);

  s.setDraining(true);
  const draining = await s.app.request("/health");
  assert.equal(draining.status, 503);
  assert.equal((await draining.json()).status, "draining");
  const refused = await s.app.request("/predict", post('{"text": "hello"}'));
  assert.equal(await errorCode(refused, 503, "draining"), "shutting_down");
  assert.equal(refused.headers.get("retry-after"), "5");
});

Deno.test("GET /metrics counts requests by route and status, and batch sizes", async () => {
  await using s = await serverFixture();
  await (await s.app.request("/predict", post('{"texts": ["a b", "c d e"]}'))).body?.cancel();
  await (await s.app.request("/predict", post("{"))).body?.cancel();
  await (await s.app.request("/nowhere/" + "x".repeat(50))).body?.cancel();
  const res = await s.app.request("/metrics");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  assert.match(text, /distrinews_http_requests_total\{route="\/predict",method="POST",status="200"\} 1\n/);
  assert.match(text, /distrinews_http_requests_total\{route="\/predict",method="POST",status="400"\} 1\n/);
  // Unknown paths share one label value: no series per probed URL.
  assert.match(text, /distrinews_http_requests_total\{route="unmatched",method="GET",status="404"\} 1\n/);
  assert.ok(!text.includes("nowhere"));
  assert.match(text, /distrinews_predictions_total 2\n/);
  assert.match(text, /distrinews_batch_size_count \d+\n/);
  assert.match(text, /distrinews_http_request_duration_seconds_bucket\{route="\/predict",le="\+Inf"\} 2\n/);
});

Deno.test("GET /openapi.json is an OpenAPI 3.1 document of the routes, limits and error shape", async () => {
  await using s = await serverFixture();
  const res = await s.app.request("/openapi.json");
  assert.equal(res.status, 200);
  const doc = await res.json();
  assert.equal(doc.openapi, "3.1.0");
  assert.deepEqual(Object.keys(doc.paths).sort(), ["/", "/health", "/metrics", "/openapi.json", "/predict"]);
  const request = doc.components.schemas.PredictRequest;
  assert.equal(request.properties.text.maxLength, s.limits.maxTextChars);
  assert.equal(request.properties.texts.maxItems, s.limits.maxTexts);
  assert.equal(request.additionalProperties, false);
  assert.deepEqual(doc.components.schemas.Error.required, ["error"]);
  for (const status of ["400", "413", "415", "422", "503"]) {
    assert.ok(doc.paths["/predict"].post.responses[status], `documents ${status}`);
  }
  // Every $ref points at a schema that exists.
  const refs = JSON.stringify(doc).match(/"\$ref":"#\/components\/schemas\/(\w+)"/g) ?? [];
  for (const ref of refs) assert.ok(doc.components.schemas[ref.split("/").pop()!.replace('"', "")], ref);
});

Deno.test("GET / serves the page under a nonce-based Content-Security-Policy", async () => {
  await using s = await serverFixture();
  const res = await s.app.request("/");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
  const csp = res.headers.get("content-security-policy") ?? "";
  const nonce = /script-src 'nonce-(\w+)'/.exec(csp)?.[1];
  assert.ok(nonce, csp);
  const html = await res.text();
  assert.ok(html.includes(`<script nonce="${nonce}">`));
  assert.ok(html.includes('"Sci/Tech"'));
  const again = await s.app.request("/");
  assert.notEqual(again.headers.get("content-security-policy"), csp, "a fresh nonce per response");
  await again.body?.cancel();
});

const encoder = new TextEncoder();
const deep = (n: number) => "[".repeat(n) + "]".repeat(n);

/** [what, body, expected status, expected code, headers?] */
const BAD_INPUTS: [string, BodyInit, number, string, Record<string, string>?][] = [
  ["truncated JSON", '{"text": ', 400, "invalid_json"],
  ["trailing comma", '{"text": "a",}', 400, "invalid_json"],
  ["single quotes", "{'text': 'a'}", 400, "invalid_json"],
  ["empty body", "", 400, "invalid_json"],
  ["whitespace body", " \n\t ", 400, "invalid_json"],
  ["NaN literal", '{"text": NaN}', 400, "invalid_json"],
  ["two JSON documents", '{"text": "a"} {"text": "b"}', 400, "invalid_json"],
  ["null body", "null", 422, "validation_error"],
  ["array body", '["a"]', 422, "validation_error"],
  ["string body", '"Stocks rally"', 422, "validation_error"],
  ["number body", "42", 422, "validation_error"],
  ["empty object", "{}", 422, "validation_error"],
  ["text null", '{"text": null}', 422, "validation_error"],
  ["text number", '{"text": 42}', 422, "validation_error"],
  ["text boolean", '{"text": true}', 422, "validation_error"],
  ["text array", '{"text": ["Stocks rally"]}', 422, "validation_error"],
  ["text object", '{"text": {"title": "a"}}', 422, "validation_error"],
  ["text empty", '{"text": ""}', 422, "validation_error"],
  ["text whitespace", '{"text": "  \\n\\t  "}', 422, "validation_error"],
  ["text Unicode spaces", '{"text": "\\u3000\\u00a0\\u2003"}', 422, "validation_error"],
  ["text control characters only", '{"text": "\\u0000\\u0001\\u0007\\u001b"}', 422, "validation_error"],
  ["text zero-width only", '{"text": "\\u200b\\u200d"}', 422, "validation_error"],
  ["text too long", JSON.stringify({ text: "word ".repeat(2001) }), 422, "validation_error"],
  ["text too long in emoji", JSON.stringify({ text: "\u{1F600}".repeat(10_001) }), 422, "validation_error"],
  ["texts empty", '{"texts": []}', 422, "validation_error"],
  ["texts a string", '{"texts": "a"}', 422, "validation_error"],
  ["texts with null", '{"texts": [null]}', 422, "validation_error"],
  ["texts with a number", '{"texts": ["a", 1]}', 422, "validation_error"],
  ["texts nested", '{"texts": [["a"]]}', 422, "validation_error"],
  ["texts with a blank", '{"texts": ["fine", " "]}', 422, "validation_error"],
  ["too many texts", JSON.stringify({ texts: Array(65).fill("a") }), 422, "validation_error"],
  ["text and texts", '{"text": "a", "texts": ["b"]}', 422, "validation_error"],
  ["unknown field", '{"text": "a", "extra": 1}', 422, "validation_error"],
  ["misspelt field", '{"txt": "a"}', 422, "validation_error"],
  ["deeply nested text", `{"text": ${deep(50_000)}}`, 422, "validation_error"],
  ["duplicate key", '{"text": "a", "text": "b"}', 400, "duplicate_key"],
  ["duplicate key via escape", '{"text": "a", "\\u0074ext": "b"}', 400, "duplicate_key"],
  [
    "invalid UTF-8 byte",
    new Uint8Array([...encoder.encode('{"text": "'), 0xff, ...encoder.encode('"}')]),
    400,
    "invalid_utf8",
  ],
  [
    "overlong UTF-8",
    new Uint8Array([...encoder.encode('{"text": "'), 0xc0, 0xaf, ...encoder.encode('"}')]),
    400,
    "invalid_utf8",
  ],
  [
    "UTF-8 surrogate",
    new Uint8Array([...encoder.encode('{"text": "'), 0xed, 0xa0, 0x80, ...encoder.encode('"}')]),
    400,
    "invalid_utf8",
  ],
  ["body over the limit", JSON.stringify({ text: "a".repeat(1 << 20) }), 413, "payload_too_large"],
  ["text/plain", '{"text": "a"}', 415, "unsupported_media_type", { "content-type": "text/plain" }],
  ["form encoding", "text=a", 415, "unsupported_media_type", {
    "content-type": "application/x-www-form-urlencoded",
  }],
  ["no content type", '{"text": "a"}', 415, "unsupported_media_type", {}],
  ["latin-1 JSON", '{"text": "a"}', 415, "unsupported_media_type", {
    "content-type": "application/json; charset=latin1",
  }],
];

Deno.test(`${BAD_INPUTS.length} bad inputs each get their status and the error shape; the server stays healthy`, async () => {
  await using s = await serverFixture();
  for (const [what, body, status, code, headers] of BAD_INPUTS) {
    const res = await s.app.request("/predict", post(body, headers ?? JSON_HEADERS));
    assert.equal(await errorCode(res, status, what), code, what);
  }
  for (
    const [what, init, path, status, code] of [
      ["GET /predict", { method: "GET" }, "/predict", 405, "method_not_allowed"],
      ["DELETE /health", { method: "DELETE" }, "/health", 405, "method_not_allowed"],
      ["POST /metrics", { method: "POST" }, "/metrics", 405, "method_not_allowed"],
      ["unknown route", { method: "GET" }, "/predictions", 404, "not_found"],
      ["trailing slash", post('{"text": "a"}'), "/predict/", 404, "not_found"],
    ] as const
  ) {
    const res = await s.app.request(path, init);
    assert.equal(await errorCode(res, status, what), code, what);
    if (status === 405) assert.ok(res.headers.get("allow"), `${what}: Allow header`);
  }
  // Validation errors say where and what.
  const res = await s.app.request("/predict", post('{"texts": ["ok", 3]}'));
  const body = await res.json();
  assert.deepEqual(body.error.details.issues, [{
    path: "$.texts[1]",
    message: "must be a string, not a number",
  }]);

  const health = await s.app.request("/health");
  assert.equal(health.status, 200);
  await health.body?.cancel();
  const after = await s.app.request("/predict", post('{"text": "Stocks rally"}'));
  assert.equal(after.status, 200);
  assertPrediction(await after.json());
  assert.deepEqual(s.errors, [], "no client mistake may reach the 500 path");
  const metrics = await (await s.app.request("/metrics")).text();
  assert.ok(!/status="5\d\d"/.test(metrics), "no 5xx counted");
});

Deno.test("a body the client stops sending midway is a 400, not a server fault", async () => {
  await using s = await serverFixture();
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(encoder.encode('{"te'));
      controller.error(new Error("connection reset by peer"));
    },
  });
  const res = await s.app.request("/predict", { method: "POST", body, headers: JSON_HEADERS });
  assert.equal(await errorCode(res, 400, "broken upload"), "unreadable_body");
  assert.deepEqual(s.errors, [], "nothing logged as a server fault");
});

Deno.test("unusual but valid text is classified: emoji, CJK, right-to-left, control characters, BOM", async () => {
  await using s = await serverFixture();
  const texts = [
    "Markets \u{1F4C8} rally \u{1F680}\u{1F680}",
    "\u65e5\u7d4c\u5e73\u5747\u682a\u4fa1\u304c\u4e0a\u6607",
    "\u0627\u0644\u0623\u0633\u0647\u0645 \u062a\u0631\u062a\u0641\u0639 \u0641\u064a \u0627\u0644\u0628\u0648\u0631\u0635\u0629",
    "\u05de\u05e0\u05d9\u05d5\u05ea \u05e2\u05d5\u05dc\u05d5\u05ea",
    "Oil\u0000 prices\u0007 climb\u200b again",
    "e\u0301le\u0300ve (combining marks)",
    "\ud800 a lone surrogate and words",
  ];
  for (const text of texts) {
    const res = await s.app.request("/predict", post(JSON.stringify({ text })));
    assert.equal(res.status, 200, `${JSON.stringify(text)}: ${res.status}`);
    const p = await res.json();
    assertPrediction(p, JSON.stringify(text));
    assertSamePrediction(p, s.classifier.classify([text], { maxLength: 64 })[0], JSON.stringify(text));
  }
  const bom = new Uint8Array([0xef, 0xbb, 0xbf, ...encoder.encode('{"text": "Stocks"}')]);
  assert.equal((await s.app.request("/predict", post(bom))).status, 200);
  for (const type of ["application/json; charset=UTF-8", "application/vnd.api+json", "Application/JSON"]) {
    const res = await s.app.request("/predict", post('{"text": "Stocks"}', { "content-type": type }));
    assert.equal(res.status, 200, type);
    await res.body?.cancel();
  }
});

Deno.test("a full queue answers 503 overloaded with Retry-After, and the server recovers", async () => {
  await using s = await serverFixture({ maxQueue: 2, maxBatchSize: 1, maxWaitMs: 0 });
  const responses = await Promise.all(
    Array.from(
      { length: 12 },
      (_, i) => s.app.request("/predict", post(JSON.stringify({ text: `news ${i}` }))),
    ),
  );
  const statuses = responses.map((r) => r.status);
  assert.ok(statuses.includes(200), `${statuses}`);
  assert.ok(statuses.includes(503), `${statuses}`);
  for (const r of responses) {
    if (r.status === 503) {
      assert.equal(r.headers.get("retry-after"), "1");
      assert.equal(await errorCode(r, 503, "overloaded"), "overloaded");
    } else await r.body?.cancel();
  }
  const later = await s.app.request("/predict", post('{"text": "calm again"}'));
  assert.equal(later.status, 200);
  await later.body?.cancel();
});

Deno.test("an internal failure is a 500 with a request id and no stack trace; the server keeps serving", async () => {
  await using s = await serverFixture();
  // Fault injection: the model's forward call fails (as a NativeError from libtorch would) while the
  // switch is on; the error must travel through the batcher to the app's 500 path, not to the client.
  const model = s.classifier.model;
  const predict = model.predictAsync.bind(model);
  let broken = true;
  model.predictAsync = (batch, options) =>
    broken ? Promise.reject(new Error("native handle gone")) : predict(batch, options);
  const res = await s.app.request("/predict", post('{"text": "boom"}'), undefined);
  const body = await res.clone().json();
  assert.equal(await errorCode(res, 500, "internal"), "internal_error");
  assert.equal(body.error.details.request_id, res.headers.get("x-request-id"));
  assert.equal(s.errors.length, 1);
  assert.ok(s.errors[0].includes(body.error.details.request_id));
  assert.ok(s.errors[0].includes("native handle gone"), "the server log keeps the cause");
  broken = false;
  const ok = await s.app.request("/predict", post('{"text": "fine"}'));
  assert.equal(ok.status, 200);
  await ok.body?.cancel();
});
