/**
 * PNG heat maps of 2-D arrays, such as a mel spectrogram [frames, bins], and plain 8-bit RGB
 * PNGs ({@linkcode encodeRgbPng}, e.g. video frames).
 *
 * Image layout: one pixel per value, width = frames (time runs left to right), height = bins, with
 * bin 0 (the lowest frequency) on the **bottom** row.
 *
 * Colour: each value is normalised with `t = (v − min) / (max − min)` (min and max of the data
 * unless given; values outside are clamped; t = 0 when max = min), quantised to `k = round(255·t)`,
 * and looked up in a 256-entry table. The table is a piecewise-linear approximation of matplotlib's
 * *viridis* through five of its colours, {@linkcode HEATMAP_ANCHORS}: #440154 (t = 0), #3b528b,
 * #21918c, #5ec962, #fde725 (t = 1), each channel rounded to the nearest integer. Dark purple is
 * low, yellow high; lightness increases monotonically, so the image reads in greyscale too.
 *
 * File: signature, `IHDR` (8-bit RGB, no interlace), one `IDAT` holding the zlib stream
 * (CompressionStream "deflate" is RFC 1950 zlib, which PNG requires) of the scanlines, each with
 * filter type 0, and `IEND`; chunk CRCs by {@linkcode crc32}.
 *
 * @module
 */

import { crc32 } from "./crc32.ts";

/** Options for {@linkcode encodeHeatmapPng}. */
export interface HeatmapOptions {
  /**
   * Value mapped to the lowest colour; smaller values are clamped.
   * @default the minimum of the data
   */
  readonly min?: number;
  /**
   * Value mapped to the highest colour; larger values are clamped.
   * @default the maximum of the data
   */
  readonly max?: number;
}

/** The colour map's anchors as [t, r, g, b], t in [0, 1]; colours between them are interpolated. */
export const HEATMAP_ANCHORS: readonly (readonly [number, number, number, number])[] = Object
  .freeze([
    Object.freeze([0, 0x44, 0x01, 0x54] as const),
    Object.freeze([0.25, 0x3b, 0x52, 0x8b] as const),
    Object.freeze([0.5, 0x21, 0x91, 0x8c] as const),
    Object.freeze([0.75, 0x5e, 0xc9, 0x62] as const),
    Object.freeze([1, 0xfd, 0xe7, 0x25] as const),
  ]);

/** Number of colour levels (8-bit quantisation of the normalised value). */
const LEVELS = 256;

/** The 256-entry colour table, [r0, g0, b0, r1, ...]: entry k is the colour at t = k / 255. */
const HEATMAP_LUT: Uint8Array = buildLut();

/**
 * The colour of colour-table entry `k` (the colour at t = k / 255).
 *
 * @param k An integer 0..255.
 * @returns `[r, g, b]`, each 0..255.
 * @throws {RangeError} If `k` is not an integer in 0..255.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { heatmapColour } from "./png.ts";
 * const [r, g, b] = heatmapColour(255);
 * assert.ok(r === 0xfd && g === 0xe7 && b === 0x25);
 * ```
 */
export function heatmapColour(k: number): [number, number, number] {
  if (!Number.isInteger(k) || k < 0 || k >= LEVELS) {
    throw new RangeError(
      `Cannot look up the heat map colour as 'k' must be an integer in 0..${
        LEVELS - 1
      }: current value is ${k}`,
    );
  }
  return [HEATMAP_LUT[3 * k]!, HEATMAP_LUT[3 * k + 1]!, HEATMAP_LUT[3 * k + 2]!];
}

function buildLut(): Uint8Array {
  const lut = new Uint8Array(3 * LEVELS);
  for (let k = 0; k < LEVELS; k++) {
    const t = k / (LEVELS - 1);
    let seg = 0;
    while (seg < HEATMAP_ANCHORS.length - 2 && t > HEATMAP_ANCHORS[seg + 1]![0]) seg++;
    const [t0, r0, g0, b0] = HEATMAP_ANCHORS[seg]!;
    const [t1, r1, g1, b1] = HEATMAP_ANCHORS[seg + 1]!;
    const w = (t - t0) / (t1 - t0);
    lut[3 * k] = Math.round(r0 + w * (r1 - r0));
    lut[3 * k + 1] = Math.round(g0 + w * (g1 - g0));
    lut[3 * k + 2] = Math.round(b0 + w * (b1 - b0));
  }
  return lut;
}

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const BIT_DEPTH = 8;
const COLOUR_TYPE_RGB = 2;
const MAX_DIMENSION = 0x7fffffff; // PNG limits width and height to 2^31 - 1
const ACTION = "Cannot encode the PNG heat map";

/**
 * Encode a 2-D array as an 8-bit RGB PNG heat map (see the module docs for layout and colours).
 *
 * @param data [frames × bins] values, row-major: `data[f * bins + b]`.
 * @param shape `[frames, bins]`: image width and height.
 * @param options Fixed normalisation range (see {@linkcode HeatmapOptions}).
 * @returns The PNG file's bytes.
 * @throws {RangeError} If the shape does not match `data.length`, a dimension is 0 or too large,
 *   a value is not finite, or `min > max`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeHeatmapPng } from "./png.ts";
 * const mel = new Float32Array(4 * 3).map((_, k) => k); // [frames 4, bins 3]
 * const png = await encodeHeatmapPng(mel, [4, 3]);
 * assert.ok(png[1] === 0x50 && png[2] === 0x4e && png[3] === 0x47); // "PNG"
 * ```
 */
