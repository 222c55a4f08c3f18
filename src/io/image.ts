/**
 * Reading an input image (PNG or JPEG) as 8-bit RGB, the way diffusers' `load_image` hands one to
 * a pipeline: `PIL.Image.open(path).convert("RGB")`.
 *
 * - **PNG** is decoded here from the specification (https://www.w3.org/TR/png-3/): every colour
 *   type and bit depth, the five row filters, Adam7 interlacing; `zlib` inflation by `node:zlib`.
 *   Conversion to RGB follows Pillow's `convert("RGB")`: alpha and `tRNS` are dropped (not
 *   composited), greyscale is replicated, palettes are looked up, 1/2/4-bit greyscale is scaled to
 *   0..255 and 16-bit samples keep their high byte. Chunk CRCs are checked.
 * - **JPEG** is decoded by the npm package `jpeg-js`. Its IDCT and chroma upsampling are not
 *   libjpeg's (which Pillow uses), so pixels may differ from Pillow's by a few levels (measured
 *   on the test fixtures: see tests/io/image_test.ts).
 * - EXIF orientation is not applied (the pipeline, given a PIL image, does not apply it either).
 *
 * Problems with the file are {@linkcode ImageError}s (a `RangeError`: bad input, exit code 2) with
 * one line naming the file and what to do.
 *
 * @module
 */

import { inflateSync } from "node:zlib";
import jpeg from "jpeg-js";
import { crc32 } from "./crc32.ts";

/** An 8-bit RGB image, rows top to bottom, pixels interleaved `r, g, b`. */
export interface RgbImage {
  readonly width: number;
  readonly height: number;
  /** `width * height * 3` bytes. */
  readonly data: Uint8Array;
}

/** The most pixels an input image may have (an RGB float copy of 100 megapixels is 1.2 GB). */
export const MAX_IMAGE_PIXELS = 100_000_000;

/** An input image that cannot be used: bad input (exit code 2). */
export class ImageError extends RangeError {
  override name = "ImageError";
}

/** Formats recognised by their first bytes, to name what a file is when it is not PNG or JPEG. */
const SIGNATURES: readonly (readonly [string, readonly number[]])[] = [
  ["PNG", [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]],
  ["JPEG", [0xff, 0xd8, 0xff]],
  ["GIF", [0x47, 0x49, 0x46, 0x38]],
  ["BMP", [0x42, 0x4d]],
  ["TIFF", [0x49, 0x49, 0x2a, 0x00]],
  ["TIFF", [0x4d, 0x4d, 0x00, 0x2a]],
  ["ICO", [0x00, 0x00, 0x01, 0x00]],
  ["PSD", [0x38, 0x42, 0x50, 0x53]],
];

/**
 * The image format `bytes` start with: "PNG", "JPEG", another format's name (GIF, BMP, TIFF,
 * WebP, AVIF, HEIC, ICO, PSD), or undefined when none is recognised.
 */
export function sniffImageFormat(bytes: Uint8Array): string | undefined {
  for (const [name, sig] of SIGNATURES) {
    if (bytes.length >= sig.length && sig.every((b, k) => bytes[k] === b)) return name;
  }
  const ascii = (from: number, to: number) => String.fromCharCode(...bytes.subarray(from, to));
  if (bytes.length >= 12 && ascii(0, 4) === "RIFF" && ascii(8, 12) === "WEBP") return "WebP";
  if (bytes.length >= 12 && ascii(4, 8) === "ftyp") {
    const brand = ascii(8, 12);
    if (brand.startsWith("avi")) return "AVIF";
    if (brand.startsWith("hei") || brand.startsWith("hev") || brand === "mif1") return "HEIC";
  }
  return undefined;
}

/**
 * Reads and decodes the image at `path` (PNG or JPEG) as 8-bit RGB.
 *
 * @throws {ImageError} for a missing or unreadable file, a file that is not a PNG or JPEG, or a
 *   corrupt, too small or too large image
 */
export function readImage(path: string): RgbImage {
  let bytes: Uint8Array;
  try {
    const stat = Deno.statSync(path);
    if (stat.isDirectory) throw new ImageError(`Cannot read the image '${path}': it is a folder`);
    bytes = Deno.readFileSync(path);
  } catch (e) {
    if (e instanceof ImageError) throw e;
    const reason = e instanceof Deno.errors.NotFound
      ? "no such file"
      : e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable
      ? "permission denied"
      : (e as Error).message;
    throw new ImageError(`Cannot read the image '${path}': ${reason}`);
  }
  return decodeImage(bytes, path);
}

