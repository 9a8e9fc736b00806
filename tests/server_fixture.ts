/**
 * A real server stack for tests: a small DistilBERT checkpoint saved with the bundled BERT vocabulary,
 * loaded through TextClassifier, behind the batcher and the Hono app. Nothing is mocked: requests run
 * through libtorch. Tests only.
 * @module
 */

import { join } from "node:path";
import { DistilBertClassifier } from "../ffi/model.ts";
import { BertTokenizer } from "../data/tokenizer.ts";
import { saveCheckpoint } from "../weights/checkpoint.ts";
import { TextClassifier } from "../inference/text_classifier.ts";
import { createApp } from "../server/app.ts";
import { ServerMetrics } from "../server/metrics.ts";
import { BatchedPredictor, type PredictorOptions } from "../server/predictor.ts";
import { DEFAULT_LIMITS, type RequestLimits } from "../server/schemas.ts";
import { healthReporter } from "../server/health.ts";
import { tempDir, tinyConfig } from "./helpers.ts";

/** Saves a small model with the real vocabulary (so any text tokenizes) and returns its directory. */
export async function makeServingCheckpoint(dir: string, seed = 7): Promise<string> {
  // A wide initialisation makes the logits of different texts differ clearly, so a test that checks that
  // each caller gets its own answer would notice answers being swapped.
  using model = await DistilBertClassifier.create(
    tinyConfig({ vocab_size: 30522, max_position_embeddings: 64, initializer_range: 0.5 }),
    { device: "cpu", seed },
  );
  await saveCheckpoint(dir, model, { tokenizer: await BertTokenizer.bundled() });
  return dir;
}

/** A running app over a real model; dispose it to free everything. */
export interface ServerFixture extends AsyncDisposable {
  app: ReturnType<typeof createApp>;
  classifier: TextClassifier;
  predictor: BatchedPredictor;
  metrics: ServerMetrics;
  limits: RequestLimits;
  checkpoint: string;
  /** Server-side error reports (500s) logged so far. */
  errors: string[];
  /** Makes /health and /predict behave as during shutdown. */
  setDraining(value: boolean): void;
}

/** Builds the full stack; `options` override the batching settings. */
export async function serverFixture(options: Partial<PredictorOptions> = {}): Promise<ServerFixture> {
  const tmp = await tempDir();
  const checkpoint = await makeServingCheckpoint(join(tmp.path, "ckpt"));
  const classifier = await TextClassifier.load(checkpoint, { device: "cpu" });
  const metrics = new ServerMetrics();
  const predictorOptions: PredictorOptions = {
    maxBatchSize: 32,
    maxWaitMs: 5,
    maxQueue: 1024,
    maxLength: 64,
    ...options,
  };
  const predictor = new BatchedPredictor(classifier, predictorOptions, {
    onBatch: (size, ms) => {
      metrics.batchSize.observe(size);
      metrics.forwardSeconds.observe(ms / 1000);
    },
  });
  let draining = false;
  const limits = { ...DEFAULT_LIMITS };
  const health = healthReporter({
    predictor,
    device: "cpu",
    weightsSha256: "not computed in tests",
    limits,
    versions: { distrinews: "test", torch: "test", deno: Deno.version.deno },
    bootedAt: performance.now(),
    draining: () => draining,
  });
  const errors: string[] = [];
  const app = createApp({
    predictor,
    metrics,
    limits,
    health,
    version: "test",
    draining: () => draining,
    logError: (line) => errors.push(line),
  });
  return {
    app,
    classifier,
    predictor,
    metrics,
    limits,
    checkpoint,
    errors,
    setDraining: (value) => void (draining = value),
    async [Symbol.asyncDispose]() {
      await predictor.close();
      classifier.dispose();
      await tmp[Symbol.asyncDispose]();
    },
  };
}
