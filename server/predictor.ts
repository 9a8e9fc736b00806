/**
 * The model as the server sees it: text → token ids on the event loop, ids → prediction through the
 * dynamic batcher, each batch run on a libtorch worker thread (nonblocking FFI), so the event loop keeps
 * accepting and parsing requests while the model computes. Padding costs little here: the native
 * inference path runs its matrix products on the real tokens only (see Packing in ffi/shim/distilbert.h);
 * only attention, a small part of the work, sees the padded layout.
 * @module
 */

import type { TextClassifier, TopicPrediction } from "../inference/text_classifier.ts";
import { type BatchObserver, DynamicBatcher } from "./batcher.ts";

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
  /** bf16 autocast for the forward passes (default fp32). */
  bf16?: boolean;
}

/** How much work a {@link BatchedPredictor} holds right now (for /health, the gauges and the drain log). */
export interface PredictorStats {
  /** Texts waiting for a batch. */
  queued: number;
  /** Texts accepted and not yet answered (waiting or running). */
  inFlight: number;
}

/**
 * A classifier behind a dynamic batcher. The batcher is private: what the server needs of it (its load,
 * draining, closing) is this class's own API, so the batcher can change without its callers noticing.
 */
export class BatchedPredictor {
  readonly #batcher: DynamicBatcher<readonly number[], TopicPrediction>;

  constructor(
    readonly classifier: TextClassifier,
    readonly options: PredictorOptions,
    observer: BatchObserver = {},
  ) {
    const bf16 = options.bf16 ?? false;
    this.#batcher = new DynamicBatcher(
      (items) => classifier.classifyIdsAsync(items, { bf16 }),
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

  /**
   * Classifies the encoded texts of one request, batched with whatever else is in flight; all of them
   * are accepted or none (a full queue rejects every promise with QueueFullError).
   */
  predict(texts: readonly (readonly number[])[]): Promise<TopicPrediction[]> {
    return Promise.all(this.#batcher.submitMany(texts));
  }

  /** Texts waiting and in flight, read now. */
  stats(): PredictorStats {
    return { queued: this.#batcher.queued, inFlight: this.#batcher.inFlight };
  }

  /**
   * Shutdown has begun: from now on, what is queued runs without waiting for company (little more will
   * come), but new texts are still accepted, so that a request whose body was being read when the signal
   * came is answered too. {@link close} comes after, once no new request can arrive.
   */
  drain(): void {
    this.#batcher.flushFromNowOn();
  }

  /** Stops taking work; resolves when everything accepted has been answered. */
  close(): Promise<void> {
    return this.#batcher.close();
  }
}