/**
 * Decodes PNG or JPEG bytes as 8-bit RGB.
 *
 * @param name the file's name, for messages
 * @throws {ImageError} as {@linkcode readImage}
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeImage } from "./image.ts";
 * assert.throws(() => decodeImage(new TextEncoder().encode("hello"), "x.jpg"), /not a PNG or JPEG/);
 * ```
 */
export function decodeImage(bytes: Uint8Array, name: string): RgbImage {
  const format = sniffImageFormat(bytes);
  const fail = (why: string): never => {
    throw new ImageError(`Cannot read the image '${name}': ${why}`);
  };
  if (bytes.length === 0) fail("the file is empty");
  if (format === undefined) {
    const text = bytes.subarray(0, 512).every((b) =>
      b === 9 || b === 10 || b === 13 || (b >= 32 && b < 127)
    );
    fail(
      `it is not a PNG or JPEG image (${
        text ? "it holds text" : "its first bytes are no image format known here"
      })`,
    );
  }
  if (format !== "PNG" && format !== "JPEG") {
    fail(`${format} is not supported: convert it to PNG or JPEG`);
  }
  let image: RgbImage;
  try {
    image = format === "PNG" ? decodePng(bytes) : decodeJpeg(bytes);
  } catch (e) {
    if (e instanceof ImageError) fail(e.message);
    const message = e instanceof Error ? e.message : String(e);
    fail(`the ${format} data is corrupt (${message.replace(/\.$/, "")})`);
  }
  if (image!.width < 2 || image!.height < 2) {
    fail(`it is ${image!.width}x${image!.height} pixels: an input image needs at least 2x2`);
  }
  return image!;
}

function checkSize(width: number, height: number): void {
  if (width < 1 || height < 1) {
    throw new ImageError(`it declares a size of ${width}x${height} pixels`);
  }
  if (width * height > MAX_IMAGE_PIXELS) {
    throw new ImageError(
      `it is ${width}x${height} pixels, above the limit of ${
        MAX_IMAGE_PIXELS / 1e6
      } megapixels: scale it down first`,
    );
  }
}

// ---------------------------------------------------------------------------------------- JPEG

/** What the frame header (SOF) and an Adobe APP14 marker say about a JPEG's colour data. */
interface JpegLayout {
  /** Sampling factors [h, v] per component. */
  readonly sampling: readonly (readonly [number, number])[];
  /** Whether an Adobe APP14 marker is present (it may change the colour transform). */
  readonly adobe: boolean;
}

/** Walks the markers up to the first scan; undefined when no frame header comes before it. */
function jpegLayout(bytes: Uint8Array): JpegLayout | undefined {
  let p = 2;
  let adobe = false;
  while (p + 4 <= bytes.length) {
    if (bytes[p] !== 0xff) return undefined;
    const marker = bytes[p + 1]!;
    if (marker === 0xff) {
      p++; // fill byte
      continue;
    }
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      p += 2;
      continue;
    }
    const length = (bytes[p + 2]! << 8) | bytes[p + 3]!;
    if (marker === 0xee) adobe = true;
    const sof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 &&
      marker !== 0xcc;
    if (sof && p + 10 <= bytes.length) {
      const n = bytes[p + 9]!;
      const sampling: [number, number][] = [];
      for (let k = 0; k < n && p + 12 + 3 * k <= bytes.length; k++) {
        const hv = bytes[p + 11 + 3 * k]!;
        sampling.push([hv >> 4, hv & 15]);
      }
      // An APP14 marker may still follow the frame header: keep walking to the scan.
      let q = p + 2 + length;
      while (q + 4 <= bytes.length && bytes[q] === 0xff && bytes[q + 1] !== 0xda) {
        if (bytes[q + 1] === 0xee) adobe = true;
        q += 2 + ((bytes[q + 2]! << 8) | bytes[q + 3]!);
      }
      return { sampling, adobe };
    }
    if (marker === 0xda) return undefined;
    p += 2 + length;
  }
  return undefined;
}

/**
 * Decodes a JPEG with `jpeg-js` (strict: truncated or corrupt data is an error). For the common
 * YCbCr layouts (4:4:4, 4:2:2, 4:2:0, 4:4:0, no Adobe marker) jpeg-js gives the decoded planes
 * and the chroma is upsampled and converted to RGB here as libjpeg does by default (Pillow's
 * decoder): "fancy" triangle upsampling and libjpeg's fixed-point YCbCr tables. jpeg-js itself
 * replicates chroma samples and truncates, which moved pixels by up to 57 levels (8.7 on
 * average) from Pillow's on a noisy 4:2:0 test image. Other layouts are converted by jpeg-js.
 */
