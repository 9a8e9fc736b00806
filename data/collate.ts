/**
 * Collation: token id lists of different lengths → one padded, row-major batch ready for the FFI.
 * Dynamic padding pads to the longest sequence of the batch, not to a fixed length: with AG News's
 * ~53-token average, padding to 128 would spend most of the compute on [PAD].
 * @module
 */

import type { Batch } from "../model/batch.ts";

/** Options of {@link collate}. */
export interface CollateOptions {
  /** The [PAD] id (0 for BERT vocabularies). */
  padId?: number;
  /** Round the padded length up to a multiple of this (8 suits tensor cores); default 1. */
  padToMultipleOf?: number;
}

/** Pads `sequences` to a common length; rows keep their order. */
export function collate(sequences: readonly ArrayLike<number>[], options: CollateOptions = {}): Batch {
  const { padId = 0, padToMultipleOf = 1 } = options;
  if (sequences.length === 0) throw new Error("cannot collate an empty batch");
  if (!Number.isInteger(padToMultipleOf) || padToMultipleOf < 1) {
    throw new Error(`padToMultipleOf must be a positive integer, got ${padToMultipleOf}`);
  }
  const longest = Math.max(...sequences.map((s) => s.length));
  if (longest === 0) throw new Error("cannot collate sequences that are all empty");
  const seqLen = Math.ceil(longest / padToMultipleOf) * padToMultipleOf;
  const inputIds = new Int32Array(sequences.length * seqLen).fill(padId);
  const attentionMask = new Uint8Array(sequences.length * seqLen);
  sequences.forEach((ids, row) => {
    inputIds.set(ids, row * seqLen);
    attentionMask.fill(1, row * seqLen, row * seqLen + ids.length);
  });
  return { inputIds, attentionMask, batchSize: sequences.length, seqLen };
}
