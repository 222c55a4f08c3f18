/**
 * Atomic file replacement: write a temporary file beside the target, flush it to disk, rename it
 * over the target. Readers see either the old file or the whole new one, never a partial write.
 *
 * @module
 */

import { dirname } from "./paths.ts";

/**
 * The error thrown when {@linkcode writeFileAtomic} fails. The message is one line that names the
 * target path and the reason; `cause` holds the underlying error (for example a
 * `Deno.errors.PermissionDenied` or `Deno.errors.NotFound`), so a CLI can branch on it.
 */
export class WriteFileError extends Error {
  /** The path that could not be written. */
  readonly path: string;

  /**
   * @param path The target path.
   * @param reason What went wrong, one line.
   * @param cause The underlying error.
   */
  constructor(path: string, reason: string, cause: unknown) {
    super(`Cannot write '${path}': ${reason}`, { cause });
    this.name = "WriteFileError";
    this.path = path;
  }
}

/** Temporary files of writes in progress in this realm (see {@linkcode removePendingWrites}). */
const pending = new Set<string>();

/**
 * Remove the temporary files of every {@linkcode writeFileAtomic} still in progress, at once and
 * synchronously: for a process about to end without finishing them (a forced exit). Targets are
 * never touched: each is either the old file or the whole new one.
 *
 * @returns The temporary files removed.
 */
export function removePendingWrites(): string[] {
  const removed: string[] = [];
  for (const tmp of pending) {
    try {
      Deno.removeSync(tmp);
      removed.push(tmp);
    } catch {
      // Already renamed into place or gone: nothing partial is left.
    }
  }
  pending.clear();
  return removed;
}

/**
 * Write `bytes` to `path` atomically.
 *
 * 1. Create `<path>.tmp-<pid>-<random>` in the same directory (same file system, so the rename is
 *    atomic), failing if that name exists.
 * 2. Write all bytes, then `fsync` the file (`FsFile.sync`; skipped where the platform lacks it).
 * 3. Rename it over `path`, replacing an existing file.
 *
 * On any error the temporary file is removed and a {@linkcode WriteFileError} naming `path` is
 * thrown. The new file gets the default mode (0o666 minus the umask); an existing file's mode is not
 * kept.
 *
 * @param path The target file. Its directory must exist and be writable.
 * @param bytes The content.
 * @returns Resolves once the file is in place.
 * @throws {WriteFileError} If any step fails (missing or unwritable directory, disk full, ...).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { writeFileAtomic } from "./atomic.ts";
 * const dir = await Deno.makeTempDir();
 * await writeFileAtomic(`${dir}/out.txt`, new TextEncoder().encode("hello"));
 * assert.ok((await Deno.readTextFile(`${dir}/out.txt`)) === "hello");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const suffix = crypto.getRandomValues(new Uint32Array(1))[0]!.toString(16).padStart(8, "0");
  const tmp = `${path}.tmp-${Deno.pid}-${suffix}`;
  let created = false;
  let step = "create";
  try {
    pending.add(tmp);
    const file = await Deno.open(tmp, { write: true, createNew: true });
    created = true;
    step = "write";
    try {
      let written = 0;
      while (written < bytes.length) written += await file.write(bytes.subarray(written));
      await syncIfAvailable(file);
    } finally {
      file.close();
    }
    step = "rename";
    await Deno.rename(tmp, path);
    created = false;
  } catch (err) {
    if (created) {
      try {
        await Deno.remove(tmp);
      } catch {
        // The temporary file is already gone or cannot be removed; the original error matters.
      }
    }
    throw new WriteFileError(path, await describe(err, step, path), err);
  } finally {
    pending.delete(tmp);
  }
}

/** One-line reason for a failed step, clearer than the OS text for the common cases. */
async function describe(err: unknown, step: string, path: string): Promise<string> {
  const dir = dirname(path);
  if (step === "create" && err instanceof Deno.errors.NotFound && !(await isDirectory(dir))) {
    return `the directory '${dir}' does not exist`;
  }
  if (step === "create" && err instanceof Deno.errors.PermissionDenied) {
    return `permission denied to create files in '${dir}'`;
  }
  if (step === "rename" && err instanceof Deno.errors.IsADirectory) {
    return "the path is a directory";
  }
  const message = err instanceof Error ? err.message : String(err);
  return `${step} failed: ${message}`;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

async function syncIfAvailable(file: Deno.FsFile): Promise<void> {
  try {
    await file.sync();
  } catch (err) {
    // Some platforms and file systems do not implement fsync; durability is best effort there.
    if (err instanceof Deno.errors.NotSupported) return;
    throw err;
  }
}
