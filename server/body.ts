/**
 * Reading a JSON request body strictly: the media type must be JSON, the size is capped while reading
 * (a client cannot make the server buffer more than the limit, whatever its Content-Length says), the
 * bytes must be valid UTF-8 (no silent U+FFFD), and object keys must be unique (RFC 8259 leaves duplicates
 * to the parser; JSON.parse keeps the last, so `{"text": "a", "text": "b"}` would be ambiguous).
 * @module
 */

import { ApiError } from "./errors.ts";
import { concatBytes } from "../util/bytes.ts";

/** Parses the request body as JSON or throws the {@link ApiError} that describes what is wrong. */
export async function readJsonBody(request: Request, maxBytes: number): Promise<unknown> {
  checkContentType(request.headers.get("content-type"));
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > maxBytes) throw tooLarge(maxBytes);
  const bytes = await readLimited(request.body, maxBytes);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new ApiError("invalid_utf8", "the request body is not valid UTF-8");
  }
  if (text.trim() === "") throw new ApiError("invalid_json", "the request body is empty; send a JSON object");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ApiError("invalid_json", `the request body is not valid JSON: ${(err as Error).message}`);
  }
  const duplicate = findDuplicateKey(text);
  if (duplicate !== undefined) {
    throw new ApiError("duplicate_key", `the JSON object repeats the key ${JSON.stringify(duplicate)}`, {
      key: duplicate,
    });
  }
  return value;
}

function checkContentType(header: string | null): void {
  const [type, ...params] = (header ?? "").split(";").map((s) => s.trim().toLowerCase());
  const charset = params.find((p) => p.startsWith("charset="))?.slice(8).replace(/"/g, "");
  const json = type === "application/json" || /^application\/[\w.+-]+\+json$/.test(type);
  if (!json || (charset !== undefined && charset !== "utf-8" && charset !== "utf8")) {
    throw new ApiError(
      "unsupported_media_type",
      `send the body as application/json (UTF-8), not ${
        header ? JSON.stringify(header) : "without a Content-Type"
      }`,
      { content_type: header },
    );
  }
}

function tooLarge(maxBytes: number): ApiError {
  // Connection: close, since the rest of the body is never read: the client sees this answer, not a reset.
  return new ApiError("payload_too_large", `the request body is over the limit of ${maxBytes} bytes`, {
    limit_bytes: maxBytes,
  }, { connection: "close" });
}

async function readLimited(body: ReadableStream<Uint8Array> | null, maxBytes: number): Promise<Uint8Array> {
  if (body === null) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = body.getReader();
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (err) {
        // The client went away or sent a broken chunked encoding: its problem, not a server fault.
        throw new ApiError(
          "unreadable_body",
          `the request body could not be read: ${(err as Error).message}`,
        );
      }
      const { done, value } = chunk;
      if (done) break;
      size += value.length;
      if (size > maxBytes) throw tooLarge(maxBytes);
      chunks.push(value);
    }
  } finally {
    // Stop reading a too-large body: the rest of it is never buffered.
    reader.releaseLock();
    if (size > maxBytes) await body.cancel().catch(() => {});
  }
  return concatBytes(chunks);
}

/**
 * The first key that appears twice in one object of `text`, which must already be valid JSON. A scan, not
 * a parse: it only tracks, per open object, the keys seen so far.
 */
export function findDuplicateKey(text: string): string | undefined {
  const open: (Set<string> | null)[] = []; // a Set per open object, null per open array
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      const keys = open.at(-1);
      if (keys && expectKey) {
        const key = JSON.parse(text.slice(i, end + 1)) as string; // decodes escapes: "\u0074ext" is "text"
        if (keys.has(key)) return key;
        keys.add(key);
        expectKey = false;
      }
      i = end;
    } else if (ch === "{") {
      open.push(new Set());
      expectKey = true;
    } else if (ch === "[") {
      open.push(null);
    } else if (ch === "}" || ch === "]") {
      open.pop();
      expectKey = false;
    } else if (ch === ",") {
      expectKey = open.at(-1) instanceof Set;
    }
  }
  return undefined;
}