function decodeJpeg(bytes: Uint8Array): RgbImage {
  const layout = jpegLayout(bytes);
  const sampling = layout?.sampling ?? [];
  const [h0, v0] = sampling[0] ?? [0, 0];
  const chroma = sampling.length === 3 && !layout!.adobe && h0 <= 2 && v0 <= 2 &&
    sampling.slice(1).every(([h, v]) => h === 1 && v === 1);
  const decoded = jpeg.decode(bytes, {
    useTArray: true,
    formatAsRGBA: false,
    tolerantDecoding: false,
    maxResolutionInMP: MAX_IMAGE_PIXELS / 1e6,
    maxMemoryUsageInMB: 4096,
    ...(chroma ? { colorTransform: false } : {}),
  });
  const { width, height } = decoded;
  checkSize(width, height);
  if (!chroma) return { width, height, data: decoded.data };
  return { width, height, data: ycbcrToRgb(decoded.data, width, height, h0, v0) };
}

/**
 * libjpeg's default decoding of interleaved Y, Cb, Cr (chroma replicated by jpeg-js over
 * `sx` x `sy` pixels): take back the subsampled chroma planes, upsample them with libjpeg's
 * `h2v1`/`h1v2`/`h2v2_fancy_upsample` (jdsample.c: 3/4 of the nearer sample plus 1/4 of the
 * further one per axis, with its rounding biases; edge rows and columns replicated), then
 * libjpeg's `ycc_rgb_convert` (jdcolor.c, 16-bit fixed point).
 */
function ycbcrToRgb(ycc: Uint8Array, width: number, height: number, sx: number, sy: number) {
  const cw = Math.ceil(width / sx);
  const ch = Math.ceil(height / sy);
  const plane = (c: number) => {
    const out = new Int32Array(cw * ch);
    for (let y = 0; y < ch; y++) {
      for (let x = 0; x < cw; x++) out[y * cw + x] = ycc[3 * (y * sy * width + x * sx) + c]!;
    }
    return out;
  };
  const cb = upsample(plane(1), cw, ch, sx, sy, width, height);
  const cr = upsample(plane(2), cw, ch, sx, sy, width, height);
  const out = new Uint8Array(width * height * 3);
  const SCALE = 16;
  const HALF = 1 << (SCALE - 1);
  const fix = (x: number) => Math.floor(x * (1 << SCALE) + 0.5);
  const clamp = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : v);
  for (let k = 0; k < width * height; k++) {
    const y = ycc[3 * k]!;
    const b = cb[k]! - 128;
    const r = cr[k]! - 128;
    out[3 * k] = clamp(y + ((fix(1.402) * r + HALF) >> SCALE));
    out[3 * k + 1] = clamp(y + ((-fix(0.34414) * b + -fix(0.71414) * r + HALF) >> SCALE));
    out[3 * k + 2] = clamp(y + ((fix(1.772) * b + HALF) >> SCALE));
  }
  return out;
}

/** libjpeg's fancy upsampling of one chroma plane [ch][cw] by (sx, sy) in {1, 2}. */
function upsample(
  src: Int32Array,
  cw: number,
  ch: number,
  sx: number,
  sy: number,
  width: number,
  height: number,
): Int32Array {
  // Vertically first for h1v2; h2v2 weighs both axes in one pass (9/16, 3/16, 3/16, 1/16).
  const at = (x: number, y: number) =>
    src[Math.min(Math.max(y, 0), ch - 1) * cw + Math.min(Math.max(x, 0), cw - 1)]!;
  const out = new Int32Array(width * height);
  for (let Y = 0; Y < height; Y++) {
    const y = sy === 2 ? Y >> 1 : Y;
    // The further row: above for even output rows, below for odd ones (h2v2, h1v2).
    const y1 = sy === 2 ? ((Y & 1) === 0 ? y - 1 : y + 1) : y;
    for (let X = 0; X < width; X++) {
      const x = sx === 2 ? X >> 1 : X;
      let v: number;
      if (sx === 2 && sy === 2) {
        const col = (xx: number) => 3 * at(xx, y) + at(xx, y1);
        const odd = (X & 1) === 1;
        const first = x === 0 && !odd;
        const last = x === cw - 1 && odd;
        if (first) v = (4 * col(x) + 8) >> 4;
        else if (last) v = (4 * col(x) + 7) >> 4;
        else v = odd ? (3 * col(x) + col(x + 1) + 7) >> 4 : (3 * col(x) + col(x - 1) + 8) >> 4;
      } else if (sx === 2) {
        const odd = (X & 1) === 1;
        const first = x === 0 && !odd;
        const last = x === cw - 1 && odd;
        if (first || last) v = at(x, y);
        else {v = odd
            ? (3 * at(x, y) + at(x + 1, y) + 2) >> 2
            : (3 * at(x, y) + at(x - 1, y) + 1) >> 2;}
      } else if (sy === 2) {
        const odd = (Y & 1) === 1;
        v = odd ? (3 * at(x, y) + at(x, y1) + 2) >> 2 : (3 * at(x, y) + at(x, y1) + 1) >> 2;
      } else {
        v = at(x, y);
      }
      out[Y * width + X] = v;
    }
  }
  return out;
}

