/**
 * Image resampling as diffusers' Stable Video Diffusion pipeline does it, so that the conditioning
 * inputs match diffusers':
 *
 * - {@linkcode resizeLanczos}: Pillow's `Image.resize(size, Image.LANCZOS, reducing_gap=None)` on
 *   an 8-bit RGB image (diffusers' `VaeImageProcessor.resize`), reproduced from Pillow's
 *   `libImaging/Resample.c`: separable Lanczos-3 (support scaled by the downscale factor),
 *   coefficients computed in double and normalised, turned into 22-bit fixed point, a horizontal
 *   then a vertical pass each rounding and clipping to 8 bits. Bit for bit equal to Pillow on the
 *   test fixtures.
 * - {@linkcode resizeWithAntialiasing}: diffusers' `_resize_with_antialiasing` on float planes: a
 *   separable Gaussian blur (σ = max((in/out − 1)/2, 0.001) per axis, kernel int(max(4σ, 3)) made
 *   odd, reflect padding, horizontal then vertical) followed by
 *   {@linkcode interpolateBicubic} (torch's `F.interpolate(mode="bicubic", align_corners=True)`).
 *   Float32 in torch's operation order; torch's convolution may sum in another order, so results
 *   agree to about 1e-6, not bit for bit.
 *
 * @module
 */

import type { RgbImage } from "./image.ts";

/** Pillow's fixed-point precision for 8-bit resampling (`PRECISION_BITS`). */
const PRECISION_BITS = 32 - 8 - 2;
/** Lanczos-3's support (Pillow's `LANCZOS.support`). */
const LANCZOS_SUPPORT = 3;

function sinc(x: number): number {
  if (x === 0) return 1;
  const px = x * Math.PI;
  return Math.sin(px) / px;
}

function lanczos(x: number): number {
  return -3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0;
}

/** Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis. */
function lanczosCoefficients(inSize: number, outSize: number) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = LANCZOS_SUPPORT * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const coefficients = new Int32Array(outSize * ksize);
  const weights = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterScale;
    // (int) truncates towards zero, as C does.
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = lanczos((x + xmin - center + 0.5) * ss);
      weights[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0 ? weights[x]! / ww : weights[x]!;
      coefficients[xx * ksize + x] = Math.trunc((k < 0 ? -0.5 : 0.5) + k * (1 << PRECISION_BITS));
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { ksize, bounds, coefficients };
}

function clip8(v: number): number {
  const s = v >> PRECISION_BITS;
  return s < 0 ? 0 : s > 255 ? 255 : s;
}

/**
 * Pillow's `Image.resize((width, height), Image.LANCZOS, reducing_gap=None)` of an RGB image; a
 * copy when the size is unchanged (as Pillow).
 *
 * @throws {RangeError} for a target size below 1 pixel
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resizeLanczos } from "./resize.ts";
 * const grey = { width: 4, height: 4, data: new Uint8Array(48).fill(100) };
 * const out = resizeLanczos(grey, 2, 3);
 * assert.deepEqual(out.data, new Uint8Array(18).fill(100));
 * ```
 */
