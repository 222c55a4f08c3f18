/**
 * Output sets: the files one run writes (a WAV and its spectrogram; a video, its preview and its
 * frames), checked before any work and then written as one transaction.
 *
 * Two stages:
 *
 * 1. {@linkcode OutputSet.plan}, before any work, checks every path and throws an
 *    {@linkcode OutputPathError} (bad input: exit 2) for anything that can be known then.
 * 2. {@linkcode OutputSet.commit}, once the contents exist, writes them all or none, and throws a
 *    {@linkcode WriteFileError} (exit 1) or, when its signal was aborted, the signal's reason.
 *
 * Guarantees of `commit`, for a set of n files (what a reader of the outputs can observe):
 *
 * - **Each file is whole.** A reader of any output path sees either its previous content or the
 *   complete new one, never a partial file: the content goes to a temporary file in the same folder,
 *   is flushed to disk (fsync), and is renamed over the target (rename(2) is atomic).
 * - **All or none.** If commit throws (a write error, a full disk, a rename that fails, or an abort
 *   before the last rename), every target is as it was when commit started: a file that existed has
 *   its previous content, inode, mode and owner (restored from a hard link kept until the last
 *   rename succeeded), a target that did not exist does not exist, and no temporary or backup file
 *   and no folder this run created is left. Readers may briefly see some new files before they are
 *   put back; there is no moment when an existing target is missing.
 * - **Nothing it did not create is removed.** Rollback removes only the temporary and backup files it
 *   created (opened with O_EXCL / linked under fresh names), new outputs it renamed into place
 *   (checked by inode first, so a file another process put there since stays), and folders it
 *   created (only while empty).
 * - **Interrupts.** An abort of `signal` before the last rename rolls back as above and rethrows the
 *   signal's reason; after the last rename the set is written and commit resolves.
 * - **Overwrites.** An existing target is replaced; the new file gets the old one's permission bits
 *   and, where the process may set them, its owner and group. A symbolic link is followed: its final
 *   target is written, the link stays. Targets that exist and are not regular files (folders,
 *   devices, FIFOs, sockets) are refused.
 * - **Names.** Temporary files are `.ps-<8 hex>.tmp` and backups `.ps-<8 hex>.bak` beside the target
 *   (hidden from a plain listing, 16 bytes, so any legal target name also has a legal temporary
 *   name).
 * - **Concurrency.** Two commits to the same path leave one complete file, the one renamed last.
 *
 * Not guaranteed: a crash or SIGKILL during commit, or a power loss, can leave `.ps-*.tmp` /
 * `.ps-*.bak` files, and a set with some targets new and others old (each file still whole). With
 * one file there is no backup step: the rename is the only change. Extended attributes and ACLs of
 * a replaced file are not carried over; other hard links to it keep the old content.
 *
 * @module
 */

import { basename, dirname, isAbsolute, joinPath, pathComponents } from "./paths.ts";

/** Longest file or folder name, in bytes (Linux NAME_MAX and most file systems). */
export const NAME_MAX = 255;
/** Longest path, in bytes, including the terminating NUL the kernel counts (Linux PATH_MAX). */
export const PATH_MAX = 4096;
/** Symbolic links followed before giving up, as Linux does (ELOOP after 40). */
const MAX_LINK_HOPS = 40;
/** Bytes written per call: the abort signal is checked between chunks. */
const CHUNK = 1 << 20;

/**
 * An output path cannot be used; known before any work is done. Exit code 2. The message is one
 * line that names the output and the reason.
 */
export class OutputPathError extends Error {
  override name = "OutputPathError";
  /** The path as given, when the error is about one path. */
  readonly path: string | undefined;

  /**
   * @param message One line naming the output and the problem.
   * @param path The path as given.
   */
  constructor(message: string, path?: string) {
    super(message);
    this.path = path;
  }
}

