import assert from "node:assert/strict";
import { collate } from "./collate.ts";

Deno.test("collate pads to the longest row with mask 0 and keeps order", () => {
  const b = collate([[101, 7, 102], [101, 102], [101, 5, 6, 7, 102]]);
  assert.equal(b.batchSize, 3);
  assert.equal(b.seqLen, 5);
  assert.deepEqual(Array.from(b.inputIds), [101, 7, 102, 0, 0, 101, 102, 0, 0, 0, 101, 5, 6, 7, 102]);
  assert.deepEqual(Array.from(b.attentionMask), [1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1]);
});

Deno.test("collate rounds the length up to a multiple and refuses empty input", () => {
  assert.equal(collate([[1, 2, 3]], { padToMultipleOf: 8 }).seqLen, 8);
  assert.equal(collate([new Array(16).fill(1)], { padToMultipleOf: 8 }).seqLen, 16);
  assert.throws(() => collate([]), /empty batch/);
  assert.throws(() => collate([[]]), /all empty/);
  assert.throws(() => collate([[1]], { padToMultipleOf: 0 }), /positive integer/);
});