export function resizeLanczos(image: RgbImage, width: number, height: number): RgbImage {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(
      `Cannot resize the image as the size must be whole pixels >= 1: current value is ${width}x${height}`,
    );
  }
  let src = image;
  if (width !== src.width) {
    // Horizontal pass over every row (Pillow limits it to the rows the vertical pass reads; the
    // values are the same).
    const { ksize, bounds, coefficients } = lanczosCoefficients(src.width, width);
    const out = new Uint8Array(width * src.height * 3);
    for (let y = 0; y < src.height; y++) {
      const row = y * src.width * 3;
      for (let xx = 0; xx < width; xx++) {
        const xmin = bounds[2 * xx]!;
        const xmax = bounds[2 * xx + 1]!;
        const k = xx * ksize;
        let s0 = 1 << (PRECISION_BITS - 1);
        let s1 = s0;
        let s2 = s0;
        for (let x = 0; x < xmax; x++) {
          const c = coefficients[k + x]!;
          const p = row + (x + xmin) * 3;
          s0 += src.data[p]! * c;
          s1 += src.data[p + 1]! * c;
          s2 += src.data[p + 2]! * c;
        }
        const o = (y * width + xx) * 3;
        out[o] = clip8(s0);
        out[o + 1] = clip8(s1);
        out[o + 2] = clip8(s2);
      }
    }
    src = { width, height: src.height, data: out };
  }
  if (height !== src.height) {
    const { ksize, bounds, coefficients } = lanczosCoefficients(src.height, height);
    const out = new Uint8Array(src.width * height * 3);
    for (let yy = 0; yy < height; yy++) {
      const ymin = bounds[2 * yy]!;
      const ymax = bounds[2 * yy + 1]!;
      const k = yy * ksize;
      for (let x = 0; x < src.width; x++) {
        let s0 = 1 << (PRECISION_BITS - 1);
        let s1 = s0;
        let s2 = s0;
        for (let y = 0; y < ymax; y++) {
          const c = coefficients[k + y]!;
          const p = ((y + ymin) * src.width + x) * 3;
          s0 += src.data[p]! * c;
          s1 += src.data[p + 1]! * c;
          s2 += src.data[p + 2]! * c;
        }
        const o = (yy * src.width + x) * 3;
        out[o] = clip8(s0);
        out[o + 1] = clip8(s1);
        out[o + 2] = clip8(s2);
      }
    }
    src = { width: src.width, height, data: out };
  }
  return src === image ? { width, height, data: image.data.slice() } : src;
}

/** Float planes [channels, height, width], row-major (one image of an NCHW tensor). */
export interface Planes {
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  readonly data: Float32Array;
}

/**
 * The normalised Gaussian taps diffusers' `_gaussian` makes, in float32:
 * `exp(−x² / (2σ²)) / Σ`, x = k − size // 2.
 */
export function gaussianKernel(size: number, sigma: number): Float32Array {
  const f = Math.fround;
  const s = f(sigma);
  const twoSigmaSq = f(2 * f(s * s));
  const taps = new Float32Array(size);
  let sum = 0;
  for (let k = 0; k < size; k++) {
    const x = k - Math.floor(size / 2) + (size % 2 === 0 ? 0.5 : 0);
    taps[k] = f(Math.exp(f(-f(x * x) / twoSigmaSq)));
    sum = f(sum + taps[k]!);
  }
  for (let k = 0; k < size; k++) taps[k] = f(taps[k]! / sum);
  return taps;
}

/** Reflect padding's source index (torch `mode="reflect"`: the edge itself is not repeated). */
function reflect(i: number, n: number): number {
  if (n === 1) return 0;
  const period = 2 * (n - 1);
  let j = ((i % period) + period) % period;
  if (j >= n) j = period - j;
  return j;
}

/** One separable pass of `taps` along x (`horizontal`) or y, with reflect padding. */
function blurAxis(src: Planes, taps: Float32Array, horizontal: boolean): Planes {
  const { channels, height, width } = src;
  const out = new Float32Array(src.data.length);
  const front = (taps.length - 1) >> 1;
  const f = Math.fround;
  for (let c = 0; c < channels; c++) {
    const plane = c * height * width;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        let acc = 0;
        for (let k = 0; k < taps.length; k++) {
          const v = horizontal
            ? src.data[plane + y * width + reflect(x + k - front, width)]!
            : src.data[plane + reflect(y + k - front, height) * width + x]!;
          acc = f(acc + f(taps[k]! * v));
        }
        out[plane + y * width + x] = acc;
      }
    }
  }
  return { channels, height, width, data: out };
}