/**
 * Writing an output failed while writing. The message is one line that names the path and the
 * reason; `cause` holds the underlying error (for example a `Deno.errors.PermissionDenied`), so a
 * CLI can branch on it. Exit code 1.
 */
export class WriteFileError extends Error {
  /** The path that could not be written, as given. */
  readonly path: string;

  /**
   * @param path The target path.
   * @param reason What went wrong, one line.
   * @param cause The underlying error.
   */
  constructor(path: string, reason: string, cause?: unknown) {
    super(`Cannot write '${path}': ${reason}`, { cause });
    this.name = "WriteFileError";
    this.path = path;
  }
}

/** One file of a set, as the user named it. */
export interface OutputTarget {
  /** The path as given; messages name it. */
  readonly path: string;
  /** What it is, for messages: "the output", "the spectrogram", ... (default "the output"). */
  readonly label?: string;
  /**
   * Create the missing folders above `path` during commit (and remove them again, while empty, on
   * rollback). Default false: the folder must exist, or `plan` refuses the path.
   */
  readonly createFolders?: boolean;
}

/** One file of a planned set. */
export interface PlannedOutput {
  /** The path as given. */
  readonly path: string;
  /** What it is, for messages. */
  readonly label: string;
  /** The file commit replaces or creates: `path`, or the end of its chain of symbolic links. */
  readonly target: string;
  /** Whether a regular file was at `target` when planned. */
  readonly exists: boolean;
}

/** A file's content: the bytes, or a function that produces them when commit reaches that file. */
export type OutputContent = Uint8Array | (() => Uint8Array | Promise<Uint8Array>);

/** A step of {@linkcode OutputSet.commit}, reported before it runs. */
export interface CommitStep {
  /** stage: produce and write the temporary file; backup: hard-link the old file; rename. */
  readonly phase: "stage" | "backup" | "rename";
  /** Index of the file in the set. */
  readonly index: number;
  /** The file's path as given. */
  readonly path: string;
}

/** Options of {@linkcode OutputSet.commit}. */
export interface CommitOptions {
  /** Aborting it before the last rename rolls everything back; commit then throws its reason. */
  readonly signal?: AbortSignal;
  /**
   * Called before each step (progress, tests). An error it throws fails that step as a file system
   * error would: the set is rolled back.
   */
  readonly onStep?: (step: CommitStep) => void | Promise<void>;
}

/** One file a commit wrote. */
export interface WrittenOutput {
  /** The path as given. */
  readonly path: string;
  /** The file written (the end of the symbolic links). */
  readonly target: string;
  /** Whether it replaced an existing file. */
  readonly replaced: boolean;
  /** Its size in bytes. */
  readonly bytes: number;
}

/** What a target resolves to now. */
interface Inspected {
  readonly path: string;
  readonly label: string;
  readonly target: string;
  /** The folder of `target`. */
  readonly dir: string;
  /** Folders to create, outermost first (only with createFolders). */
  readonly missingFolders: readonly string[];
  /** The regular file at `target`, if any. */
  readonly existing: Deno.FileInfo | null;
  /** Equal for two targets that are the same file. */
  readonly identity: string;
}

/** A reason a target cannot be written; becomes an OutputPathError or a WriteFileError. */
class Problem {
  constructor(readonly reason: string, readonly cause?: unknown) {}
}

