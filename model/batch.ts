/**
 * The batch layout shared by the data pipeline (which builds batches) and the native model (which
 * consumes them): plain typed arrays, so neither side has to import the other.
 * @module
 */

/** A padded batch, row-major [batchSize, seqLen], as the data pipeline produces it. */
export interface Batch {
  inputIds: Int32Array;
  /** 1 for a real token, 0 for padding. */
  attentionMask: Uint8Array;
  batchSize: number;
  seqLen: number;
}

/** A batch with a label per row, for training. */
export interface LabeledBatch extends Batch {
  labels: Int32Array;
}
