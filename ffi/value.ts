/**
 * `OrtValue`: a tensor as ONNX Runtime sees it.
 *
 * @module
 */

import { ELEMENT_TYPE } from "./_defs.ts";
import type { Env } from "./env.ts";
import { ClosedError } from "./errors.ts";
import { check, ortLibrary, readPointer } from "./library.ts";
import { allocate, type DataType, elementCount, Tensor } from "./tensor.ts";

const TYPE_OF_ELEMENT = new Map<number, DataType>(
  Object.entries(ELEMENT_TYPE).map(([k, v]) => [v, k as DataType]),
);

/** The {@linkcode DataType} of an ONNX element type number, or undefined if unsupported. */
export function dataTypeOf(elementType: number): DataType | undefined {
  return TYPE_OF_ELEMENT.get(elementType);
}

// Out-parameters for synchronous calls: JS runs one call at a time and none of
// these is read after an await, so one set per realm serves every call.
const OUT_PTR = new BigUint64Array(1);
const OUT_I32 = new Int32Array(1);
const OUT_COUNT = new BigUint64Array(1);
const ONE_BYTE = new Uint8Array(1);

/**
 * Creates a native `OrtValue` over `tensor`'s memory (no copy) and returns the
 * raw handle; the caller releases it and keeps `tensor` referenced meanwhile.
 */
export function createTensorValue(
  memoryInfo: Deno.PointerObject,
  tensor: Tensor,
): Deno.PointerObject {
  const { api } = ortLibrary();
  const rank = tensor.dims.length;
  const shape = new BigInt64Array(rank);
  for (let d = 0; d < rank; d++) shape[d] = BigInt(tensor.dims[d]!);
  const bytes = tensor.data.byteLength;
  OUT_PTR[0] = 0n;
  check(
    api.CreateTensorWithDataAsOrtValue.call(
      memoryInfo,
      // ORT wants a non-NULL data pointer even for an empty tensor.
      bytes === 0 ? ONE_BYTE : tensor.data,
      BigInt(bytes),
      shape,
      BigInt(rank),
      ELEMENT_TYPE[tensor.type],
      OUT_PTR,
    ),
    "CreateTensorWithDataAsOrtValue",
    () => `Creating a ${tensor.type} tensor of dims [${tensor.dims}]`,
  );
  return readPointer(OUT_PTR, "CreateTensorWithDataAsOrtValue");
}

/** The element type and dimensions of a native tensor value. */
export function valueTypeAndDims(value: Deno.PointerObject): { type: DataType; dims: number[] } {
  const lib = ortLibrary();
  let elementType: number;
  let dims: number[];
  if (lib.typeAndShape !== null) {
    // One call; the shape array belongs to the value.
    check(
      lib.typeAndShape.call(value, OUT_I32, OUT_PTR, OUT_COUNT),
      "GetTensorElementTypeAndShapeDataReference",
    );
    elementType = OUT_I32[0]!;
    const rank = Number(OUT_COUNT[0]);
    dims = new Array<number>(rank);
    const shape = Deno.UnsafePointer.create(OUT_PTR[0]!);
    if (rank > 0 && shape !== null) {
      const view = new Deno.UnsafePointerView(shape);
      for (let d = 0; d < rank; d++) dims[d] = Number(view.getBigInt64(d * 8));
    }
  } else {
    const { api } = lib;
    check(api.GetTensorTypeAndShape.call(value, OUT_PTR), "GetTensorTypeAndShape");
    const info = readPointer(OUT_PTR, "GetTensorTypeAndShape");
    try {
      const d = describeTensorInfo(info, false);
      elementType = d.elementType;
      dims = d.dims;
    } finally {
      api.ReleaseTensorTypeAndShapeInfo.call(info);
    }
  }
  const type = dataTypeOf(elementType);
  if (type === undefined) {
    throw new TypeError(
      `Cannot read an ORT tensor of element type ${elementType}: parastep handles ${
        Object.keys(ELEMENT_TYPE).join(", ")
      }`,
    );
  }
  return { type, dims };
}

