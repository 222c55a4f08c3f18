/**
 * Comparing computed tensors with reference outputs.
 *
 * @module
 */

/**
 * The largest absolute difference relative to the reference's largest
 * magnitude (so values near zero do not blow it up), with where it occurs.
 */
export function relativeError(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
): { rel: number; maxAbs: number; index: number } {
  if (got.length !== want.length) {
    throw new RangeError(`lengths differ: ${got.length} vs ${want.length}`);
  }
  let maxAbs = 0;
  let index = -1;
  let scale = 0;
  for (let k = 0; k < want.length; k++) {
    const d = Math.abs(got[k]! - want[k]!);
    if (!(d <= maxAbs)) {
      maxAbs = d;
      index = k;
    }
    scale = Math.max(scale, Math.abs(want[k]!));
  }
  return { rel: scale === 0 ? maxAbs : maxAbs / scale, maxAbs, index };
}
