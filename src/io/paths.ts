/**
 * Two path helpers the CLI, model resolution and atomic writes share.
 *
 * @module
 */

/** Whether `path` is an existing regular file (false for anything unreadable). */
export function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** The folder part of `path` (`.` for a bare name, `/` for a file in the root). */
export function dirname(path: string): string {
  const i = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return i < 0 ? "." : i === 0 ? "/" : path.slice(0, i);
}
