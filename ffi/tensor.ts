/**
 * A plain, typed host tensor: an element type, dimensions and a typed array.
 * It owns no native memory; {@linkcode Value} wraps one for ONNX Runtime.
 *
 * @module
 */

/** Element types parastep passes to and from ONNX Runtime. */
export type DataType = "float32" | "float16" | "int64" | "int32" | "bool";

/** The typed array that holds each {@linkcode DataType}. */
export interface DataTypeMap {
  float32: Float32Array<ArrayBuffer>;
  float16: Float16Array<ArrayBuffer>;
  int64: BigInt64Array<ArrayBuffer>;
  int32: Int32Array<ArrayBuffer>;
  /** One byte per element, 0 or 1, as ONNX stores `bool`. */
  bool: Uint8Array<ArrayBuffer>;
}

/** Bytes per element of each {@linkcode DataType}. */
export const BYTES_PER_ELEMENT: Readonly<Record<DataType, number>> = {
  float32: 4,
  float16: 2,
  int64: 8,
  int32: 4,
  bool: 1,
};

const ARRAY_NAME: Readonly<Record<DataType, string>> = {
  float32: "Float32Array",
  float16: "Float16Array",
  int64: "BigInt64Array",
  int32: "Int32Array",
  bool: "Uint8Array",
};

function holds(type: DataType, data: unknown): boolean {
  switch (type) {
    case "float32":
      return data instanceof Float32Array;
    case "float16":
      return data instanceof Float16Array;
    case "int64":
      return data instanceof BigInt64Array;
    case "int32":
      return data instanceof Int32Array;
    case "bool":
      return data instanceof Uint8Array;
  }
}

/** All supported element types. */
export const DATA_TYPES: readonly DataType[] = ["float32", "float16", "int64", "int32", "bool"];

/** Allocates a zeroed typed array for `type` with `length` elements. */
export function allocate<T extends DataType>(type: T, length: number): DataTypeMap[T] {
  switch (type) {
    case "float32":
      return new Float32Array(length) as DataTypeMap[T];
    case "float16":
      return new Float16Array(length) as DataTypeMap[T];
    case "int64":
      return new BigInt64Array(length) as DataTypeMap[T];
    case "int32":
      return new Int32Array(length) as DataTypeMap[T];
    case "bool":
      return new Uint8Array(length) as DataTypeMap[T];
  }
  throw new TypeError(`Cannot allocate a tensor as its type is unsupported: ${type}`);
}

/** Number of elements of a tensor with dimensions `dims`. */
export function elementCount(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

/**
 * A typed tensor on the host.
 *
 * @example
 * ```ts
 * import { Tensor } from "./tensor.ts";
 * const t = new Tensor("float32", new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
 * console.assert(t.size === 6);
 * ```
 */
export class Tensor<T extends DataType = DataType> {
  /** The element type. */
  readonly type: T;
  /** The elements in row-major (C) order. */
  readonly data: DataTypeMap[T];
  /** The dimensions; `[]` is a scalar. */
  readonly dims: readonly number[];

  /**
   * Wraps `data` (not copied) as a tensor of shape `dims`.
   *
   * @throws {RangeError} when a dimension is not a non-negative integer or the
   * element count does not match `data.length`.
   */
  constructor(type: T, data: DataTypeMap[T], dims: readonly number[]) {
    for (const d of dims) {
      if (!Number.isInteger(d) || d < 0) {
        throw new RangeError(
          `Cannot create a tensor as its dims must be non-negative integers: current value is [${dims}]`,
        );
      }
    }
    if (!holds(type, data)) {
      const got = (data as { constructor?: { name?: string } })?.constructor?.name;
      throw new TypeError(
        `Cannot create a ${type} tensor from a ${got}: expected a ${ARRAY_NAME[type]}`,
      );
    }
    const n = elementCount(dims);
    if (n !== data.length) {
      throw new RangeError(
        `Cannot create a ${type} tensor of dims [${dims}] (${n} elements) from ${data.length} elements`,
      );
    }
    this.type = type;
    this.data = data;
    this.dims = Object.freeze([...dims]);
  }

  /** Number of elements. */
  get size(): number {
    return this.data.length;
  }
}
