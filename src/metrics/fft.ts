/**
 * Radix-2 FFT of real input (iterative Cooley–Tukey, decimation in time), in double precision.
 *
 * The transform is numpy's convention: `X[k] = Σₙ x[n] · e^(−2πi·k·n/N)`, unnormalised, returning
 * the non-negative frequencies k = 0..N/2 (N/2 + 1 bins), like `np.fft.rfft(x, n=N)`. Inputs
 * shorter than N are zero-padded, longer ones truncated. N must be a power of two; by default it
 * is the smallest power of two ≥ the input length.
 *
 * @module
 */

/** Real and imaginary parts of the N/2 + 1 non-negative-frequency bins. */
export interface Spectrum {
  /** [N/2 + 1] real parts. */
  readonly re: Float64Array;
  /** [N/2 + 1] imaginary parts. */
  readonly im: Float64Array;
}

/**
 * The smallest power of two ≥ `n` (1 for n ≤ 1).
 *
 * @param n A non-negative integer.
 * @returns A power of two.
 * @throws {RangeError} If `n` is not a non-negative safe integer or the result exceeds 2^30.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { nextPowerOfTwo } from "./fft.ts";
 * assert.ok(nextPowerOfTwo(1000) === 1024 && nextPowerOfTwo(1024) === 1024);
 * ```
 */
export function nextPowerOfTwo(n: number): number {
  if (!Number.isSafeInteger(n) || n < 0 || n > MAX_SIZE) {
    throw new RangeError(
      `Cannot size the FFT as 'n' must be an integer in 0..${MAX_SIZE}: current value is ${n}`,
    );
  }
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

const MAX_SIZE = 2 ** 30;

/**
 * A reusable real FFT of one size: precomputed twiddles and bit reversal, and scratch buffers.
 * Not safe to share between concurrent callers (it reuses its scratch space), which JS's
 * single-threaded execution guarantees within one worker.
 */
export class RealFft {
  /** Transform size N, a power of two. */
  readonly size: number;
  readonly #cos: Float64Array; // [N/2] cos(2πk/N)
  readonly #sin: Float64Array; // [N/2] sin(2πk/N)
  readonly #rev: Uint32Array; // [N] bit-reversed index
  readonly #re: Float64Array; // [N] scratch
  readonly #im: Float64Array; // [N] scratch

  /**
   * @param size Transform size N, a power of two (1 ≤ N ≤ 2^30).
   * @throws {RangeError} If `size` is not a power of two in range.
   */
  constructor(size: number) {
    if (!Number.isSafeInteger(size) || size < 1 || size > MAX_SIZE || (size & (size - 1)) !== 0) {
      throw new RangeError(
        `Cannot plan the FFT as 'size' must be a power of two in 1..${MAX_SIZE}: current value is ${size}`,
      );
    }
    this.size = size;
    const half = size >>> 1;
    this.#cos = new Float64Array(half);
    this.#sin = new Float64Array(half);
    for (let k = 0; k < half; k++) {
      const a = (2 * Math.PI * k) / size;
      this.#cos[k] = Math.cos(a);
      this.#sin[k] = Math.sin(a);
    }
    const bits = Math.log2(size);
    this.#rev = new Uint32Array(size);
    for (let i = 0; i < size; i++) {
      let r = 0;
      for (let b = 0, v = i; b < bits; b++, v >>>= 1) r = (r << 1) | (v & 1);
      this.#rev[i] = r;
    }
    this.#re = new Float64Array(size);
    this.#im = new Float64Array(size);
  }

  /**
   * Transform `input[offset .. offset + N)` (zero-padded past the end of `input`).
   *
   * @param input Real samples.
   * @param out Destination spectrum with N/2 + 1 bins; a new one if omitted.
   * @param offset First sample to read.
   * @returns The spectrum.
   */
  forward(input: ArrayLike<number>, out?: Spectrum, offset = 0): Spectrum {
    const n = this.size;
    const bins = (n >>> 1) + 1;
    const dst = out ?? { re: new Float64Array(bins), im: new Float64Array(bins) };
    if (dst.re.length !== bins || dst.im.length !== bins) {
      throw new RangeError(
        `Cannot run the FFT as 'out' must have ${bins} bins: current value is ${dst.re.length}`,
      );
    }
    const re = this.#re;
    const im = this.#im;
    const rev = this.#rev;
    for (let i = 0; i < n; i++) {
      const j = offset + rev[i]!;
      re[i] = j < input.length ? input[j]! : 0;
      im[i] = 0;
    }
    // Butterflies: for each stage, combine pairs of sub-transforms of length `len / 2`.
    for (let len = 2; len <= n; len *= 2) {
      const half = len >>> 1;
      const step = n / len; // twiddle stride: e^(−2πi·k/len) = table[k · n/len]
      for (let start = 0; start < n; start += len) {
        for (let k = 0; k < half; k++) {
          const wr = this.#cos[k * step]!;
          const wi = -this.#sin[k * step]!;
          const a = start + k;
          const b = a + half;
          const tr = wr * re[b]! - wi * im[b]!;
          const ti = wr * im[b]! + wi * re[b]!;
          re[b] = re[a]! - tr;
          im[b] = im[a]! - ti;
          re[a] = re[a]! + tr;
          im[a] = im[a]! + ti;
        }
      }
    }
    for (let k = 0; k < bins; k++) {
      dst.re[k] = re[k]!;
      dst.im[k] = im[k]!;
    }
    return dst;
  }
}

/**
 * FFT of real input, like `np.fft.rfft(input, n)`.
 *
 * @param input Real samples.
 * @param n Transform size, a power of two; defaults to the next power of two ≥ `input.length`.
 *   Shorter input is zero-padded, longer input truncated.
 * @returns The N/2 + 1 non-negative-frequency bins.
 * @throws {RangeError} If `n` is not a power of two.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { rfft } from "./fft.ts";
 * const { re, im } = rfft([1, 1, 1]); // zero-padded to 4
 * assert.ok(re.length === 3 && re[0] === 3 && im[1] === -1);
 * ```
 */
export function rfft(input: ArrayLike<number>, n?: number): Spectrum {
  return new RealFft(n ?? nextPowerOfTwo(Math.max(1, input.length))).forward(input);
}
