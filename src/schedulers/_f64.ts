/**
 * Float64 helpers that reproduce what torch computes on the CPU for double tensors.
 *
 * @module
 */

const VIEW = new DataView(new ArrayBuffer(8));

/** `x` as an exact `m · 2^e` with an integer `m` (x finite). */
function decompose(x: number): { m: bigint; e: number } {
  VIEW.setFloat64(0, x);
  const hi = VIEW.getUint32(0);
  const lo = VIEW.getUint32(4);
  const sign = hi >>> 31 ? -1n : 1n;
  const biased = (hi >>> 20) & 0x7ff;
  let m = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  if (biased !== 0) m |= 1n << 52n;
  return { m: sign * m, e: (biased === 0 ? 1 : biased) - 1075 };
}

/** `v · 2^e`, exact while the result is a normal double. */
function ldexp(v: number, e: number): number {
  let out = v;
  let k = e;
  while (k > 600) {
    out *= 2 ** 600;
    k -= 600;
  }
  while (k < -600) {
    out *= 2 ** -600;
    k += 600;
  }
  return out * 2 ** k;
}

/**
 * `a · b + c` rounded once to the nearest double (ties to even), as a fused multiply-add does.
 * Exact arithmetic through BigInt: meant for tables built once, not for inner loops.
 */
export function fmaF64(a: number, b: number, c: number): number {
  if (![a, b, c].every(Number.isFinite)) return a * b + c;
  const x = decompose(a);
  const y = decompose(b);
  const z = decompose(c);
  const pe = x.e + y.e;
  const e = Math.min(pe, z.e);
  const total = ((x.m * y.m) << BigInt(pe - e)) + (z.m << BigInt(z.e - e));
  if (total === 0n) return a * b + c; // the sign of an exact zero, as IEEE gives it
  // Keep 64 significant bits plus a sticky bit, so the one conversion to a double rounds right.
  const negative = total < 0n;
  let mag = negative ? -total : total;
  let shift = mag.toString(2).length - 64;
  if (shift > 0) {
    const sticky = (mag & ((1n << BigInt(shift)) - 1n)) !== 0n ? 1n : 0n;
    mag = (mag >> BigInt(shift)) | sticky;
  } else {
    shift = 0;
  }
  const rounded = Number(mag); // BigInt to Number rounds to nearest, ties to even
  return ldexp(negative ? -rounded : rounded, e + shift);
}

/**
 * `torch.linspace(start, end, n, dtype=torch.float64)` on the CPU, bit for bit: step
 * `(end − start) / (n − 1)`, then `start + step·i` for `i < n / 2` and `end − step·(n − 1 − i)`
 * after, each rounded once (torch's vectorised kernel contracts them to fused multiply-adds;
 * checked against torch 2.9.1 at the CogVideoX beta schedule).
 */
export function torchLinspaceF64(start: number, end: number, n: number): Float64Array {
  const out = new Float64Array(n);
  if (n === 1) {
    out[0] = start;
    return out;
  }
  const step = (end - start) / (n - 1);
  const halfway = Math.floor(n / 2);
  for (let i = 0; i < n; i++) {
    out[i] = i < halfway ? fmaF64(step, i, start) : fmaF64(-step, n - 1 - i, end);
  }
  return out;
}
