/**
 * `OrtValue`: a tensor as ONNX Runtime sees it.
 *
 * @module
 */

import { ELEMENT_TYPE } from "./_defs.ts";
import type { Env } from "./env.ts";
import { ClosedError } from "./errors.ts";
import { check, ortLibrary, pointerOut, readPointer } from "./library.ts";
import { allocate, BYTES_PER_ELEMENT, type DataType, Tensor } from "./tensor.ts";

const TYPE_OF_ELEMENT = new Map<number, DataType>(
  Object.entries(ELEMENT_TYPE).map(([k, v]) => [v, k as DataType]),
);

/** The {@linkcode DataType} of an ONNX element type number, or undefined if unsupported. */
export function dataTypeOf(elementType: number): DataType | undefined {
  return TYPE_OF_ELEMENT.get(elementType);
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
    const { api } = ortLibrary();
    const shape = new BigInt64Array(tensor.dims.map(BigInt));
    const bytes = tensor.size * BYTES_PER_ELEMENT[tensor.type];
    // ORT wants a non-NULL data pointer even for an empty tensor.
    const data = bytes === 0 ? new Uint8Array(1) : tensor.data;
    const out = pointerOut();
    check(
      api.CreateTensorWithDataAsOrtValue.call(
        env.cpuMemoryInfo,
        data,
        BigInt(bytes),
        shape,
        BigInt(shape.length),
        ELEMENT_TYPE[tensor.type],
        out,
      ),
      "CreateTensorWithDataAsOrtValue",
      `Creating a ${tensor.type} tensor of dims [${tensor.dims}]`,
    );
    return new Value(readPointer(out, "CreateTensorWithDataAsOrtValue"), tensor);
  }

  /** Takes ownership of a value ORT allocated (e.g. a `Run` output). */
  static adopt(ptr: Deno.PointerObject): Value {
    return new Value(ptr, null);
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
    const { api } = ortLibrary();
    const out = pointerOut();
    check(api.GetTensorTypeAndShape.call(this.pointer, out), "GetTensorTypeAndShape");
    const info = readPointer(out, "GetTensorTypeAndShape");
    try {
      const { type, dims, elementType } = describeTensorInfo(info);
      if (type === null) {
        throw new TypeError(
          `Cannot read an ORT tensor of element type ${elementType}: parastep handles ${
            Object.keys(ELEMENT_TYPE).join(", ")
          }`,
        );
      }
      return { type, dims };
    } finally {
      api.ReleaseTensorTypeAndShapeInfo.call(info);
    }
  }

  /** Copies the tensor out of ORT's memory into a new host tensor. */
  toTensor(): Tensor {
    const { api } = ortLibrary();
    const { type, dims } = this.describe();
    const result = new Tensor(type, allocate(type, dims.reduce((a, b) => a * b, 1)), dims);
    if (result.size === 0) return result;
    const out = pointerOut();
    check(api.GetTensorMutableData.call(this.pointer, out), "GetTensorMutableData");
    const src = readPointer(out, "GetTensorMutableData");
    const dst = new Uint8Array(result.data.buffer, result.data.byteOffset, result.data.byteLength);
    new Deno.UnsafePointerView(src).copyInto(dst);
    return result;
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
  check(api.GetSymbolicDimensions.call(info, names, BigInt(rank)), "GetSymbolicDimensions");
  const dims: number[] = [];
  const symbolic: string[] = [];
  for (let d = 0; d < rank; d++) {
    dims.push(Number(dims64[d]));
    const p = Deno.UnsafePointer.create(names[d] ?? 0n);
    symbolic.push(p ? Deno.UnsafePointerView.getCString(p) : "");
  }
  return { type: dataTypeOf(elementType) ?? null, dims, symbolic, elementType };
}