/**
 * Files checked before any work and written later as one transaction (see the module
 * documentation for the guarantees).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { OutputSet } from "./output_set.ts";
 * const dir = await Deno.makeTempDir();
 * const outputs = OutputSet.plan([
 *   { path: `${dir}/a.wav`, label: "the output" },
 *   { path: `${dir}/a.png`, label: "the spectrogram" },
 * ]);
 * // ... minutes of work ...
 * await outputs.commit([new Uint8Array([1, 2]), () => new Uint8Array([3])]);
 * assert.deepEqual(await Deno.readFile(`${dir}/a.png`), new Uint8Array([3]));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class OutputSet {
  readonly #targets: readonly OutputTarget[];
  /** The planned files, in the order given. */
  readonly files: readonly PlannedOutput[];

  private constructor(targets: readonly OutputTarget[], inspected: readonly Inspected[]) {
    this.#targets = targets;
    this.files = inspected.map((f) => ({
      path: f.path,
      label: f.label,
      target: f.target,
      exists: f.existing !== null,
    }));
  }

  /**
   * Checks every target now, before any work, and creates nothing (a probe file is created and
   * removed in each folder). Refused: an empty path; a name over {@linkcode NAME_MAX} bytes or a
   * path over `PATH_MAX - 1` bytes (also for the temporary file beside it); a path ending in a
   * folder (`/`, `.`, `..`); a target that exists and is not a regular file, also at the end of a
   * symbolic link; a folder that does not exist (unless `createFolders`) or is not a folder; a
   * folder where no file can be created (permissions, read-only file system, a name too long for
   * that file system); two targets that are the same file.
   *
   * @param targets The files of the set.
   * @throws {OutputPathError} naming the first target that cannot be written and why.
   */
  static plan(targets: readonly OutputTarget[]): OutputSet {
    const inspected = inspectAll(
      targets,
      true,
      (t, reason) =>
        new OutputPathError(
          `Cannot write ${t.label ?? "the output"} '${t.path}': ${reason}`,
          t.path,
        ),
    );
    return new OutputSet(targets, inspected);
  }

  /**
   * Plans and commits at once, for files whose paths were not checked before the work (all errors
   * are then {@linkcode WriteFileError}s).
   *
   * @param files The files and their contents.
   * @param options As for {@linkcode OutputSet.commit}.
   * @returns What was written.
   * @throws {WriteFileError} naming the file that failed and why; nothing was changed.
   */
  static write(
    files: readonly (OutputTarget & { readonly content: OutputContent })[],
    options: CommitOptions = {},
  ): Promise<WrittenOutput[]> {
    const set = new OutputSet(files, inspectAll(files, false, writeError));
    return set.commit(files.map((f) => f.content), options);
  }

  /**
   * Writes `contents[i]` to file i, all or none (see the module documentation). The targets are
   * checked again first, since time has passed since `plan`; a problem found now is a
   * {@linkcode WriteFileError}.
   *
   * @param contents One content per planned file, in the same order.
   * @param options The abort signal, and a step observer.
   * @returns What was written.
   * @throws {WriteFileError} naming the file that failed and why; nothing was changed.
   * @throws the signal's reason when it was aborted before the last rename; nothing was changed.
   */
  async commit(
    contents: readonly OutputContent[],
    options: CommitOptions = {},
  ): Promise<WrittenOutput[]> {
    if (contents.length !== this.#targets.length) {
      throw new TypeError(
        `commit got ${contents.length} contents for ${this.#targets.length} planned files`,
      );
    }
    const { signal, onStep } = options;
    signal?.throwIfAborted();
    const files = inspectAll(this.#targets, false, writeError);
    const tx = new Transaction(files);
    active.add(tx);
    let index = 0;
    let phase: CommitStep["phase"] = "stage";
    const step = async (next: CommitStep["phase"], i: number) => {
      phase = next;
      index = i;
      await onStep?.({ phase, index, path: files[i]!.path });
      signal?.throwIfAborted();
    };
    try {
      for (const i of files.keys()) {
        await step("stage", i);
        await tx.stage(i, contents[i]!, signal);
      }
      // One file needs no backup: its rename is the only change, so a failure changes nothing.
      if (files.length > 1) {
        for (const i of files.keys()) {
          await step("backup", i);
          await tx.backup(i);
        }
      }
      for (const i of files.keys()) {
        await step("rename", i);
        await tx.rename(i);
      }
    } catch (e) {
      const unrestored = await tx.rollback();
      active.delete(tx);
      if (signal?.aborted && e === signal.reason && unrestored.length === 0) throw e;
      const file = files[index]!;
      const reason = signal?.aborted && e === signal.reason
        ? "interrupted"
        : describeFailure(e, phase, file);
      const changed = unrestored.length > 0
        ? `; ${unrestored.join("; ")}`
        : files.length > 1
        ? "; no output was changed"
        : "";
      throw new WriteFileError(file.path, reason + changed, e);
    }
    active.delete(tx);
    await tx.finish();
    return files.map((f, i) => ({
      path: f.path,
      target: f.target,
      replaced: tx.replaced[i]!,
      bytes: tx.sizes[i]!,
    }));
  }
}

