/**
 * A tensor as it travels between file formats and the native model: a dtype
 * name (safetensors' spelling), a shape, and the raw little-endian bytes of a
 * contiguous, row-major array. Nothing here knows about libtorch.
 * @module
 */

/** Element types DistriNews reads and writes (safetensors' names). */
export type DType = "F32" | "F16" | "BF16" | "F64" | "I64" | "I32" | "I8" | "U8" | "BOOL";

/** Bytes per element of each dtype. */
export const DTYPE_SIZE: Record<DType, number> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  F64: 8,
  I64: 8,
  I32: 4,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** One named tensor of a state_dict, in host memory. */
export interface RawTensor {
  dtype: DType;
  shape: number[];
  /** Contiguous row-major little-endian bytes; length = numel * DTYPE_SIZE[dtype]. */
  data: Uint8Array;
}

/** A state_dict: parameter name → tensor, in file order. */
export type StateDict = Map<string, RawTensor>;

/** Number of elements of a shape (1 for a scalar). */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
