/**
 * The HTTP API as a Hono app: routes, validation, the error shape, request ids, metrics. It knows nothing
 * of sockets or signals (serve.ts does), so tests drive it with `app.request` and a real model.
 * @module
 */

import { Hono } from "hono";
import type { Context } from "hono";
import { readJsonBody } from "./body.ts";
import { ApiError } from "./errors.ts";
import { BatcherClosedError, QueueFullError } from "./batcher.ts";
import type { ServerMetrics } from "./metrics.ts";
import { openApiDocument } from "./openapi.ts";
import { pageHtml } from "./page.ts";
import type { BatchedPredictor } from "./predictor.ts";
import { type Health, issueDetails, predictRequestSchema, type RequestLimits } from "./schemas.ts";

/** What the app serves with. */
export interface AppOptions {
  predictor: BatchedPredictor;
  metrics: ServerMetrics;
  limits: RequestLimits;
  /** The /health payload, built on each call. */
  health: () => Health;
  /** The API version in /openapi.json. */
  version: string;
  /** True once shutdown has begun: /health says so and /predict refuses new work. */
  draining?: () => boolean;
  /** Where server-side error reports go (stack traces stay here, never in responses). */
  logError?: (line: string) => void;
}

type Env = { Variables: { requestId: string } };

/** Methods each route answers; anything else on a known path is a 405 with an Allow header. */
const ROUTES: Record<string, string[]> = {
  "/": ["GET", "HEAD"],
  "/predict": ["POST"],
  "/health": ["GET", "HEAD"],
  "/metrics": ["GET", "HEAD"],
  "/openapi.json": ["GET", "HEAD"],
};

/** Methods counted by name in the metrics; any other (a client can send anything) is counted as "other". */
const KNOWN_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

const REQUEST_ID = /^[\w.:-]{1,128}$/;

function errorResponse(c: Context<Env>, err: ApiError): Response {
  for (const [name, value] of Object.entries(err.headers)) c.header(name, value);
  return c.json(err.body(), err.status as 400);
}

/** Builds the app. */
export function createApp(options: AppOptions): Hono<Env> {
  const { predictor, metrics, limits } = options;
  const draining = options.draining ?? (() => false);
  const logError = options.logError ?? ((line) => console.error(line));
  const schema = predictRequestSchema(limits);
  const openapi = JSON.stringify(openApiDocument(limits, options.version));
  const app = new Hono<Env>();

  // Request id and metrics around everything. A client's own X-Request-Id is kept (when sane) so that
  // its logs and ours can be joined; otherwise we make one. Routes are labelled by their pattern, never by
  // the raw path, so a scanner probing random URLs cannot blow up the metrics' cardinality.
  app.use(async (c, next) => {
    const started = performance.now();
    const incoming = c.req.header("x-request-id");
    const requestId = incoming && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
    c.set("requestId", requestId);
    await next();
    c.res.headers.set("x-request-id", requestId);
    const route = c.req.path in ROUTES ? c.req.path : "unmatched";
    const method = KNOWN_METHODS.has(c.req.method) ? c.req.method : "other";
    metrics.requests.inc({ route, method, status: String(c.res.status) });
    metrics.latency.observe((performance.now() - started) / 1000, { route });
  });

  app.get("/", (c) => {
    const nonce = crypto.randomUUID().replace(/-/g, "");
    c.header(
      "content-security-policy",
      `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; ` +
        // Hugging Face Spaces shows the app in an iframe on huggingface.co.
        "base-uri 'none'; form-action 'self'; frame-ancestors 'self' https://huggingface.co",
    );
    c.header("x-content-type-options", "nosniff");
    return c.html(pageHtml(nonce, predictor.labels));
  });

  app.get("/health", (c) => {
    const health = options.health();
    return c.json(health, health.ready ? 200 : 503);
  });

  app.get(
    "/metrics",
    (c) => c.body(metrics.render(), 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }),
  );

  app.get("/openapi.json", (c) => c.body(openapi, 200, { "content-type": "application/json" }));

  app.post("/predict", async (c) => {
    if (draining()) throw shuttingDown();
    const body = await readJsonBody(c.req.raw, limits.maxBodyBytes);
    const parsed = schema.safeParse(body);
    if (!parsed.success) {
      throw new ApiError(
        "validation_error",
        "the request does not match the API",
        issueDetails(parsed.error),
      );
    }
    const single = parsed.data.text !== undefined;
    const texts = single ? [parsed.data.text!] : parsed.data.texts!;
    const encoded = texts.map((text) => predictor.encode(text));
    // [CLS] and [SEP] only: the text was nothing but control or unknown-to-BERT format characters.
    const blank = encoded.flatMap((ids, i) => ids.length <= 2 ? [single ? "$.text" : `$.texts[${i}]`] : []);
    if (blank.length > 0) {
      throw new ApiError("validation_error", "the request does not match the API", {
        issues: blank.map((path) => ({ path, message: "has no words (only control or format characters)" })),
      });
    }
    let predictions;
    try {
      predictions = await predictor.predict(encoded);
    } catch (err) {
      if (err instanceof QueueFullError) {
        throw new ApiError("overloaded", "the server is at capacity; retry shortly", {
          queue_limit: err.limit,
        }, {
          "retry-after": "1",
        });
      }
      if (err instanceof BatcherClosedError) throw shuttingDown();
      throw err;
    }
    metrics.texts.inc({}, predictions.length);
    return c.json(single ? predictions[0] : { predictions });
  });

  for (const [path, methods] of Object.entries(ROUTES)) {
    app.all(path, (c) => {
      throw new ApiError(
        "method_not_allowed",
        `${c.req.method} is not allowed on ${path}; use ${methods.join(" or ")}`,
        {
          allowed: methods,
        },
        { allow: methods.join(", ") },
      );
    });
  }

  app.notFound((c) =>
    errorResponse(
      c,
      new ApiError("not_found", `no route ${c.req.method} ${c.req.path}; see /openapi.json`, {
        path: c.req.path,
      }),
    )
  );

  app.onError((err, c) => {
    if (err instanceof ApiError) return errorResponse(c, err);
    const requestId = c.get("requestId");
    logError(`[${requestId}] ${c.req.method} ${c.req.path} failed: ${err.stack ?? err}`);
    return errorResponse(
      c,
      new ApiError("internal_error", "the server failed to answer; quote the request id when reporting it", {
        request_id: requestId,
      }),
    );
  });

  return app;
}

function shuttingDown(): ApiError {
  return new ApiError("shutting_down", "the server is shutting down; retry on another replica", {}, {
    "retry-after": "5",
    connection: "close",
  });
}
