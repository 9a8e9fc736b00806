/**
 * The model as the server sees it: text → token ids on the event loop, ids → prediction through the
 * dynamic batcher, each batch cut into length groups and run on a libtorch worker thread (nonblocking FFI),
 * so the event loop keeps accepting and parsing requests while the model computes.
 * @module
 */

import type { TextClassifier, TopicPrediction } from "../inference.ts";
import { type BatchObserver, DynamicBatcher } from "./batcher.ts";
import { planLengthGroups } from "./length_groups.ts";

/** Batching settings of a {@link BatchedPredictor}. */
export interface PredictorOptions {
  /** Most texts per batch (1 = no batching). */
  maxBatchSize: number;
  /** Longest wait for a batch to fill, ms. */
  maxWaitMs: number;
  /** Most texts waiting before requests are refused with 503. */
  maxQueue: number;
  /** Tokens per text, [CLS] and [SEP] included; longer texts are truncated. */
  maxLength: number;
  /** Fixed cost of a forward call in padded tokens; measure it with {@link measureCallOverhead}. */
  callOverheadTokens: number;
}

/** A classifier behind a dynamic batcher. */
export class BatchedPredictor {
  readonly batcher: DynamicBatcher<readonly number[], TopicPrediction>;

  constructor(
    readonly classifier: TextClassifier,
    readonly options: PredictorOptions,
    observer: BatchObserver = {},
  ) {
    this.batcher = new DynamicBatcher<readonly number[], TopicPrediction>(
      {
        plan: (items) =>
          planLengthGroups(items.map((ids) => ids.length), {
            callOverheadTokens: options.callOverheadTokens,
            maxGroupSize: options.maxBatchSize,
          }),
        run: (items) => classifier.classifyIdsAsync(items),
      },
      options,
      observer,
    );
  }

  /** Class names by label id. */
  get labels(): readonly string[] {
    return this.classifier.labels;
  }

  /** Token ids of a text as the model will see them (truncated to maxLength). */
  encode(text: string): number[] {
    return this.classifier.encode(text, this.options.maxLength);
  }

  /** Classifies one encoded text, batched with whatever else is in flight. */
  predict(ids: readonly number[]): Promise<TopicPrediction> {
    return this.batcher.submit(ids);
  }

  /** Stops taking work; resolves when everything accepted has been answered. */
  close(): Promise<void> {
    return this.batcher.close();
  }
}

/**
 * Measures what one forward call costs beyond its tokens, in token equivalents, by timing a single short
 * text and a batch of them (best of `repeats`, after a warm-up call that also pays libtorch's one-time
 * set-up). On a CPU the fixed part is large (every call streams all weights through memory); on a GPU it is
 * kernel launches. Clamped to [8, 4096] so a noisy measurement cannot make grouping absurd.
 */
export async function measureCallOverhead(
  classifier: TextClassifier,
  options: { tokens?: number; batch?: number; repeats?: number } = {},
): Promise<{ callOverheadTokens: number; singleMs: number; batchMs: number }> {
  const { tokens = 64, batch = 8, repeats = 3 } = options;
  const ids = Array.from({ length: tokens }, (_, i) => (i === 0 ? 101 : i === tokens - 1 ? 102 : 1000 + i));
  const time = async (n: number) => {
    let best = Infinity;
    for (let r = 0; r < repeats; r++) {
      const t0 = performance.now();
      await classifier.classifyIdsAsync(Array(n).fill(ids));
      best = Math.min(best, performance.now() - t0);
    }
    return best;
  };
  await classifier.classifyIdsAsync([ids]);
  const singleMs = await time(1), batchMs = await time(batch);
  const perToken = Math.max((batchMs - singleMs) / ((batch - 1) * tokens), 1e-9);
  const overhead = (singleMs - perToken * tokens) / perToken;
  return { callOverheadTokens: Math.min(4096, Math.max(8, Math.round(overhead))), singleMs, batchMs };
}
