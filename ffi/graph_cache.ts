/**
 * A folder of graphs as ONNX Runtime optimised them, so that a later session
 * of the same model loads the optimised graph with optimisation disabled
 * instead of optimising again (`SessionOptions.graphCache`).
 *
 * Layout of the folder:
 *
 * ```
 * graphs/<key>/model.onnx        the optimised graph (SetOptimizedModelFilePath)
 * graphs/<key>/model.onnx.data   its initializers (always external: no 2 GB protobuf limit)
 * graphs/<key>/entry.json        what the key covers, and each file's size and SHA-256
 * hashes/<id>.json               memo: a file's SHA-256 for its (path, size, mtime, ctime, inode)
 * ```
 *
 * The key covers what changes the optimised graph: the model's content
 * (SHA-256 of the graph and its external data), the ORT library (version and
 * build), the execution provider (and CUDA device), the optimisation level,
 * the session config entries, free dimension overrides, and this machine's CPU (model and instruction-set flags): at
 * level `all` ORT's CPU layout transforms (NCHWc) depend on the instruction
 * set, and ORT warns that such a graph "should only be used in the same
 * environment the model was optimized in". The GPU model is not covered (not
 * known without the provider's own API).
 *
 * An entry is written into a temporary folder and renamed into place whole,
 * so readers never see part of one and concurrent first opens (two Workers)
 * both succeed: the first rename wins, the other writer drops its copy. A
 * reader checks every file's size and SHA-256 against `entry.json`; a file
 * changed in any way has a new ctime, so its hash is recomputed, and an entry
 * that fails the check is removed with a one-line warning and rebuilt.
 * Hashes are memoised per (path, size, mtime, ctime, inode, device), so an
 * unchanged multi-gigabyte model is hashed once, not at every open.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { readInitializers } from "./onnx_initializers.ts";

/** What identifies an optimised graph; see the module documentation. */
export interface GraphKey {
  /** SHA-256 of the model's content (graph and external data). */
  readonly modelHash: string;
  readonly ep: string;
  /** CUDA device ordinal; null where the provider has none. */
  readonly deviceId: number | null;
  readonly graphOptimizationLevel: string;
  readonly configEntries: Readonly<Record<string, string>>;
  readonly freeDimensions: Readonly<Record<string, number>>;
}

/** The ORT build a cache entry was written by. */
export interface RuntimeIdentity {
  readonly version: string;
  readonly buildInfo: string;
}

/** Options for {@linkcode GraphCache}. */
export interface GraphCacheOptions {
  /** Where warnings go (a corrupt entry, a failed write). @default {console.warn} */
  onWarning?: (message: string) => void;
  /**
   * The ORT build entries are keyed by. Sessions fill it in from the loaded
   * library; tests pass another to act as a different ORT.
   */
  runtime?: RuntimeIdentity;
}

/** A cached graph found valid. */
export interface CachedGraph {
  /** The entry's folder. */
  readonly dir: string;
  /** Its `model.onnx`, to load with optimisation disabled. */
  readonly modelPath: string;
}

/** A cache entry being written (see {@linkcode GraphCache.begin}). */
export interface PendingGraph {
  /** Where ORT writes the optimised graph. */
  readonly modelPath: string;
  /** The file name of its external initializers, beside it. */
  readonly dataFileName: string;
  /** Hashes the files, writes `entry.json`, renames the folder into place. */
  commit(): CachedGraph;
  /** Removes the temporary folder. */
  abort(): void;
}

const MODEL_FILE = "model.onnx";
const DATA_FILE = "model.onnx.data";
const ENTRY_FILE = "entry.json";
const ENTRY_VERSION = 1;
/** Temporary folders older than this are left over from a crash and removed. */
const STALE_TEMP_MS = 24 * 3600 * 1000;

/** Size, times and identity of a file, as memo keys compare them. */
interface FileStamp {
  readonly size: number;
  readonly mtimeMs: number;
  readonly ctimeMs: number;
  readonly ino: number;
  readonly dev: number;
}

function stamp(path: string): FileStamp {
  const st = Deno.statSync(path);
  return {
    size: st.size,
    mtimeMs: st.mtime?.getTime() ?? 0,
    ctimeMs: st.ctime?.getTime() ?? 0,
    ino: st.ino ?? 0,
    dev: st.dev ?? 0,
  };
}

