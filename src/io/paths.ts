/**
 * Path helpers the CLI, model resolution and output writing share. Only Windows takes `\` as a
 * separator: on Linux and macOS it is an ordinary character of a file name.
 *
 * @module
 */

const WINDOWS = Deno.build.os === "windows";

/** Whether `path` is an existing regular file (false for anything unreadable). */
export function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** Index of the last separator in `path`, or -1. */
function lastSeparator(path: string): number {
  return WINDOWS ? Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\")) : path.lastIndexOf("/");
}

/** The folder part of `path` (`.` for a bare name, `/` for a file in the root). */
export function dirname(path: string): string {
  const i = lastSeparator(path);
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

/** The last part of `path` (empty when `path` ends with a separator). */
export function basename(path: string): string {
  return path.slice(lastSeparator(path) + 1);
}

/** Whether `path` is absolute. */
export function isAbsolute(path: string): boolean {
  return path.startsWith("/") || (WINDOWS && /^([A-Za-z]:)?[\\/]/.test(path));
}

/** `name` inside `dir`, without a leading `./` for the working directory. */
export function joinPath(dir: string, name: string): string {
  if (dir === ".") return name;
  return dir.endsWith("/") || (WINDOWS && dir.endsWith("\\")) ? dir + name : `${dir}/${name}`;
}

/** The parts of `path` between separators (empty parts, from `//` or a leading `/`, dropped). */
export function pathComponents(path: string): string[] {
  return path.split(WINDOWS ? /[\\/]/ : "/").filter((c) => c !== "");
}
