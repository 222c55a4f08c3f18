/**
 * The wire format of one step message between hosts: a fixed 128-byte header, then the payload
 * floats as raw little-endian float32, never JSON.
 *
 * Header (all integers little-endian):
 *
 * | offset | size | field                                                                 |
 * | ------ | ---- | --------------------------------------------------------------------- |
 * | 0      | 4    | magic, the ASCII bytes `PSTP`                                         |
 * | 4      | 1    | version ({@link STEP_CODEC_VERSION})                                  |
 * | 5      | 1    | kind: 1 eps, 2 latents, 3 warmup                                      |
 * | 6      | 1    | dtype: 1 float32 (little-endian)                                      |
 * | 7      | 1    | ndim, 1..8                                                            |
 * | 8      | 4    | sender rank (u32)                                                     |
 * | 12     | 4    | step index (u32)                                                      |
 * | 16     | 4    | depth, the sender's logical clock (u32)                               |
 * | 20     | 1    | length of the generation id in bytes, 1..64                           |
 * | 21     | 3    | zero                                                                  |
 * | 24     | 8    | sentAt: the sender's wall clock in ms (f64), for transit times        |
 * | 32     | 32   | dims, 8 x u32 (the unused ones zero)                                  |
 * | 64     | 64   | generation id, ASCII `[A-Za-z0-9_-]`, zero-padded                     |
 * | 128    | ...  | payload: one array of `prod(dims)` floats, two for warmup (x, cache)  |
 *
 * Why fixed: a receiver checks a message in a few comparisons before touching its payload, and
 * the payload starts 4-byte aligned. Why a generation id of at most 64 safe characters: it also
 * names the NATS subjects (a UUID, 36 characters, is the default).
 *
 * @module
 */

import type { Float32StepMessage } from "../channel.ts";

export type { Float32StepMessage };
import type { MessageKind } from "../transport.ts";

/** Bytes of the header before the payload. */
export const STEP_HEADER_BYTES = 128;
/** The format version this build writes and reads. */
export const STEP_CODEC_VERSION = 1;
/** The most dims a payload may have. */
export const STEP_MAX_DIMS = 8;
/** The longest generation id, in characters. */
export const STEP_MAX_GEN_LENGTH = 64;
/** The characters a generation id may use: safe in a NATS subject token. */
export const STEP_GEN_PATTERN: RegExp = /^[A-Za-z0-9_-]{1,64}$/;

const MAGIC = [0x50, 0x53, 0x54, 0x50]; // "PSTP"
const DTYPE_FLOAT32 = 1;
const KIND_CODES: Record<MessageKind, number> = { eps: 1, latents: 2, warmup: 3 };
const KINDS_BY_CODE: readonly (MessageKind | undefined)[] = [
  undefined,
  "eps",
  "latents",
  "warmup",
];
const U32_MAX = 0xffff_ffff;
/** Whether this machine stores floats little-endian (then payloads are copied as bytes). */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The part of a step message that {@link decodeStepMessage} found wrong. */
export type StepCodecField =
  | "length"
  | "magic"
  | "version"
  | "kind"
  | "dtype"
  | "dims"
  | "gen"
  | "payload";

/** A step message that could not be decoded: malformed, truncated, or of another version. */
export class StepCodecError extends Error {
  override name = "StepCodecError";
  /** What was wrong with it. */
  readonly field: StepCodecField;

  /**
   * @param field What was wrong.
   * @param message One line saying so.
   */
  constructor(field: StepCodecField, message: string) {
    super(message);
    this.field = field;
  }
}

/** A decoded message with the header fields that are not part of {@link StepMessage}. */
export interface DecodedStepMessage {
  /** The step message, its payload in arrays of its own. */
  message: Float32StepMessage;
  /** The payload's dims as the sender declared them. */
  dims: number[];
  /** The payload's element type. */
  dtype: "float32";
  /** The sender's wall clock (ms since the epoch) when it encoded the message. */
  sentAt: number;
}

/**
 * Bytes of an encoded message of `kind` whose arrays hold `elements` floats each.
 *
 * @example
 * ```ts
 * // Bench latents [1, 8, 64, 16]: 8192 floats; warm-up carries two arrays.
 * if (stepMessageBytes("warmup", 8192) !== 128 + 2 * 8192 * 4) throw new Error();
 * ```
 */
export function stepMessageBytes(kind: MessageKind, elements: number): number {
  return STEP_HEADER_BYTES + (kind === "warmup" ? 2 : 1) * elements * 4;
}

/** `prod(dims)`. */
export function elementsOf(dims: readonly number[]): number {
  return dims.reduce((n, d) => n * d, 1);
}

/**
 * Throw unless `dims` is a valid payload shape: 1..8 integers, each in 1..2^32-1.
 *
 * @param dims The shape to check.
 * @param what What the shape belongs to, for the message.
 */
