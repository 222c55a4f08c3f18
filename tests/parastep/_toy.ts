/**
 * Toy samplers in float64 for the ParaStep tests: a non-linear "denoiser" with a CFG-doubled
 * output, guidance that mixes the two halves, and a DDIM-like step. Two flavours: scalar latents
 * (`number`, eps a `[uncond, cond]` pair) and vector latents (`Float64Array`, eps `[2 * n]`).
 *
 * Coefficients depend only on `i` (and the table built for `T`), so a step is a pure function of
 * `(e, i, x)` as docs/parastep.md requires.
 */

import type { BatchSampler, Sampler } from "../../src/parastep/mod.ts";

/** Guidance scale `g` of the toys; far from 1 so guidance visibly changes the noise. */
export const GUIDANCE = 3.5;

/** Scalar pre-guidance noise: `[eps_u, eps_c]`. */
export type ScalarEps = readonly [number, number];

/** Per-step tables of the toys, built for `T` steps. */
export interface ToyTable {
  /** `[T + 1]`: alpha-bar at each step; rises from noisy (small) to clean (near 1). */
  alphaBar: Float64Array;
  /** `[T]`: weight of the non-linear term. */
  c: Float64Array;
  /** `[T]`: weight of the linear term. */
  d: Float64Array;
}

/** Build the tables for `T` steps (the largest step index used must be `< T`). */
export function toyTable(T: number): ToyTable {
  const alphaBar = new Float64Array(T + 1);
  for (let i = 0; i <= T; i++) alphaBar[i] = 0.02 + 0.96 * (i / T) ** 1.5;
  const c = new Float64Array(T);
  const d = new Float64Array(T);
  for (let i = 0; i < T; i++) {
    c[i] = 0.8 - 0.3 * i / T;
    d[i] = 0.5 + 0.2 * Math.cos(i);
  }
  return { alphaBar, c, d };
}

function at(table: Float64Array, i: number): number {
  const value = table[i];
  if (value === undefined) throw new RangeError(`Toy table has no index ${i}`);
  return value;
}

/** The DDIM-like update for one element: predict x_0, then re-noise to the next alpha-bar. */
function ddim(table: ToyTable, e: number, i: number, x: number): number {
  const a = at(table.alphaBar, i);
  const aNext = at(table.alphaBar, i + 1);
  const x0 = (x - Math.sqrt(1 - a) * e) / Math.sqrt(a);
  return Math.sqrt(aNext) * x0 + Math.sqrt(1 - aNext) * e;
}

/** Scalar toy: `X = number`, `E = [eps_u, eps_c]`. */
export function scalarToy(T: number): Sampler<number, ScalarEps> {
  const table = toyTable(T);
  return {
    model(x, i) {
      const c = at(table.c, i);
      const d = at(table.d, i);
      return [Math.sin(x) * c + x * d, Math.sin(1.3 * x + 0.2) * c + x * d + 0.1 * Math.cos(i)];
    },
    guide([u, c]) {
      return u + GUIDANCE * (c - u);
    },
    step(e, i, x) {
      return ddim(table, e, i, x);
    },
  };
}

/** Vector toy: `X = Float64Array(n)`, `E = Float64Array(2 * n)` (`[uncond; cond]`). */
export function vectorToy(T: number): Sampler<Float64Array, Float64Array> {
  const table = toyTable(T);
  return {
    model(x, i) {
      const n = x.length;
      const c = at(table.c, i);
      const d = at(table.d, i);
      const eps = new Float64Array(2 * n); // [2 * n]: CFG-doubled output
      for (let j = 0; j < n; j++) {
        const xj = at(x, j);
        const neighbour = at(x, (j + 1) % n);
        eps[j] = Math.sin(xj + 0.3 * neighbour) * c + xj * d;
        eps[n + j] = Math.sin(1.3 * xj - 0.2 * neighbour + 0.2) * c + xj * d +
          0.1 * Math.cos(i + j);
      }
      return eps;
    },
    guide(eps) {
      const n = eps.length / 2;
      const guided = new Float64Array(n);
      for (let j = 0; j < n; j++) {
        const u = at(eps, j);
        guided[j] = u + GUIDANCE * (at(eps, n + j) - u);
      }
      return guided;
    },
    step(e, i, x) {
      const next = new Float64Array(x.length);
      for (let j = 0; j < x.length; j++) next[j] = ddim(table, at(e, j), i, at(x, j));
      return next;
    },
  };
}

