/**
 * Output paths: the default name, and checking a path can be written before
 * minutes of work go into it (the checks live in ../io/output_set.ts).
 *
 * @module
 */

import { OutputPathError, OutputSet } from "../io/output_set.ts";

export { OutputPathError };

/**
 * Checks, before any work, that `path` can be created or replaced (see
 * {@linkcode OutputSet.plan}). Nothing is left behind.
 *
 * @throws {OutputPathError} saying which and why
 */
export function checkWritable(path: string, what = "the output"): void {
  OutputSet.plan([{ path, label: what }]);
}
