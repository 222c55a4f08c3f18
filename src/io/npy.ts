/**
 * Read and write NumPy `.npy` files (format versions 1.0, 2.0 and 3.0), C order, little endian.
 *
 * Layout (numpy `lib/format.py`): the magic `\x93NUMPY`, one byte major and one byte minor version,
 * the header length (uint16 LE for 1.0, uint32 LE for 2.0 and 3.0), then the header, a Python dict
 * literal such as `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded with spaces
 * and ending in `\n` so that the data starts on a 64-byte boundary, then the raw data.
 *
 * The writer reproduces numpy 2's header byte for byte (sorted keys, `repr` of the shape, the 21
 * spare spaces numpy leaves for growing axis 0, and the 64-byte alignment), so a file written here
 * is identical to `np.save` of the same array.
 *
 * @module
 */

import { writeFileAtomic } from "./atomic.ts";

/** The element types this module reads and writes, named like ONNX Runtime's tensor types. */
export type NpyDtype = "float32" | "float64" | "float16" | "int32" | "int64" | "uint8" | "bool";

/** The typed array holding the data of each {@linkcode NpyDtype} (`bool` is one byte, 0 or 1). */
export interface NpyDataMap {
  float32: Float32Array;
  float64: Float64Array;
  float16: Float16Array;
  int32: Int32Array;
  int64: BigInt64Array;
  uint8: Uint8Array;
  bool: Uint8Array;
}

/**
 * An n-dimensional array as stored in a `.npy` file: C order, `data.length` equal to the product of
 * `shape` (1 for a 0-d array).
 */
export type NpyArray<D extends NpyDtype = NpyDtype> = D extends NpyDtype ? {
    readonly dtype: D;
    readonly shape: readonly number[];
    readonly data: NpyDataMap[D];
  }
  : never;

/** The numpy `descr` string of each dtype, as numpy writes it. */
const DESCR: Readonly<Record<NpyDtype, string>> = {
  float32: "<f4",
  float64: "<f8",
  float16: "<f2",
  int32: "<i4",
  int64: "<i8",
  uint8: "|u1",
  bool: "|b1",
};

const DTYPE_OF_DESCR: ReadonlyMap<string, NpyDtype> = new Map(
  (Object.entries(DESCR) as [NpyDtype, string][]).map(([dtype, descr]) => [descr, dtype]),
);

const ALLOWED_DESCR = [...DTYPE_OF_DESCR.keys()].join(", ");

/** Bytes per element of each dtype. */
const ITEM_SIZE: Readonly<Record<NpyDtype, number>> = {
  float32: 4,
  float64: 8,
  float16: 2,
  int32: 4,
  int64: 8,
  uint8: 1,
  bool: 1,
};

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"
const ARRAY_ALIGN = 64; // numpy's ARRAY_ALIGN: the data starts on a multiple of this
const GROWTH_AXIS_MAX_DIGITS = 21; // numpy pads the header so axis 0 can grow to this many digits

// Typed arrays use the host's byte order; .npy data here is little endian.
const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Decode the bytes of a `.npy` file.
 *
 * @param bytes The whole file.
 * @returns The array, with its data copied into a fresh typed array of the matching type.
 * @throws {TypeError} If the magic, version, header or dtype is not one this module reads
 *   (big-endian data and `fortran_order: True` are refused).
 * @throws {RangeError} If the data is shorter or longer than the shape says.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeNpy, encodeNpy } from "./npy.ts";
 * const bytes = encodeNpy({ dtype: "float32", shape: [2], data: new Float32Array([1, 2]) });
 * const arr = decodeNpy(bytes);
 * assert.ok(arr.dtype === "float32" && arr.shape[0] === 2);
 * ```
 */
export function decodeNpy(bytes: Uint8Array): NpyArray {
  assertLittleEndianHost();
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new TypeError("Cannot decode .npy data as it does not start with the magic \\x93NUMPY");
  }
  const major = bytes[6]!;
  const minor = bytes[7]!;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerStart: number;
  let headerLength: number;
  if (major === 1 && minor === 0) {
    headerStart = 10;
    headerLength = view.getUint16(8, true);
  } else if ((major === 2 || major === 3) && minor === 0) {
    if (bytes.length < 12) {
      throw new RangeError("Cannot decode .npy data as the header length is truncated");
    }
    headerStart = 12;
    headerLength = view.getUint32(8, true);
  } else {
    throw new TypeError(
      `Cannot decode .npy data as the format version must be one of 1.0, 2.0, 3.0: current value is ${major}.${minor}`,
    );
  }
  const dataStart = headerStart + headerLength;
  if (dataStart > bytes.length) {
    throw new RangeError(
      `Cannot decode .npy data as the header needs ${dataStart} bytes: the data has ${bytes.length}`,
    );
  }
  const headerBytes = bytes.subarray(headerStart, dataStart);
  const header = major === 3
    ? new TextDecoder("utf-8", { fatal: true }).decode(headerBytes)
    : latin1(headerBytes);
  const { descr, fortranOrder, shape } = parseHeader(header);

  const dtype = DTYPE_OF_DESCR.get(descr);
  if (dtype === undefined) {
    throw new TypeError(
      `Cannot decode .npy data as 'descr' must be one of ${ALLOWED_DESCR}: current value is ${descr}`,
    );
  }
  if (fortranOrder) {
    throw new TypeError(
      "Cannot decode .npy data as 'fortran_order' must be False (only C order is supported): current value is True",
    );
  }
  const count = shape.reduce((a, b) => a * b, 1);
  const byteLength = count * ITEM_SIZE[dtype];
  const available = bytes.length - dataStart;
  if (available !== byteLength) {
    throw new RangeError(
      `Cannot decode .npy data as shape (${
        shape.join(", ")
      }) of ${descr} needs ${byteLength} data bytes: the file has ${available}`,
    );
  }
  // Copy so the result is aligned and owns its buffer.
  const buffer = bytes.slice(dataStart, dataStart + byteLength).buffer;
  return { dtype, shape, data: makeTypedArray(dtype, buffer) } as NpyArray;
}

/**
 * Encode an array as a `.npy` file, byte-identical to numpy 2's `np.save` (format 1.0, or 2.0 if
 * the header does not fit in 65535 bytes).
 *
 * @param array The array; `data.length` must equal the product of `shape`.
 * @returns The file's bytes.
 * @throws {TypeError} If `dtype` is unknown or `data` is not the typed array for it.
 * @throws {RangeError} If the shape is invalid or does not match `data.length`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeNpy } from "./npy.ts";
 * const bytes = encodeNpy({ dtype: "int32", shape: [3], data: new Int32Array([1, 2, 3]) });
 * assert.ok(bytes.length === 128 + 12);
 * ```
 */
