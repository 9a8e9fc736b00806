/**
 * The predicted class of each row of logits or probabilities: the one argmax the evaluation and the
 * classifier share, with torch.argmax's tie rule.
 * @module
 */

/** Predicted class per row: the argmax of each row of row-major `logits` [rows, numLabels]. */
export function argmaxRows(logits: ArrayLike<number>, numLabels: number): Int32Array {
  if (!Number.isInteger(numLabels) || numLabels < 1 || logits.length % numLabels !== 0) {
    throw new RangeError(`${logits.length} logits do not split into rows of ${numLabels}`);
  }
  const rows = logits.length / numLabels;
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    // Strict > keeps the first maximum on ties, as torch.argmax does.
    for (let c = 1; c < numLabels; c++) {
      if (logits[r * numLabels + c] > logits[r * numLabels + best]) best = c;
    }
    out[r] = best;
  }
  return out;
}
