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

/**
 * A default output file name from free text: an ASCII slug of `text` (at most 48 characters)
 * plus the seed and `extension`, e.g. `rain-on-a-tin-roof_s0.wav`; `fallback` when nothing of the
 * text survives.
 */
export function slugFileName(
  text: string,
  seed: number,
  extension: string,
  fallback: string,
): string {
  const slug = text
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 48)
    .replace(/-+$/, "");
  return `${slug || fallback}_s${seed}.${extension}`;
}
