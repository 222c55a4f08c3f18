/**
 * The inputs and outputs of an ONNX graph, read from the file's protobuf without ONNX Runtime.
 *
 * Opening a session to learn a graph's inputs costs seconds on a real model; reading them from
 * the file costs a few small reads, because the reader seeks past the nodes and the weights. So
 * every component of a model folder can be checked against its manifest before any work starts,
 * the same way whichever engine runs the model.
 *
 * The fields read (onnx.proto): ModelProto.graph (7); GraphProto.initializer (5), input (11),
 * output (12); ValueInfoProto.name (1), type (2); TypeProto.tensor_type (1);
 * TypeProto.Tensor.elem_type (1), shape (2); TensorShapeProto.dim (1); Dimension.dim_value (1),
 * dim_param (2); TensorProto.name (8).
 *
 * @module
 */

import type { DataType } from "../../ffi/mod.ts";

/** A graph input or output as the file declares it (the fields ORT's session reports too). */
export interface GraphTensor {
  /** The name feeds and fetches are keyed by. */
  readonly name: string;
  /** The element type, or null for one parastep does not handle (or a non-tensor value). */
  readonly type: DataType | null;
  /** ONNX's element type number (`TensorProto.DataType`); 0 for a non-tensor value. */
  readonly elementType: number;
  /** A number where fixed, the symbolic name where named, `"?"` where unknown. */
  readonly dims: readonly (number | string)[];
}

/** A graph's declared inputs (initializers excluded, as ORT does) and outputs, in graph order. */
export interface GraphIo {
  readonly inputs: readonly GraphTensor[];
  readonly outputs: readonly GraphTensor[];
}

/** A file that is not a readable ONNX model: carries the path and what was wrong. */
export class OnnxFormatError extends Error {
  override name = "OnnxFormatError";
  /** The file. */
  readonly path: string;

  /**
   * @param path The file.
   * @param detail What was wrong, e.g. "truncated at byte 120".
   */
  constructor(path: string, detail: string) {
    super(`Cannot read ONNX model ${path}: ${detail}`);
    this.path = path;
  }
}

const ELEMENT_TYPES: Readonly<Record<number, DataType>> = {
  1: "float32",
  6: "int32",
  7: "int64",
  9: "bool",
  10: "float16",
};

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

/** Bytes read from the file at a time: enough for every small field in one read. */
const CHUNK = 64 * 1024;
/** A ValueInfoProto larger than this is not a graph input's description. */
const MAX_VALUE_INFO = 1 << 20;

/** Forward-only reader of a protobuf file that seeks past fields it does not need. */
class ProtoFile {
  readonly #file: Deno.FsFile;
  readonly #path: string;
  readonly #size: number;
  #buffer = new Uint8Array(CHUNK);
  #bufferStart = 0;
  #bufferLength = 0;
  /** Absolute offset of the next byte. */
  pos = 0;

  constructor(file: Deno.FsFile, path: string, size: number) {
    this.#file = file;
    this.#path = path;
    this.#size = size;
  }

  fail(detail: string): never {
    throw new OnnxFormatError(this.#path, detail);
  }

  #byte(): number {
    const offset = this.pos - this.#bufferStart;
    if (offset < 0 || offset >= this.#bufferLength) {
      this.#fill(this.pos);
      return this.#byte();
    }
    this.pos++;
    return this.#buffer[offset]!;
  }

  #fill(at: number): void {
    if (at >= this.#size) this.fail(`truncated at byte ${at} of ${this.#size}`);
    this.#file.seekSync(at, Deno.SeekMode.Start);
    let filled = 0;
    while (filled < this.#buffer.length && at + filled < this.#size) {
      const n = this.#file.readSync(this.#buffer.subarray(filled));
      if (n === null || n === 0) break;
      filled += n;
    }
    if (filled === 0) this.fail(`truncated at byte ${at} of ${this.#size}`);
    this.#bufferStart = at;
    this.#bufferLength = filled;
  }

  /** A varint as a number (exact up to 2^53, which covers every length and dimension here). */
  varint(): number {
    let value = 0;
    let scale = 1;
    for (let k = 0; k < 10; k++) {
      const b = this.#byte();
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 128;
    }
    return this.fail(`malformed varint before byte ${this.pos}`);
  }

  /** `n` bytes from the current position. */
  bytes(n: number): Uint8Array {
    if (this.pos + n > this.#size) {
      this.fail(`truncated at byte ${this.#size} (a field needs ${n})`);
    }
    const offset = this.pos - this.#bufferStart;
    if (offset >= 0 && offset + n <= this.#bufferLength) {
      this.pos += n;
      return this.#buffer.slice(offset, offset + n);
    }
    if (n > this.#buffer.length) this.#buffer = new Uint8Array(n);
    this.#fill(this.pos);
    return this.bytes(n);
  }

  /** Skip one field of wire type `wire`. */
  skip(wire: number): void {
    switch (wire) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_I64:
        this.pos += 8;
        return;
      case WIRE_LEN: {
        // Not `pos += varint()`: that would add to the position before the varint was read.
        const n = this.varint();
        this.pos += n;
        return;
      }
      case WIRE_I32:
        this.pos += 4;
        return;
      default:
        this.fail(`unsupported protobuf wire type ${wire} before byte ${this.pos}`);
    }
  }

  /** Read field keys until `end`, handing each to `on` (which must consume or skip its value). */
  fields(end: number, on: (field: number, wire: number) => void): void {
    while (this.pos < end) {
      const key = this.varint();
      on(Math.floor(key / 8), key % 8);
    }
    if (this.pos !== end) this.fail(`a field overruns its message at byte ${this.pos}`);
  }
}

