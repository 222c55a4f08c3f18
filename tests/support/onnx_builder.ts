/**
 * Writes small ONNX models (ModelProto protobuf bytes) for tests and
 * benchmarks, so no opaque binary model is checked in.
 *
 * Only the protobuf wire format and the handful of ONNX fields needed are
 * implemented: field numbers follow onnx/onnx.proto (ModelProto, GraphProto,
 * NodeProto, ValueInfoProto, TypeProto, TensorShapeProto, TensorProto,
 * AttributeProto, OperatorSetIdProto).
 *
 * @module
 */

/** ONNX `TensorProto.DataType` values. */
export const ONNX_DTYPE = { float32: 1, int32: 6, int64: 7, bool: 9, float16: 10 } as const;
/** An element type name of {@linkcode ONNX_DTYPE}. */
export type OnnxDType = keyof typeof ONNX_DTYPE;

/** Protobuf writer for the wire types ONNX needs (varint, length-delimited, fixed32). */
class Writer {
  #bytes: number[] = [];

  varint(n: number | bigint): this {
    let v = BigInt.asUintN(64, BigInt(n));
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v !== 0n) byte |= 0x80;
      this.#bytes.push(byte);
    } while (v !== 0n);
    return this;
  }

  tag(field: number, wire: 0 | 2 | 5): this {
    return this.varint((field << 3) | wire);
  }

  int(field: number, n: number | bigint): this {
    return this.tag(field, 0).varint(n);
  }

  bytes(field: number, data: Uint8Array): this {
    this.tag(field, 2).varint(data.length);
    for (const b of data) this.#bytes.push(b);
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }

  message(field: number, build: (w: Writer) => void): this {
    const inner = new Writer();
    build(inner);
    return this.bytes(field, inner.finish());
  }

  float(field: number, f: number): this {
    this.tag(field, 5);
    const b = new Uint8Array(new Float32Array([f]).buffer);
    for (const x of b) this.#bytes.push(x);
    return this;
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.#bytes);
  }
}

/** A graph input or output: name, element type, dims (string = symbolic). */
export interface IoSpec {
  name: string;
  type: OnnxDType;
  dims: (number | string)[];
}

/** A constant tensor in the graph (`initializer`), raw little-endian bytes. */
export interface InitializerSpec {
  name: string;
  type: OnnxDType;
  dims: number[];
  data: ArrayBufferView;
  /**
   * Store the data outside the model, at `offset` of the file `location`
   * (relative to the model's folder), which the caller writes.
   */
  external?: { location: string; offset: number };
}

/** An attribute of a node. */
export type AttributeSpec =
  | { name: string; int: number }
  | { name: string; float: number }
  | { name: string; ints: number[] };

/** A graph node. */
export interface NodeSpec {
  op: string;
  inputs: string[];
  outputs: string[];
  attributes?: AttributeSpec[];
}

/** A whole model. */
export interface ModelSpec {
  inputs: IoSpec[];
  outputs: IoSpec[];
  nodes: NodeSpec[];
  initializers?: InitializerSpec[];
  /** Default-domain opset. @default 17 */
  opset?: number;
}

function valueInfo(w: Writer, field: number, io: IoSpec): void {
  w.message(field, (v) => {
    v.string(1, io.name);
    v.message(2, (type) => {
      type.message(1, (tensor) => {
        tensor.int(1, ONNX_DTYPE[io.type]);
        tensor.message(2, (shape) => {
          for (const d of io.dims) {
            shape.message(1, (dim) => typeof d === "number" ? dim.int(1, d) : dim.string(2, d));
          }
        });
      });
    });
  });
}

/** Serialises `spec` to ONNX ModelProto bytes (IR version 8). */
export function buildModel(spec: ModelSpec): Uint8Array {
  const w = new Writer();
  w.int(1, 8); // ir_version
  w.string(2, "parastep-tests"); // producer_name
  w.message(7, (g) => {
    spec.nodes.forEach((node, k) => {
      g.message(1, (n) => {
        for (const i of node.inputs) n.string(1, i);
        for (const o of node.outputs) n.string(2, o);
        n.string(3, `${node.op}_${k}`);
        n.string(4, node.op);
        for (const a of node.attributes ?? []) {
          n.message(5, (attr) => {
            attr.string(1, a.name);
            if ("int" in a) attr.int(3, a.int).int(20, 2);
            else if ("float" in a) attr.float(2, a.float).int(20, 1);
            else {
              for (const v of a.ints) attr.int(8, v);
              attr.int(20, 7);
            }
          });
        }
      });
    });
    g.string(2, "g");
    for (const init of spec.initializers ?? []) {
      g.message(5, (t) => {
        for (const d of init.dims) t.int(1, d);
        t.int(2, ONNX_DTYPE[init.type]);
        t.string(8, init.name);
        if (init.external) {
          const entries = [
            ["location", init.external.location],
            ["offset", String(init.external.offset)],
            ["length", String(init.data.byteLength)],
          ];
          for (const [key, value] of entries) {
            t.message(13, (e) => e.string(1, key!).string(2, value!));
          }
          t.int(14, 1); // data_location: EXTERNAL
        } else {
          t.bytes(9, new Uint8Array(init.data.buffer, init.data.byteOffset, init.data.byteLength));
        }
      });
    }
    for (const io of spec.inputs) valueInfo(g, 11, io);
    for (const io of spec.outputs) valueInfo(g, 12, io);
  });
  w.message(8, (o) => o.string(1, "").int(2, spec.opset ?? 17)); // opset_import
  return w.finish();
}