/** Commits in progress in this realm (see {@linkcode removePendingWrites}). */
const active = new Set<Transaction>();

/**
 * Undo every commit still in progress in this realm, at once and synchronously, for a process
 * about to end without finishing them (a forced exit): temporary files removed, targets already
 * renamed put back from their backups (or removed when new), created folders removed while empty.
 * Best effort; nothing waits.
 *
 * @returns The targets that could not be put back, one line each.
 */
export function removePendingWrites(): string[] {
  const unrestored = [...active].flatMap((tx) => tx.rollbackSync());
  active.clear();
  return unrestored;
}

const writeError = (t: OutputTarget, reason: string, cause?: unknown) =>
  new WriteFileError(t.path, reason, cause);

/** Inspects every target, refusing problems and two targets that are the same file. */
function inspectAll(
  targets: readonly OutputTarget[],
  probe: boolean,
  toError: (t: OutputTarget, reason: string, cause?: unknown) => Error,
): Inspected[] {
  const inspected = targets.map((t) => {
    try {
      return inspect(t, probe);
    } catch (e) {
      if (e instanceof Problem) throw toError(t, e.reason, e.cause);
      throw e;
    }
  });
  const seen = new Map<string, Inspected>();
  for (const [k, f] of inspected.entries()) {
    const other = seen.get(f.identity);
    if (other) {
      throw toError(targets[k]!, `it is the same file as ${other.label} '${other.path}'`);
    }
    seen.set(f.identity, f);
  }
  return inspected;
}

/** The files a commit has made so far, and how to undo them. */
class Transaction {
  readonly #files: readonly Inspected[];
  readonly #temps: (string | undefined)[] = [];
  /** dev:ino of each staged file, to recognise it after its rename. */
  readonly #tempIds: string[] = [];
  readonly #backups: (string | undefined)[] = [];
  readonly #renamed: boolean[] = [];
  readonly #createdFolders: string[] = [];
  readonly replaced: boolean[] = [];
  readonly sizes: number[] = [];

  constructor(files: readonly Inspected[]) {
    this.#files = files;
  }

  /** Produces file i's content and writes it, flushed, to a fresh temporary file beside it. */
  async stage(i: number, content: OutputContent, signal: AbortSignal | undefined): Promise<void> {
    const f = this.#files[i]!;
    for (const folder of f.missingFolders) {
      try {
        await Deno.mkdir(folder);
        this.#createdFolders.push(folder);
      } catch (e) {
        // Another file of the set, or another process, made it first: fine, and not ours to remove.
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      }
    }
    const bytes = typeof content === "function" ? await content() : content;
    signal?.throwIfAborted();
    const { path: tmp, file } = await createUnique(f.dir, ".tmp");
    this.#temps[i] = tmp;
    try {
      for (let off = 0; off < bytes.length;) {
        signal?.throwIfAborted();
        off += await file.write(bytes.subarray(off, Math.min(off + CHUNK, bytes.length)));
      }
      if (f.existing) await keepModeAndOwner(tmp, file, f.existing);
      await syncIfAvailable(file);
      const info = await file.stat();
      this.#tempIds[i] = `${info.dev}:${info.ino}`;
    } finally {
      file.close();
    }
    this.sizes[i] = bytes.length;
  }

