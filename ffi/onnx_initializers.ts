/**
 * Reading the initializers (the constant tensors, i.e. the weights) of an
 * ONNX model's main graph from its protobuf bytes, without copying them: the
 * parts of the ONNX format {@linkcode SharedWeights} needs to hand the weights
 * to ORT from memory the caller controls.
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

/** The model bytes are not a well-formed ONNX protobuf. */
export class OnnxFormatError extends Error {
  override name = "OnnxFormatError";
}

/** A cursor over protobuf bytes. */
class Reader {
  readonly bytes: Uint8Array;
  pos: number;
  readonly end: number;

  constructor(bytes: Uint8Array, start = 0, end = bytes.length) {
    this.bytes = bytes;
    this.pos = start;
    this.end = end;
  }

  get done(): boolean {
    return this.pos >= this.end;
  }

  varint(): number {
    let result = 0;
    let scale = 1;
    for (let k = 0; k < 10; k++) {
      if (this.pos >= this.end) throw new OnnxFormatError("truncated varint");
      const b = this.bytes[this.pos++]!;
      result += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return result;
      scale *= 128;
    }
    throw new OnnxFormatError("varint longer than 10 bytes");
  }

  /** The [start, end) of a length-delimited field's payload; moves past it. */
  span(): [number, number] {
    const length = this.varint();
    const start = this.pos;
    if (start + length > this.end) throw new OnnxFormatError("field runs past its message");
    this.pos = start + length;
    return [start, start + length];
  }

  skip(wire: number): void {
    switch (wire) {
      case 0:
        this.varint();
        return;
      case 1:
        this.pos += 8;
        break;
      case 2:
        this.span();
        return;
      case 5:
        this.pos += 4;
        break;
      default:
        throw new OnnxFormatError(`unsupported wire type ${wire}`);
    }
    if (this.pos > this.end) throw new OnnxFormatError("field runs past its message");
  }

  /** Calls `field` for each (number, wire type) until the end; `field` returns false to skip. */
  each(field: (number: number, wire: number) => boolean): void {
    while (!this.done) {
      const key = this.varint();
      const wire = key % 8;
      if (!field(Math.floor(key / 8), wire)) this.skip(wire);
    }
  }
}

const decoder = new TextDecoder();

/**
 * Lists the initializers of the main graph of the ONNX model in `bytes`, in
 * file order, with where each one's data lies (offsets into `bytes`).
 *
 * @throws {OnnxFormatError} when the bytes are not a well-formed protobuf
 */
export function readInitializers(bytes: Uint8Array): InitializerInfo[] {
  const model = new Reader(bytes);
  const out: InitializerInfo[] = [];
  model.each((field, wire) => {
    if (field !== 7 || wire !== 2) return false;
    const [gs, ge] = model.span();
    const graph = new Reader(bytes, gs, ge);
    graph.each((gField, gWire) => {
      if (gField !== 5 || gWire !== 2) return false;
      const [ts, te] = graph.span();
      out.push(readTensor(bytes, ts, te));
      return true;
    });
    return true;
  });
  return out;
}

function readTensor(bytes: Uint8Array, start: number, end: number): InitializerInfo {
  const r = new Reader(bytes, start, end);
  const dims: number[] = [];
  let name = "";
  let dataType = 0;
  let raw: [number, number] | null = null;
  let external = false;
  const entries = new Map<string, string>();
  r.each((field, wire) => {
    if (field === 1 && wire === 0) dims.push(r.varint());
    else if (field === 1 && wire === 2) {
      const [s, e] = r.span();
      const packed = new Reader(bytes, s, e);
      while (!packed.done) dims.push(packed.varint());
    } else if (field === 2 && wire === 0) dataType = r.varint();
    else if (field === 8 && wire === 2) {
      const [s, e] = r.span();
      name = decoder.decode(bytes.subarray(s, e));
    } else if (field === 9 && wire === 2) raw = r.span();
    else if (field === 13 && wire === 2) {
      const [s, e] = r.span();
      const entry = new Reader(bytes, s, e);
      let key = "";
      let value = "";
      entry.each((f, w) => {
        if (w !== 2 || (f !== 1 && f !== 2)) return false;
        const [a, b] = entry.span();
        const text = decoder.decode(bytes.subarray(a, b));
        if (f === 1) key = text;
        else value = text;
        return true;
      });
      entries.set(key, value);
    } else if (field === 14 && wire === 0) external = r.varint() === 1;
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
