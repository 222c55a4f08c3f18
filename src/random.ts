/**
 * A seeded Gaussian generator that gives the same bytes on every run and platform.
 *
 * Algorithm:
 * 1. **Bits: SFC64** (Chris Doty-Humphrey's Small Fast Counting generator, 256-bit state
 *    `a, b, c, counter`; numpy ships it as `numpy.random.SFC64`). One step:
 *    `out = a + b + counter; counter += 1; a = b ^ (b >> 11); b = c + (c << 3);
 *    c = rotl(c, 24) + out` (all mod 2^64). It is implemented on pairs of 32-bit words with
 *    `>>>`, `<<` and carries, so it needs no BigInt and no multiplication.
 * 2. **Seeding:** `a = b = c = seed` (a 64-bit integer), `counter = 1`, then 12 outputs are
 *    discarded to mix the state.
 * 3. **Uniforms:** `u = (out >> 11) · 2^-53`, a double in [0, 1) with 53 random bits (numpy's
 *    `Generator.random()` does the same).
 * 4. **Normals: Box–Muller**, both outputs used. From two uniforms `u₀, u₁`:
 *    `r = √(−2 ln(1 − u₀))`, `z₀ = r cos(2π u₁)`, `z₁ = r sin(2π u₁)`, computed in double and
 *    rounded to float32. `1 − u₀` lies in (0, 1], so the logarithm is finite.
 *
 * The normal stream is a stream: the first n values of `randn(seed, m)` for m > n equal
 * `randn(seed, n)`, and a {@linkcode GaussianStream} read in chunks gives the same values as one call.
 * Raw outputs and uniforms match numpy's SFC64 bit for bit (see tests/random_test.ts). The normals
 * depend on `Math.log/cos/sin`, which may differ from another libm in the last bit of a double;
 * after rounding to float32 that almost never shows.
 *
 * @module
 */

/** A seed: an integer 0 ≤ seed ≤ 2^53 − 1 as a number, or 0 ≤ seed < 2^64 as a bigint. */
export type Seed = number | bigint;

const TWO_POW_32 = 4294967296;
const TWO_POW_MINUS_53 = 1 / 9007199254740992;
const SEED_MIX_ROUNDS = 12; // outputs discarded after seeding
const TWO_PI = 2 * Math.PI;

/**
 * The SFC64 bit generator on 32-bit halves. Stateful: each call advances it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Sfc64 } from "./random.ts";
 * const rng = new Sfc64(42);
 * const u = rng.nextFloat64();
 * assert.ok(u >= 0 && u < 1);
 * ```
 */
export class Sfc64 {
  // State words: [aHi, aLo, bHi, bLo, cHi, cLo, counterHi, counterLo].
  readonly #s = new Uint32Array(8);
  // Output of the last step: [hi, lo].
  readonly #out = new Uint32Array(2);

  /**
   * Seed the generator (see the module docs for the scheme).
   *
   * @param seed An integer 0 ≤ seed ≤ 2^53 − 1, or a bigint 0 ≤ seed < 2^64.
   * @throws {TypeError} If the seed is neither a number nor a bigint.
   * @throws {RangeError} If the seed is not an integer in range.
   */
  constructor(seed: Seed) {
    const [hi, lo] = splitSeed(seed);
    const s = this.#s;
    s[0] = s[2] = s[4] = hi;
    s[1] = s[3] = s[5] = lo;
    s[6] = 0;
    s[7] = 1;
    for (let k = 0; k < SEED_MIX_ROUNDS; k++) this.#step();
  }