  /** Keeps the current file at file i's target under a second name, to restore it on failure. */
  async backup(i: number): Promise<void> {
    const f = this.#files[i]!;
    for (let attempt = 0;; attempt++) {
      const bak = joinPath(f.dir, tempName(".bak"));
      try {
        await Deno.link(f.target, bak);
        this.#backups[i] = bak;
        return;
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return; // nothing there now: nothing to keep
        if (e instanceof Deno.errors.AlreadyExists && attempt < 8) continue;
        if (e instanceof Deno.errors.AlreadyExists) throw e;
        // File systems without hard links (FAT, some FUSE): keep a copy instead.
        this.#backups[i] = await copyToUnique(f.target, f.dir);
        return;
      }
    }
  }

  /** Renames file i's temporary file over its target. */
  async rename(i: number): Promise<void> {
    const f = this.#files[i]!;
    const existed = f.existing !== null || this.#backups[i] !== undefined;
    await Deno.rename(this.#temps[i]!, f.target);
    this.#temps[i] = undefined;
    this.#renamed[i] = true;
    this.replaced[i] = existed;
  }

  /**
   * Undoes everything: renamed files restored from their backups (or removed when they were new),
   * temporary and unused backup files removed, created folders removed while empty.
   *
   * @returns one line per target that could not be put back (its backup is then kept)
   */
  async rollback(): Promise<string[]> {
    const unrestored: string[] = [];
    for (let i = this.#files.length - 1; i >= 0; i--) {
      const f = this.#files[i]!;
      if (!this.#renamed[i]) continue;
      const bak = this.#backups[i];
      try {
        if (bak !== undefined) {
          await Deno.rename(bak, f.target);
          this.#backups[i] = undefined;
        } else if (await identityOf(f.target) === this.#tempIds[i]) {
          await Deno.remove(f.target);
        }
      } catch (e) {
        unrestored.push(
          bak !== undefined
            ? `'${f.path}' could not be put back (${
              osReason(e)
            }): its previous content is in '${bak}'`
            : `the new '${f.path}' could not be removed (${osReason(e)})`,
        );
        this.#backups[i] = undefined; // keep it: it is the only copy
      }
    }
    for (const path of [...this.#temps, ...this.#backups]) {
      if (path !== undefined) await Deno.remove(path).catch(() => {});
    }
    for (const folder of this.#createdFolders.toReversed()) {
      await Deno.remove(folder).catch(() => {}); // only while empty: never recursive
    }
    return unrestored;
  }

  /** {@linkcode Transaction.rollback} with synchronous calls, for a forced exit. */
  rollbackSync(): string[] {
    const unrestored: string[] = [];
    for (let i = this.#files.length - 1; i >= 0; i--) {
      const f = this.#files[i]!;
      if (!this.#renamed[i]) continue;
      const bak = this.#backups[i];
      try {
        if (bak !== undefined) {
          Deno.renameSync(bak, f.target);
          this.#backups[i] = undefined;
        } else {
          const info = Deno.lstatSync(f.target);
          if (`${info.dev}:${info.ino}` === this.#tempIds[i]) Deno.removeSync(f.target);
        }
      } catch (e) {
        if (bak !== undefined) {
          unrestored.push(`'${f.path}' could not be put back (${osReason(e)}): see '${bak}'`);
          this.#backups[i] = undefined;
        }
      }
    }
    for (const path of [...this.#temps, ...this.#backups]) {
      if (path === undefined) continue;
      try {
        Deno.removeSync(path);
      } catch {
        // gone already
      }
    }
    for (const folder of this.#createdFolders.toReversed()) {
      try {
        Deno.removeSync(folder);
      } catch {
        // not empty, or gone: never recursive
      }
    }
    return unrestored;
  }

  /** After the last rename: drops the backups and flushes the folders' entries (best effort). */
  async finish(): Promise<void> {
    for (const bak of this.#backups) {
      if (bak !== undefined) await Deno.remove(bak).catch(() => {});
    }
    for (const dir of new Set(this.#files.map((f) => f.dir))) await syncFolder(dir);
  }
}

/** A fresh name beside a target: `.ps-<8 hex><suffix>`. */
function tempName(suffix: ".tmp" | ".bak"): string {
  const hex = crypto.getRandomValues(new Uint32Array(1))[0]!.toString(16).padStart(8, "0");
  return `.ps-${hex}${suffix}`;
}

/** Creates a new file under a fresh temporary name in `dir` (O_EXCL). */
async function createUnique(
  dir: string,
  suffix: ".tmp" | ".bak",
): Promise<{ path: string; file: Deno.FsFile }> {
  for (let attempt = 0;; attempt++) {
    const path = joinPath(dir, tempName(suffix));
    try {
      return { path, file: await Deno.open(path, { write: true, createNew: true }) };
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists) || attempt >= 8) throw e;
    }
  }
}

/** Copies `source` to a fresh backup name in `dir`, with its mode and owner; returns that name. */
async function copyToUnique(source: string, dir: string): Promise<string> {
  const info = await Deno.stat(source);
  const { path, file } = await createUnique(dir, ".bak");
  try {
    try {
      using input = await Deno.open(source, { read: true });
      const buffer = new Uint8Array(CHUNK);
      for (let n; (n = await input.read(buffer)) !== null;) {
        for (let off = 0; off < n;) off += await file.write(buffer.subarray(off, n));
      }
      await keepModeAndOwner(path, file, info);
      await syncIfAvailable(file);
    } finally {
      file.close();
    }
  } catch (e) {
    await Deno.remove(path).catch(() => {});
    throw e;
  }
  return path;
}

/** Gives the file at `path` (open as `file`) the mode of `old` and, where allowed, its owner. */
async function keepModeAndOwner(path: string, file: Deno.FsFile, old: Deno.FileInfo) {
  if (Deno.build.os === "windows" || old.mode === null) return;
  const now = await file.stat();
  if (old.uid !== null && old.gid !== null && (now.uid !== old.uid || now.gid !== old.gid)) {
    // Only root may give a file away; anyone may pick one of their own groups. Best effort.
    try {
      await Deno.chown(path, old.uid, old.gid);
    } catch {
      await Deno.chown(path, null, old.gid).catch(() => {});
    }
  }
  // After chown, which clears set-user-ID and set-group-ID bits.
  await Deno.chmod(path, old.mode & 0o7777);
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

/** fsync of a folder, so its new entries survive a power loss; skipped where unsupported. */
async function syncFolder(dir: string): Promise<void> {
  if (Deno.build.os === "windows") return;
  try {
    using folder = await Deno.open(dir, { read: true });
    await folder.sync();
  } catch {
    // The files are in place; only their durability across a power loss is at stake.
  }
}

async function identityOf(path: string): Promise<string | undefined> {
  try {
    const info = await Deno.lstat(path);
    return `${info.dev}:${info.ino}`;
  } catch {
    return undefined;
  }
}

const encoder = new TextEncoder();
const byteLength = (s: string) => encoder.encode(s).length;

/** A short preview of a long name for messages. */
const preview = (name: string) => name.length > 24 ? `${name.slice(0, 24)}...` : name;

/**
 * Resolves and checks one target now. Throws a Problem for anything that would make writing it
 * fail. With `probe`, also creates and removes a file of the same name length in its folder.
 */
function inspect(t: OutputTarget, probe: boolean): Inspected {
  const label = t.label ?? "the output";
  checkName(t.path);
  let target = t.path;
  let existing: Deno.FileInfo | null = null;
  for (let hops = 0;; hops++) {
    let info: Deno.FileInfo;
    try {
      info = Deno.lstatSync(target);
    } catch (e) {
      // A missing folder on the way, or a file used as one: the folder check below says which.
      if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) break;
      throw lookupProblem(e, target);
    }
    if (!info.isSymlink) {
      const via = target === t.path ? "it is" : `it is a symbolic link to '${target}', which is`;
      if (info.isDirectory) throw new Problem(`${via} a folder`);
      if (!info.isFile) throw new Problem(`${via} ${fileKind(info)}, not a regular file`);
      existing = info;
      break;
    }
    if (hops === MAX_LINK_HOPS) {
      throw new Problem(`it is a chain of more than ${MAX_LINK_HOPS} symbolic links`);
    }
    let link: string;
    try {
      link = Deno.readLinkSync(target);
    } catch (e) {
      throw lookupProblem(e, target);
    }
    target = isAbsolute(link) ? link : joinPath(dirname(target), link);
  }
  if (target !== t.path) checkName(target, `its symbolic link leads to '${target}': `);

  const dir = dirname(target);
  const missing: string[] = [];
  let ancestor = dir;
  let ancestorInfo: Deno.FileInfo | undefined;
  let notThere: unknown;
  for (;;) {
    try {
      ancestorInfo = Deno.statSync(ancestor);
      break;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory)) {
        throw lookupProblem(e, ancestor);
      }
      notThere ??= e;
      const up = dirname(ancestor);
      if (up === ancestor) throw new Problem(`the folder '${ancestor}' does not exist`, e);
      missing.unshift(ancestor);
      ancestor = up;
    }
  }
  if (!ancestorInfo.isDirectory) throw new Problem(`'${ancestor}' is not a folder`, notThere);
  if (missing.length > 0 && !t.createFolders) {
    throw new Problem(`the folder '${dir}' does not exist`, notThere);
  }
  const tempBytes = byteLength(joinPath(dir, tempName(".tmp")));
  if (tempBytes > PATH_MAX - 1) {
    throw new Problem(
      `its temporary file's path would be ${tempBytes} bytes long; the limit is ${
        PATH_MAX - 1
      } bytes (use a shorter folder path)`,
    );
  }
  if (probe) probeFolder(ancestor, byteLength(basename(target)));

  let identity: string;
  if (existing) {
    identity = `${existing.dev}:${existing.ino}`;
  } else {
    let real: string;
    try {
      real = Deno.realPathSync(ancestor);
    } catch {
      real = ancestor;
    }
    const rest = [...missing.map(basename), basename(target)].join("/");
    identity = `${real}/${rest}`;
  }
  return { path: t.path, label, target, dir, missingFolders: missing, existing, identity };
}

/** Refuses paths no file system takes: empty, NUL, too long, or naming a folder. */
function checkName(path: string, context = ""): void {
  if (path === "") throw new Problem(`${context}the path is empty`);
  if (path.includes("\0")) throw new Problem(`${context}the path contains a NUL character`);
  const bytes = byteLength(path);
  if (bytes > PATH_MAX - 1) {
    throw new Problem(`${context}the path is ${bytes} bytes long; the limit is ${PATH_MAX - 1}`);
  }
  const parts = pathComponents(path);
  for (const [k, part] of parts.entries()) {
    const n = byteLength(part);
    if (n <= NAME_MAX) continue;
    throw new Problem(
      k === parts.length - 1 && basename(path) !== ""
        ? `${context}the file name is ${n} bytes long; the limit is ${NAME_MAX} bytes`
        : `${context}the folder name '${
          preview(part)
        }' is ${n} bytes long; the limit is ${NAME_MAX} bytes`,
    );
  }
  const name = basename(path);
  if (name === "" || name === "." || name === "..") {
    throw new Problem(`${context}it names a folder, not a file`);
  }
}

/** Creates and removes a file with a name as long as the target's in `dir`. */
function probeFolder(dir: string, nameBytes: number): void {
  const name = tempName(".tmp");
  const padded = nameBytes > name.length
    ? `${name.slice(0, -4)}${"x".repeat(nameBytes - name.length)}.tmp`
    : name;
  const path = joinPath(dir, padded);
  try {
    Deno.openSync(path, { write: true, createNew: true }).close();
  } catch (e) {
    throw new Problem(createReason(e, dir), e);
  }
  try {
    Deno.removeSync(path);
  } catch {
    // Created a moment ago by this process; if it cannot go, the write would fail later anyway.
  }
}

/** Why a file cannot be created in `dir`, one line. */
function createReason(e: unknown, dir: string): string {
  if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
    return `permission denied to create files in '${dir}'`;
  }
  const code = errorCode(e);
  if (code === "EROFS") return `'${dir}' is on a read-only file system`;
  if (code === "ENAMETOOLONG") return `the file name is too long for the file system of '${dir}'`;
  return `cannot create files in '${dir}': ${osReason(e)}`;
}

function lookupProblem(e: unknown, path: string): Problem {
  if (e instanceof Deno.errors.PermissionDenied) {
    return new Problem(`permission denied to look up '${path}'`, e);
  }
  // Deno's sandbox: a path outside the granted ones, or a device it guards (/dev/full, ...).
  if (e instanceof Deno.errors.NotCapable) {
    return new Problem(`access to '${path}' is not granted to this process (Deno permissions)`, e);
  }
  if (e instanceof Deno.errors.FilesystemLoop) {
    return new Problem("it is a loop of symbolic links", e);
  }
  if (errorCode(e) === "ENAMETOOLONG") {
    return new Problem("a name in it is too long for its file system", e);
  }
  return new Problem(osReason(e), e);
}

function fileKind(info: Deno.FileInfo): string {
  if (info.isCharDevice) return "a character device";
  if (info.isBlockDevice) return "a block device";
  if (info.isFifo) return "a named pipe";
  if (info.isSocket) return "a socket";
  return "not a regular file";
}

/** One line for a failed commit step. */
function describeFailure(e: unknown, phase: CommitStep["phase"], f: Inspected): string {
  if (e instanceof Deno.errors.NotFound && phase === "stage") {
    return `the folder '${f.dir}' does not exist`;
  }
  if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
    return phase === "stage"
      ? `permission denied to create files in '${f.dir}'`
      : `permission denied to replace '${f.target}'`;
  }
  if (e instanceof Deno.errors.IsADirectory) return `'${f.target}' is now a folder`;
  const code = errorCode(e);
  if (code === "ENOSPC") return `no space left on the device of '${f.dir}'`;
  if (code === "EDQUOT") return `disk quota exceeded in '${f.dir}'`;
  if (code === "EFBIG") return "the file is larger than this file system or process allows";
  if (code === "EROFS") return `'${f.dir}' is on a read-only file system`;
  const what = phase === "stage"
    ? "writing"
    : phase === "backup"
    ? "keeping a backup of the existing file"
    : "renaming it into place";
  return `${what} failed: ${osReason(e)}`;
}

/** errno names Deno leaves without a `code` (EFBIG, for one), by OS error number. */
const ERRNO_NAMES: Partial<Record<typeof Deno.build.os, Record<number, string>>> = {
  linux: { 27: "EFBIG", 28: "ENOSPC", 30: "EROFS", 36: "ENAMETOOLONG", 122: "EDQUOT" },
  darwin: { 27: "EFBIG", 28: "ENOSPC", 30: "EROFS", 63: "ENAMETOOLONG", 69: "EDQUOT" },
};

/** The errno name of a file system error (`ENOSPC`, ...), where known. */
function errorCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === "string") return code;
  const errno = e instanceof Error ? e.message.match(/\(os error (\d+)\)/)?.[1] : undefined;
  return errno === undefined ? undefined : ERRNO_NAMES[Deno.build.os]?.[Number(errno)];
}

/** The OS message without the operation and paths Deno appends after it. */
function osReason(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  const os = message.match(/^(.*?\(os error \d+\))/);
  return (os ? os[1]! : message).split("\n")[0]!;
}
