/**
 * Quality metrics for comparing a generation against a reference (e.g. ParaStep against the
 * sequential baseline on the same seed): SNR of waveforms, log-spectral distance, and PSNR of 2-D
 * arrays such as mel spectrograms.
 *
 * All sums run in double precision. Identical inputs are handled explicitly: SNR and PSNR return
 * `Infinity`, LSD returns 0. Non-finite inputs are refused rather than producing NaN.
 *
 * @module
 */

import { powerSpectrogram, resolveStftOptions, type StftOptions } from "./stft.ts";

/** Samples or values: float32 (model outputs) or float64. */
export type Samples = Float32Array | Float64Array;

/** A 2-D array, row-major: `data[r * shape[1] + c]`. */
export interface Array2D {
  /** [rows × cols] values. */
  readonly data: Samples;
  /** `[rows, cols]`, e.g. `[frames, melBins]`. */
  readonly shape: readonly [number, number];
}

/** Options for {@linkcode logSpectralDistance}. */
export interface LsdOptions extends StftOptions {
  /**
   * Added to both powers before the ratio, so silent bins compare as equal instead of dividing by
   * zero: 1e-10 is −100 dB relative to a full-scale (|x| ≤ 1) signal's unit power.
   * @default 1e-10
   */
  readonly epsilon?: number;
}

/** Default epsilon of {@linkcode logSpectralDistance}. */
export const DEFAULT_LSD_EPSILON = 1e-10;

/**
 * Signal-to-noise ratio of `estimate` against `reference`, in dB:
 * `10·log10(Σ ref² / Σ (ref − est)²)`.
 *
 * @param reference [L] the reference signal.
 * @param estimate [L] the signal under test.
 * @returns The SNR in dB: `Infinity` when the signals are identical, `-Infinity` when the
 *   reference is all zeros and the estimate is not.
 * @throws {RangeError} If the lengths differ, are 0, or a value is not finite.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { snr } from "./audio.ts";
 * const ref = new Float32Array([1, -1, 1, -1]);
 * assert.ok(snr(ref, ref) === Infinity);
 * assert.ok(Math.abs(snr(ref, ref.map((v) => v * 0.9)) - 20) < 1e-5); // 0.9 in float32
 * ```
 */
export function snr(reference: Samples, estimate: Samples): number {
  checkPair(reference, estimate, "Cannot compute the SNR");
  let signal = 0;
  let noise = 0;
  for (let k = 0; k < reference.length; k++) {
    const r = reference[k]!;
    const d = r - estimate[k]!;
    signal += r * r;
    noise += d * d;
  }
  if (noise === 0) return Infinity;
  return 10 * Math.log10(signal / noise);
}

/**
 * Log-spectral distance in dB between two signals:
 * `LSD = (1/F) Σ_f √( (1/K) Σ_k (10·log10((P_ref[f,k] + ε) / (P_est[f,k] + ε)))² )`,
 * with power spectra from {@linkcode powerSpectrogram} (periodic Hann window, no centring).
 *
 * @param reference [L] the reference signal.
 * @param estimate [L] the signal under test.
 * @param options `nFft` (default 2048), `hop` (default 512), `epsilon` (default 1e-10).
 * @returns The LSD in dB, ≥ 0; exactly 0 for identical signals.
 * @throws {RangeError} If the lengths differ, are 0, a value is not finite, or an option is
 *   invalid.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { logSpectralDistance } from "./audio.ts";
 * const x = new Float32Array(4096).map((_, n) => Math.sin(n * n)); // broadband
 * assert.ok(logSpectralDistance(x, x) === 0);
 * // Halving the amplitude lowers every bin's power by 20·log10(2) ≈ 6.02 dB.
 * assert.ok(Math.abs(logSpectralDistance(x, x.map((v) => v / 2)) - 20 * Math.log10(2)) < 1e-6);
 * ```
 */
