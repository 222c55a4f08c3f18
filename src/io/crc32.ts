/**
 * CRC-32 as PNG, zlib and gzip use it (ISO 3309 / ITU-T V.42: reflected polynomial 0xEDB88320,
 * initial value and final XOR 0xFFFFFFFF).
 *
 * @module
 */

const POLYNOMIAL = 0xedb88320; // 0x04C11DB7 bit-reversed

const TABLE: Uint32Array = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? POLYNOMIAL ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/**
 * The CRC-32 of `bytes`, optionally continuing from the CRC of earlier bytes.
 *
 * @param bytes The data.
 * @param previous The CRC-32 of the data before `bytes` (0 to start).
 * @returns The CRC-32 as an unsigned 32-bit integer; equal to Python's `zlib.crc32`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { crc32 } from "./crc32.ts";
 * const all = crc32(new TextEncoder().encode("IEND"));
 * const split = crc32(new TextEncoder().encode("ND"), crc32(new TextEncoder().encode("IE")));
 * assert.ok(all === split);
 * ```
 */
export function crc32(bytes: Uint8Array, previous = 0): number {
  let c = (previous ^ 0xffffffff) >>> 0;
  for (let k = 0; k < bytes.length; k++) c = TABLE[(c ^ bytes[k]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
