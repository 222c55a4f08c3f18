/**
 * Output paths: the default name, and checking a path can be written before
 * minutes of work go into it.
 *
 * @module
 */

import { dirname } from "../io/paths.ts";

/** The output cannot be written: bad input, exit code 2. */
export class OutputPathError extends Error {
  override name = "OutputPathError";
}

/**
 * Checks that `path` can be created or replaced: its folder exists and takes
 * new files, and `path` is not a folder. Nothing is left behind.
 *
 * @throws {OutputPathError} saying which and why
 */
export function checkWritable(path: string, what = "the output"): void {
  const dir = dirname(path);
  let stat: Deno.FileInfo;
  try {
    stat = Deno.statSync(dir);
  } catch {
    throw new OutputPathError(`Cannot write ${what} '${path}': the folder '${dir}' does not exist`);
  }
  if (!stat.isDirectory) {
    throw new OutputPathError(`Cannot write ${what} '${path}': '${dir}' is not a folder`);
  }
  try {
    if (Deno.statSync(path).isDirectory) {
      throw new OutputPathError(`Cannot write ${what} '${path}': it is a folder`);
    }
  } catch (e) {
    if (e instanceof OutputPathError) throw e;
  }
  let probe: string;
  try {
    probe = Deno.makeTempFileSync({ dir, prefix: ".parastep-write-check-" });
  } catch (e) {
    const reason = e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable
      ? "permission denied"
      : (e as Error).message;
    throw new OutputPathError(`Cannot write ${what} '${path}': ${reason} in '${dir}'`);
  }
  Deno.removeSync(probe);
}