/** Initial vector latents of length `n`, deterministic. */
export function vectorX0(n = 4): Float64Array {
  const x = new Float64Array(n);
  for (let j = 0; j < n; j++) x[j] = Math.cos(1 + 2.7 * j) * 1.2;
  return x;
}

/** Initial scalar latent. */
export const SCALAR_X0 = 0.7312;

/** The same toy with a batched model (for BatchStep). */
export function batched<X, E>(sampler: Sampler<X, E>): BatchSampler<X, E> {
  return {
    modelBatch(xs, is) {
      return xs.map((x, j) => {
        const eps = sampler.model(x, is[j] as number);
        if (eps instanceof Promise) throw new TypeError("batched() needs a synchronous model");
        return eps;
      });
    },
    guide: (eps) => sampler.guide(eps),
    step: (e, i, x) => sampler.step(e, i, x),
  };
}

/** A synchronous model, for the naive references (they never await). */
export function syncModel<X, E>(sampler: Sampler<X, E>): (x: X, i: number) => E {
  return (x, i) => {
    const eps = sampler.model(x, i);
    if (eps instanceof Promise) {
      throw new TypeError("The naive reference needs a synchronous model");
    }
    return eps;
  };
}

/**
 * Assert two latents are identical bit for bit (`Object.is` per element), saying where not.
 */
export function assertSameBits(actual: number | Float64Array, expected: number | Float64Array) {
  if (typeof actual === "number" || typeof expected === "number") {
    if (!Object.is(actual, expected)) {
      throw new Error(`Expected ${expected} bit for bit, got ${actual}`);
    }
    return;
  }
  if (actual.length !== expected.length) {
    throw new Error(`Expected length ${expected.length}, got ${actual.length}`);
  }
  for (let j = 0; j < expected.length; j++) {
    if (!Object.is(actual[j], expected[j])) {
      throw new Error(`Element ${j}: expected ${expected[j]} bit for bit, got ${actual[j]}`);
    }
  }
}

/** Largest absolute element-wise difference. */
export function maxAbsDiff(a: number | Float64Array, b: number | Float64Array): number {
  if (typeof a === "number" || typeof b === "number") return Math.abs(Number(a) - Number(b));
  let max = 0;
  for (let j = 0; j < a.length; j++) max = Math.max(max, Math.abs(at(a, j) - at(b, j)));
  return max;
}

/** `G(eps) = u + g (c - u)` over a float32 `[uncond; cond]` eps of `2 * n` values. */
export function guideFloat32(eps: Float32Array, n: number, g: number): Float32Array {
  const guided = new Float32Array(n);
  for (let j = 0; j < n; j++) {
    const u = eps[j]!;
    guided[j] = u + g * (eps[n + j]! - u);
  }
  return guided;
}

/** The DDIM-like step of the toys on float32 latents: predict x_0, re-noise to the next alpha-bar. */
export function stepFloat32(
  alphaBar: Float64Array,
  e: Float32Array,
  i: number,
  x: Float32Array,
): Float32Array {
  const a = alphaBar[i]!;
  const aNext = alphaBar[i + 1]!;
  const next = new Float32Array(x.length);
  for (let j = 0; j < x.length; j++) {
    const x0 = (x[j]! - Math.sqrt(1 - a) * e[j]!) / Math.sqrt(a);
    next[j] = Math.sqrt(aNext) * x0 + Math.sqrt(1 - aNext) * e[j]!;
  }
  return next;
}
