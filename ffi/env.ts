/**
 * The ONNX Runtime environment: logging and the process-wide state every
 * session hangs off.
 *
 * @module
 */

import { LOGGING_LEVEL, ORT_ARENA_ALLOCATOR, ORT_MEM_TYPE_DEFAULT } from "./_defs.ts";
import { ClosedError } from "./errors.ts";
import { check, cString, ortLibrary, pointerOut, readPointer } from "./library.ts";

/** ORT's log severities, least to most severe. */
export type LogLevel = keyof typeof LOGGING_LEVEL;

/** Options for {@linkcode Env.create}. */
export interface EnvOptions {
  /**
   * The least severe ORT message written to stderr. ORT's own default is
   * `warning`, which prints coloured noise on every run.
   * @default {"error"}
   */
  logLevel?: LogLevel;
  /** The id ORT prefixes its log lines with. @default {"parastep"} */
  logId?: string;
}

/**
 * An `OrtEnv`. ORT keeps one per process and the first creator's settings win;
 * each `Env` here holds one reference to it.
 *
 * Sessions keep their `Env` open: {@linkcode Env.close} releases the native
 * env only after every session created from it has been closed.
 *
 * @example
 * ```ts
 * import { Env } from "./env.ts";
 * using env = Env.create({ logLevel: "error" });
 * ```
 */
export class Env implements Disposable {
  #ptr: Deno.PointerObject | null;
  #memoryInfo: Deno.PointerObject | null;
  #users = 0;
  #closing = false;
  /** The log level this env was created with. */
  readonly logLevel: LogLevel;

  private constructor(ptr: Deno.PointerObject, memoryInfo: Deno.PointerObject, logLevel: LogLevel) {
    this.#ptr = ptr;
    this.#memoryInfo = memoryInfo;
    this.logLevel = logLevel;
  }

  /** Creates an env (and the CPU memory description tensors are made with). */
  static create(options: EnvOptions = {}): Env {
    const { api } = ortLibrary();
    const logLevel = options.logLevel ?? "error";
    const level = LOGGING_LEVEL[logLevel];
    if (level === undefined) {
      throw new RangeError(
        `Cannot create an ORT env as 'logLevel' must be one of ${
          Object.keys(LOGGING_LEVEL).join(", ")
        }: current value is ${logLevel}`,
      );
    }
    const out = pointerOut();
    check(api.CreateEnv.call(level, cString(options.logId ?? "parastep"), out), "CreateEnv");
    const env = readPointer(out, "CreateEnv");
    const mi = pointerOut();
    try {
      check(
        api.CreateCpuMemoryInfo.call(ORT_ARENA_ALLOCATOR, ORT_MEM_TYPE_DEFAULT, mi),
        "CreateCpuMemoryInfo",
      );
      return new Env(env, readPointer(mi, "CreateCpuMemoryInfo"), logLevel);
    } catch (e) {
      api.ReleaseEnv.call(env);
      throw e;
    }
  }

  /** The native `OrtEnv*`. */
  get pointer(): Deno.PointerObject {
    if (this.#ptr === null || this.#closing) throw new ClosedError("ORT env", "use the env");
    return this.#ptr;
  }

  /**
   * The `OrtMemoryInfo*` describing host memory, for tensors over caller
   * arrays. It stays valid after {@linkcode Env.close} while sessions keep the
   * env alive, since their runs still make tensors.
   */
  get cpuMemoryInfo(): Deno.PointerObject {
    if (this.#memoryInfo === null) throw new ClosedError("ORT env", "create a tensor");
    return this.#memoryInfo;
  }

  /** Whether {@linkcode Env.close} has been called. */
  get closed(): boolean {
    return this.#closing;
  }

  /** Registers a dependent object (a session) that keeps this env alive. */
  retain(): void {
    this.pointer;
    this.#users++;
  }

  /** Drops a reference taken by {@linkcode Env.retain}. */
  release(): void {
    this.#users--;
    this.#releaseIfUnused();
  }

  /** Releases the env once no session uses it. Idempotent. */
  close(): void {
    this.#closing = true;
    this.#releaseIfUnused();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #releaseIfUnused(): void {
    if (!this.#closing || this.#users > 0 || this.#ptr === null) return;
    const { api } = ortLibrary();
    if (this.#memoryInfo) api.ReleaseMemoryInfo.call(this.#memoryInfo);
    api.ReleaseEnv.call(this.#ptr);
    this.#memoryInfo = null;
    this.#ptr = null;
  }
}
