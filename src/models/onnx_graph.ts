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

import {
  type DataType,
  fieldBytes,
  OnnxFormatError,
  ProtoReader,
  readVarint,
  WIRE,
} from "../../ffi/mod.ts";

export { OnnxFormatError };

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

const ELEMENT_TYPES: Readonly<Record<number, DataType>> = {
  1: "float32",
  6: "int32",
  7: "int64",
  9: "bool",
  10: "float16",
};

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

  fail = (detail: string): never => {
    throw new OnnxFormatError(detail, this.#path);
  };

  #byte = (): number => {
    const offset = this.pos - this.#bufferStart;
    if (offset < 0 || offset >= this.#bufferLength) {
      this.#fill(this.pos);
      return this.#byte();
    }
    this.pos++;
    return this.#buffer[offset]!;
  };

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
    return readVarint(this.#byte, this.fail);
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
    // Not `pos += fieldBytes(...)`: that would add to the position before a length was read.
    const n = fieldBytes(wire, () => this.varint(), this.fail);
    this.pos += n;
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

function valueInfo(message: ProtoReader): GraphTensor {
  let name = "";
  let elementType = 0;
  let dims: (number | string)[] = [];
  message.each((field, wire) => {
    if (wire !== WIRE.len) return false;
    if (field === 1) name = message.string();
    else if (field === 2) {
      const type = message.message();
      type.each((f, w) => {
        if (f !== 1 || w !== WIRE.len) return false;
        const tensor = type.message();
        tensor.each((tf, tw) => {
          if (tf === 1 && tw === WIRE.varint) elementType = tensor.varint();
          else if (tf === 2 && tw === WIRE.len) dims = shape(tensor.message());
          else return false;
          return true;
        });
        return true;
      });
    } else return false;
    return true;
  });
  return { name, type: ELEMENT_TYPES[elementType] ?? null, elementType, dims };
}

function shape(message: ProtoReader): (number | string)[] {
  const dims: (number | string)[] = [];
  message.each((field, wire) => {
    if (field !== 1 || wire !== WIRE.len) return false;
    const dim = message.message();
    let value: number | string = "?";
    dim.each((f, w) => {
      if (f === 1 && w === WIRE.varint) value = dim.int64();
      else if (f === 2 && w === WIRE.len) value = dim.string() || "?";
      else return false;
      return true;
    });
    dims.push(value);
    return true;
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
    if (field === 7 && wire === WIRE.len) {
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
  reader.fields(end, (field, wire) => {
    if ((field === 11 || field === 12) && wire === WIRE.len) {
      const length = reader.varint();
      if (length > MAX_VALUE_INFO) reader.fail(`an input or output description of ${length} bytes`);
      const info = valueInfo(new ProtoReader(reader.bytes(length), 0, length, path));
      (field === 11 ? inputs : outputs).push(info);
    } else if (field === 5 && wire === WIRE.len) {
      // An initializer: only its name matters (older graphs list initializers as inputs too).
      const length = reader.varint();
      const stop = reader.pos + length;
      reader.fields(stop, (f, w) => {
        if (f === 8 && w === WIRE.len) {
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