function sameStamp(a: FileStamp, b: FileStamp): boolean {
  return a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs &&
    a.ino === b.ino && a.dev === b.dev;
}

/** SHA-256 (hex) of `text`. */
export function sha256Text(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** SHA-256 (hex) of `bytes`. */
export function sha256Bytes(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** SHA-256 of a file, read in chunks (a multi-gigabyte file is never held whole). */
function sha256File(path: string): string {
  const hash = createHash("sha256");
  using file = Deno.openSync(path, { read: true });
  const chunk = new Uint8Array(8 << 20);
  for (;;) {
    const n = file.readSync(chunk);
    if (n === null || n === 0) break;
    hash.update(chunk.subarray(0, n));
  }
  return hash.digest("hex");
}

let cpuIdentity: string | undefined;

/**
 * This machine's CPU as far as ORT's CPU transforms care: model name and
 * instruction-set flags (Linux), else OS and architecture.
 */
export function cpuFingerprint(): string {
  if (cpuIdentity !== undefined) return cpuIdentity;
  let identity = `${Deno.build.os}-${Deno.build.arch}`;
  try {
    const info = Deno.readTextFileSync("/proc/cpuinfo");
    const field = (name: string) =>
      new RegExp(`^${name}\\s*:\\s*(.*)$`, "m").exec(info)?.[1]?.trim() ?? "";
    // x86 says "flags", arm64 "Features".
    identity += `|${field("model name")}|${field("flags") || field("Features")}`;
  } catch {
    // Not Linux, or /proc unreadable: OS and architecture only.
  }
  cpuIdentity = sha256Text(identity).slice(0, 16);
  return cpuIdentity;
}

/** The external data files the model's initializers name, sorted; none for bytes ORT cannot parse either. */
function externalLocations(model: Uint8Array): string[] {
  try {
    const locations = new Set<string>();
    for (const i of readInitializers(model)) {
      if (i.data.kind === "external") locations.add(i.data.location);
    }
    return [...locations].sort();
  } catch {
    return []; // not ONNX: ORT will say so when it loads it
  }
}

function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp-${crypto.randomUUID()}`;
  Deno.writeTextFileSync(tmp, text);
  try {
    Deno.renameSync(tmp, path);
  } catch (e) {
    Deno.removeSync(tmp);
    throw e;
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A folder of ORT-optimised graphs; see the module documentation. */
export class GraphCache {
  /** The cache folder. */
  readonly dir: string;
  readonly #warn: (message: string) => void;
  readonly #runtime: RuntimeIdentity | undefined;

  /** A cache in `dir` (created on first write). */
  constructor(dir: string, options: GraphCacheOptions = {}) {
    this.dir = dir.replace(/\/+$/, "") || "/";
    this.#warn = options.onWarning ?? ((m) => console.warn(m));
    this.#runtime = options.runtime;
  }

  /** Reports a problem the cache worked around, as one line. */
  warn(message: string): void {
    // ORT's messages may span lines; a warning is one.
    this.#warn(`parastep: ${message.replace(/\s*\n\s*/g, " ").trim()}`);
  }

  /** The runtime identity given at construction, if any. */
  get runtime(): RuntimeIdentity | undefined {
    return this.#runtime;
  }

  /**
   * SHA-256 of a file's content, memoised: the file is read only when its
   * size, times, inode or device differ from the memo's.
   */
  fileHash(path: string): string {
    const real = Deno.realPathSync(path);
    const now = stamp(real);
    try {
      const memo = JSON.parse(Deno.readTextFileSync(this.#memoPath(real)));
      if (memo.path === real && sameStamp(memo.stamp, now) && typeof memo.sha256 === "string") {
        return memo.sha256;
      }
    } catch {
      // no memo yet, or unreadable: hash the file
    }
    const sha256 = sha256File(real);
    this.#memoise(real, now, sha256);
    return sha256;
  }

  #memoPath(real: string): string {
    return `${this.dir}/hashes/${sha256Text(real).slice(0, 32)}.json`;
  }

  /** Records `sha256` for `real` if the file still has the stamp it had when hashed. */
  #memoise(real: string, hashed: FileStamp, sha256: string, external?: string[]): void {
    if (!sameStamp(stamp(real), hashed)) return; // rewritten meanwhile: that hash is not its content
    const memoPath = this.#memoPath(real);
    try {
      Deno.mkdirSync(`${this.dir}/hashes`, { recursive: true });
      writeAtomic(memoPath, JSON.stringify({ path: real, stamp: hashed, sha256, external }));
    } catch (e) {
      this.warn(`cannot write the hash memo ${memoPath}: ${errorText(e)}`);
    }
  }

  /**
   * The content hash of an ONNX model: of its file and of every external data
   * file its initializers name. Memoised like {@linkcode GraphCache.fileHash};
   * on a miss the model file is read whole (to find its external data).
   */
  modelHash(path: string): string {
    const real = Deno.realPathSync(path);
    const now = stamp(real);
    let sha256: string | undefined;
    let external: string[] | undefined;
    try {
      const memo = JSON.parse(Deno.readTextFileSync(this.#memoPath(real)));
      if (
        memo.path === real && sameStamp(memo.stamp, now) && typeof memo.sha256 === "string" &&
        Array.isArray(memo.external)
      ) {
        sha256 = memo.sha256;
        external = memo.external;
      }
    } catch {
      // no memo yet, or unreadable
    }
    if (sha256 === undefined || external === undefined) {
      const bytes = Deno.readFileSync(real);
      sha256 = sha256Bytes(bytes);
      external = externalLocations(bytes);
      this.#memoise(real, now, sha256, external);
    }
    if (external.length === 0) return sha256;
    const dir = real.slice(0, real.lastIndexOf("/")) || "/";
    const parts = [sha256, ...external.map((loc) => `${loc}:${this.fileHash(`${dir}/${loc}`)}`)];
    return sha256Text(parts.join("\n"));
  }

  /** The entry name for `key` under `runtime`. */
  keyOf(key: GraphKey, runtime: RuntimeIdentity): string {
    return sha256Text(JSON.stringify(this.#describe(key, runtime))).slice(0, 32);
  }

  #describe(key: GraphKey, runtime: RuntimeIdentity) {
    const sorted = <T>(r: Readonly<Record<string, T>>) =>
      Object.fromEntries(Object.entries(r).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0));
    return {
      version: ENTRY_VERSION,
      ort: runtime.version,
      ortBuild: runtime.buildInfo,
      cpu: cpuFingerprint(),
      model: key.modelHash,
      ep: key.ep,
      deviceId: key.deviceId,
      level: key.graphOptimizationLevel,
      config: sorted(key.configEntries),
      freeDimensions: sorted(key.freeDimensions),
    };
  }

  /** The folder of entry `name`. */
  entryDir(name: string): string {
    return `${this.dir}/graphs/${name}`;
  }

  /**
   * The cached graph of entry `name` when it is there and intact; null when
   * absent. A damaged entry is removed with a warning, and null returned.
   */
  lookup(name: string): CachedGraph | null {
    const dir = this.entryDir(name);
    let text: string;
    try {
      text = Deno.readTextFileSync(`${dir}/${ENTRY_FILE}`);
    } catch {
      // No entry. A folder without entry.json was not renamed into place whole: damaged.
      if (this.#isDir(dir)) this.discard(name, `${ENTRY_FILE} is missing`);
      return null;
    }
    let entry;
    try {
      entry = JSON.parse(text);
    } catch (e) {
      this.discard(name, `${ENTRY_FILE} is not JSON (${errorText(e)})`);
      return null;
    }
    const files = entry?.files;
    if (entry?.version !== ENTRY_VERSION || typeof files !== "object" || files === null) {
      this.discard(name, `${ENTRY_FILE} is not a version ${ENTRY_VERSION} entry`);
      return null;
    }
    for (const [file, want] of Object.entries(files as Record<string, unknown>)) {
      const { size, sha256 } = (want ?? {}) as { size?: unknown; sha256?: unknown };
      const path = `${dir}/${file}`;
      let actual: FileStamp;
      try {
        actual = stamp(path);
      } catch {
        this.discard(name, `${file} is missing`);
        return null;
      }
      if (actual.size !== size) {
        this.discard(name, `${file} has ${actual.size} bytes, ${size} were written`);
        return null;
      }
      if (this.fileHash(path) !== sha256) {
        this.discard(name, `${file} does not have the content written`);
        return null;
      }
    }
    if (!(MODEL_FILE in files)) {
      this.discard(name, `${ENTRY_FILE} lists no ${MODEL_FILE}`);
      return null;
    }
    return { dir, modelPath: `${dir}/${MODEL_FILE}` };
  }

  /** Removes entry `name` (moved aside first, so no reader sees it half-removed), with a warning. */
  discard(name: string, why: string): void {
    const dir = this.entryDir(name);
    this.warn(`the cached optimised graph ${dir} is damaged (${why}); rebuilding it`);
    const trash = `${this.dir}/graphs/.trash-${crypto.randomUUID()}`;
    try {
      Deno.renameSync(dir, trash);
      Deno.removeSync(trash, { recursive: true });
    } catch {
      // Gone already (another process discarded it), or not removable: the rebuild's rename says.
    }
  }

  /**
   * Starts writing entry `name`: a fresh temporary folder for ORT to write the
   * optimised graph into. `describe` is recorded in `entry.json`.
   */
  begin(name: string, key: GraphKey, runtime: RuntimeIdentity): PendingGraph {
    const graphs = `${this.dir}/graphs`;
    Deno.mkdirSync(graphs, { recursive: true });
    this.#removeStaleTemps(graphs);
    const tmp = `${graphs}/.tmp-${name}-${crypto.randomUUID()}`;
    Deno.mkdirSync(tmp);
    const described = this.#describe(key, runtime);
    const abort = () => {
      try {
        Deno.removeSync(tmp, { recursive: true });
      } catch {
        // already gone
      }
    };
    return {
      modelPath: `${tmp}/${MODEL_FILE}`,
      dataFileName: DATA_FILE,
      abort,
      commit: () => {
        const files: Record<string, { size: number; sha256: string }> = {};
        const stamps = new Map<string, FileStamp>();
        for (const entry of Deno.readDirSync(tmp)) {
          if (!entry.isFile) continue;
          const path = `${tmp}/${entry.name}`;
          const before = stamp(path);
          stamps.set(entry.name, before);
          files[entry.name] = { size: before.size, sha256: sha256File(path) };
        }
        if (!(MODEL_FILE in files)) {
          abort();
          throw new Error(`ONNX Runtime wrote no optimised graph into ${tmp}`);
        }
        Deno.writeTextFileSync(
          `${tmp}/${ENTRY_FILE}`,
          JSON.stringify({ version: ENTRY_VERSION, key: described, files }, null, 1),
        );
        const dir = this.entryDir(name);
        try {
          Deno.renameSync(tmp, dir);
        } catch (e) {
          abort();
          // Another writer got there first (a concurrent first open): use its entry.
          if (this.#exists(`${dir}/${ENTRY_FILE}`)) {
            return { dir, modelPath: `${dir}/${MODEL_FILE}` };
          }
          throw e;
        }
        // Memoise the hashes just computed (a rename keeps a file's inode and times), so the
        // next lookup does not read the files again.
        for (const [file, { sha256 }] of Object.entries(files)) {
          const real = Deno.realPathSync(`${dir}/${file}`);
          this.#memoise(real, stamps.get(file)!, sha256);
        }
        return { dir, modelPath: `${dir}/${MODEL_FILE}` };
      },
    };
  }

  #isDir(path: string): boolean {
    try {
      return Deno.statSync(path).isDirectory;
    } catch {
      return false;
    }
  }

  #exists(path: string): boolean {
    try {
      Deno.statSync(path);
      return true;
    } catch {
      return false;
    }
  }

  #removeStaleTemps(graphs: string): void {
    const now = Date.now();
    for (const entry of Deno.readDirSync(graphs)) {
      if (!entry.name.startsWith(".tmp-") && !entry.name.startsWith(".trash-")) continue;
      try {
        const mtime = Deno.statSync(`${graphs}/${entry.name}`).mtime?.getTime() ?? now;
        if (now - mtime > STALE_TEMP_MS) {
          Deno.removeSync(`${graphs}/${entry.name}`, { recursive: true });
        }
      } catch {
        // removed meanwhile
      }
    }
  }
}