export function checkDims(dims: readonly number[], what: string): void {
  if (!Array.isArray(dims) || dims.length < 1 || dims.length > STEP_MAX_DIMS) {
    throw new RangeError(
      `Cannot use ${what} as 'dims' must hold 1..${STEP_MAX_DIMS} sizes: ` +
        `current value is ${JSON.stringify(dims)}`,
    );
  }
  for (const d of dims) {
    if (!Number.isInteger(d) || d < 1 || d > U32_MAX) {
      throw new RangeError(
        `Cannot use ${what} as every entry of 'dims' must be an integer >= 1: ` +
          `current value is ${JSON.stringify(dims)}`,
      );
    }
  }
}

/**
 * Throw unless `gen` can be a generation id on the wire (and in a NATS subject).
 *
 * @param gen The generation id.
 * @param what What needs it, for the message.
 */
export function checkGen(gen: string, what: string): void {
  if (typeof gen !== "string" || !STEP_GEN_PATTERN.test(gen)) {
    throw new RangeError(
      `Cannot ${what} as the generation id must be 1..${STEP_MAX_GEN_LENGTH} characters of ` +
        `A-Z, a-z, 0-9, '_' or '-': current value is ${JSON.stringify(gen)}`,
    );
  }
}

/**
 * Encode `message` with payload shape `dims` into a fresh buffer.
 *
 * @param message The step message; every payload array must hold `prod(dims)` floats.
 * @param dims The payload's shape (e.g. the latents' `[1, 8, 64, 16]`).
 * @param sentAt The sender's wall clock in ms (e.g. `performance.timeOrigin + performance.now()`).
 * @returns The encoded bytes ({@link stepMessageBytes} of them).
 * @throws {RangeError} For a bad gen, dims, step, sender or depth, or a payload of another size.
 * @example
 * ```ts
 * const bytes = encodeStepMessage(
 *   { gen: "g", step: 3, kind: "eps", from: 1, depth: 2, eps: new Float32Array([1, 2]) },
 *   [2],
 *   0,
 * );
 * const { message } = decodeStepMessage(bytes);
 * if (message.kind !== "eps" || message.eps[1] !== 2) throw new Error();
 * ```
 */
export function encodeStepMessage(
  message: Float32StepMessage,
  dims: readonly number[],
  sentAt: number,
): Uint8Array {
  checkGen(message.gen, "encode a step message");
  checkDims(dims, "a step message");
  for (
    const [name, value] of [["step", message.step], ["from", message.from], [
      "depth",
      message.depth,
    ]] as const
  ) {
    if (!Number.isInteger(value) || value < 0 || value > U32_MAX) {
      throw new RangeError(
        `Cannot encode a step message as '${name}' must be an integer in 0..${U32_MAX}: ` +
          `current value is ${value}`,
      );
    }
  }
  const arrays = payloadArrays(message);
  const elements = elementsOf(dims);
  for (const array of arrays) {
    if (!(array instanceof Float32Array) || array.length !== elements) {
      throw new RangeError(
        `Cannot encode a ${message.kind} message as its payload must be a Float32Array of ` +
          `${elements} floats (dims ${JSON.stringify(dims)}): current length is ` +
          `${array instanceof Float32Array ? array.length : typeof array}`,
      );
    }
  }
  const bytes = new Uint8Array(stepMessageBytes(message.kind, elements));
  const view = new DataView(bytes.buffer);
  bytes.set(MAGIC, 0);
  bytes[4] = STEP_CODEC_VERSION;
  bytes[5] = KIND_CODES[message.kind];
  bytes[6] = DTYPE_FLOAT32;
  bytes[7] = dims.length;
  view.setUint32(8, message.from, true);
  view.setUint32(12, message.step, true);
  view.setUint32(16, message.depth, true);
  bytes[20] = message.gen.length;
  view.setFloat64(24, sentAt, true);
  dims.forEach((d, j) => view.setUint32(32 + 4 * j, d, true));
  for (let j = 0; j < message.gen.length; j++) bytes[64 + j] = message.gen.charCodeAt(j);
  let offset = STEP_HEADER_BYTES;
  for (const array of arrays) {
    writeFloats(bytes, view, offset, array);
    offset += array.byteLength;
  }
  return bytes;
}

/**
 * Decode one step message, checking every header field and the payload size.
 *
 * @param bytes The received bytes (not kept: the payload is copied into arrays of its own).
 * @returns The message, its declared dims and dtype, and the sender's clock.
 * @throws {StepCodecError} Naming the first thing wrong: too short, not a step message, another
 *   version, an unknown kind or dtype, bad dims or generation id, or a payload of another size.
 */
