/**
 * Per-frame quality of a video against a reference video: PSNR and SSIM.
 *
 * Frames are planes [F, C, H, W] of values in a known range (`dataRange`, e.g. 1 for frames in
 * [0, 1]).
 *
 * - **PSNR** per frame: `10 log10(R² / MSE)` over the frame's C·H·W values; `Infinity` for
 *   identical frames.
 * - **SSIM** per frame (Wang et al. 2004, https://doi.org/10.1109/TIP.2003.819861), as
 *   scikit-image's `structural_similarity(…, gaussian_weights=True, sigma=1.5,
 *   use_sample_covariance=False, data_range=R, channel_axis=…)` computes it: local means,
 *   variances and covariance under an 11-tap Gaussian window (σ = 1.5, truncated at 3.5σ,
 *   normalised), applied separably with symmetric padding (scipy's `mode="reflect"`: the edge
 *   sample repeats), `C1 = (0.01 R)²`, `C2 = (0.03 R)²`; the map is averaged over the frame minus
 *   a 5-pixel border, then over channels. A side shorter than 11 pixels keeps at least its middle
 *   row or column (scikit-image refuses such frames).
 *
 * @module
 */

/** The layout of a video's planes. */
export interface VideoShape {
  readonly frames: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
}

const SSIM_SIGMA = 1.5;
const SSIM_TRUNCATE = 3.5;
const K1 = 0.01;
const K2 = 0.03;

function check(reference: Float32Array, estimate: Float32Array, shape: VideoShape, what: string) {
  const { frames, channels, height, width } = shape;
  for (const [name, d] of Object.entries(shape)) {
    if (!Number.isInteger(d) || d < 1) {
      throw new RangeError(
        `Cannot compute the ${what} as '${name}' must be an integer >= 1: current value is ${d}`,
      );
    }
  }
  const n = frames * channels * height * width;
  for (const [name, a] of [["reference", reference], ["estimate", estimate]] as const) {
    if (a.length !== n) {
      throw new RangeError(
        `Cannot compute the ${what} as '${name}' must hold [${frames}, ${channels}, ${height}, ${width}] = ${n} values: current length is ${a.length}`,
      );
    }
  }
}

/**
 * PSNR in dB of each frame of `estimate` against `reference`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { framePsnr } from "./video.ts";
 * const shape = { frames: 1, channels: 1, height: 1, width: 2 };
 * const [p] = framePsnr(new Float32Array([0, 1]), new Float32Array([0, 0.5]), shape);
 * assert.ok(Math.abs(p! - 10 * Math.log10(1 / 0.125)) < 1e-12);
 * ```
 */
export function framePsnr(
  reference: Float32Array,
  estimate: Float32Array,
  shape: VideoShape,
  dataRange = 1,
): number[] {
  check(reference, estimate, shape, "PSNR");
  const size = shape.channels * shape.height * shape.width;
  const out: number[] = [];
  for (let f = 0; f < shape.frames; f++) {
    let se = 0;
    for (let k = f * size; k < (f + 1) * size; k++) {
      const d = reference[k]! - estimate[k]!;
      se += d * d;
    }
    out.push(se === 0 ? Infinity : 10 * Math.log10((dataRange * dataRange) / (se / size)));
  }
  return out;
}

/** The normalised Gaussian window scipy's `gaussian_filter(sigma=1.5, truncate=3.5)` uses. */
function ssimWindow(): Float64Array {
  const radius = Math.trunc(SSIM_TRUNCATE * SSIM_SIGMA + 0.5);
  const w = new Float64Array(2 * radius + 1);
  let sum = 0;
  for (let k = -radius; k <= radius; k++) {
    w[k + radius] = Math.exp((-0.5 / (SSIM_SIGMA * SSIM_SIGMA)) * k * k);
    sum += w[k + radius]!;
  }
  return w.map((v) => v / sum);
}

