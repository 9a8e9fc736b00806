/**
 * The JSON body middleware: reads the request body with {@link readJsonBody} (JSON media type, size cap
 * while reading, strict UTF-8, no duplicate keys) and hands the parsed value on in `c.var.jsonBody`.
 * Failures are thrown as the ApiErrors of server/body.ts, which the app's error handler answers.
 * @module
 */

import { createMiddleware } from "hono/factory";
import { readJsonBody } from "./body.ts";

/** What {@link jsonBody} adds to the context: the parsed body, not yet validated. */
export type JsonBodyEnv = { Variables: { jsonBody: unknown } };

/** Parses the body as JSON of at most `maxBytes` bytes into `c.var.jsonBody`, or throws an ApiError. */
export function jsonBody(maxBytes: number) {
  return createMiddleware<JsonBodyEnv>(async (c, next) => {
    c.set("jsonBody", await readJsonBody(c.req.raw, maxBytes));
    await next();
  });
}
