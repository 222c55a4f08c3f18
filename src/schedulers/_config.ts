/**
 * Shared by the schedulers: reading a diffusers `scheduler_config.json` object field by field
 * (each reader fills in diffusers' default for a missing field and refuses a wrong type or value
 * with one line naming the field, what it must be and what it is), and checking a step's
 * arguments.
 *
 * @module
 */

/** A field reader for one scheduler's config; `action` starts every message. */
export class ConfigFields {
  constructor(readonly obj: Readonly<Record<string, unknown>>, readonly action: string) {}

  /**
   * The object itself, or a TypeError when `raw` is not a plain object.
   *
   * @throws {TypeError}
   */
  static of(raw: unknown, action: string): ConfigFields {
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      throw new TypeError(
        `${action} as the config must be an object: current value is ${describe(raw)}`,
      );
    }
    return new ConfigFields(raw as Readonly<Record<string, unknown>>, action);
  }

  /** A string field that must be one of `allowed`. */
  literal<L extends string>(key: string, allowed: readonly L[], fallback: L): L {
    const v = this.obj[key];
    if (v === undefined) return fallback;
    if (typeof v !== "string" || !(allowed as readonly string[]).includes(v)) {
      const Ctor = typeof v === "string" ? RangeError : TypeError;
      throw new Ctor(
        `${this.action} as '${key}' must be one of ${allowed.join(", ")}: current value is ${
          describe(v)
        }`,
      );
    }
    return v as L;
  }

  /** A true/false field. */
  boolean(key: string, fallback: boolean): boolean {
    const v = this.obj[key];
    if (v === undefined) return fallback;
    if (typeof v !== "boolean") {
      throw new TypeError(
        `${this.action} as '${key}' must be true or false: current value is ${describe(v)}`,
      );
    }
    return v;
  }

  /** A finite number in `[min, maxExclusive)` (or `(min, maxExclusive)`). */
  number(
    key: string,
    fallback: number,
    min: number,
    maxExclusive: number,
    minExclusive = false,
  ): number {
    const v = this.obj[key];
    if (v === undefined) return fallback;
    if (typeof v !== "number") {
      throw new TypeError(
        `${this.action} as '${key}' must be a number: current value is ${describe(v)}`,
      );
    }
    const aboveMin = minExclusive ? v > min : v >= min;
    if (!Number.isFinite(v) || !aboveMin || !(v < maxExclusive)) {
      const lower = minExclusive ? `> ${min}` : `>= ${min}`;
      const upper = Number.isFinite(maxExclusive) ? ` and < ${maxExclusive}` : "";
      throw new RangeError(
        `${this.action} as '${key}' must be a finite number ${lower}${upper}: current value is ${v}`,
      );
    }
    return v;
  }

  /** An integer in `[min, max]`. */
  integer(key: string, fallback: number, min: number, max: number): number {
    const v = this.obj[key];
    if (v === undefined) return fallback;
    if (typeof v !== "number") {
      throw new TypeError(
        `${this.action} as '${key}' must be an integer: current value is ${describe(v)}`,
      );
    }
    if (!Number.isSafeInteger(v) || v < min || v > max) {
      throw new RangeError(
        `${this.action} as '${key}' must be an integer in ${min}..${max}: current value is ${v}`,
      );
    }
    return v;
  }
}

/** A value as a message shows it. */
export function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name}`;
  if (typeof value === "object") return "an object";
  if (typeof value === "string") return value;
  return String(value);
}

/**
 * Refuses step arguments of the wrong type or length, or an index outside `0..T-1`.
 *
 * @param action starts every message, e.g. "Cannot take a DDIM step"
 * @param outputName what the model output is called in messages ("eps", "v")
 * @throws {TypeError | RangeError}
 */
export function checkStepArgs(
  action: string,
  outputName: string,
  output: Float32Array,
  i: number,
  x: Float32Array,
  out: Float32Array | undefined,
  T: number,
): void {
  if (!(output instanceof Float32Array)) {
    throw new TypeError(
      `${action} as '${outputName}' must be a Float32Array: current value is ${describe(output)}`,
    );
  }
  if (!(x instanceof Float32Array)) {
    throw new TypeError(`${action} as 'x' must be a Float32Array: current value is ${describe(x)}`);
  }
  if (!Number.isInteger(i) || i < 0 || i >= T) {
    throw new RangeError(
      `${action} as 'i' must be an integer in 0..${T - 1}: current value is ${i}`,
    );
  }
  if (x.length !== output.length) {
    throw new RangeError(
      `${action} as 'x' must have the length of '${outputName}' (${output.length}): current value is ${x.length}`,
    );
  }
  if (out !== undefined) {
    if (!(out instanceof Float32Array)) {
      throw new TypeError(
        `${action} as 'out' must be a Float32Array: current value is ${describe(out)}`,
      );
    }
    if (out.length !== x.length) {
      throw new RangeError(
        `${action} as 'out' must have the length of 'x' (${x.length}): current value is ${out.length}`,
      );
    }
  }
}
