/**
 * Output paths: the default name, and checking a path can be written before
 * minutes of work go into it (the checks live in ../io/output_set.ts).
 *
 * @module
 */

import { OutputPathError, OutputSet } from "../io/output_set.ts";

/** The default output file: a slug of the prompt plus the seed, in the working directory. */
export function defaultOutputName(prompt: string, seed: number, extension = "wav"): string {
  const slug = prompt
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 48)
    .replace(/-+$/, "");
  return `${slug || "audio"}_s${seed}.${extension}`;
}

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