// ----------------------------------------------------------------------------------------- PNG

const COLOUR_TYPES: Readonly<Record<number, { channels: number; depths: readonly number[] }>> = {
  0: { channels: 1, depths: [1, 2, 4, 8, 16] }, // greyscale
  2: { channels: 3, depths: [8, 16] }, // RGB
  3: { channels: 1, depths: [1, 2, 4, 8] }, // palette index
  4: { channels: 2, depths: [8, 16] }, // greyscale + alpha
  6: { channels: 4, depths: [8, 16] }, // RGBA
};

/** Adam7 passes: x0, y0, dx, dy. */
const ADAM7 = [
  [0, 0, 8, 8],
  [4, 0, 8, 8],
  [0, 4, 4, 8],
  [2, 0, 4, 4],
  [0, 2, 2, 4],
  [1, 0, 2, 2],
  [0, 1, 1, 2],
] as const;

/** Decodes a PNG (see the module docs for the RGB conversion). */
function decodePng(bytes: Uint8Array): RgbImage {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let p = 8;
  let header:
    | { width: number; height: number; depth: number; type: number; interlace: number }
    | undefined;
  let palette: Uint8Array | undefined;
  const idat: Uint8Array[] = [];
  let ended = false;
  while (!ended) {
    if (p + 12 > bytes.length) {
      throw new ImageError("the PNG is truncated: the file ends before its IEND chunk");
    }
    const length = view.getUint32(p);
    const type = String.fromCharCode(...bytes.subarray(p + 4, p + 8));
    if (p + 12 + length > bytes.length) {
      throw new ImageError(`the PNG is truncated: chunk ${type} runs past the end of the file`);
    }
    const data = bytes.subarray(p + 8, p + 8 + length);
    const critical = (bytes[p + 4]! & 0x20) === 0;
    if (crc32(bytes.subarray(p + 4, p + 8 + length)) !== view.getUint32(p + 8 + length)) {
      throw new ImageError(`the PNG is corrupt: chunk ${type} fails its CRC check`);
    }
    p += 12 + length;
    if (type === "IHDR") {
      if (length !== 13) throw new ImageError("the PNG is corrupt: its IHDR chunk is not 13 bytes");
      const h = new DataView(data.buffer, data.byteOffset, 13);
      header = {
        width: h.getUint32(0),
        height: h.getUint32(4),
        depth: data[8]!,
        type: data[9]!,
        interlace: data[12]!,
      };
      const spec = COLOUR_TYPES[header.type];
      if (spec === undefined || !spec.depths.includes(header.depth)) {
        throw new ImageError(
          `the PNG is corrupt: colour type ${header.type} with bit depth ${header.depth} does not exist`,
        );
      }
      if (data[10] !== 0 || data[11] !== 0 || header.interlace > 1) {
        throw new ImageError("the PNG is corrupt: unknown compression, filter or interlace method");
      }
      checkSize(header.width, header.height);
    } else if (type === "PLTE") {
      palette = data.slice();
    } else if (type === "IDAT") {
      idat.push(data);
    } else if (type === "IEND") {
      ended = true;
    } else if (critical) {
      // An unknown critical chunk (upper-case first letter): the image cannot be read correctly.
      throw new ImageError(`the PNG uses an unknown critical chunk ${type}`);
    }
  }
  if (header === undefined) throw new ImageError("the PNG is corrupt: it has no IHDR chunk");
  if (idat.length === 0) throw new ImageError("the PNG is corrupt: it has no image data (IDAT)");
  if (header.type === 3 && (palette === undefined || palette.length % 3 !== 0)) {
    throw new ImageError("the PNG is corrupt: a palette image without a valid PLTE chunk");
  }
  const total = idat.reduce((n, c) => n + c.length, 0);
  const compressed = new Uint8Array(total);
  let q = 0;
  for (const c of idat) {
    compressed.set(c, q);
    q += c.length;
  }
  let raw: Uint8Array;
  try {
    raw = inflateSync(compressed);
  } catch (e) {
    throw new ImageError(`the PNG's image data is corrupt (${(e as Error).message})`);
  }
  return toRgb(header, unfilter(header, raw), palette);
}