  /** Advance one step; the 64-bit output lands in #out as [hi, lo]. */
  #step(): void {
    const s = this.#s;
    const aHi = s[0]!, aLo = s[1]!, bHi = s[2]!, bLo = s[3]!;
    const cHi = s[4]!, cLo = s[5]!, nHi = s[6]!, nLo = s[7]!;
    // out = a + b + counter
    let lo = aLo + bLo;
    let hi = aHi + bHi + (lo > 0xffffffff ? 1 : 0);
    lo >>>= 0;
    const lo2 = lo + nLo;
    hi = (hi + nHi + (lo2 > 0xffffffff ? 1 : 0)) >>> 0;
    lo = lo2 >>> 0;
    // counter += 1
    const nLo1 = (nLo + 1) >>> 0;
    s[7] = nLo1;
    s[6] = nLo1 === 0 ? (nHi + 1) >>> 0 : nHi;
    // a = b ^ (b >> 11)
    s[0] = bHi ^ (bHi >>> 11);
    s[1] = bLo ^ ((bLo >>> 11) | (bHi << 21));
    // b = c + (c << 3)
    const shLo = (cLo << 3) >>> 0;
    const shHi = ((cHi << 3) | (cLo >>> 29)) >>> 0;
    const bLoNew = cLo + shLo;
    s[3] = bLoNew >>> 0;
    s[2] = (cHi + shHi + (bLoNew > 0xffffffff ? 1 : 0)) >>> 0;
    // c = rotl(c, 24) + out
    const rHi = ((cHi << 24) | (cLo >>> 8)) >>> 0;
    const rLo = ((cLo << 24) | (cHi >>> 8)) >>> 0;
    const cLoNew = rLo + lo;
    s[5] = cLoNew >>> 0;
    s[4] = (rHi + hi + (cLoNew > 0xffffffff ? 1 : 0)) >>> 0;
    this.#out[0] = hi;
    this.#out[1] = lo;
  }

  /**
   * The next raw 64-bit output as a bigint (for tests and checks; slower than the other methods).
   *
   * @returns An integer 0 ≤ n < 2^64.
   */
  nextUint64(): bigint {
    this.#step();
    return (BigInt(this.#out[0]!) << 32n) | BigInt(this.#out[1]!);
  }

  /**
   * The next uniform double in [0, 1): the top 53 bits of one output times 2^-53.
   *
   * @returns A double 0 ≤ u < 1.
   */
  nextFloat64(): number {
    this.#step();
    // (out >> 11) = hi · 2^21 + (lo >>> 11), below 2^53 so exact.
    return (this.#out[0]! * 2097152 + (this.#out[1]! >>> 11)) * TWO_POW_MINUS_53;
  }
}

/**
 * Standard normal samples from a seed, read in any chunk sizes: the values depend only on the seed
 * and their position in the stream.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { GaussianStream, randn } from "./random.ts";
 * const stream = new GaussianStream(7);
 * const a = stream.next(3);
 * const b = stream.next(5);
 * const whole = randn(7, 8);
 * assert.ok(a[0] === whole[0] && b[4] === whole[7]);
 * ```
 */
export class GaussianStream {
  readonly #rng: Sfc64;
  #spare = 0;
  #hasSpare = false;

  /**
   * @param seed The seed (see {@linkcode Seed}).
   * @throws {TypeError | RangeError} For an invalid seed.
   */
  constructor(seed: Seed) {
    this.#rng = new Sfc64(seed);
  }

  /**
   * Fill `out` with the next `out.length` samples.
   *
   * @param out Destination.
   * @returns `out`.
   */
  fill(out: Float32Array): Float32Array {
    let k = 0;
    if (this.#hasSpare && out.length > 0) {
      out[k++] = this.#spare;
      this.#hasSpare = false;
    }
    const rng = this.#rng;
    while (k < out.length) {
      const u0 = rng.nextFloat64();
      const u1 = rng.nextFloat64();
      const r = Math.sqrt(-2 * Math.log(1 - u0));
      const theta = TWO_PI * u1;
      out[k++] = r * Math.cos(theta);
      const second = Math.fround(r * Math.sin(theta));
      if (k < out.length) {
        out[k++] = second;
      } else {
        this.#spare = second;
        this.#hasSpare = true;
      }
    }
    return out;
  }

  /**
   * The next `length` samples in a new array.
   *
   * @param length Number of samples, a non-negative integer.
   * @returns A new Float32Array.
   * @throws {RangeError} If `length` is not a non-negative safe integer.
   */
  next(length: number): Float32Array {
    checkLength(length);
    return this.fill(new Float32Array(length));
  }
}

/**
 * `length` standard normal float32 samples from `seed` (a fresh {@linkcode GaussianStream}).
 *
 * @param seed The seed (see {@linkcode Seed}).
 * @param length Number of samples, a non-negative integer.
 * @returns A new Float32Array; `randn(seed, n)` is a prefix of `randn(seed, m)` for n ≤ m.
 * @throws {TypeError | RangeError} For an invalid seed or length.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { randn } from "./random.ts";
 * const latents = randn(0, 1 * 8 * 256 * 16); // [batch, channels, frames, bins]
 * assert.ok(latents.length === 32768);
 * ```
 */
export function randn(seed: Seed, length: number): Float32Array {
  checkLength(length);
  return new GaussianStream(seed).fill(new Float32Array(length));
}

function checkLength(length: number): void {
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new RangeError(
      `Cannot draw samples as 'length' must be a non-negative integer: current value is ${length}`,
    );
  }
}

/** Split a seed into its high and low 32-bit words. */
function splitSeed(seed: Seed): [number, number] {
  if (typeof seed === "bigint") {
    if (seed < 0n || seed >= 1n << 64n) {
      throw new RangeError(
        `Cannot seed the generator as a bigint 'seed' must be in 0..2^64-1: current value is ${seed}`,
      );
    }
    return [Number(seed >> 32n), Number(seed & 0xffffffffn)];
  }
  if (typeof seed !== "number") {
    throw new TypeError(
      `Cannot seed the generator as 'seed' must be a number or a bigint: current value is ${typeof seed}`,
    );
  }
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RangeError(
      `Cannot seed the generator as 'seed' must be an integer in 0..2^53-1: current value is ${seed}`,
    );
  }
  return [Math.floor(seed / TWO_POW_32), seed >>> 0];
}
