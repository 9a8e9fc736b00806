/**
 * The HTTP API as a Hono app, composed from small named parts: the request id and metrics middlewares
 * around everything, then the routes, with `/predict` behind the draining check and the JSON body reader.
 * Each part lives in its own module; this one only wires them. It knows nothing of sockets or signals
 * (serve.ts does), so tests drive it with `app.request` and a real model.
 * @module
 */

import { type Context, type Handler, Hono } from "hono";
import { refuseWhileDraining } from "./drain.ts";
import { ApiError, errorHandler, errorResponse } from "./errors.ts";
import { httpMetrics } from "./http_metrics.ts";
import { jsonBody } from "./json_body.ts";
import type { ServerMetrics } from "./metrics.ts";
import { openApiDocument } from "./openapi.ts";
import { pageHtml } from "./page.ts";
import { predictHandler } from "./predict_route.ts";
import type { BatchedPredictor } from "./predictor.ts";
import { requestId, type RequestIdEnv } from "./request_id.ts";
import type { Health, RequestLimits } from "./schemas.ts";

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

/** Methods each route answers; anything else on a known path is a 405 with an Allow header. */
const ROUTES: Record<string, string[]> = {
  "/": ["GET", "HEAD"],
  "/predict": ["POST"],
  "/health": ["GET", "HEAD"],
  "/metrics": ["GET", "HEAD"],
  "/openapi.json": ["GET", "HEAD"],
};

/** Builds the app: dependencies in, a Hono app out. */
export function createApp(options: AppOptions): Hono<RequestIdEnv> {
  const { predictor, metrics, limits } = options;
  const draining = options.draining ?? (() => false);
  const logError = options.logError ?? ((line) => console.error(line));
  const openapi = JSON.stringify(openApiDocument(limits, options.version));
  const app = new Hono<RequestIdEnv>();

  // Metrics first, so that their time covers the whole request; the id before any route, so that the
  // error handler can name it.
  app.use(httpMetrics(metrics, Object.keys(ROUTES)));
  app.use(requestId());

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

  app.post(
    "/predict",
    refuseWhileDraining(draining),
    jsonBody(limits.maxBodyBytes),
    predictHandler({ predictor, metrics, limits }),
  );

  for (const [path, methods] of Object.entries(ROUTES)) app.all(path, methodNotAllowed(path, methods));
  app.notFound(notFound);
  app.onError(errorHandler(logError));

  return app;
}

/** The handler of a known path asked with a method it does not answer: 405 with an Allow header. */
function methodNotAllowed(path: string, methods: string[]): Handler {
  return (c) => {
    throw new ApiError(
      "method_not_allowed",
      `${c.req.method} is not allowed on ${path}; use ${methods.join(" or ")}`,
      { allowed: methods },
      { allow: methods.join(", ") },
    );
  };
}

/** Any other path: 404, pointing at the document that lists the routes. */
function notFound(c: Context): Response {
  return errorResponse(
    c,
    new ApiError("not_found", `no route ${c.req.method} ${c.req.path}; see /openapi.json`, {
      path: c.req.path,
    }),
  );
}