export async function encodeHeatmapPng(
  data: Float32Array | Float64Array,
  shape: readonly [number, number],
  options: HeatmapOptions = {},
): Promise<Uint8Array> {
  const [frames, bins] = shape;
  for (const [name, d] of [["frames", frames], ["bins", bins]] as const) {
    if (!Number.isInteger(d) || d < 1 || d > MAX_DIMENSION) {
      throw new RangeError(
        `${ACTION} as '${name}' must be an integer in 1..${MAX_DIMENSION}: current value is ${d}`,
      );
    }
  }
  if (data.length !== frames * bins) {
    throw new RangeError(
      `${ACTION} as shape [${frames}, ${bins}] holds ${
        frames * bins
      } values: current data length is ${data.length}`,
    );
  }
  let lo = Infinity;
  let hi = -Infinity;
  for (let k = 0; k < data.length; k++) {
    const v = data[k]!;
    if (!Number.isFinite(v)) {
      throw new RangeError(`${ACTION} as value ${k} must be finite: current value is ${v}`);
    }
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const min = options.min ?? lo;
  const max = options.max ?? hi;
  if (!Number.isFinite(min) || !Number.isFinite(max) || min > max) {
    throw new RangeError(
      `${ACTION} as 'min' and 'max' must be finite with min <= max: current values are ${min} and ${max}`,
    );
  }

  // Scanlines: [height = bins][1 filter byte + width = frames × 3 bytes], top row = highest bin.
  const width = frames;
  const height = bins;
  const stride = 1 + 3 * width;
  const raw = new Uint8Array(height * stride);
  const span = max - min;
  for (let y = 0; y < height; y++) {
    const bin = bins - 1 - y;
    const row = y * stride; // raw[row] = 0: filter type None
    for (let x = 0; x < width; x++) {
      const v = data[x * bins + bin]!;
      const t = span > 0 ? Math.min(1, Math.max(0, (v - min) / span)) : 0;
      const k = 3 * Math.round(t * (LEVELS - 1));
      const p = row + 1 + 3 * x;
      raw[p] = HEATMAP_LUT[k]!;
      raw[p + 1] = HEATMAP_LUT[k + 1]!;
      raw[p + 2] = HEATMAP_LUT[k + 2]!;
    }
  }
  return await rgbPng(raw, width, height);
}

/** The PNG file of unfiltered 8-bit RGB scanlines (each row: filter byte 0, then its pixels). */
async function rgbPng(
  scanlines: Uint8Array<ArrayBuffer>,
  width: number,
  height: number,
): Promise<Uint8Array> {
  const idat = await zlibCompress(scanlines);

  const ihdr = new Uint8Array(13);
  const hv = new DataView(ihdr.buffer);
  hv.setUint32(0, width);
  hv.setUint32(4, height);
  ihdr[8] = BIT_DEPTH;
  ihdr[9] = COLOUR_TYPE_RGB;
  // ihdr[10..12] = 0: deflate compression, adaptive filtering (method 0), no interlace

  const chunks = [chunk("IHDR", ihdr), chunk("IDAT", idat), chunk("IEND", new Uint8Array(0))];
  const out = new Uint8Array(SIGNATURE.length + chunks.reduce((n, c) => n + c.length, 0));
  out.set(SIGNATURE, 0);
  let p = SIGNATURE.length;
  for (const c of chunks) {
    out.set(c, p);
    p += c.length;
  }
  return out;
}

/**
 * Encode an 8-bit RGB image (pixels interleaved `r, g, b`, rows top to bottom) as a PNG.
 *
 * @throws {RangeError} if a dimension is not an integer in 1..2^31-1 or `rgb` does not hold
 *   `width * height * 3` bytes
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeRgbPng } from "./png.ts";
 * const png = await encodeRgbPng(new Uint8Array(2 * 2 * 3).fill(200), 2, 2);
 * assert.ok(png[1] === 0x50 && png[2] === 0x4e && png[3] === 0x47); // "PNG"
 * ```
 */
export async function encodeRgbPng(
  rgb: Uint8Array,
  width: number,
  height: number,
): Promise<Uint8Array> {
  const action = "Cannot encode the PNG image";
  for (const [name, d] of [["width", width], ["height", height]] as const) {
    if (!Number.isInteger(d) || d < 1 || d > MAX_DIMENSION) {
      throw new RangeError(
        `${action} as '${name}' must be an integer in 1..${MAX_DIMENSION}: current value is ${d}`,
      );
    }
  }
  if (rgb.length !== width * height * 3) {
    throw new RangeError(
      `${action} as ${width}x${height} RGB needs ${
        width * height * 3
      } bytes: current length is ${rgb.length}`,
    );
  }
  const stride = 1 + 3 * width;
  const raw = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    raw.set(rgb.subarray(y * 3 * width, (y + 1) * 3 * width), y * stride + 1);
  }
  return await rgbPng(raw, width, height);
}

/** One PNG chunk: length (big endian), type, data, CRC-32 of type and data. */
function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, data.length);
  for (let k = 0; k < 4; k++) out[4 + k] = type.charCodeAt(k);
  out.set(data, 8);
  v.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

async function zlibCompress(bytes: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  const stream = new Blob([bytes]).stream().pipeThrough(
    new CompressionStream("deflate"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
