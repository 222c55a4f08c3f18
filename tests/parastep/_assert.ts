/**
 * Small assertion helpers for the parastep tests (no `@std/assert` here: JSR is unreachable, and
 * `node:assert` needs `@types/node`, which the manual node_modules does not carry).
 */

/** Thrown by a failed assertion. */
export class AssertionError extends Error {
  override name = "AssertionError";
}

/** Assert `condition` is truthy. */
export function assert(condition: unknown, message = "Expected a truthy value"): asserts condition {
  if (!condition) throw new AssertionError(message);
}

function show(value: unknown): string {
  return Deno.inspect(value, { depth: 6, iterableLimit: 200, strAbbreviateSize: 400 });
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  if (ArrayBuffer.isView(a) || Array.isArray(a)) {
    const x = a as ArrayLike<unknown>;
    const y = b as ArrayLike<unknown>;
    if (x.length !== y.length) return false;
    for (let j = 0; j < x.length; j++) if (!deepEqual(x[j], y[j])) return false;
    return true;
  }
  const keysA = Object.keys(a);
  const keysB = Object.keys(b);
  if (keysA.length !== keysB.length) return false;
  const recordA = a as Record<string, unknown>;
  const recordB = b as Record<string, unknown>;
  return keysA.every((key) => Object.hasOwn(b, key) && deepEqual(recordA[key], recordB[key]));
}

/** Assert `actual` equals `expected` structurally (`Object.is` on leaves, prototypes must match). */
export function assertEquals(actual: unknown, expected: unknown, message?: string): void {
  if (!deepEqual(actual, expected)) {
    throw new AssertionError(
      `${message === undefined ? "" : `${message}: `}expected ${show(expected)}, got ${
        show(actual)
      }`,
    );
  }
}

/** Assert `actual !== expected` structurally. */
export function assertNotEquals(actual: unknown, expected: unknown, message?: string): void {
  if (deepEqual(actual, expected)) {
    throw new AssertionError(`${message === undefined ? "" : `${message}: `}expected a difference`);
  }
}

/** Error constructors accepted by the throw assertions. */
// deno-lint-ignore no-explicit-any -- any constructor of an Error subclass, whatever its arguments
type ErrorClass<T extends Error> = abstract new (...args: any[]) => T;

function checkError<T extends Error>(
  error: unknown,
  Class: ErrorClass<T>,
  includes: string | undefined,
): T {
  if (!(error instanceof Class)) {
    throw new AssertionError(`Expected a ${Class.name}, got ${show(error)}`);
  }
  if (includes !== undefined && !error.message.includes(includes)) {
    throw new AssertionError(
      `Expected the message to include ${show(includes)}, got ${show(error.message)}`,
    );
  }
  return error;
}

/** Assert `fn` throws an instance of `Class` whose message includes `includes`; returns it. */
export function assertThrows<T extends Error>(
  fn: () => unknown,
  Class: ErrorClass<T>,
  includes?: string,
): T {
  try {
    fn();
  } catch (error) {
    return checkError(error, Class, includes);
  }
  throw new AssertionError(`Expected a ${Class.name} to be thrown`);
}

/** Assert `promise` rejects with an instance of `Class` whose message includes `includes`. */
export async function assertRejects<T extends Error>(
  promise: Promise<unknown> | (() => Promise<unknown>),
  Class: ErrorClass<T>,
  includes?: string,
): Promise<T> {
  try {
    await (typeof promise === "function" ? promise() : promise);
  } catch (error) {
    return checkError(error, Class, includes);
  }
  throw new AssertionError(`Expected a rejection with a ${Class.name}`);
}