/** Undoes the row filters of every pass; returns the samples as [height][width * channels]. */
function unfilter(
  h: { width: number; height: number; depth: number; type: number; interlace: number },
  raw: Uint8Array,
): Uint16Array {
  const channels = COLOUR_TYPES[h.type]!.channels;
  const bitsPerPixel = channels * h.depth;
  const bpp = Math.max(1, bitsPerPixel >> 3);
  const samples = new Uint16Array(h.width * h.height * channels);
  const passes = h.interlace ? ADAM7 : [[0, 0, 1, 1] as const];
  let p = 0;
  for (const [x0, y0, dx, dy] of passes) {
    const pw = Math.ceil((h.width - x0) / dx);
    const ph = Math.ceil((h.height - y0) / dy);
    if (pw <= 0 || ph <= 0) continue;
    const stride = Math.ceil((pw * bitsPerPixel) / 8);
    let prev = new Uint8Array(stride);
    let row = new Uint8Array(stride);
    for (let y = 0; y < ph; y++) {
      if (p + 1 + stride > raw.length) {
        throw new ImageError("the PNG's image data is shorter than its size says");
      }
      const filter = raw[p]!;
      const line = raw.subarray(p + 1, p + 1 + stride);
      p += 1 + stride;
      for (let i = 0; i < stride; i++) {
        const a = i >= bpp ? row[i - bpp]! : 0;
        const b = prev[i]!;
        const c = i >= bpp ? prev[i - bpp]! : 0;
        let pred: number;
        switch (filter) {
          case 0:
            pred = 0;
            break;
          case 1:
            pred = a;
            break;
          case 2:
            pred = b;
            break;
          case 3:
            pred = (a + b) >> 1;
            break;
          case 4: {
            const pa = Math.abs(b - c);
            const pb = Math.abs(a - c);
            const pc = Math.abs(a + b - 2 * c);
            pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
            break;
          }
          default:
            throw new ImageError(`the PNG is corrupt: row filter ${filter} does not exist`);
        }
        row[i] = (line[i]! + pred) & 0xff;
      }
      // Unpack the row's samples into place.
      const yy = y0 + y * dy;
      for (let x = 0; x < pw; x++) {
        const base = ((yy * h.width) + x0 + x * dx) * channels;
        for (let ch = 0; ch < channels; ch++) {
          const s = x * channels + ch;
          let v: number;
          if (h.depth === 8) v = row[s]!;
          else if (h.depth === 16) v = (row[2 * s]! << 8) | row[2 * s + 1]!;
          else {
            const bit = s * h.depth;
            v = (row[bit >> 3]! >> (8 - h.depth - (bit & 7))) & ((1 << h.depth) - 1);
          }
          samples[base + ch] = v;
        }
      }
      [prev, row] = [row, prev];
    }
  }
  return samples;
}

/** Pillow's `convert("RGB")` of the decoded samples. */
function toRgb(
  h: { width: number; height: number; depth: number; type: number },
  samples: Uint16Array,
  palette: Uint8Array | undefined,
): RgbImage {
  const n = h.width * h.height;
  const out = new Uint8Array(n * 3);
  const channels = COLOUR_TYPES[h.type]!.channels;
  // To 8 bits: 16-bit keeps the high byte; 1/2/4-bit greyscale scales to 0..255.
  const to8 = h.depth === 16
    ? (v: number) => v >> 8
    : h.depth < 8 && h.type === 0
    ? (v: number) => (v * 255) / ((1 << h.depth) - 1)
    : (v: number) => v;
  for (let k = 0; k < n; k++) {
    const s = k * channels;
    if (h.type === 3) {
      const i = samples[s]!;
      // An index past the palette is black, as in Pillow.
      const ok = 3 * i + 2 < palette!.length;
      out[3 * k] = ok ? palette![3 * i]! : 0;
      out[3 * k + 1] = ok ? palette![3 * i + 1]! : 0;
      out[3 * k + 2] = ok ? palette![3 * i + 2]! : 0;
    } else if (h.type === 0 || h.type === 4) {
      const g = to8(samples[s]!);
      out[3 * k] = out[3 * k + 1] = out[3 * k + 2] = g;
    } else {
      out[3 * k] = to8(samples[s]!);
      out[3 * k + 1] = to8(samples[s + 1]!);
      out[3 * k + 2] = to8(samples[s + 2]!);
    }
  }
  return { width: h.width, height: h.height, data: out };
}
