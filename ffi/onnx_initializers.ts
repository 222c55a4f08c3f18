/**
 * Reading the initializers (the constant tensors, i.e. the weights) of an
 * ONNX model's main graph from its protobuf bytes, without copying them: the
 * parts of the ONNX format the graph cache needs to find and hash the weights.
 *
 * Only the protobuf wire format and these fields are read (onnx/onnx.proto):
 * `ModelProto.graph` (7), `GraphProto.initializer` (5), and of `TensorProto`
 * `dims` (1), `data_type` (2), `name` (8), `raw_data` (9), `external_data`
 * (13, `StringStringEntryProto` key 1, value 2) and `data_location` (14).
 * Tensors stored in the typed fields (`float_data`, `int64_data`, ...) are
 * reported without data: exporters use them for small tensors only.
 *
 * @module
 */

import { OnnxFormatError, ProtoReader, WIRE } from "./protobuf.ts";

/** Where one initializer's bytes are. */
export type InitializerData =
  /** `raw_data`: `byteLength` bytes at `offset` of the model bytes. */
  | { readonly kind: "raw"; readonly offset: number; readonly byteLength: number }
  /**
   * External data: `byteLength` bytes at `offset` of `location`, a path
   * relative to the model's folder (`length` absent means to the file's end).
   */
  | {
    readonly kind: "external";
    readonly location: string;
    readonly offset: number;
    readonly byteLength: number | null;
  }
  /** In a typed field (`float_data`, ...), not read here. */
  | { readonly kind: "typed" };

/** One initializer of the main graph. */
export interface InitializerInfo {
  readonly name: string;
  /** ONNX `TensorProto.DataType`. */
  readonly dataType: number;
  readonly dims: readonly number[];
  readonly data: InitializerData;
}

/**
 * Lists the initializers of the main graph of the ONNX model in `bytes`, in
 * file order, with where each one's data lies (offsets into `bytes`).
 *
 * @throws {OnnxFormatError} when the bytes are not a well-formed protobuf
 */
export function readInitializers(bytes: Uint8Array): InitializerInfo[] {
  const model = new ProtoReader(bytes);
  const out: InitializerInfo[] = [];
  model.each((field, wire) => {
    if (field !== 7 || wire !== WIRE.len) return false;
    const graph = model.message();
    graph.each((gField, gWire) => {
      if (gField !== 5 || gWire !== WIRE.len) return false;
      out.push(readTensor(graph.message()));
      return true;
    });
    return true;
  });
  return out;
}

function readTensor(r: ProtoReader): InitializerInfo {
  const dims: number[] = [];
  let name = "";
  let dataType = 0;
  let raw: [number, number] | null = null;
  let external = false;
  const entries = new Map<string, string>();
  r.each((field, wire) => {
    if (field === 1 && wire === WIRE.varint) dims.push(r.varint());
    else if (field === 1 && wire === WIRE.len) {
      const packed = r.message();
      while (!packed.done) dims.push(packed.varint());
    } else if (field === 2 && wire === WIRE.varint) dataType = r.varint();
    else if (field === 8 && wire === WIRE.len) name = r.string();
    else if (field === 9 && wire === WIRE.len) raw = r.span();
    else if (field === 13 && wire === WIRE.len) {
      const entry = r.message();
      let key = "";
      let value = "";
      entry.each((f, w) => {
        if (w !== WIRE.len || (f !== 1 && f !== 2)) return false;
        if (f === 1) key = entry.string();
        else value = entry.string();
        return true;
      });
      entries.set(key, value);
    } else if (field === 14 && wire === WIRE.varint) external = r.varint() === 1;
    else return false;
    return true;
  });
  let data: InitializerData;
  if (external) {
    const location = entries.get("location");
    if (location === undefined) {
      throw new OnnxFormatError(`initializer '${name}' has external data without a location`);
    }
    const length = entries.get("length");
    data = {
      kind: "external",
      location,
      offset: Number(entries.get("offset") ?? 0),
      byteLength: length === undefined ? null : Number(length),
    };
  } else if (raw !== null) {
    const [s, e] = raw as [number, number];
    data = { kind: "raw", offset: s, byteLength: e - s };
  } else {
    data = { kind: "typed" };
  }
  return { name, dataType, dims, data };
}
