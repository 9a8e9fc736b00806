import assert from "node:assert/strict";
import { argmaxRows } from "./argmax.ts";

Deno.test("argmaxRows keeps the first maximum like torch.argmax", () => {
  assert.deepEqual(Array.from(argmaxRows([0.1, 0.9, 0.0, 2, 2, 1, -1, -3, -0.5], 3)), [1, 0, 2]);
  assert.throws(() => argmaxRows([1, 2, 3], 2), RangeError);
});
