/**
 * The protobuf wire format as far as reading ONNX model files needs it: varints, field keys,
 * length-delimited fields and skipping the rest. One reader serves the graph's inputs and outputs
 * (`src/models/onnx_graph.ts`) and the initializer table of the graph cache
 * (`onnx_initializers.ts`).
 *
 * @module
 */

/** A file or bytes that are not a well-formed ONNX protobuf: what was wrong, and where. */
export class OnnxFormatError extends Error {
  override name = "OnnxFormatError";
  /** The file, when the bytes came from one. */
  readonly path: string | undefined;
  /** What was wrong, e.g. "truncated at byte 120". */
  readonly detail: string;

  constructor(detail: string, path?: string) {
    super(path === undefined ? detail : `Cannot read ONNX model ${path}: ${detail}`);
    this.detail = detail;
    this.path = path;
  }
}

/** Protobuf wire types. */
export const WIRE = { varint: 0, i64: 1, len: 2, i32: 5 } as const;

/**
 * Reads a varint byte by byte from `next` as a number (exact up to 2^53, which covers every
 * length, offset and dimension in a model file).
 */
export function readVarint(next: () => number, fail: (detail: string) => never): number {
  let value = 0;
  let scale = 1;
  for (let k = 0; k < 10; k++) {
    const b = next();
    value += (b & 0x7f) * scale;
    if (b < 0x80) return value;
    scale *= 128;
  }
  return fail("malformed varint (longer than 10 bytes)");
}

/**
 * How many bytes follow a field's key for wire type `wire`; for a length-delimited field, its
 * length is read with `varint` first.
 */
export function fieldBytes(wire: number, varint: () => number, fail: (d: string) => never): number {
  switch (wire) {
    case WIRE.varint:
      varint();
      return 0;
    case WIRE.i64:
      return 8;
    case WIRE.len:
      return varint();
    case WIRE.i32:
      return 4;
    default:
      return fail(`unsupported protobuf wire type ${wire}`);
  }
}

/** A cursor over the protobuf message in `bytes[start, end)`. */
export class ProtoReader {
  readonly bytes: Uint8Array;
  pos: number;
  readonly end: number;
  /** Names the file in errors. */
  readonly path: string | undefined;

  constructor(bytes: Uint8Array, start = 0, end = bytes.length, path?: string) {
    this.bytes = bytes;
    this.pos = start;
    this.end = end;
    this.path = path;
  }

  /** Throws an {@linkcode OnnxFormatError} naming the reader's file. */
  fail = (detail: string): never => {
    throw new OnnxFormatError(detail, this.path);
  };

  #next = (): number => {
    if (this.pos >= this.end) this.fail("truncated varint");
    return this.bytes[this.pos++]!;
  };

  get done(): boolean {
    return this.pos >= this.end;
  }

  varint(): number {
    return readVarint(this.#next, this.fail);
  }

  /** A signed int64 varint (dimensions may be written as two's complement). */
  int64(): number {
    const start = this.pos;
    const v = this.varint();
    if (this.pos - start < 10) return v;
    // Ten bytes: a negative number in two's complement, which a float cannot hold exactly.
    let bits = 0n;
    for (let k = this.pos - 1; k >= start; k--) bits = (bits << 7n) | BigInt(this.bytes[k]! & 0x7f);
    return Number(BigInt.asIntN(64, bits));
  }

  /** The [start, end) of a length-delimited field's payload; moves past it. */
  span(): [number, number] {
    const length = this.varint();
    const start = this.pos;
    if (start + length > this.end) this.fail("a field runs past its message");
    this.pos = start + length;
    return [start, start + length];
  }

  /** The length-delimited field here as a message of its own. */
  message(): ProtoReader {
    const [start, end] = this.span();
    return new ProtoReader(this.bytes, start, end, this.path);
  }

  /** The length-delimited field here as UTF-8 text. */
  string(): string {
    const [start, end] = this.span();
    return decoder.decode(this.bytes.subarray(start, end));
  }

  skip(wire: number): void {
    // Not `pos += fieldBytes(...)`: that reads pos before the field's length is read.
    const n = fieldBytes(wire, () => this.varint(), this.fail);
    this.pos += n;
    if (this.pos > this.end) this.fail("a field runs past its message");
  }

  /**
   * Calls `field` with each field's number and wire type until the end; the field's value is
   * skipped unless `field` returns true (it read the value).
   */
  each(field: (number: number, wire: number) => boolean): void {
    while (!this.done) {
      const key = this.varint();
      const wire = key % 8;
      if (!field(Math.floor(key / 8), wire)) this.skip(wire);
    }
  }
}

const decoder = new TextDecoder();