/** Copies a native tensor value into a new host tensor. */
export function copyOut(value: Deno.PointerObject): Tensor {
  const { api } = ortLibrary();
  const { type, dims } = valueTypeAndDims(value);
  const result = new Tensor(type, allocate(type, elementCount(dims)), dims);
  if (result.size === 0) return result;
  check(api.GetTensorMutableData.call(value, OUT_PTR), "GetTensorMutableData");
  const src = readPointer(OUT_PTR, "GetTensorMutableData");
  const dst = new Uint8Array(result.data.buffer, result.data.byteOffset, result.data.byteLength);
  new Deno.UnsafePointerView(src).copyInto(dst);
  return result;
}

/**
 * A native `OrtValue` holding a tensor.
 *
 * A value made by {@linkcode Value.fromTensor} does not copy: ORT reads and
 * writes the tensor's typed array directly, so the value keeps that array
 * referenced until it is closed. Do not transfer or detach the array meanwhile.
 */
export class Value implements Disposable {
  #ptr: Deno.PointerObject | null;
  #backing: Tensor | null;

  private constructor(ptr: Deno.PointerObject, backing: Tensor | null) {
    this.#ptr = ptr;
    this.#backing = backing;
  }

  /**
   * Wraps a host tensor without copying.
   *
   * @param env an open env (it describes host memory to ORT)
   * @param tensor the tensor; its array stays referenced until {@linkcode Value.close}
   */
  static fromTensor(env: Env, tensor: Tensor): Value {
    return new Value(createTensorValue(env.cpuMemoryInfo, tensor), tensor);
  }

  /** The native `OrtValue*`. */
  get pointer(): Deno.PointerObject {
    if (this.#ptr === null) throw new ClosedError("value", "use the value");
    return this.#ptr;
  }

  /** The host tensor this value was made from, if any (ORT writes outputs into it). */
  get tensor(): Tensor | null {
    return this.#backing;
  }

  /** The element type and dimensions, as ORT reports them. */
  describe(): { type: DataType; dims: number[] } {
    return valueTypeAndDims(this.pointer);
  }

  /** Copies the tensor out of ORT's memory into a new host tensor. */
  toTensor(): Tensor {
    return copyOut(this.pointer);
  }

  /** Releases the native value and drops the backing array. Idempotent. */
  close(): void {
    if (this.#ptr === null) return;
    ortLibrary().api.ReleaseValue.call(this.#ptr);
    this.#ptr = null;
    this.#backing = null;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Reads element type and dimensions from an `OrtTensorTypeAndShapeInfo*`,
 * with symbolic dimension names where the graph has them.
 */
export function describeTensorInfo(
  info: Deno.PointerObject,
  withSymbolic = true,
): { type: DataType | null; dims: number[]; symbolic: string[]; elementType: number } {
  const { api } = ortLibrary();
  const i32 = new Int32Array(1);
  check(api.GetTensorElementType.call(info, i32), "GetTensorElementType");
  const elementType = i32[0] ?? 0;
  const count = new BigUint64Array(1);
  check(api.GetDimensionsCount.call(info, count), "GetDimensionsCount");
  const rank = Number(count[0]);
  const dims64 = new BigInt64Array(Math.max(rank, 1));
  check(api.GetDimensions.call(info, dims64, BigInt(rank)), "GetDimensions");
  const names = new BigUint64Array(Math.max(rank, 1));
  if (withSymbolic) {
    check(api.GetSymbolicDimensions.call(info, names, BigInt(rank)), "GetSymbolicDimensions");
  }
  const dims: number[] = [];
  const symbolic: string[] = [];
  for (let d = 0; d < rank; d++) {
    dims.push(Number(dims64[d]));
    const p = Deno.UnsafePointer.create(names[d] ?? 0n);
    symbolic.push(p ? Deno.UnsafePointerView.getCString(p) : "");
  }
  return { type: dataTypeOf(elementType) ?? null, dims, symbolic, elementType };
}
