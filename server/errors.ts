/**
 * One error shape for every failure the API reports: `{"error": {"code", "message", "details"}}`.
 * Clients branch on `code` (stable, snake_case) and show `message` (for people); `details` carries
 * structured specifics (which field, which limit, the request id of a 500).
 * @module
 */

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