/** torch's bicubic coefficients for offset t (A = −0.75), float32. */
function cubicCoefficients(t: number): [number, number, number, number] {
  const f = Math.fround;
  const A = -0.75;
  const conv1 = (x: number) => f(f(f(f(f((A + 2) * x) - (A + 3)) * x) * x) + 1);
  const conv2 = (x: number) => f(f(f(f(f(f(A * x) - 5 * A) * x) + 8 * A) * x) - 4 * A);
  const t2 = f(1 - t);
  return [conv2(f(t + 1)), conv1(t), conv1(t2), conv2(f(t2 + 1))];
}

/** Per output index: the 4 clamped source indices and weights of torch's bicubic, align_corners. */
function cubicTaps(inSize: number, outSize: number) {
  const f = Math.fround;
  const scale = outSize > 1 ? f((inSize - 1) / (outSize - 1)) : 0;
  const index = new Int32Array(outSize * 4);
  const weight = new Float32Array(outSize * 4);
  for (let i = 0; i < outSize; i++) {
    const real = f(scale * i);
    const i0 = Math.min(Math.floor(real), inSize - 1);
    const t = Math.min(Math.max(f(real - i0), 0), 1);
    const w = cubicCoefficients(t);
    for (let j = 0; j < 4; j++) {
      index[4 * i + j] = Math.min(Math.max(i0 - 1 + j, 0), inSize - 1);
      weight[4 * i + j] = w[j]!;
    }
  }
  return { index, weight };
}

/**
 * torch's `F.interpolate(x, size=(outH, outW), mode="bicubic", align_corners=True)` of float
 * planes: A = −0.75, source indices clamped at the borders, in float32 (rows of 4 taps weighted
 * along x, then those 4 along y).
 */
export function interpolateBicubic(src: Planes, outH: number, outW: number): Planes {
  const f = Math.fround;
  const ys = cubicTaps(src.height, outH);
  const xs = cubicTaps(src.width, outW);
  const out = new Float32Array(src.channels * outH * outW);
  for (let c = 0; c < src.channels; c++) {
    const plane = c * src.height * src.width;
    for (let y = 0; y < outH; y++) {
      for (let x = 0; x < outW; x++) {
        let acc = 0;
        for (let j = 0; j < 4; j++) {
          const row = plane + ys.index[4 * y + j]! * src.width;
          let t = 0;
          for (let i = 0; i < 4; i++) {
            t = f(t + f(src.data[row + xs.index[4 * x + i]!]! * xs.weight[4 * x + i]!));
          }
          acc = f(acc + f(t * ys.weight[4 * y + j]!));
        }
        out[(c * outH + y) * outW + x] = acc;
      }
    }
  }
  return { channels: src.channels, height: outH, width: outW, data: out };
}

/** The blur diffusers' `_resize_with_antialiasing` picks for one axis: σ and the odd tap count. */
export function antialiasKernel(inSize: number, outSize: number): { sigma: number; size: number } {
  const sigma = Math.max((inSize / outSize - 1) / 2, 0.001);
  let size = Math.trunc(Math.max(2 * 2 * sigma, 3));
  if (size % 2 === 0) size++;
  return { sigma, size };
}

/**
 * diffusers' `_resize_with_antialiasing(x, (outH, outW))`: Gaussian blur (horizontal, then
 * vertical; reflect padding), then bicubic interpolation with `align_corners=True`.
 *
 * @throws {RangeError} when the blur's padding would not fit the image (torch refuses it too)
 */
export function resizeWithAntialiasing(src: Planes, outH: number, outW: number): Planes {
  const ky = antialiasKernel(src.height, outH);
  const kx = antialiasKernel(src.width, outW);
  for (const [k, n, axis] of [[ky, src.height, "height"], [kx, src.width, "width"]] as const) {
    if ((k.size - 1) >> 1 >= n) {
      throw new RangeError(
        `Cannot resize the image as its ${axis} (${n}) is too small for a ${k.size}-tap blur`,
      );
    }
  }
  const blurredX = blurAxis(src, gaussianKernel(kx.size, kx.sigma), true);
  const blurred = blurAxis(blurredX, gaussianKernel(ky.size, ky.sigma), false);
  return interpolateBicubic(blurred, outH, outW);
}
