/**
 * Refusing new work while the server drains: once shutdown has begun, a route behind
 * {@link refuseWhileDraining} answers 503 `shutting_down` at once, so that a load balancer moves the
 * client to another replica instead of queueing it behind a process that is about to exit.
 * @module
 */

import { createMiddleware } from "hono/factory";
import { ApiError } from "./errors.ts";

/**
 * The error of a request refused during shutdown: 503 with Retry-After, and Connection: close, since this
 * connection is about to end anyway.
 */
export function shuttingDown(): ApiError {
  return new ApiError("shutting_down", "the server is shutting down; retry on another replica", {}, {
    "retry-after": "5",
    connection: "close",
  });
}

/** Throws {@link shuttingDown} while `draining()` is true, before anything of the request is read. */
export function refuseWhileDraining(draining: () => boolean) {
  return createMiddleware(async (_c, next) => {
    if (draining()) throw shuttingDown();
    await next();
  });
}
