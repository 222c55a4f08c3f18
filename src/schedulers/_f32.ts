/**
 * Float32 helpers that reproduce what torch computes on the CPU, and numpy's rounding.
 *
 * @module
 */

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/** The next float32 after `x` (a float32) towards +Infinity. */
function nextUp(x: number): number {
  if (x === 0) return 1.401298464324817e-45; // smallest positive subnormal
  F32[0] = x;
  U32[0] = x > 0 ? U32[0]! + 1 : U32[0]! - 1;
  return F32[0]!;
}

/** The next float32 before `x` (a float32) towards -Infinity. */
function nextDown(x: number): number {
  return -nextUp(-x);
}

/**
 * Round the exact value `a + b` (two doubles) to float32 once, as a fused multiply-add does when
 * `b` is an exact product. `Math.fround(a + b)` alone could round twice (first to double).
 */
function roundSumToF32(a: number, b: number): number {
  const s = a + b;
  // TwoSum (Knuth): the exact error of the double addition.
  const bv = s - a;
  const err = (a - (s - bv)) + (b - bv);
  const r = Math.fround(s);
  if (err === 0 || r === s || !Number.isFinite(s)) return r;
  const other = r > s ? nextDown(r) : nextUp(r);
  if (Math.abs(s - r) !== Math.abs(s - other)) return r; // s is not a float32 midpoint
  // s sits exactly between two float32 values: the sign of the error decides.
  return err > 0 ? Math.max(r, other) : Math.min(r, other);
}

/**
 * `torch.linspace(start, end, n, dtype=torch.float32)` on the CPU, bit for bit.
 *
 * torch's CPU kernel (`aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp`) casts `start` and `end`
 * to float32, takes `step = (end - start) / (n - 1)` in float32, and computes
 * `start + step * i` for `i < n / 2` and `end - step * (n - 1 - i)` otherwise. torch's AVX2 and
 * AVX512 builds of that kernel (the ones x86-64 machines run) contract these to fused multiply-adds,
 * so each value is rounded once; that is what this function does. (With
 * `ATEN_CPU_CAPABILITY=default` torch rounds the product first, which differs by one ulp on some
 * values.)
 *
 * @param start First value (rounded to float32).
 * @param end Last value (rounded to float32).
 * @param n Number of values, at least 1.
 * @returns The values, float32-exact, in a Float64Array.
 */
export function torchLinspaceF32(start: number, end: number, n: number): Float64Array {
  const out = new Float64Array(n);
  const s = Math.fround(start);
  const e = Math.fround(end);
  if (n === 1) {
    out[0] = s;
    return out;
  }
  const step = Math.fround(Math.fround(e - s) / (n - 1));
  const halfway = Math.floor(n / 2);
  for (let i = 0; i < n; i++) {
    // step * i is exact in a double (24-bit step times an integer below 2^29).
    out[i] = i < halfway ? roundSumToF32(s, step * i) : roundSumToF32(e, -(step * (n - 1 - i)));
  }
  return out;
}

/**
 * `torch.cumprod` of a float32 vector on the CPU: torch accumulates in double
 * (`acc_type<float, false>` is double) and rounds each output to float32.
 *
 * @param values Float32 values.
 * @returns The running products, each rounded to float32.
 */
export function torchCumprodF32(values: Float64Array): Float64Array {
  const out = new Float64Array(values.length);
  let acc = 1;
  for (let i = 0; i < values.length; i++) {
    acc *= values[i]!;
    out[i] = Math.fround(acc);
  }
  return out;
}

/**
 * `np.round` for one double: round half to even (numpy rounds 812.5 to 812, `Math.round` to 813).
 *
 * @param x Any finite number.
 * @returns The nearest integer, ties to even.
 */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f; // exact for |x| < 2^52
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}
