/**
 * The API's request and response shapes as zod schemas: validation of what clients send, and (through
 * z.toJSONSchema) the OpenAPI document, so the two cannot drift apart.
 * @module
 */

import { z } from "zod";

/** Request limits; the server's flags set them. */
export interface RequestLimits {
  /** Longest text, in characters (Unicode code points). */
  maxTextChars: number;
  /** Most texts in one `{"texts": [...]}` request. */
  maxTexts: number;
  /** Largest request body, bytes. */
  maxBodyBytes: number;
}

/** Defaults: generous for news (a headline plus summary is a few hundred characters). */
export const DEFAULT_LIMITS: Readonly<RequestLimits> = Object.freeze({
  maxTextChars: 10_000,
  maxTexts: 64,
  maxBodyBytes: 1 << 20,
});

function characters(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/** One text: a non-blank string of at most `maxTextChars` characters. */
export function textSchema(limits: RequestLimits) {
  return z.string({
    error: (issue) =>
      issue.input === undefined ? "is required" : `must be a string, not ${kind(issue.input)}`,
  })
    .min(1, { error: "must not be empty", abort: true })
    .refine((s) => s.trim() !== "", { error: "must not be only whitespace" })
    // UTF-16 length bounds the count of code points from above, so most texts skip the count.
    .refine((s) => s.length <= limits.maxTextChars || characters(s) <= limits.maxTextChars, {
      error: `must be at most ${limits.maxTextChars} characters`,
    })
    .meta({ description: "News text: a headline, optionally followed by its summary." });
}

/** `{"text": "..."}` or `{"texts": ["...", ...]}`, nothing else. */
export function predictRequestSchema(limits: RequestLimits) {
  const text = textSchema(limits);
  return z.strictObject({
    text: text.optional(),
    texts: z.array(text, { error: (issue) => `must be an array of strings, not ${kind(issue.input)}` })
      .min(1, { error: "must hold at least one text" })
      .max(limits.maxTexts, { error: `must hold at most ${limits.maxTexts} texts` })
      .optional(),
  }, { error: (issue) => issue.code === "unrecognized_keys" ? undefined : `the body must be a JSON object` })
    .refine((body) => (body.text === undefined) !== (body.texts === undefined), {
      error: 'send exactly one of "text" (a string) or "texts" (an array of strings)',
    });
}

/** What JSON value `x` is, in words, for messages. */
export function kind(x: unknown): string {
  if (x === null) return "null";
  if (Array.isArray(x)) return "an array";
  if (typeof x === "object") return "an object";
  if (typeof x === "undefined") return "missing";
  return `a ${typeof x}`;
}

/** One text's prediction. */
export const predictionSchema = z.object({
  label: z.string().meta({ description: "The most probable topic.", examples: ["Sports"] }),
  label_id: z.int().min(0).meta({
    description: "Its index in the checkpoint's id2label (see /health's labels).",
  }),
  confidence: z.number().min(0).max(1).meta({ description: "Its probability." }),
  probabilities: z.record(z.string(), z.number()).meta({ description: "Every topic's probability." }),
});

/** The answer to a `{"texts": [...]}` request: predictions in the order of the texts. */
export const predictionListSchema = z.object({ predictions: z.array(predictionSchema) });

/** Every error response. */
export const errorSchema = z.object({
  error: z.object({
    code: z.string().meta({ description: "Stable machine-readable code, e.g. validation_error." }),
    message: z.string().meta({ description: "What went wrong, for people." }),
    details: z.record(z.string(), z.unknown()).meta({
      description: "Specifics: fields, limits, request id.",
    }),
  }),
});

/** GET /health. */
export const healthSchema = z.object({
  status: z.enum(["ok", "draining"]),
  ready: z.boolean(),
  model_loaded: z.boolean(),
  device: z.string(),
  precision: z.enum(["fp32", "bf16"]),
  labels: z.array(z.string()),
  checkpoint: z.object({
    path: z.string(),
    weights_file: z.string(),
    weights_sha256: z.string(),
    parameters: z.int(),
  }),
  uptime_s: z.number(),
  batching: z.object({
    max_batch_size: z.int(),
    max_wait_ms: z.number(),
    queued: z.int(),
    in_flight: z.int(),
  }),
  limits: z.object({
    max_text_chars: z.int(),
    max_texts: z.int(),
    max_body_bytes: z.int(),
    max_tokens: z.int(),
  }),
  versions: z.object({ distrinews: z.string(), torch: z.string(), deno: z.string() }),
});

/** The health payload's type. */
export type Health = z.infer<typeof healthSchema>;

/** Turns zod issues into `details.issues`: where (a JSON path like `texts[2]`) and what. */
export function issueDetails(error: z.ZodError): { issues: { path: string; message: string }[] } {
  return {
    issues: error.issues.map((issue) => {
      if (issue.code === "unrecognized_keys") {
        return {
          path: "$",
          message: `unknown field${issue.keys.length > 1 ? "s" : ""} ${
            issue.keys.map((k) => JSON.stringify(k)).join(", ")
          }`,
        };
      }
      const path = issue.path.reduce<string>(
        (p, key) => typeof key === "number" ? `${p}[${key}]` : `${p}.${String(key)}`,
        "$",
      );
      return { path, message: issue.message };
    }),
  };
}
