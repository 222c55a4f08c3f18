/**
 * Atomic replacement of one file: a one-file {@linkcode OutputSet} (see ./output_set.ts for the
 * guarantees). Readers see either the old file or the whole new one, never a partial write.
 *
 * @module
 */

import { OutputSet, removePendingWrites, WriteFileError } from "./output_set.ts";

export { removePendingWrites, WriteFileError };

/**
 * Write `bytes` to `path` atomically.
 *
 * 1. Create `.ps-<8 hex>.tmp` in the folder of the target (same file system, so the rename is
 *    atomic; a short name, so any legal target name works), failing if that name exists.
 * 2. Write all bytes, give the file the mode (and, where allowed, the owner) of the file it
 *    replaces, then `fsync` it (skipped where the platform lacks it).
 * 3. Rename it over the target, replacing an existing file. A symbolic link is followed: its final
 *    target is replaced and the link stays.
 *
 * On any error, or an abort of `signal` before the rename, the temporary file is removed and the
 * target is untouched. A target that exists and is not a regular file (a folder, a device) is
 * refused.
 *
 * @param path The target file. Its folder must exist and be writable.
 * @param bytes The content.
 * @param options `signal`: aborting it before the rename leaves nothing behind and rethrows its
 *   reason.
 * @returns Resolves once the file is in place.
 * @throws {WriteFileError} If any step fails (missing or unwritable folder, disk full, ...).
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
export async function writeFileAtomic(
  path: string,
  bytes: Uint8Array,
  options: { signal?: AbortSignal } = {},
): Promise<void> {
  await OutputSet.write([{ path, content: bytes }], options);
}