export function logSpectralDistance(
  reference: Samples,
  estimate: Samples,
  options: LsdOptions = {},
): number {
  const action = "Cannot compute the log-spectral distance";
  checkPair(reference, estimate, action);
  const epsilon = options.epsilon ?? DEFAULT_LSD_EPSILON;
  if (!Number.isFinite(epsilon) || epsilon <= 0) {
    throw new RangeError(
      `${action} as 'epsilon' must be a finite number > 0: current value is ${epsilon}`,
    );
  }
  const stft = resolveStftOptions(options, action);
  if (sameValues(reference, estimate)) return 0;
  const ref = powerSpectrogram(reference, stft);
  const est = powerSpectrogram(estimate, stft);
  let total = 0;
  for (let f = 0; f < ref.frames; f++) {
    let sum = 0;
    for (let k = 0; k < ref.bins; k++) {
      const i = f * ref.bins + k;
      const db = 10 * Math.log10((ref.data[i]! + epsilon) / (est.data[i]! + epsilon));
      sum += db * db;
    }
    total += Math.sqrt(sum / ref.bins);
  }
  return total / ref.frames;
}

/**
 * Peak signal-to-noise ratio of two 2-D arrays, in dB: `10·log10(peak² / MSE)` with
 * `peak = max(ref) − min(ref)` (the reference's range, since spectrograms have no fixed full
 * scale, e.g. log-mel values are negative) and `MSE = mean((ref − est)²)`.
 *
 * @param reference The reference array.
 * @param estimate The array under test, same shape.
 * @returns The PSNR in dB: `Infinity` when the arrays are identical, `-Infinity` when the
 *   reference is constant (peak 0) and the arrays differ.
 * @throws {RangeError} If the shapes differ or do not match the data, are empty, or a value is
 *   not finite.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { psnr } from "./audio.ts";
 * const ref = { data: new Float32Array([0, 1, 2, 3]), shape: [2, 2] as const };
 * const est = { data: new Float32Array([0, 1, 2, 2]), shape: [2, 2] as const };
 * assert.ok(Math.abs(psnr(ref, est) - 10 * Math.log10(9 / 0.25)) < 1e-12);
 * ```
 */
export function psnr(reference: Array2D, estimate: Array2D): number {
  const action = "Cannot compute the PSNR";
  for (const [name, a] of [["reference", reference], ["estimate", estimate]] as const) {
    const [rows, cols] = a.shape;
    if (!Number.isSafeInteger(rows) || !Number.isSafeInteger(cols) || rows < 1 || cols < 1) {
      throw new RangeError(
        `${action} as '${name}.shape' must be two positive integers: current value is [${
          a.shape.join(", ")
        }]`,
      );
    }
    if (a.data.length !== rows * cols) {
      throw new RangeError(
        `${action} as '${name}' of shape [${rows}, ${cols}] must hold ${
          rows * cols
        } values: current length is ${a.data.length}`,
      );
    }
  }
  if (reference.shape[0] !== estimate.shape[0] || reference.shape[1] !== estimate.shape[1]) {
    throw new RangeError(
      `${action} as 'estimate' must have the shape of 'reference' [${
        reference.shape.join(", ")
      }]: current value is [${estimate.shape.join(", ")}]`,
    );
  }
  checkPair(reference.data, estimate.data, action);
  let min = Infinity;
  let max = -Infinity;
  let se = 0;
  for (let k = 0; k < reference.data.length; k++) {
    const r = reference.data[k]!;
    const d = r - estimate.data[k]!;
    if (r < min) min = r;
    if (r > max) max = r;
    se += d * d;
  }
  if (se === 0) return Infinity;
  const peak = max - min;
  const mse = se / reference.data.length;
  return 10 * Math.log10((peak * peak) / mse);
}

/** Check equal, non-zero lengths and finite values. */
function checkPair(reference: Samples, estimate: Samples, action: string): void {
  if (reference.length === 0) throw new RangeError(`${action} as 'reference' is empty`);
  if (estimate.length !== reference.length) {
    throw new RangeError(
      `${action} as 'estimate' must have the length of 'reference' (${reference.length}): current value is ${estimate.length}`,
    );
  }
  for (const [name, a] of [["reference", reference], ["estimate", estimate]] as const) {
    for (let k = 0; k < a.length; k++) {
      if (!Number.isFinite(a[k]!)) {
        throw new RangeError(
          `${action} as '${name}' value ${k} must be finite: current value is ${a[k]}`,
        );
      }
    }
  }
}

function sameValues(a: Samples, b: Samples): boolean {
  for (let k = 0; k < a.length; k++) if (a[k] !== b[k]) return false;
  return true;
}
