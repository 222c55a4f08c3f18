import assert from "node:assert/strict";
import { GaussianStream, randn, Sfc64 } from "../src/random.ts";
import { assertAllClose, loadJson } from "./fixtures/mod.ts";

interface Sfc64Case {
  readonly seed: string;
  readonly raw: string[];
  readonly uniform: number[];
  readonly normal_f32: number[];
}

const SFC64 = (await loadJson("random", "sfc64.json")) as { cases: Sfc64Case[] };
const seedOf = (s: string): number | bigint =>
  BigInt(s) <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(s) : BigInt(s);

/**
 * Normals against numpy's Box-Muller on the same uniforms: the uniforms are bit-exact, so only
 * Math.log/cos/sin vs numpy's libm can differ (last bit of a double, before rounding to float32).
 */
const NORMAL_TOL = { rtol: 1.2e-7, atol: 1e-12 } as const;

/** Number of samples for the statistical checks. */
const N_STAT = 1_000_000;

Deno.test("random Sfc64 raw outputs and uniforms equal numpy's SFC64 from the same state", () => {
  assert.ok(SFC64.cases.length >= 5);
  for (const c of SFC64.cases) {
    const rng = new Sfc64(seedOf(c.seed));
    const raw = c.raw.map(() => rng.nextUint64());
    assert.deepEqual(raw, c.raw.map(BigInt), `seed ${c.seed}: raw`);
    const rng2 = new Sfc64(seedOf(c.seed));
    const u = c.uniform.map(() => rng2.nextFloat64());
    assert.deepEqual(u, c.uniform, `seed ${c.seed}: uniforms`);
  }
});

Deno.test("random randn equals numpy's Box-Muller of the same uniforms (float32)", () => {
  let worst = 0;
  for (const c of SFC64.cases) {
    const z = randn(seedOf(c.seed), c.normal_f32.length);
    const d = assertAllClose(z, c.normal_f32, NORMAL_TOL, `seed ${c.seed}: normals`);
    worst = Math.max(worst, d.maxAbs);
  }
  console.log(`randn vs numpy Box-Muller: max abs diff ${worst}`);
});

Deno.test("random the same seed gives identical bytes; seeds as number and bigint agree", () => {
  const a = randn(12345, 10_001);
  const b = randn(12345, 10_001);
  assert.deepEqual(new Uint8Array(a.buffer), new Uint8Array(b.buffer));
  assert.deepEqual(randn(2 ** 53 - 1, 64), randn(2n ** 53n - 1n, 64));
});

Deno.test("random different seeds give different streams", () => {
  const seeds = [0, 1, 2, 3, 2 ** 32, 2 ** 32 + 1, 2 ** 53 - 1];
  const streams = seeds.map((s) => randn(s, 256));
  for (let i = 0; i < streams.length; i++) {
    for (let j = i + 1; j < streams.length; j++) {
      let same = 0;
      for (let k = 0; k < 256; k++) if (streams[i]![k] === streams[j]![k]) same++;
      assert.ok(same <= 1, `seeds ${seeds[i]} and ${seeds[j]} share ${same} of 256 values`);
    }
  }
});

Deno.test("random randn(seed, n) is a prefix of randn(seed, m), and chunked streams match", () => {
  const whole = randn(99, 1001);
  for (const n of [0, 1, 2, 3, 500, 1000]) assert.deepEqual(randn(99, n), whole.subarray(0, n));
  const stream = new GaussianStream(99);
  const parts = [1, 3, 0, 2, 7, 488, 500].map((n) => stream.next(n));
  const joined = new Float32Array(1001);
  let off = 0;
  for (const p of parts) {
    joined.set(p, off);
    off += p.length;
  }
  assert.deepEqual(joined, whole);
});

/** Standard normal CDF via erfc (Numerical Recipes' erfcc, fractional error < 1.2e-7). */
function normalCdf(x: number): number {
  const z = Math.abs(x) / Math.SQRT2;
  const t = 1 / (1 + 0.5 * z);
  const r = t * Math.exp(
    -z * z - 1.26551223 +
      t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 +
                          t *
                            (-1.13520398 +
                              t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
  );
  return x >= 0 ? 1 - r / 2 : r / 2;
}

Deno.test("random 1e6 samples: mean, variance, kurtosis, lag-1 correlation and KS within bounds", () => {
  for (const seed of [0, 20240607]) {
    const z = randn(seed, N_STAT);
    let s1 = 0, s2 = 0, s4 = 0, lag = 0;
    for (let k = 0; k < N_STAT; k++) {
      const v = z[k]!;
      s1 += v;
      s2 += v * v;
      s4 += v * v * v * v;
      if (k > 0) lag += v * z[k - 1]!;
    }
    const mean = s1 / N_STAT;
    const variance = s2 / N_STAT - mean * mean;
    const excessKurtosis = s4 / N_STAT / (variance * variance) - 3;
    const corr = lag / N_STAT;
    // Bounds are 5 standard errors of each estimator for N(0, 1): 1/√n, √(2/n), √(24/n), 1/√n.
    const se = (v: number) => 5 * Math.sqrt(v / N_STAT);
    assert.ok(Math.abs(mean) < se(1), `seed ${seed}: mean ${mean}`);
    assert.ok(Math.abs(variance - 1) < se(2), `seed ${seed}: variance ${variance}`);
    assert.ok(Math.abs(excessKurtosis) < se(24), `seed ${seed}: excess kurtosis ${excessKurtosis}`);
    assert.ok(Math.abs(corr) < se(1), `seed ${seed}: lag-1 correlation ${corr}`);

    // Kolmogorov-Smirnov: D = sup |F_n(x) - Φ(x)|; P(√n·D > 1.95) ≈ 0.001.
    const sorted = z.slice().sort();
    let d = 0;
    for (let k = 0; k < N_STAT; k++) {
      const f = normalCdf(sorted[k]!);
      d = Math.max(d, (k + 1) / N_STAT - f, f - k / N_STAT);
    }
    assert.ok(
      Math.sqrt(N_STAT) * d < 1.95,
      `seed ${seed}: KS statistic √n·D = ${Math.sqrt(N_STAT) * d}`,
    );
    // Tails: both Box-Muller outputs are used, so |z| > 4 appears at its normal rate (6.3e-5).
    let tail = 0;
    for (const v of z) if (Math.abs(v) > 4) tail++;
    const expectedTail = 2 * (1 - normalCdf(4)) * N_STAT;
    assert.ok(
      Math.abs(tail - expectedTail) < 5 * Math.sqrt(expectedTail),
      `seed ${seed}: ${tail} values beyond 4σ`,
    );
  }
});

Deno.test("random refuses seeds and lengths out of range", () => {
  assert.throws(
    () => randn(-1, 4),
    /'seed' must be an integer in 0..2\^53-1: current value is -1$/,
  );
  assert.throws(() => randn(1.5, 4), RangeError);
  assert.throws(() => randn(2 ** 53, 4), RangeError);
  assert.throws(() => randn(2n ** 64n, 4), /bigint 'seed' must be in 0..2\^64-1/);
  assert.throws(() => randn("1" as unknown as number, 4), TypeError);
  assert.throws(
    () => randn(0, -1),
    /'length' must be a non-negative integer: current value is -1$/,
  );
});