export function encodeNpy(array: NpyArray): Uint8Array {
  assertLittleEndianHost();
  const { dtype, shape, data } = array;
  const descr = DESCR[dtype];
  if (descr === undefined) {
    throw new TypeError(
      `Cannot encode .npy data as 'dtype' must be one of ${
        Object.keys(DESCR).join(", ")
      }: current value is ${String(dtype)}`,
    );
  }
  checkDataType(dtype, data);
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new RangeError(
        `Cannot encode .npy data as 'shape' must hold non-negative integers: current value is [${
          shape.join(", ")
        }]`,
      );
    }
  }
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== data.length) {
    throw new RangeError(
      `Cannot encode .npy data as shape [${
        shape.join(", ")
      }] holds ${count} values: current data length is ${data.length}`,
    );
  }
  const shapeRepr = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeRepr}, }`;
  if (shape.length > 0) header += " ".repeat(GROWTH_AXIS_MAX_DIGITS - String(shape[0]).length);

  let prefixLength = MAGIC.length + 2 + 2; // magic, version, uint16 length
  let major = 1;
  const padded = (prefix: number) => {
    const hlen = header.length + 1; // + "\n"
    const padlen = ARRAY_ALIGN - ((prefix + hlen) % ARRAY_ALIGN);
    return hlen + padlen;
  };
  let total = padded(prefixLength);
  if (total > 0xffff) {
    major = 2;
    prefixLength = MAGIC.length + 2 + 4;
    total = padded(prefixLength);
  }
  const headerText = header + " ".repeat(total - header.length - 1) + "\n";

  const out = new Uint8Array(prefixLength + total + data.byteLength);
  out.set(MAGIC, 0);
  out[6] = major;
  out[7] = 0;
  const view = new DataView(out.buffer);
  if (major === 1) view.setUint16(8, total, true);
  else view.setUint32(8, total, true);
  for (let i = 0; i < headerText.length; i++) out[prefixLength + i] = headerText.charCodeAt(i);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), prefixLength + total);
  return out;
}

/**
 * Read a `.npy` file.
 *
 * @param path The file to read.
 * @returns The decoded array.
 * @throws {TypeError | RangeError} As {@linkcode decodeNpy}, with the path in the message.
 */
export async function readNpy(path: string | URL): Promise<NpyArray> {
  const bytes = await Deno.readFile(path);
  try {
    return decodeNpy(bytes);
  } catch (err) {
    if (err instanceof TypeError || err instanceof RangeError) {
      const Ctor = err instanceof TypeError ? TypeError : RangeError;
      throw new Ctor(`${err.message} (file ${String(path)})`, { cause: err });
    }
    throw err;
  }
}

/**
 * Write a `.npy` file atomically (see {@linkcode writeFileAtomic}).
 *
 * @param path The file to write.
 * @param array The array to store.
 * @returns Resolves once the file is in place.
 * @throws {TypeError | RangeError} As {@linkcode encodeNpy}.
 * @throws {import("./atomic.ts").WriteFileError} If the file cannot be written.
 */
export async function writeNpy(path: string, array: NpyArray): Promise<void> {
  await writeFileAtomic(path, encodeNpy(array));
}

/**
 * Narrow an array to one dtype, for callers that need, say, a `Float32Array`.
 *
 * @param array The decoded array.
 * @param dtype The dtype it must have.
 * @returns The same array, typed as that dtype.
 * @throws {TypeError} If the dtype differs.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeNpy, encodeNpy, expectDtype } from "./npy.ts";
 * const a = decodeNpy(encodeNpy({ dtype: "float32", shape: [1], data: new Float32Array([3]) }));
 * const f: Float32Array = expectDtype(a, "float32").data;
 * assert.ok(f[0] === 3);
 * ```
 */
