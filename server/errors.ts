/**
 * One error shape for every failure the API reports: `{"error": {"code", "message", "details"}}`.
 * Clients branch on `code` (stable, snake_case) and show `message` (for people); `details` carries
 * structured specifics (which field, which limit, the request id of a 500). {@link errorHandler} is the
 * app's onError: it turns an ApiError into its response and anything else into a 500 that names the
 * request id but keeps the stack trace in the server's log.
 * @module
 */

import type { Context, ErrorHandler } from "hono";
import type { RequestIdEnv } from "./request_id.ts";

/** Stable error codes and their HTTP statuses. */
export const ERROR_STATUS = {
  invalid_json: 400,
  invalid_utf8: 400,
  duplicate_key: 400,
  unreadable_body: 400,
  not_found: 404,
  method_not_allowed: 405,
  payload_too_large: 413,
  unsupported_media_type: 415,
  validation_error: 422,
  internal_error: 500,
  overloaded: 503,
  shutting_down: 503,
} as const;

/** One of the codes in {@link ERROR_STATUS}. */
export type ErrorCode = keyof typeof ERROR_STATUS;

/** The JSON body of every error response. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string; details: Record<string, unknown> };
}

/** A client-visible failure; the app turns it into its status and {@link ErrorBody}. */
export class ApiError extends Error {
  readonly status: number;

  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.status = ERROR_STATUS[code];
  }

  /** The response body. */
  body(): ErrorBody {
    return { error: { code: this.code, message: this.message, details: this.details } };
  }
}

/** Answers with `err`'s status, headers and {@link ErrorBody}. */
export function errorResponse(c: Context, err: ApiError): Response {
  for (const [name, value] of Object.entries(err.headers)) c.header(name, value);
  return c.json(err.body(), err.status as 400);
}

/**
 * The app's onError. An {@link ApiError} is a client-visible failure and is answered as it says; anything
 * else is a server fault: `logError` gets the stack trace, the client a 500 `internal_error` with the
 * request id to quote (so a client never sees a stack trace, and a report can still be traced).
 */
export function errorHandler<E extends RequestIdEnv>(logError: (line: string) => void): ErrorHandler<E> {
  return (err, c) => {
    if (err instanceof ApiError) return errorResponse(c, err);
    const requestId = c.get("requestId");
    logError(`[${requestId}] ${c.req.method} ${c.req.path} failed: ${err.stack ?? err}`);
    return errorResponse(
      c,
      new ApiError("internal_error", "the server failed to answer; quote the request id when reporting it", {
        request_id: requestId,
      }),
    );
  };
}
