/**
 * Short-time power spectra with a periodic Hann window.
 *
 * Framing (no centring or padding at the start, unlike librosa's default `center=True`):
 * frame f covers samples `[f·hop, f·hop + nFft)`; there are `1 + ⌊(L − nFft) / hop⌋` frames for a
 * signal of L ≥ nFft samples (trailing samples that do not fill a frame are dropped), and one
 * zero-padded frame when L < nFft.
 *
 * Window: periodic Hann, `w[n] = 0.5 − 0.5·cos(2πn / nFft)` (scipy's `get_window("hann")`,
 * torch's `hann_window` default). Power: `P[f, k] = |Σₙ w[n]·x[f·hop + n]·e^(−2πi·k·n/nFft)|²`
 * for k = 0..nFft/2, no normalisation.
 *
 * @module
 */

import { RealFft } from "./fft.ts";

/** Options for {@linkcode powerSpectrogram}. */
export interface StftOptions {
  /**
   * Frame and FFT length, a power of two. 2048 samples is 128 ms at 16 kHz.
   * @default 2048
   */
  readonly nFft?: number;
  /**
   * Samples between frame starts, a positive integer.
   * @default 512
   */
  readonly hop?: number;
}

/** A power spectrogram. */
export interface PowerSpectrogram {
  /** Number of frames F. */
  readonly frames: number;
  /** Number of frequency bins K = nFft / 2 + 1. */
  readonly bins: number;
  /** [F × K] power, row-major: `data[f * bins + k]`. */
  readonly data: Float64Array;
}

/** Default FFT length of the spectral metrics. */
export const DEFAULT_N_FFT = 2048;
/** Default hop of the spectral metrics (a quarter of the default frame). */
export const DEFAULT_HOP = 512;

/**
 * Fill in the defaults of {@linkcode StftOptions} and validate them.
 *
 * @param options The options.
 * @param action The failed action, for the error message (e.g. "Cannot compute the spectrogram").
 * @returns `nFft` and `hop`.
 * @throws {RangeError} If `nFft` is not a power of two ≥ 2 or `hop` is not a positive integer.
 */
export function resolveStftOptions(
  options: StftOptions,
  action: string,
): { nFft: number; hop: number } {
  const nFft = options.nFft ?? DEFAULT_N_FFT;
  const hop = options.hop ?? DEFAULT_HOP;
  if (!Number.isSafeInteger(nFft) || nFft < 2 || (nFft & (nFft - 1)) !== 0) {
    throw new RangeError(
      `${action} as 'nFft' must be a power of two >= 2: current value is ${nFft}`,
    );
  }
  if (!Number.isSafeInteger(hop) || hop < 1) {
    throw new RangeError(`${action} as 'hop' must be a positive integer: current value is ${hop}`);
  }
  return { nFft, hop };
}

/**
 * The power spectrogram of a real signal (see the module docs for framing and window).
 *
 * @param signal [L] samples, L ≥ 1.
 * @param options FFT length and hop.
 * @returns Frames × bins of power.
 * @throws {RangeError} If the signal is empty, `nFft` is not a power of two ≥ 2, or `hop` is not
 *   a positive integer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { powerSpectrogram } from "./stft.ts";
 * const s = powerSpectrogram(new Float32Array(4096), { nFft: 1024, hop: 256 });
 * assert.ok(s.frames === 13 && s.bins === 513);
 * ```
 */
export function powerSpectrogram(
  signal: ArrayLike<number>,
  options: StftOptions = {},
): PowerSpectrogram {
  const { nFft, hop } = resolveStftOptions(options, "Cannot compute the spectrogram");
  if (signal.length < 1) {
    throw new RangeError("Cannot compute the spectrogram as the signal is empty");
  }
  const frames = signal.length >= nFft ? 1 + Math.floor((signal.length - nFft) / hop) : 1;
  const bins = nFft / 2 + 1;
  const window = new Float64Array(nFft);
  for (let n = 0; n < nFft; n++) window[n] = 0.5 - 0.5 * Math.cos((2 * Math.PI * n) / nFft);

  const fft = new RealFft(nFft);
  const frame = new Float64Array(nFft); // [nFft] windowed samples of one frame
  const spectrum = { re: new Float64Array(bins), im: new Float64Array(bins) };
  const data = new Float64Array(frames * bins);
  for (let f = 0; f < frames; f++) {
    const start = f * hop;
    for (let n = 0; n < nFft; n++) {
      const j = start + n;
      frame[n] = j < signal.length ? window[n]! * signal[j]! : 0;
    }
    fft.forward(frame, spectrum);
    for (let k = 0; k < bins; k++) {
      const re = spectrum.re[k]!;
      const im = spectrum.im[k]!;
      data[f * bins + k] = re * re + im * im;
    }
  }
  return { frames, bins, data };
}
