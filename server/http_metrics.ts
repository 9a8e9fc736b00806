/**
 * The HTTP metrics middleware: counts each request by route, method and status, and times it by route,
 * into the registry of server/metrics.ts.
 * @module
 */

import { createMiddleware } from "hono/factory";
import type { ServerMetrics } from "./metrics.ts";

/** Methods counted by name; any other (a client can send anything) is counted as "other". */
const KNOWN_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

/**
 * Records `distrinews_http_requests_total` and `distrinews_http_request_duration_seconds` for every
 * request that passes through it. A request is labelled by its path when that is one of `routes`, else
 * as "unmatched": never by the raw path, so a scanner probing random URLs cannot blow up the number of
 * series. Register it first, so the time covers everything the app does.
 */
export function httpMetrics(metrics: Pick<ServerMetrics, "requests" | "latency">, routes: Iterable<string>) {
  const known = new Set(routes);
  return createMiddleware(async (c, next) => {
    const started = performance.now();
    await next();
    const route = known.has(c.req.path) ? c.req.path : "unmatched";
    const method = KNOWN_METHODS.has(c.req.method) ? c.req.method : "other";
    metrics.requests.inc({ route, method, status: String(c.res.status) });
    metrics.latency.observe((performance.now() - started) / 1000, { route });
  });
}