/** An in-memory protobuf message: the small ValueInfoProto of an input or output. */
class ProtoBytes {
  pos = 0;
  constructor(readonly bytes: Uint8Array, readonly fail: (detail: string) => never) {}

  varint(): number {
    let value = 0;
    let scale = 1;
    for (let k = 0; k < 10; k++) {
      const b = this.bytes[this.pos++];
      if (b === undefined) this.fail("truncated value description");
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 128;
    }
    return this.fail("malformed varint in a value description");
  }

  /** A signed int64 varint (dimensions may be written as two's complement). */
  int64(): number {
    const start = this.pos;
    const v = this.varint();
    // Ten-byte varints are negative numbers in two's complement.
    return this.pos - start === 10 ? v - 2 ** 64 : v;
  }

  sub(): ProtoBytes {
    const n = this.varint();
    if (this.pos + n > this.bytes.length) this.fail("truncated value description");
    const out = new ProtoBytes(this.bytes.subarray(this.pos, this.pos + n), this.fail);
    this.pos += n;
    return out;
  }

  string(): string {
    return new TextDecoder().decode(this.sub().bytes);
  }

  skip(wire: number): void {
    if (wire === WIRE_VARINT) this.varint();
    else if (wire === WIRE_I64) this.pos += 8;
    else if (wire === WIRE_LEN) {
      const n = this.varint();
      this.pos += n;
    } else if (wire === WIRE_I32) this.pos += 4;
    else this.fail(`unsupported protobuf wire type ${wire}`);
  }

  fields(on: (field: number, wire: number) => void): void {
    while (this.pos < this.bytes.length) {
      const key = this.varint();
      on(Math.floor(key / 8), key % 8);
    }
  }
}

function valueInfo(message: ProtoBytes): GraphTensor {
  let name = "";
  let elementType = 0;
  let dims: (number | string)[] = [];
  message.fields((field, wire) => {
    if (field === 1 && wire === WIRE_LEN) name = message.string();
    else if (field === 2 && wire === WIRE_LEN) {
      const type = message.sub();
      type.fields((f, w) => {
        if (f !== 1 || w !== WIRE_LEN) return type.skip(w);
        const tensor = type.sub();
        tensor.fields((tf, tw) => {
          if (tf === 1 && tw === WIRE_VARINT) elementType = tensor.varint();
          else if (tf === 2 && tw === WIRE_LEN) dims = shape(tensor.sub());
          else tensor.skip(tw);
        });
      });
    } else message.skip(wire);
  });
  return { name, type: ELEMENT_TYPES[elementType] ?? null, elementType, dims };
}

function shape(message: ProtoBytes): (number | string)[] {
  const dims: (number | string)[] = [];
  message.fields((field, wire) => {
    if (field !== 1 || wire !== WIRE_LEN) return message.skip(wire);
    const dim = message.sub();
    let value: number | string = "?";
    dim.fields((f, w) => {
      if (f === 1 && w === WIRE_VARINT) value = dim.int64();
      else if (f === 2 && w === WIRE_LEN) value = dim.string() || "?";
      else dim.skip(w);
    });
    dims.push(value);
  });
  return dims;
}

/**
 * Read the inputs and outputs an ONNX model file declares, seeking past nodes and weights.
 *
 * @param path The `.onnx` file (external data beside it is never read).
 * @returns The inputs that are not initializers, and the outputs, in graph order.
 * @throws {OnnxFormatError} When the file is not a readable ONNX model (truncated, not
 *   protobuf, no graph).
 * @throws {Deno.errors.NotFound} When the file does not exist.
 * @example
 * ```ts ignore
 * const { inputs } = readGraphIo("models/audioldm2-tiny/unet.onnx");
 * inputs.map((i) => i.name); // ["sample", "timestep", ...]
 * ```
 */
export function readGraphIo(path: string): GraphIo {
  using file = Deno.openSync(path, { read: true });
  const size = file.statSync().size;
  const reader = new ProtoFile(file, path, size);
  let io: { inputs: GraphTensor[]; outputs: GraphTensor[] } | undefined;
  reader.fields(size, (field, wire) => {
    if (field === 7 && wire === WIRE_LEN) {
      const length = reader.varint();
      io = graph(reader, reader.pos + length, path);
    } else {
      reader.skip(wire);
    }
  });
  return io ?? reader.fail("the file holds no graph (is it an ONNX model?)");
}

function graph(
  reader: ProtoFile,
  end: number,
  path: string,
): { inputs: GraphTensor[]; outputs: GraphTensor[] } {
  const inputs: GraphTensor[] = [];
  const outputs: GraphTensor[] = [];
  const initializers = new Set<string>();
  const fail = (detail: string): never => {
    throw new OnnxFormatError(path, detail);
  };
  reader.fields(end, (field, wire) => {
    if ((field === 11 || field === 12) && wire === WIRE_LEN) {
      const length = reader.varint();
      if (length > MAX_VALUE_INFO) reader.fail(`an input or output description of ${length} bytes`);
      const info = valueInfo(new ProtoBytes(reader.bytes(length), fail));
      (field === 11 ? inputs : outputs).push(info);
    } else if (field === 5 && wire === WIRE_LEN) {
      // An initializer: only its name matters (older graphs list initializers as inputs too).
      const length = reader.varint();
      const stop = reader.pos + length;
      reader.fields(stop, (f, w) => {
        if (f === 8 && w === WIRE_LEN) {
          const n = reader.varint();
          initializers.add(new TextDecoder().decode(reader.bytes(n)));
        } else {
          reader.skip(w);
        }
      });
    } else {
      reader.skip(wire);
    }
  });
  return { inputs: inputs.filter((i) => !initializers.has(i.name)), outputs };
}
