/**
 * Validation shared by the ParaStep and BatchStep plans.
 *
 * @module
 */

/** Throws a `RangeError` naming `name` unless `value` is an integer >= 1. */
export function checkCount(method: string, name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(
      `Cannot run ${method} as '${name}' must be an integer >= 1: current value is ${value}`,
    );
  }
}

/** Throws a `RangeError` unless `T >= 1` and `1 <= W <= T`, all integers. */
export function checkStepsAndWarmup(method: string, T: number, W: number): void {
  checkCount(method, "steps", T);
  checkCount(method, "warmup", W);
  if (W > T) {
    throw new RangeError(
      `Cannot run ${method} as 'warmup' must be <= 'steps' (${T}): current value is ${W}`,
    );
  }
}
