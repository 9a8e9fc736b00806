/**
 * GET /openapi.json: an OpenAPI 3.1 document generated from the same zod schemas that validate requests.
 * @module
 */

import { z } from "zod";
import {
  errorSchema,
  healthSchema,
  predictionListSchema,
  predictionSchema,
  predictRequestSchema,
  type RequestLimits,
} from "./schemas.ts";

/** Component schemas, with references between them (PredictionList -> Prediction) kept as $refs. */
function componentSchemas(limits: RequestLimits): Record<string, unknown> {
  const registry = z.registry<{ id: string }>();
  registry.add(predictRequestSchema(limits), { id: "PredictRequest" });
  registry.add(predictionSchema, { id: "Prediction" });
  registry.add(predictionListSchema, { id: "PredictionList" });
  registry.add(errorSchema, { id: "Error" });
  registry.add(healthSchema, { id: "Health" });
  const { schemas } = z.toJSONSchema(registry, {
    uri: (id) => `#/components/schemas/${id}`,
    unrepresentable: "any",
  });
  // OpenAPI 3.1 schemas are JSON Schema 2020-12 already; a "$schema" inside each is noise.
  const out: Record<string, Record<string, unknown>> = Object.fromEntries(
    Object.entries(schemas).map(([name, { $schema: _, $id: _id, ...rest }]) => [name, rest]),
  );
  // What refinements check, which JSON Schema can say but zod cannot derive from a refine().
  const request = out.PredictRequest as { properties: Record<string, Record<string, unknown>> };
  const text = { ...request.properties.text, maxLength: limits.maxTextChars, pattern: "\\S" };
  request.properties.text = text;
  request.properties.texts = { ...request.properties.texts, items: text };
  out.PredictRequest.oneOf = [{ required: ["text"] }, { required: ["texts"] }];
  return out;
}

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });

function errorResponse(description: string, headers?: Record<string, unknown>) {
  return {
    description,
    ...(headers && { headers }),
    content: { "application/json": { schema: ref("Error") } },
  };
}

const RETRY_AFTER = {
  "Retry-After": { description: "Seconds to wait before retrying.", schema: { type: "integer" } },
};
const NOT_FOUND = errorResponse("No such route.");
const METHOD_NOT_ALLOWED = errorResponse("The route exists but not for this method; see the Allow header.", {
  Allow: { description: "The methods the route answers.", schema: { type: "string" } },
});

/** The OpenAPI document of the server with these limits. */
export function openApiDocument(limits: RequestLimits, version: string): Record<string, unknown> {
  return {
    openapi: "3.1.0",
    info: {
      title: "DistriNews topic classifier",
      version,
      description: "Classifies English news text into the four AG News topics: World, Sports, Business, " +
        "Sci/Tech. Concurrent requests are batched into shared forward passes.",
    },
    paths: {
      "/predict": {
        post: {
          summary: "Classify one text or a list of texts",
          requestBody: {
            required: true,
            content: {
              "application/json": {
                schema: ref("PredictRequest"),
                examples: {
                  one: { value: { text: "Stocks rally as the central bank holds rates" } },
                  many: { value: { texts: ["Late goal wins the derby", "New chip doubles battery life"] } },
                },
              },
            },
          },
          responses: {
            "200": {
              description:
                'A Prediction for {"text"}; a PredictionList, in the order of the texts, for {"texts"}.',
              content: {
                "application/json": { schema: { oneOf: [ref("Prediction"), ref("PredictionList")] } },
              },
            },
            "400": errorResponse("Malformed JSON, invalid UTF-8, a repeated key, or a body cut off midway."),
            "413": errorResponse(`The body is over ${limits.maxBodyBytes} bytes.`),
            "415": errorResponse("The body is not JSON (application/json or application/*+json) in UTF-8."),
            "422": errorResponse(
              `Valid JSON of the wrong shape: a text missing, empty, blank, made only of control or format ` +
                `characters, not a string, over ${limits.maxTextChars} characters, or over ${limits.maxTexts} ` +
                `texts; an unknown field; both or neither of text and texts.`,
            ),
            "500": errorResponse("A server fault; details.request_id identifies it in the server's log."),
            "404": NOT_FOUND,
            "405": METHOD_NOT_ALLOWED,
            "503": errorResponse("Overloaded, or shutting down.", RETRY_AFTER),
          },
        },
      },
      "/health": {
        get: {
          summary: "Liveness and readiness",
          responses: {
            "200": { description: "Ready", content: { "application/json": { schema: ref("Health") } } },
            "503": {
              description: "Draining for shutdown",
              content: { "application/json": { schema: ref("Health") } },
            },
          },
        },
      },
      "/metrics": {
        get: {
          summary: "Prometheus metrics",
          responses: {
            "200": { description: "Text exposition format 0.0.4", content: { "text/plain": {} } },
          },
        },
      },
      "/openapi.json": {
        get: { summary: "This document", responses: { "200": { description: "OpenAPI 3.1" } } },
      },
      "/": {
        get: { summary: "A page to try the model", responses: { "200": { description: "HTML" } } },
      },
    },
    components: { schemas: componentSchemas(limits) },
  };
}
