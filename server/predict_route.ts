/**
 * The `POST /predict` handler: the parsed body (from the jsonBody middleware) is validated against the zod
 * schema, encoded, classified through the batcher, and answered; batcher failures become API errors.
 * Draining and body reading happen before it, in their own middlewares (see createApp in server/app.ts).
 * @module
 */

import type { Context } from "hono";
import { BatcherClosedError, QueueFullError } from "./batcher.ts";
import { shuttingDown } from "./drain.ts";
import { ApiError } from "./errors.ts";
import type { JsonBodyEnv } from "./json_body.ts";
import type { ServerMetrics } from "./metrics.ts";
import type { BatchedPredictor } from "./predictor.ts";
import { issueDetails, predictRequestSchema, type RequestLimits } from "./schemas.ts";

/** What the handler classifies with, and where it counts the texts. */
export interface PredictRouteOptions {
  predictor: BatchedPredictor;
  metrics: Pick<ServerMetrics, "texts">;
  limits: RequestLimits;
}

/** The handler; `c.var.jsonBody` must have been set by the jsonBody middleware. */
export function predictHandler({ predictor, metrics, limits }: PredictRouteOptions) {
  const schema = predictRequestSchema(limits);
  return async (c: Context<JsonBodyEnv>): Promise<Response> => {
    const parsed = schema.safeParse(c.get("jsonBody"));
    if (!parsed.success) throw invalidRequest(issueDetails(parsed.error));
    const single = parsed.data.text !== undefined;
    const texts = single ? [parsed.data.text!] : parsed.data.texts!;
    const predictions = await classify(predictor, encode(predictor, texts, single));
    metrics.texts.inc({}, predictions.length);
    return c.json(single ? predictions[0] : { predictions });
  };
}

function invalidRequest(details: Record<string, unknown>): ApiError {
  return new ApiError("validation_error", "the request does not match the API", details);
}

/**
 * Token ids of each text. A text that encodes to [CLS] and [SEP] only was nothing but control or
 * unknown-to-BERT format characters: the schema cannot see that (it knows no tokenizer), so it is refused
 * here, with the same error shape and a path like the schema's.
 */
function encode(predictor: BatchedPredictor, texts: string[], single: boolean): number[][] {
  const encoded = texts.map((text) => predictor.encode(text));
  const blank = encoded.flatMap((ids, i) => ids.length <= 2 ? [single ? "$.text" : `$.texts[${i}]`] : []);
  if (blank.length > 0) {
    throw invalidRequest({
      issues: blank.map((path) => ({ path, message: "has no words (only control or format characters)" })),
    });
  }
  return encoded;
}

/** Classifies through the batcher; a full queue or a closed batcher is the client's 503, not a fault. */
async function classify(predictor: BatchedPredictor, encoded: number[][]) {
  try {
    return await predictor.predict(encoded);
  } catch (err) {
    if (err instanceof QueueFullError) {
      throw new ApiError("overloaded", "the server is at capacity; retry shortly", {
        queue_limit: err.limit,
      }, { "retry-after": "1" });
    }
    if (err instanceof BatcherClosedError) throw shuttingDown();
    throw err;
  }
}