export function decodeStepMessage(bytes: Uint8Array): DecodedStepMessage {
  if (bytes.byteLength < STEP_HEADER_BYTES) {
    throw new StepCodecError(
      "length",
      `Cannot decode a step message as it is ${bytes.byteLength} bytes, shorter than the ` +
        `${STEP_HEADER_BYTES}-byte header`,
    );
  }
  if (MAGIC.some((b, j) => bytes[j] !== b)) {
    const found = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, "0"));
    throw new StepCodecError(
      "magic",
      `Cannot decode a step message as it does not start with the magic 'PSTP' ` +
        `(found 0x${found.join("")}): it is not a parastep step message`,
    );
  }
  const version = bytes[4]!;
  if (version !== STEP_CODEC_VERSION) {
    throw new StepCodecError(
      "version",
      `Cannot decode a step message as its format version is ${version}, and this build reads ` +
        `version ${STEP_CODEC_VERSION}: run the same parastep version on every host`,
    );
  }
  const kind = KINDS_BY_CODE[bytes[5]!];
  if (kind === undefined) {
    throw new StepCodecError(
      "kind",
      `Cannot decode a step message as its kind code ${bytes[5]} is not one of ` +
        `1 (eps), 2 (latents), 3 (warmup)`,
    );
  }
  if (bytes[6] !== DTYPE_FLOAT32) {
    throw new StepCodecError(
      "dtype",
      `Cannot decode a step message as its dtype code ${bytes[6]} is not 1 (float32)`,
    );
  }
  const ndim = bytes[7]!;
  if (ndim < 1 || ndim > STEP_MAX_DIMS) {
    throw new StepCodecError(
      "dims",
      `Cannot decode a step message as its ndim ${ndim} is not in 1..${STEP_MAX_DIMS}`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims: number[] = [];
  for (let j = 0; j < ndim; j++) dims.push(view.getUint32(32 + 4 * j, true));
  if (dims.some((d) => d === 0)) {
    throw new StepCodecError(
      "dims",
      `Cannot decode a step message as its dims ${JSON.stringify(dims)} contain a 0`,
    );
  }
  const genLength = bytes[20]!;
  let gen = "";
  for (let j = 0; j < genLength && j < STEP_MAX_GEN_LENGTH; j++) {
    gen += String.fromCharCode(bytes[64 + j]!);
  }
  if (genLength > STEP_MAX_GEN_LENGTH || !STEP_GEN_PATTERN.test(gen)) {
    throw new StepCodecError(
      "gen",
      `Cannot decode a step message as its generation id (${genLength} bytes) is not ` +
        `1..${STEP_MAX_GEN_LENGTH} characters of A-Z, a-z, 0-9, '_' or '-'`,
    );
  }
  const elements = elementsOf(dims);
  const count = kind === "warmup" ? 2 : 1;
  const want = STEP_HEADER_BYTES + count * elements * 4;
  if (bytes.byteLength !== want) {
    throw new StepCodecError(
      "payload",
      `Cannot decode a ${kind} message as it is ${bytes.byteLength} bytes, and ${count} ` +
        `float32 array${count === 1 ? "" : "s"} of dims ${JSON.stringify(dims)} after the ` +
        `header make ${want}`,
    );
  }
  const from = view.getUint32(8, true);
  const step = view.getUint32(12, true);
  const depth = view.getUint32(16, true);
  const sentAt = view.getFloat64(24, true);
  const arrays: Float32Array[] = [];
  for (let j = 0; j < count; j++) {
    arrays.push(readFloats(bytes, view, STEP_HEADER_BYTES + j * elements * 4, elements));
  }
  const tag = { gen, step, from, depth };
  const message: Float32StepMessage = kind === "eps"
    ? { ...tag, kind, eps: arrays[0]! }
    : kind === "latents"
    ? { ...tag, kind, x: arrays[0]! }
    : { ...tag, kind, x: arrays[0]!, cache: arrays[1]! };
  return { message, dims, dtype: "float32", sentAt };
}

/** The payload arrays of `message`, in wire order. */
function payloadArrays(message: Float32StepMessage): Float32Array[] {
  switch (message.kind) {
    case "eps":
      return [message.eps];
    case "latents":
      return [message.x];
    case "warmup":
      return [message.x, message.cache];
  }
}

function writeFloats(bytes: Uint8Array, view: DataView, offset: number, array: Float32Array) {
  if (LITTLE_ENDIAN) {
    bytes.set(new Uint8Array(array.buffer, array.byteOffset, array.byteLength), offset);
    return;
  }
  for (let j = 0; j < array.length; j++) view.setFloat32(offset + 4 * j, array[j]!, true);
}

function readFloats(
  bytes: Uint8Array,
  view: DataView,
  offset: number,
  elements: number,
): Float32Array {
  const out = new Float32Array(elements);
  if (LITTLE_ENDIAN) {
    new Uint8Array(out.buffer).set(bytes.subarray(offset, offset + elements * 4));
    return out;
  }
  for (let j = 0; j < elements; j++) out[j] = view.getFloat32(offset + 4 * j, true);
  return out;
}