export function expectDtype<D extends NpyDtype>(array: NpyArray, dtype: D): NpyArray<D> {
  if (array.dtype !== dtype) {
    throw new TypeError(
      `Cannot use the array as its dtype must be ${dtype}: current value is ${array.dtype}`,
    );
  }
  return array as NpyArray<D>;
}

function assertLittleEndianHost(): void {
  if (!HOST_IS_LITTLE_ENDIAN) {
    throw new TypeError("Cannot read or write .npy data on a big-endian host: not supported");
  }
}

function checkDataType(dtype: NpyDtype, data: unknown): void {
  const ok = (dtype === "float32" && data instanceof Float32Array) ||
    (dtype === "float64" && data instanceof Float64Array) ||
    (dtype === "float16" && data instanceof Float16Array) ||
    (dtype === "int32" && data instanceof Int32Array) ||
    (dtype === "int64" && data instanceof BigInt64Array) ||
    ((dtype === "uint8" || dtype === "bool") && data instanceof Uint8Array);
  if (!ok) {
    const got = (data as { constructor?: { name?: string } })?.constructor?.name ?? typeof data;
    throw new TypeError(
      `Cannot encode .npy data as 'data' must be the typed array for ${dtype}: current value is a ${got}`,
    );
  }
}

function makeTypedArray(dtype: NpyDtype, buffer: ArrayBuffer): NpyDataMap[NpyDtype] {
  switch (dtype) {
    case "float32":
      return new Float32Array(buffer);
    case "float64":
      return new Float64Array(buffer);
    case "float16":
      return new Float16Array(buffer);
    case "int32":
      return new Int32Array(buffer);
    case "int64":
      return new BigInt64Array(buffer);
    case "uint8":
    case "bool":
      return new Uint8Array(buffer);
  }
}

function latin1(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return s;
}

interface Header {
  descr: string;
  fortranOrder: boolean;
  shape: number[];
}

/**
 * Parse the header dict literal. Accepts what numpy writes: single- or double-quoted keys and
 * strings, `True`/`False`, tuples of integers, trailing commas and whitespace.
 */
function parseHeader(text: string): Header {
  const fail = (why: string): never => {
    throw new TypeError(`Cannot decode .npy data as the header is malformed (${why}): ${text}`);
  };
  let pos = 0;
  const skip = () => {
    while (pos < text.length && /\s/.test(text[pos]!)) pos++;
  };
  const expect = (ch: string) => {
    skip();
    if (text[pos] !== ch) fail(`expected '${ch}' at ${pos}`);
    pos++;
  };
  const peek = () => {
    skip();
    return text[pos];
  };
  const parseString = (): string => {
    skip();
    const quote = text[pos];
    if (quote !== "'" && quote !== '"') return fail(`expected a string at ${pos}`);
    const end = text.indexOf(quote, pos + 1);
    if (end < 0) return fail("unterminated string");
    const s = text.slice(pos + 1, end);
    pos = end + 1;
    return s;
  };
  const parseInt_ = (): number => {
    skip();
    const m = /^\d+L?/.exec(text.slice(pos));
    if (!m) return fail(`expected an integer at ${pos}`);
    pos += m[0].length;
    const n = Number(m[0].replace("L", ""));
    if (!Number.isSafeInteger(n)) fail(`dimension ${m[0]} is too large`);
    return n;
  };
  const parseValue = (): string | boolean | number[] => {
    const c = peek();
    if (c === "'" || c === '"') return parseString();
    if (c === "(") {
      pos++;
      const dims: number[] = [];
      while (peek() !== ")") {
        dims.push(parseInt_());
        if (peek() === ",") pos++;
        else if (peek() !== ")") fail(`expected ',' or ')' at ${pos}`);
      }
      pos++;
      return dims;
    }
    if (text.startsWith("True", pos)) {
      pos += 4;
      return true;
    }
    if (text.startsWith("False", pos)) {
      pos += 5;
      return false;
    }
    return fail(`unexpected value at ${pos}`);
  };

  const fields = new Map<string, string | boolean | number[]>();
  expect("{");
  while (peek() !== "}") {
    const key = parseString();
    expect(":");
    fields.set(key, parseValue());
    if (peek() === ",") pos++;
    else if (peek() !== "}") fail(`expected ',' or '}' at ${pos}`);
  }
  const descr = fields.get("descr");
  const fortranOrder = fields.get("fortran_order");
  const shape = fields.get("shape");
  if (typeof descr !== "string") return fail("'descr' must be a string");
  if (typeof fortranOrder !== "boolean") return fail("'fortran_order' must be True or False");
  if (!Array.isArray(shape)) return fail("'shape' must be a tuple of integers");
  return { descr, fortranOrder, shape };
}
