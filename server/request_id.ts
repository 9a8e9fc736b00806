/**
 * The request id middleware: every request gets an id, kept in `c.var.requestId` and sent back as
 * `X-Request-Id`, so that a client's report of a failure can be matched with the server's log line.
 * @module
 */

import { createMiddleware } from "hono/factory";

/** What {@link requestId} adds to the context. */
export type RequestIdEnv = { Variables: { requestId: string } };

/**
 * Ids a client may choose: short, and made of characters that cannot break a log line or a header.
 * (Not hono's request-id middleware: that one refuses the `.` and `:` of ids like `trace-42.a:b`.)
 */
const SAFE_ID = /^[\w.:-]{1,128}$/;

/**
 * Sets `c.var.requestId` and the response's `X-Request-Id`. A client's own X-Request-Id is kept (when
 * it is safe) so that its logs and ours can be joined; otherwise a random UUID is made.
 */
export function requestId() {
  return createMiddleware<RequestIdEnv>(async (c, next) => {
    const incoming = c.req.header("x-request-id");
    const id = incoming && SAFE_ID.test(incoming) ? incoming : crypto.randomUUID();
    c.set("requestId", id);
    await next();
    // After next(): error responses (made by the app's onError) carry the id too.
    c.res.headers.set("x-request-id", id);
  });
}
