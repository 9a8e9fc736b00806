/**
 * GET /health's payload: liveness (the process answers), readiness (model loaded, not draining), and what
 * is being served (device, checkpoint and its weights' SHA-256, batching, limits, versions), so that an
 * operator can tell which model a replica runs without logging into it.
 * @module
 */

import type { BatchedPredictor } from "./predictor.ts";
import type { Health, RequestLimits } from "./schemas.ts";

/** What the health report is made of. */
export interface HealthSource {
  predictor: BatchedPredictor;
  device: string;
  weightsSha256: string;
  limits: RequestLimits;
  versions: Health["versions"];
  /** performance.now() when serving began. */
  bootedAt: number;
  draining: () => boolean;
}

/** Returns a function that builds the current report. */
export function healthReporter(source: HealthSource): () => Health {
  const { predictor, limits } = source;
  const { classifier, options } = predictor;
  const parameters = classifier.model.parameterCount();
  return () => {
    const draining = source.draining();
    const { queued, inFlight } = predictor.stats();
    return {
      status: draining ? "draining" : "ok",
      ready: !draining,
      model_loaded: true,
      device: source.device,
      precision: options.bf16 ? "bf16" : "fp32",
      labels: [...classifier.labels],
      checkpoint: {
        path: classifier.files.dir,
        weights_file: classifier.files.weightsPath,
        weights_sha256: source.weightsSha256,
        parameters,
      },
      uptime_s: (performance.now() - source.bootedAt) / 1000,
      batching: {
        max_batch_size: options.maxBatchSize,
        max_wait_ms: options.maxWaitMs,
        queued,
        in_flight: inFlight,
      },
      limits: {
        max_text_chars: limits.maxTextChars,
        max_texts: limits.maxTexts,
        max_body_bytes: limits.maxBodyBytes,
        // What encode really does: the model's position limit caps the flag.
        max_tokens: Math.min(options.maxLength, classifier.model.config.max_position_embeddings),
      },
      versions: source.versions,
    };
  };
}