/** scipy's `mode="reflect"`: `d c b a | a b c d | d c b a`. */
function symmetric(i: number, n: number): number {
  const period = 2 * n;
  let j = ((i % period) + period) % period;
  if (j >= n) j = period - 1 - j;
  return j;
}

/** Separable filtering of one plane with `w`: rows (axis 0) first, then columns, as scipy. */
function filterPlane(src: Float64Array, h: number, wd: number, w: Float64Array): Float64Array {
  const r = (w.length - 1) >> 1;
  const tmp = new Float64Array(h * wd);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < wd; x++) {
      let acc = 0;
      for (let k = -r; k <= r; k++) acc += w[k + r]! * src[symmetric(y + k, h) * wd + x]!;
      tmp[y * wd + x] = acc;
    }
  }
  const out = new Float64Array(h * wd);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < wd; x++) {
      let acc = 0;
      for (let k = -r; k <= r; k++) acc += w[k + r]! * tmp[y * wd + symmetric(x + k, wd)]!;
      out[y * wd + x] = acc;
    }
  }
  return out;
}

/**
 * SSIM of each frame of `estimate` against `reference` (1 for identical frames).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { frameSsim } from "./video.ts";
 * const shape = { frames: 1, channels: 1, height: 12, width: 12 };
 * const a = Float32Array.from({ length: 144 }, (_, k) => (k % 7) / 7);
 * assert.equal(frameSsim(a, a, shape)[0], 1);
 * ```
 */
export function frameSsim(
  reference: Float32Array,
  estimate: Float32Array,
  shape: VideoShape,
  dataRange = 1,
): number[] {
  check(reference, estimate, shape, "SSIM");
  const { frames, channels, height: h, width: wd } = shape;
  const w = ssimWindow();
  const c1 = (K1 * dataRange) ** 2;
  const c2 = (K2 * dataRange) ** 2;
  const pad = (w.length - 1) >> 1;
  const padY = Math.min(pad, (h - 1) >> 1);
  const padX = Math.min(pad, (wd - 1) >> 1);
  const n = h * wd;
  const out: number[] = [];
  for (let f = 0; f < frames; f++) {
    let total = 0;
    for (let c = 0; c < channels; c++) {
      const base = (f * channels + c) * n;
      const x = Float64Array.from(reference.subarray(base, base + n));
      const y = Float64Array.from(estimate.subarray(base, base + n));
      const ux = filterPlane(x, h, wd, w);
      const uy = filterPlane(y, h, wd, w);
      const uxx = filterPlane(x.map((v) => v * v), h, wd, w);
      const uyy = filterPlane(y.map((v) => v * v), h, wd, w);
      const uxy = filterPlane(x.map((v, k) => v * y[k]!), h, wd, w);
      let sum = 0;
      let count = 0;
      for (let yy = padY; yy < h - padY; yy++) {
        for (let xx = padX; xx < wd - padX; xx++) {
          const k = yy * wd + xx;
          const vx = uxx[k]! - ux[k]! * ux[k]!;
          const vy = uyy[k]! - uy[k]! * uy[k]!;
          const vxy = uxy[k]! - ux[k]! * uy[k]!;
          const a1 = 2 * ux[k]! * uy[k]! + c1;
          const a2 = 2 * vxy + c2;
          const b1 = ux[k]! * ux[k]! + uy[k]! * uy[k]! + c1;
          const b2 = vx + vy + c2;
          sum += (a1 * a2) / (b1 * b2);
          count++;
        }
      }
      total += sum / count;
    }
    out.push(total / channels);
  }
  return out;
}

/**
 * The mean of per-frame PSNRs over the frames that differ (identical frames have no finite PSNR);
 * `Infinity` when every frame is identical.
 */
export function meanFinite(values: readonly number[]): number {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return values.length > 0 ? Infinity : NaN;
  return finite.reduce((a, b) => a + b, 0) / finite.length;
}
