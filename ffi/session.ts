/**
 * `OrtSession`: a loaded model, its inputs and outputs, and running it.
 *
 * @module
 */

import { GRAPH_OPTIMIZATION_LEVEL, LOGGING_LEVEL, ONNX_TYPE_TENSOR } from "./_defs.ts";
import type { Env, LogLevel } from "./env.ts";
import { ClosedError, OrtError } from "./errors.ts";
import { check, cString, ortLibrary, pointerOut, readPointer, statusError } from "./library.ts";
import { type ProcessLock, webGpuLock } from "./lock.ts";
import {
  appendRequestedProvider,
  AUTO_ORDER,
  autoPrecheck,
  type ExecutionProvider,
  type ProviderAttempt,
} from "./providers.ts";
import { withQuietStderr, withQuietStderrAsync } from "./quiet.ts";
import { allocate, type DataType, elementCount, Tensor } from "./tensor.ts";
import { copyOut, createTensorValue, describeTensorInfo, Value } from "./value.ts";
import { type GraphCache, type GraphKey, sha256Bytes } from "./graph_cache.ts";

/** Options for {@linkcode Session.create}. Every field is optional. */
export interface SessionOptions {
  /**
   * Where the model runs. `auto` tries cuda, webgpu, cpu in that order and
   * records which it took in {@linkcode Session.executionProvider}.
   * @default {"cpu"}
   */
  executionProvider?: ExecutionProvider | "auto";
  /** CUDA device ordinal (one per worker). @default {0} */
  deviceId?: number;
  /** Threads used inside one operator; 0 lets ORT choose (one per core). @default {0} */
  intraOpThreads?: number;
  /** Threads running independent operators in parallel; 0 lets ORT choose. @default {0} */
  interOpThreads?: number;
  /** Graph rewrites ORT applies when loading. @default {"all"} */
  graphOptimizationLevel?: keyof typeof GRAPH_OPTIMIZATION_LEVEL;
  /**
   * Whether idle intra-op threads spin. Spinning lowers latency but burns the
   * cores other workers need, so parastep turns it off when several workers
   * share a CPU.
   * @default {true}
   */
  allowSpinning?: boolean;
  /**
   * Whether ORT keeps freed host memory in its arena for reuse. The arena
   * saves allocations on every run but only ever grows.
   * @default {true}
   */
  cpuMemArena?: boolean;
  /** Per-session log severity; the env's level applies when unset. */
  logLevel?: LogLevel;
  /**
   * Whether kernels pre-pack constant weights while the session loads (e.g.
   * MLAS's packed MatMul B). Off (`session.disable_prepacking`) loads faster
   * and keeps one copy of each weight, but runs may be slower.
   * @default {true}
   */
  prepacking?: boolean;
  /**
   * Session config entries (`AddSessionConfigEntry`), ORT's keys and values
   * (onnxruntime_session_options_config_keys.h), e.g.
   * `{ "session.use_env_allocators": "1" }`. They are part of the
   * {@linkcode SessionOptions.graphCache} key, as some change the graph.
   */
  configEntries?: Readonly<Record<string, string>>;
  /**
   * Fixes symbolic dimensions to these sizes (`AddFreeDimensionOverrideByName`),
   * e.g. `{ batch: 2 }`: shapes become known, so ORT can fold more of the graph.
   * The session then accepts only inputs of those sizes.
   */
  freeDimensions?: Readonly<Record<string, number>>;
  /** Writes the graph as ORT optimised it to this path (`SetOptimizedModelFilePath`). */
  optimizedModelFilePath?: string;
  /**
   * Records ORT's own profile of the session (load phases, then every node of
   * every run) into `<prefix>_<date>.json`; {@linkcode Session.endProfiling}
   * finishes it and returns its path.
   */
  profilingPrefix?: string;
  /**
   * Caches the graph ORT optimised (see {@linkcode GraphCache}): the first
   * session of a model writes it, later ones load it with optimisation
   * disabled. Needs {@linkcode SessionOptions.modelHash} or a path or bytes
   * source to hash.
   */
  graphCache?: GraphCache;
  /**
   * The model's content hash for {@linkcode SessionOptions.graphCache}
   * (`GraphCache.modelHash`), so a known model is not hashed again.
   */
  modelHash?: string;
  /**
   * On a GPU provider (CUDA, WebGPU), {@linkcode Session.runAsync} binds each
   * input fed as a {@linkcode Value} through ORT's IoBinding, which copies it
   * to the device once, and binds it again only when another `Value` comes
   * for that input: constant inputs (a generation's conditioning) stay on the
   * device between runs, and only `Tensor` feeds cross to it on every run.
   * Off, every feed is copied on every run, as `Run` does. No effect on the CPU.
   * @default {true}
   */
  keepValuesOnDevice?: boolean;
}

/** Inputs handed to ORT as host data by {@linkcode Session.runAsync}, counted since the open. */
export interface InputTransfers {
  /** Runs counted. */
  readonly runs: number;
  /** Inputs handed over (on a GPU: copied to the device, where a node there reads them). */
  readonly inputs: number;
  /** Their bytes. */
  readonly bytes: number;
}

/**
 * What {@linkcode Session.create} loads: a file path (ORT reads it and finds
 * external data beside it), the model's bytes, or a function returning them
 * (called only when the bytes are needed: not when a cached optimised graph
 * is loaded instead).
 */
export type ModelSource = string | Uint8Array | (() => Uint8Array);

/** Options for {@linkcode Session.createAsync}: {@linkcode SessionOptions} and a signal. */
export interface AsyncSessionOptions extends SessionOptions {
  /**
   * Aborting it asks ORT to stop loading (its load cancellation flag, ORT >= 1.22; checked between
   * graph transformation passes and between initializers). The creation still returns before the
   * promise settles, rejecting with the signal's reason; a session that finished loading anyway is
   * released.
   */
  signal?: AbortSignal;
}

/** A graph input or output as the session reports it. */
export interface TensorInfo {
  /** The name feeds and fetches are keyed by. */
  readonly name: string;
  /** The element type, or null for one parastep does not handle. */
  readonly type: DataType | null;
  /** ONNX's element type number (useful when {@linkcode TensorInfo.type} is null). */
  readonly elementType: number;
  /** Dimensions: a number where fixed, the symbolic name (or `"?"`) where dynamic. */
  readonly dims: readonly (number | string)[];
}

/** Inputs of a run, by name: host tensors (wrapped for the call) or values kept across runs. */
export type Feeds = Readonly<Record<string, Tensor | Value>>;

/** Options for {@linkcode Session.run} and {@linkcode Session.runAsync}. */
export interface RunOptions {
  /**
   * Which outputs to return, by name (default: all), or preallocated host
   * tensors by name that ORT writes into directly (no copy).
   */
  outputs?: readonly string[] | Readonly<Record<string, Tensor | Value>>;
}

/** Options for {@linkcode Session.runAsync}. */
export interface AsyncRunOptions extends RunOptions {
  /** Aborting sets ORT's terminate flag; the run rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** One run's arguments in the form ORT takes them. */
interface PreparedRun {
  inNames: BigUint64Array<ArrayBuffer>;
  inValues: BigUint64Array<ArrayBuffer>;
  outNames: BigUint64Array<ArrayBuffer>;
  /** ORT writes the outputs it allocates here; preallocated ones are filled in. */
  outValues: BigUint64Array<ArrayBuffer>;
  outputNames: readonly string[];
  /** Input values created for this call only, released after it. */
  owned: Deno.PointerObject[];
  /** Per output: the caller's preallocated tensor or value, or one allocated from a guess. */
  preallocated: (Tensor | Value | undefined)[] | null;
  /** Whether some output was allocated from a guessed shape. */
  guessed: boolean;
  /** Per output: whether it lands in a staging tensor and is copied out after the run. */
  staged: boolean[] | null;
  /** Everything ORT reads during the call, referenced until it returns. */
  keep: unknown[];
}

/**
 * Inputs and outputs of at most this many bytes go through staging tensors
 * on synchronous runs (see {@linkcode Staging}).
 */
const STAGING_MAX_BYTES = 16 * 1024;

/**
 * Small host tensors with native values kept across synchronous runs, one per
 * input or output name. A fresh small input is copied into its slot and a
 * small output copied out of its slot, instead of creating and releasing a
 * native value on every run: each of those calls costs about 0.8 µs through
 * Deno's FFI, more than copying a few kilobytes.
 */
class Staging {
  #slots = new Map<string, { key: string; tensor: Tensor; ptr: Deno.PointerObject }>();

  /** The slot for `name` holding a tensor of `type` and `dims`, made on first use. */
  slot(
    memoryInfo: Deno.PointerObject,
    name: string,
    type: DataType,
    dims: readonly number[],
  ): { tensor: Tensor; ptr: Deno.PointerObject } {
    const key = `${type}:${dims.join(",")}`;
    let slot = this.#slots.get(name);
    if (slot?.key !== key) {
      if (slot) ortLibrary().api.ReleaseValue.call(slot.ptr);
      this.#slots.delete(name);
      const tensor = new Tensor(type, allocate(type, elementCount(dims)), dims);
      slot = { key, tensor, ptr: createTensorValue(memoryInfo, tensor) };
      this.#slots.set(name, slot);
    }
    return slot;
  }

  /** Releases every slot's native value. */
  release(): void {
    for (const { ptr } of this.#slots.values()) ortLibrary().api.ReleaseValue.call(ptr);
    this.#slots.clear();
  }
}

/**
 * An ONNX model loaded into ONNX Runtime.
 *
 * Not thread-safe across realms: use one session per Worker. Several runs may
 * be in flight on one session ({@linkcode Session.runAsync}); ORT allows
 * concurrent `Run` calls on a session.
 *
 * @example
 * ```ts ignore
 * using env = Env.create();
 * using session = Session.create(env, "model.onnx", { intraOpThreads: 1 });
 * const { y } = session.run({ x: new Tensor("float32", new Float32Array(6), [2, 3]) });
 * ```
 */
export class Session implements Disposable {
  #ptr: Deno.PointerObject | null;
  #env: Env;
  #closing = false;
  #inflight = new Set<Deno.PointerObject>();
  #idle: PromiseWithResolvers<void> | null = null;
  #names = new Map<string, { c: Uint8Array; address: bigint }>();
  #nameArrays = new Map<string, BigUint64Array<ArrayBuffer>>();
  #allOutputNames: readonly string[] = [];
  #inputDims = new Map<string, readonly (number | string)[]>();
  #outputDims = new Map<string, { type: DataType; dims: readonly (number | string)[] }>();
  /** Whether outputs whose dims follow from the inputs' are allocated here (see run). */
  #guessOutputs = true;
  /** Run options for guessed-output runs: a wrong guess is retried, so ORT need not log it. */
  #quiet: Deno.PointerObject | null = null;
  #inputStaging = new Staging();
  #outputStaging = new Staging();
  /** See {@linkcode SessionOptions.keepValuesOnDevice}. */
  readonly #keepValues: boolean;
  /** The IoBinding of the runs that keep values on the device, made on first use. */
  #binding: Deno.PointerObject | null = null;
  /** Per input name, the `Value` bound there (null: a per-run tensor). */
  #bound = new Map<string, Value | null>();
  /** Whether a run through {@linkcode Session.#binding} is in flight (one at a time). */
  #bindingBusy = false;
  #transfers = { runs: 0, inputs: 0, bytes: 0 };
  /** The lock runs and the release take (WebGPU's, see lock.ts), or null. */
  readonly #lock: ProcessLock | null;
  /** The graph's inputs, in graph order. */
  readonly inputs: readonly TensorInfo[];
  /** The graph's outputs, in graph order. */
  readonly outputs: readonly TensorInfo[];
  /** The provider the session actually runs on. */
  readonly executionProvider: ExecutionProvider;
  /** Providers tried, in order (more than one only for `auto`). */
  readonly providerAttempts: readonly ProviderAttempt[];

  /** Whether the graph came from {@linkcode SessionOptions.graphCache}: `hit`, `written` or `off`. */
  readonly graphCacheStatus: "hit" | "written" | "off";

  private constructor(
    ptr: Deno.PointerObject,
    env: Env,
    ep: ExecutionProvider,
    attempts: ProviderAttempt[],
    lock: ProcessLock | null,
    cacheStatus: "hit" | "written" | "off" = "off",
    owned = true,
    keepValuesOnDevice = true,
  ) {
    this.#ptr = ptr;
    this.#keepValues = keepValuesOnDevice && ep !== "cpu";
    this.#lock = lock;
    this.#env = env;
    this.owned = owned;
    env.retain();
    this.graphCacheStatus = cacheStatus;
    this.executionProvider = ep;
    this.providerAttempts = attempts;
    try {
      this.inputs = this.#describe("input");
      this.outputs = this.#describe("output");
    } catch (e) {
      this.close();
      throw e;
    }
    for (const { name } of [...this.inputs, ...this.outputs]) {
      const c = cString(name);
      this.#names.set(name, {
        c,
        address: BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(c))),
      });
    }
    this.#allOutputNames = this.outputs.map((o) => o.name);
    for (const i of this.inputs) this.#inputDims.set(i.name, i.dims);
    for (const o of this.outputs) {
      if (o.type) this.#outputDims.set(o.name, { type: o.type, dims: o.dims });
    }
  }

  /**
   * Loads a model from a file path, from its bytes, or from a function
   * returning them (see {@linkcode ModelSource}).
   *
   * A path lets ORT find external data (`<file>.data`) beside the model.
   *
   * @throws {OrtError} for a missing file, corrupt bytes or a refused provider
   */
  static create(env: Env, source: ModelSource, options: SessionOptions = {}): Session {
    const requested = options.executionProvider ?? "cpu";
    if (requested !== "auto") return Session.#createOn(env, source, options, requested, []);
    // auto: the first provider whose session opens, so a CUDA EP that registers but
    // cannot run this model (no device, too little memory) falls back as well.
    const attempts: ProviderAttempt[] = [];
    for (const ep of AUTO_ORDER) {
      const reason = ep === "cpu" ? undefined : autoPrecheck(ep);
      if (reason !== undefined) {
        attempts.push({ ep, ok: false, reason });
        continue;
      }
      try {
        return Session.#createOn(env, source, options, ep, attempts);
      } catch (e) {
        if (!(e instanceof OrtError) || ep === "cpu") throw e;
        attempts.push({ ep, ok: false, reason: e.ortMessage });
      }
    }
    throw new OrtError("CreateSession", 1, "no execution provider could open the model");
  }

  /**
   * {@linkcode Session.create} on a Deno worker thread: the calling thread's event loop keeps
   * running while the model loads (for many seconds, for a real model), so a Worker can still hear
   * `abort`, and aborting `options.signal` cancels the load.
   *
   * The returned promise settles only once ORT's `CreateSession` has returned: no native call of
   * this creation is left running after it, whatever happened.
   *
   * @throws {OrtError} for a missing file, corrupt bytes or a refused provider
   * @throws the signal's reason when it was aborted (before or during loading)
   */
  static async createAsync(
    env: Env,
    source: ModelSource,
    options: AsyncSessionOptions = {},
  ): Promise<Session> {
    const { signal } = options;
    signal?.throwIfAborted();
    const requested = options.executionProvider ?? "cpu";
    if (requested !== "auto") {
      return await Session.#createOnAsync(env, source, options, requested, [], signal);
    }
    const attempts: ProviderAttempt[] = [];
    for (const ep of AUTO_ORDER) {
      const reason = ep === "cpu" ? undefined : autoPrecheck(ep);
      if (reason !== undefined) {
        attempts.push({ ep, ok: false, reason });
        continue;
      }
      try {
        return await Session.#createOnAsync(env, source, options, ep, attempts, signal);
      } catch (e) {
        if (!(e instanceof OrtError) || ep === "cpu" || signal?.aborted) throw e;
        attempts.push({ ep, ok: false, reason: e.ortMessage });
      }
    }
    throw new OrtError("CreateSession", 1, "no execution provider could open the model");
  }

  static async #createOnAsync(
    env: Env,
    source: ModelSource,
    options: SessionOptions,
    ep: ExecutionProvider,
    before: ProviderAttempt[],
    signal: AbortSignal | undefined,
  ): Promise<Session> {
    signal?.throwIfAborted();
    const lock = ep === "webgpu" ? webGpuLock() : null;
    if (lock !== null) await lock.acquire(() => signal?.aborted ? signal.reason : undefined);
    // The env must outlive the native calls even if its owner closes it meanwhile.
    env.retain();
    try {
      const quiet = quietOpen(env, options, lock);
      const plan = openPlan(source, options, ep);
      for (let step = plan.next(); !step.done;) {
        const attempt = step.value;
        let ptr: Deno.PointerObject;
        try {
          ptr = await createNativeAsync(env, attempt.source, attempt.options, ep, quiet, signal);
        } catch (e) {
          if (!(e instanceof OrtError) || signal?.aborted) {
            plan.return();
            throw e;
          }
          step = plan.next(e);
          if (step.done) throw e;
          continue;
        }
        plan.next();
        return Session.#opened(ptr, env, ep, before, lock, attempt.status, options);
      }
      throw new Error("unreachable: an open plan yields at least one attempt");
    } finally {
      lock?.release();
      env.release();
    }
  }

  /** The session ORT opened on `ep`, after the providers tried `before` it. */
  static #opened(
    ptr: Deno.PointerObject,
    env: Env,
    ep: ExecutionProvider,
    before: ProviderAttempt[],
    lock: ProcessLock | null,
    status: "hit" | "written" | "off",
    options: SessionOptions,
  ): Session {
    const attempts = [...before, { ep, ok: true }];
    const keep = options.keepValuesOnDevice ?? true;
    return new Session(ptr, env, ep, attempts, lock, status, true, keep);
  }

  static #createOn(
    env: Env,
    source: ModelSource,
    options: SessionOptions,
    ep: ExecutionProvider,
    before: ProviderAttempt[],
  ): Session {
    // WebGPU sessions open under the process's WebGPU lock (see lock.ts).
    const lock = ep === "webgpu" ? webGpuLock() : null;
    lock?.acquireSync("open a WebGPU session");
    try {
      const quiet = quietOpen(env, options, lock);
      const plan = openPlan(source, options, ep);
      for (let step = plan.next(); !step.done;) {
        const attempt = step.value;
        let ptr: Deno.PointerObject;
        try {
          ptr = withQuietStderr(
            quiet,
            () => createNative(env, attempt.source, attempt.options, ep),
          );
        } catch (e) {
          if (!(e instanceof OrtError)) {
            plan.return();
            throw e;
          }
          step = plan.next(e);
          if (step.done) throw e;
          continue;
        }
        plan.next();
        return Session.#opened(ptr, env, ep, before, lock, attempt.status, options);
      }
      throw new Error("unreachable: an open plan yields at least one attempt");
    } finally {
      lock?.release();
    }
  }

  /** Whether this object releases the native session (false for {@linkcode Session.borrow}). */
  readonly owned: boolean;

  /**
   * The native session's address, for {@linkcode Session.borrow} in another
   * Worker of this process.
   */
  get address(): bigint {
    return BigInt(Deno.UnsafePointer.value(this.pointer));
  }

  /**
   * Uses the session another Worker of this process opened (its
   * {@linkcode Session.address}) instead of opening a second one: no second
   * load, no second copy of the weights. ORT allows concurrent `Run` calls on
   * one session; with one intra-op thread each run computes on the thread
   * that called it, so Workers sharing a session run side by side as with
   * sessions of their own (on the CPU; a GPU session stays on its device).
   *
   * Closing the borrowed session releases nothing native: its owner must
   * stay open until every borrower has closed (and its runs have finished).
   *
   * @param env This realm's env (tensors are made with its memory info).
   * @param executionProvider The provider the owner's session runs on.
   */
  static borrow(
    env: Env,
    address: bigint,
    executionProvider: ExecutionProvider = "cpu",
  ): Session {
    const ptr = Deno.UnsafePointer.create(address);
    if (ptr === null) throw new RangeError("Cannot borrow a session at address 0");
    return new Session(
      ptr,
      env,
      executionProvider,
      [{ ep: executionProvider, ok: true }],
      executionProvider === "webgpu" ? webGpuLock() : null,
      "off",
      false,
    );
  }

  /** The native `OrtSession*`. */
  get pointer(): Deno.PointerObject {
    if (this.#ptr === null || this.#closing) throw new ClosedError("session", "use the session");
    return this.#ptr;
  }

  /** The env this session keeps open. */
  get env(): Env {
    return this.#env;
  }

  /**
   * Runs on the calling thread and returns the outputs as host tensors.
   *
   * Outputs whose every dimension is fixed or named by a symbolic dimension
   * that an input of this run binds (e.g. `batch`) are allocated here and
   * written by ORT directly: no copy and fewer native calls. Should ORT compute
   * another shape, the run is repeated with ORT allocating, and the session
   * stops guessing.
   */
  run(feeds: Feeds, options: RunOptions = {}): Record<string, Tensor> {
    const session = this.pointer;
    const { api } = ortLibrary();
    for (let guess = this.#guessOutputs, retry = false;; guess = false, retry = true) {
      const call = this.#prepare(feeds, options, guess, true);
      let error: OrtError | undefined;
      try {
        this.#lock?.acquireSync("run a WebGPU session synchronously");
        try {
          error = statusError(
            api.Run.call(
              session,
              call.guessed ? this.#quietRunOptions() : null,
              ...runArguments(call),
            ),
            "Run",
          );
        } finally {
          this.#lock?.release();
        }
        if (error === undefined) {
          // The guess was what failed: ORT computed other shapes than the graph's names say.
          if (retry) this.#guessOutputs = false;
          return this.#collect(call);
        }
      } finally {
        this.#cleanup(call);
      }
      if (!call.guessed) throw error;
    }
  }

  /**
   * Runs on a Deno worker thread, leaving the event loop free (messages,
   * timers, cancellation). Aborting `signal` sets ORT's terminate flag, which
   * ORT checks between operators. Outputs are allocated as in
   * {@linkcode Session.run}.
   */
  async runAsync(feeds: Feeds, options: AsyncRunOptions = {}): Promise<Record<string, Tensor>> {
    for (let guess = this.#guessOutputs, retry = false;; guess = false, retry = true) {
      const result = await this.#runAsyncOnce(feeds, options, guess);
      if (result.outputs) {
        if (retry) this.#guessOutputs = false; // see run()
        return result.outputs;
      }
      if (!result.guessed || options.signal?.aborted || this.#closing) throw result.error;
    }
  }

  async #runAsyncOnce(
    feeds: Feeds,
    options: AsyncRunOptions,
    guess: boolean,
  ): Promise<{ outputs?: Record<string, Tensor>; error?: unknown; guessed: boolean }> {
    const { api, runNonblocking, runWithBindingNonblocking } = ortLibrary();
    this.pointer;
    options.signal?.throwIfAborted();
    const lock = this.#lock;
    if (lock !== null) {
      await lock.acquire(() =>
        options.signal?.aborted
          ? options.signal.reason
          : this.#closing
          ? new ClosedError("session", "run the session")
          : undefined
      );
    }
    let call: PreparedRun;
    let runOptions: Deno.PointerObject;
    let session: Deno.PointerObject;
    try {
      // The session may have closed while this run waited for the lock.
      session = this.pointer;
      // No staging: another run may start while this one is in flight.
      call = this.#prepare(feeds, options, guess, false);
      try {
        runOptions = createRunOptions(call.guessed);
      } catch (e) {
        this.#cleanup(call);
        throw e;
      }
    } catch (e) {
      lock?.release();
      throw e;
    }
    let bound: boolean;
    try {
      bound = this.#bind(feeds, call);
    } catch (e) {
      api.ReleaseRunOptions.call(runOptions);
      this.#cleanup(call);
      lock?.release();
      throw e;
    }
    this.#transfers.runs++;
    if (!bound) { for (const feed of Object.values(feeds)) this.#count(feed); }
    const terminate = () => api.RunOptionsSetTerminate.call(runOptions);
    options.signal?.addEventListener("abort", terminate);
    this.#inflight.add(runOptions);
    if (bound) this.#bindingBusy = true;
    try {
      let status: Deno.PointerValue;
      try {
        status = bound
          ? await runWithBindingNonblocking.call(session, runOptions, this.#binding!)
          : await runNonblocking.call(session, runOptions, ...runArguments(call));
      } finally {
        if (bound) this.#bindingBusy = false;
        lock?.release();
      }
      const error = statusError(status, "Run");
      if (error === undefined) return { outputs: this.#collect(call), guessed: call.guessed };
      if (options.signal?.aborted) return { error: options.signal.reason, guessed: call.guessed };
      if (this.#closing) {
        return {
          error: new ClosedError("session", `finish a run (${error.ortMessage})`),
          guessed: call.guessed,
        };
      }
      return { error, guessed: call.guessed };
    } finally {
      options.signal?.removeEventListener("abort", terminate);
      this.#inflight.delete(runOptions);
      api.ReleaseRunOptions.call(runOptions);
      // `call` holds every array ORT read; it stays reachable until this point.
      this.#cleanup(call);
      if (this.#inflight.size === 0) this.#idle?.resolve();
      this.#releaseIfDone();
    }
  }

  /** Inputs handed to ORT as host data by `runAsync` so far (see `keepValuesOnDevice`). */
  get inputTransfers(): InputTransfers {
    return { ...this.#transfers };
  }

  /**
   * Binds what this run must hand over, for a run through the IoBinding: the inputs (each `Value`
   * only when it is not bound already; ORT copies a host input to its device here) and the
   * preallocated outputs. Returns false, binding nothing, when the run cannot go that way (no
   * Value among the feeds, an output ORT must allocate, or another bound run in flight).
   */
  #bind(feeds: Feeds, call: PreparedRun): boolean {
    if (!this.#keepValues || this.#bindingBusy) return false;
    const names = Object.keys(feeds);
    if (!names.some((n) => feeds[n] instanceof Value)) return false;
    if (call.outValues.some((v) => v === 0n)) return false;
    const { api } = ortLibrary();
    if (this.#binding === null) {
      const out = pointerOut();
      check(api.CreateIoBinding.call(this.pointer, out), "CreateIoBinding");
      this.#binding = readPointer(out, "CreateIoBinding");
    }
    const binding = this.#binding;
    const name = (n: string) => this.#names.get(n)?.c ?? cString(n);
    names.forEach((n, k) => {
      const feed = feeds[n]!;
      if (feed instanceof Value && this.#bound.get(n) === feed) return;
      this.#bound.delete(n); // until bound: a failed bind must not look bound
      const ptr = Deno.UnsafePointer.create(call.inValues[k]!);
      check(api.BindInput.call(binding, name(n), ptr), "BindInput", () => `Binding input '${n}'`);
      this.#bound.set(n, feed instanceof Value ? feed : null);
      this.#count(feed);
    });
    call.outputNames.forEach((n, k) => {
      const ptr = Deno.UnsafePointer.create(call.outValues[k]!);
      check(
        api.BindOutput.call(binding, name(n), ptr),
        "BindOutput",
        () => `Binding output '${n}'`,
      );
    });
    return true;
  }

  #count(feed: Tensor | Value): void {
    this.#transfers.inputs++;
    this.#transfers.bytes += feed instanceof Value
      ? feed.tensor?.data.byteLength ?? 0
      : feed.data.byteLength;
  }

  #quietRunOptions(): Deno.PointerObject {
    return this.#quiet ??= createRunOptions(true);
  }

  /** Number of runs in flight. */
  get pending(): number {
    return this.#inflight.size;
  }

  /**
   * Cancels runs in flight (ORT's terminate flag) and releases the session as
   * soon as none is left. Idempotent.
   */
  close(): void {
    if (this.#closing) return;
    this.#closing = true;
    const { api } = ortLibrary();
    for (const ro of this.#inflight) api.RunOptionsSetTerminate.call(ro);
    this.#releaseIfDone();
  }

  /** {@linkcode Session.close}, then waits until no run is in flight. */
  async closeAsync(): Promise<void> {
    this.close();
    if (this.#inflight.size > 0) {
      this.#idle ??= Promise.withResolvers<void>();
      await this.#idle.promise;
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.closeAsync();
  }

  #releaseIfDone(): void {
    if (!this.#closing || this.#inflight.size > 0 || this.#ptr === null) return;
    const { api } = ortLibrary();
    if (this.#quiet) api.ReleaseRunOptions.call(this.#quiet);
    this.#quiet = null;
    const binding = this.#binding;
    this.#binding = null;
    this.#bound.clear();
    this.#inputStaging.release();
    this.#outputStaging.release();
    const ptr = this.#ptr;
    this.#ptr = null;
    const lock = this.#lock;
    const release = () => {
      // The binding holds device copies of the session's inputs: it goes before the session.
      if (binding !== null) api.ReleaseIoBinding.call(binding);
      if (this.owned) api.ReleaseSession.call(ptr);
      this.#env.release();
    };
    if (lock === null) return release();
    // Releasing a WebGPU session frees buffers of the shared context: under the lock. When this
    // thread holds it for another session's run, the release waits for that run to end.
    if (lock.heldHere) {
      void lock.acquire().then(() => {
        try {
          release();
        } finally {
          lock.release();
        }
      });
      return;
    }
    lock.acquireSync("close a WebGPU session");
    try {
      release();
    } finally {
      lock.release();
    }
  }

  /**
   * Ends ORT's profiling (see {@linkcode SessionOptions.profilingPrefix}) and
   * returns the path of the trace it wrote.
   *
   * @throws {OrtError} when the session was not created with profiling
   */
  endProfiling(): string {
    const { api } = ortLibrary();
    const allocOut = pointerOut();
    check(api.GetAllocatorWithDefaultOptions.call(allocOut), "GetAllocatorWithDefaultOptions");
    const allocator = readPointer(allocOut, "GetAllocatorWithDefaultOptions");
    const out = pointerOut();
    check(api.SessionEndProfiling.call(this.pointer, allocator, out), "SessionEndProfiling");
    const ptr = readPointer(out, "SessionEndProfiling");
    try {
      return Deno.UnsafePointerView.getCString(ptr);
    } finally {
      check(api.AllocatorFree.call(allocator, ptr), "AllocatorFree");
    }
  }

  #describe(kind: "input" | "output"): TensorInfo[] {
    const { api } = ortLibrary();
    const session = this.pointer;
    const countOut = new BigUint64Array(1);
    const allocOut = pointerOut();
    check(api.GetAllocatorWithDefaultOptions.call(allocOut), "GetAllocatorWithDefaultOptions");
    const allocator = readPointer(allocOut, "GetAllocatorWithDefaultOptions");
    const [getCount, getName, getType] = kind === "input"
      ? [api.SessionGetInputCount, api.SessionGetInputName, api.SessionGetInputTypeInfo] as const
      : [
        api.SessionGetOutputCount,
        api.SessionGetOutputName,
        api.SessionGetOutputTypeInfo,
      ] as const;
    check(getCount.call(session, countOut), `SessionGet${kind}Count`);
    const infos: TensorInfo[] = [];
    for (let i = 0n; i < (countOut[0] ?? 0n); i++) {
      const nameOut = pointerOut();
      check(getName.call(session, i, allocator, nameOut), `SessionGet${kind}Name`);
      const namePtr = readPointer(nameOut, `SessionGet${kind}Name`);
      const name = Deno.UnsafePointerView.getCString(namePtr);
      check(api.AllocatorFree.call(allocator, namePtr), "AllocatorFree");
      const typeOut = pointerOut();
      check(getType.call(session, i, typeOut), `SessionGet${kind}TypeInfo`);
      const typeInfo = readPointer(typeOut, `SessionGet${kind}TypeInfo`);
      try {
        const onnxType = new Int32Array(1);
        check(api.GetOnnxTypeFromTypeInfo.call(typeInfo, onnxType), "GetOnnxTypeFromTypeInfo");
        if (onnxType[0] !== ONNX_TYPE_TENSOR) {
          throw new TypeError(
            `Cannot use ${kind} '${name}' as it is not a tensor (ONNXType ${onnxType[0]})`,
          );
        }
        const tensorOut = pointerOut();
        // The tensor info belongs to typeInfo: never released on its own.
        check(api.CastTypeInfoToTensorInfo.call(typeInfo, tensorOut), "CastTypeInfoToTensorInfo");
        const d = describeTensorInfo(readPointer(tensorOut, "CastTypeInfoToTensorInfo"));
        infos.push({
          name,
          type: d.type,
          elementType: d.elementType,
          dims: d.dims.map((n, k) => n >= 0 ? n : (d.symbolic[k] || "?")),
        });
      } finally {
        api.ReleaseTypeInfo.call(typeInfo);
      }
    }
    return infos;
  }

  /**
   * The C array of `names` (`const char* const*`). Arrays of graph names are
   * cached (ORT only reads them); a name not in the graph still goes to ORT,
   * which names the problem in its own words.
   */
  #nameArray(names: readonly string[], keep: unknown[]): BigUint64Array<ArrayBuffer> {
    const key = names.join("\n");
    const cached = this.#nameArrays.get(key);
    if (cached) return cached;
    const array = new BigUint64Array(names.length);
    let known = true;
    names.forEach((name, k) => {
      let entry = this.#names.get(name);
      if (!entry) {
        known = false;
        const c = cString(name);
        keep.push(c);
        entry = { c, address: BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(c))) };
      }
      array[k] = entry.address;
    });
    if (known && this.#nameArrays.size < 64) this.#nameArrays.set(key, array);
    keep.push(array);
    return array;
  }

  #prepare(feeds: Feeds, options: RunOptions, guess: boolean, stage: boolean): PreparedRun {
    const memoryInfo = this.#env.cpuMemoryInfo;
    const keep: unknown[] = [feeds];
    const owned: Deno.PointerObject[] = [];
    try {
      const inputNames = Object.keys(feeds);
      const inValues = new BigUint64Array(inputNames.length);
      for (let k = 0; k < inputNames.length; k++) {
        const feed = feeds[inputNames[k]!]!;
        let ptr: Deno.PointerObject;
        if (feed instanceof Value) {
          ptr = feed.pointer;
        } else if (stage && feed.data.byteLength <= STAGING_MAX_BYTES) {
          const slot = this.#inputStaging.slot(memoryInfo, inputNames[k]!, feed.type, feed.dims);
          // deno-lint-ignore no-explicit-any -- same element type by the slot's key
          (slot.tensor.data as any).set(feed.data);
          ptr = slot.ptr;
        } else {
          ptr = createTensorValue(memoryInfo, feed);
          owned.push(ptr);
        }
        inValues[k] = BigInt(Deno.UnsafePointer.value(ptr));
      }
      const requested = options.outputs;
      let outputNames: readonly string[] = this.#allOutputNames;
      let preallocated: (Tensor | Value | undefined)[] | null = null;
      if (Array.isArray(requested)) {
        outputNames = requested as readonly string[];
      } else if (requested !== undefined) {
        const byName = requested as Readonly<Record<string, Tensor | Value>>;
        outputNames = Object.keys(byName);
        preallocated = outputNames.map((name) => byName[name]);
        keep.push(byName);
      }
      let guessed = false;
      let staged: boolean[] | null = null;
      if (preallocated === null && guess) {
        const tensors = this.#guessOutputTensors(feeds, inputNames, outputNames);
        guessed = tensors !== null;
        if (tensors !== null && stage) {
          staged = tensors.map((t) => t !== undefined && t.data.byteLength <= STAGING_MAX_BYTES);
        }
        preallocated = tensors;
      }
      const outValues = new BigUint64Array(outputNames.length);
      preallocated?.forEach((target, k) => {
        if (target === undefined) return;
        let ptr: Deno.PointerObject;
        if (staged?.[k]) {
          const t = target as Tensor;
          const slot = this.#outputStaging.slot(memoryInfo, outputNames[k]!, t.type, t.dims);
          preallocated![k] = slot.tensor;
          ptr = slot.ptr;
        } else if (target instanceof Value) {
          ptr = target.pointer;
        } else {
          ptr = createTensorValue(memoryInfo, target);
          owned.push(ptr);
        }
        outValues[k] = BigInt(Deno.UnsafePointer.value(ptr));
      });
      return {
        inNames: this.#nameArray(inputNames, keep),
        inValues,
        outNames: this.#nameArray(outputNames, keep),
        outValues,
        outputNames,
        owned,
        preallocated,
        guessed,
        staged,
        keep,
      };
    } catch (e) {
      const { api } = ortLibrary();
      for (const ptr of owned) api.ReleaseValue.call(ptr);
      throw e;
    }
  }

  /**
   * Host tensors for the outputs whose dims follow from this run's inputs:
   * each dim fixed in the graph, or a symbolic dim some input binds. Null when
   * no output can be allocated that way.
   */
  #guessOutputTensors(
    feeds: Feeds,
    inputNames: readonly string[],
    outputNames: readonly string[],
  ): (Tensor | undefined)[] | null {
    const bound = new Map<string, number>();
    for (const name of inputNames) {
      const graphDims = this.#inputDims.get(name);
      const feed = feeds[name]!;
      const dims = feed instanceof Value ? feed.tensor?.dims : feed.dims;
      // Anything odd goes to ORT unguessed, so ORT reports it in its own words.
      if (graphDims === undefined || dims === undefined || dims.length !== graphDims.length) {
        return null;
      }
      for (let d = 0; d < dims.length; d++) {
        const g = graphDims[d]!;
        if (typeof g !== "string" || g === "?") continue;
        const prev = bound.get(g);
        if (prev !== undefined && prev !== dims[d]) return null;
        bound.set(g, dims[d]!);
      }
    }
    let any = false;
    const tensors = outputNames.map((name) => {
      const plan = this.#outputDims.get(name);
      if (plan === undefined) return undefined;
      const dims: number[] = [];
      for (const g of plan.dims) {
        const d = typeof g === "number" ? g : bound.get(g);
        if (d === undefined || d < 0) return undefined;
        dims.push(d);
      }
      any = true;
      return new Tensor(plan.type, allocate(plan.type, elementCount(dims)), dims);
    });
    return any ? tensors : null;
  }

  #collect(call: PreparedRun): Record<string, Tensor> {
    const { api } = ortLibrary();
    const result: Record<string, Tensor> = {};
    for (let k = 0; k < call.outputNames.length; k++) {
      const name = call.outputNames[k]!;
      const target = call.preallocated?.[k];
      if (target !== undefined) {
        if (call.staged?.[k]) {
          const t = target as Tensor;
          result[name] = new Tensor(t.type, t.data.slice() as typeof t.data, t.dims);
        } else {
          result[name] = target instanceof Value ? (target.tensor ?? target.toTensor()) : target;
        }
        continue;
      }
      const ptr = Deno.UnsafePointer.create(call.outValues[k]!);
      if (ptr === null) throw new OrtError("Run", 1, `output '${name}' was not produced`);
      try {
        result[name] = copyOut(ptr);
      } finally {
        api.ReleaseValue.call(ptr);
        call.outValues[k] = 0n;
      }
    }
    return result;
  }

  /** Releases this call's own input values and any output ORT made that was not collected. */
  #cleanup(call: PreparedRun): void {
    const { api } = ortLibrary();
    for (let k = 0; k < call.outputNames.length; k++) {
      if (call.preallocated?.[k] !== undefined) continue;
      const ptr = Deno.UnsafePointer.create(call.outValues[k]!);
      if (ptr !== null) api.ReleaseValue.call(ptr);
      call.outValues[k] = 0n;
    }
    for (const ptr of call.owned) api.ReleaseValue.call(ptr);
  }
}

/** Keeps its arguments reachable up to this call (buffers a native call read while we awaited it). */
function keepAlive(..._values: unknown[]): void {}

/**
 * New run options; `quiet` ones log only fatal errors (for runs that may be
 * retried, whose failure is not the caller's).
 */
function createRunOptions(quiet: boolean): Deno.PointerObject {
  const { api } = ortLibrary();
  const out = pointerOut();
  check(api.CreateRunOptions.call(out), "CreateRunOptions");
  const ro = readPointer(out, "CreateRunOptions");
  if (quiet) {
    try {
      check(
        api.RunOptionsSetRunLogSeverityLevel.call(ro, LOGGING_LEVEL.fatal),
        "RunOptionsSetRunLogSeverityLevel",
      );
    } catch (e) {
      api.ReleaseRunOptions.call(ro);
      throw e;
    }
  }
  return ro;
}

/** `Run`'s arguments after the session and run options: names, values and their counts. */
function runArguments(call: PreparedRun) {
  return [
    call.inNames,
    call.inValues,
    BigInt(call.inValues.length),
    call.outNames,
    BigInt(call.outputNames.length),
    call.outValues,
  ] as const;
}

function buildOptions(options: SessionOptions): Deno.PointerObject {
  const { api } = ortLibrary();
  const out = pointerOut();
  check(api.CreateSessionOptions.call(out), "CreateSessionOptions");
  const so = readPointer(out, "CreateSessionOptions");
  try {
    const threads = (field: "intraOpThreads" | "interOpThreads") => {
      const n = options[field] ?? 0;
      if (!Number.isInteger(n) || n < 0) {
        throw new RangeError(
          `Cannot create a session as '${field}' must be a non-negative integer: current value is ${n}`,
        );
      }
      return n;
    };
    check(api.SetIntraOpNumThreads.call(so, threads("intraOpThreads")), "SetIntraOpNumThreads");
    check(api.SetInterOpNumThreads.call(so, threads("interOpThreads")), "SetInterOpNumThreads");
    const level = GRAPH_OPTIMIZATION_LEVEL[options.graphOptimizationLevel ?? "all"];
    if (level === undefined) {
      throw new RangeError(
        `Cannot create a session as 'graphOptimizationLevel' must be one of ${
          Object.keys(GRAPH_OPTIMIZATION_LEVEL).join(", ")
        }: current value is ${options.graphOptimizationLevel}`,
      );
    }
    check(
      api.SetSessionGraphOptimizationLevel.call(so, level),
      "SetSessionGraphOptimizationLevel",
    );
    if (options.logLevel !== undefined) {
      check(
        api.SetSessionLogSeverityLevel.call(so, LOGGING_LEVEL[options.logLevel]),
        "SetSessionLogSeverityLevel",
      );
    }
    if (options.cpuMemArena === false) {
      check(api.DisableCpuMemArena.call(so), "DisableCpuMemArena");
    }
    const config: Record<string, string> = { ...options.configEntries };
    if (options.allowSpinning === false) config["session.intra_op.allow_spinning"] = "0";
    if (options.prepacking === false) config["session.disable_prepacking"] = "1";
    for (const [key, value] of Object.entries(config)) {
      check(
        api.AddSessionConfigEntry.call(so, cString(key), cString(value)),
        "AddSessionConfigEntry",
        `Setting session config entry ${key}=${value}`,
      );
    }
    for (const [dim, size] of Object.entries(options.freeDimensions ?? {})) {
      if (!Number.isInteger(size) || size < 0) {
        throw new RangeError(
          `Cannot create a session as 'freeDimensions.${dim}' must be a non-negative integer: current value is ${size}`,
        );
      }
      check(
        api.AddFreeDimensionOverrideByName.call(so, cString(dim), BigInt(size)),
        "AddFreeDimensionOverrideByName",
      );
    }
    if (options.optimizedModelFilePath !== undefined) {
      check(
        api.SetOptimizedModelFilePath.call(so, cString(options.optimizedModelFilePath)),
        "SetOptimizedModelFilePath",
      );
    }
    if (options.profilingPrefix !== undefined) {
      check(api.EnableProfiling.call(so, cString(options.profilingPrefix)), "EnableProfiling");
    }
    return so;
  } catch (e) {
    api.ReleaseSessionOptions.call(so);
    throw e;
  }
}

/** The config entries that go into a graph cache key: the caller's, and prepacking. */
function graphConfigEntries(options: SessionOptions): Record<string, string> {
  // Spinning, threads, arena and logging change how the graph runs, not the graph.
  const config: Record<string, string> = { ...options.configEntries };
  if (options.prepacking === false) config["session.disable_prepacking"] = "1";
  return config;
}

/** `read`, called at most once. */
function once(read: () => Uint8Array): () => Uint8Array {
  let bytes: Uint8Array | undefined;
  return () => bytes ??= read();
}

function readSource(source: ModelSource): Uint8Array {
  return typeof source === "function"
    ? source()
    : typeof source === "string"
    ? Deno.readFileSync(source)
    : source;
}

/** One way of opening the native session that {@linkcode openPlan} proposes. */
interface OpenAttempt {
  readonly source: ModelSource;
  readonly options: SessionOptions;
  /** What the session's {@linkcode Session.graphCacheStatus} is if this attempt opens it. */
  readonly status: "hit" | "written" | "off";
}

/**
 * The ways to open a session, in order: each is told whether ORT refused it
 * (the error) or opened it (undefined); the plan ends after a success, or
 * when no way is left (the last refusal is then the caller's error). Without a
 * graph cache that is one plain open. With one: the cached graph with
 * optimisation disabled (a graph ORT cannot load is discarded), else an open
 * that writes the optimised graph and commits it, else a plain open (a
 * provider whose compiled nodes cannot be saved still opens).
 */
function* openPlan(
  source: ModelSource,
  options: SessionOptions,
  ep: ExecutionProvider,
): Generator<OpenAttempt, void, OrtError | undefined> {
  const cache = options.graphCache;
  const level = options.graphOptimizationLevel ?? "all";
  const plain: OpenAttempt = { source, options, status: "off" };
  if (cache === undefined || level === "disabled") {
    yield plain;
    return;
  }
  const lib = ortLibrary();
  const runtime = cache.runtime ?? { version: lib.version, buildInfo: lib.buildInfo };
  if (typeof source === "function") source = once(source);
  const key: GraphKey = {
    modelHash: options.modelHash ??
      (typeof source === "string" ? cache.modelHash(source) : sha256Bytes(readSource(source))),
    ep,
    deviceId: ep === "cuda" ? options.deviceId ?? 0 : null,
    graphOptimizationLevel: level,
    configEntries: graphConfigEntries(options),
    freeDimensions: options.freeDimensions ?? {},
  };
  const name = cache.keyOf(key, runtime);
  const cached = cache.lookup(name);
  if (cached !== null) {
    const error = yield {
      source: cached.modelPath,
      options: { ...options, graphOptimizationLevel: "disabled" },
      status: "hit",
    };
    if (error === undefined) return;
    cache.discard(name, `ONNX Runtime cannot load it: ${error.ortMessage}`);
  }
  let pending;
  try {
    pending = cache.begin(name, key, runtime);
  } catch (e) {
    cache.warn(`cannot write to the graph cache ${cache.dir}: ${errorText(e)}`);
    yield plain;
    return;
  }
  let error: OrtError | undefined;
  let answered = false;
  try {
    error = yield {
      source,
      options: {
        ...options,
        optimizedModelFilePath: pending.modelPath,
        configEntries: {
          ...options.configEntries,
          // Initializers go to a file beside the graph: no 2 GB protobuf limit.
          "session.optimized_model_external_initializers_file_name": pending.dataFileName,
        },
      },
      status: "written",
    };
    answered = true;
  } finally {
    if (!answered) pending.abort(); // the caller gave up (an error that is not ORT's)
  }
  if (error === undefined) {
    try {
      pending.commit();
    } catch (e) {
      cache.warn(`cannot store the optimised graph in ${cache.dir}: ${errorText(e)}`);
    }
    return;
  }
  pending.abort();
  // Writing the graph may be what failed: open without the cache; if that fails too, that is
  // the error to report.
  if ((yield plain) === undefined) {
    cache.warn(`cannot cache the optimised graph: ${error.ortMessage}`);
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Whether opening on this provider silences stderr: Dawn's WebGPU adapter
 * warnings go to stderr behind ORT's logger, so they are shown only when ORT
 * may log warnings.
 */
function quietOpen(env: Env, options: SessionOptions, lock: ProcessLock | null): boolean {
  return lock !== null && LOGGING_LEVEL[options.logLevel ?? env.logLevel] >= LOGGING_LEVEL.error;
}

/** Creates the native session from `source` on the calling thread. */
function createNative(
  env: Env,
  source: ModelSource,
  options: SessionOptions,
  ep: ExecutionProvider,
): Deno.PointerObject {
  const { api } = ortLibrary();
  const so = buildOptions(options);
  try {
    appendRequestedProvider(so, ep, {
      ...(options.deviceId === undefined ? {} : { deviceId: options.deviceId }),
    });
    const out = pointerOut();
    if (typeof source === "string") {
      check(
        api.CreateSession.call(env.pointer, cString(source), so, out),
        "CreateSession",
        `Loading ${source}`,
      );
    } else {
      const bytes = readSource(source);
      check(
        api.CreateSessionFromArray.call(env.pointer, bytes, BigInt(bytes.byteLength), so, out),
        "CreateSessionFromArray",
        `Loading a model from ${bytes.byteLength} bytes`,
      );
    }
    return readPointer(out, "CreateSession");
  } finally {
    // The options hold the provider factory, whose release touches the WebGPU context too.
    api.ReleaseSessionOptions.call(so);
  }
}

/**
 * Creates the native session from `source` on a Deno worker thread; aborting
 * `signal` sets ORT's load cancellation flag. Settles only once ORT returned;
 * a session that loaded although the signal was aborted is released.
 */
async function createNativeAsync(
  env: Env,
  source: ModelSource,
  options: SessionOptions,
  ep: ExecutionProvider,
  quiet: boolean,
  signal: AbortSignal | undefined,
): Promise<Deno.PointerObject> {
  signal?.throwIfAborted();
  const lib = ortLibrary();
  const so = buildOptions(options);
  const cancel = () => lib.setLoadCancellationFlag?.call(so, true);
  try {
    const out = pointerOut();
    const path = typeof source === "string" ? cString(source) : null;
    const bytes = path === null ? readSource(source) : null;
    signal?.addEventListener("abort", cancel);
    let status: Deno.PointerValue;
    try {
      status = await withQuietStderrAsync(quiet, () => {
        appendRequestedProvider(so, ep, {
          ...(options.deviceId === undefined ? {} : { deviceId: options.deviceId }),
        });
        return bytes === null
          ? lib.createSessionNonblocking.call(env.pointer, path!, so, out)
          : lib.createSessionFromArrayNonblocking.call(
            env.pointer,
            bytes,
            BigInt(bytes.byteLength),
            so,
            out,
          );
      });
    } finally {
      signal?.removeEventListener("abort", cancel);
    }
    // ORT read these during the call: referenced until here, after it returned.
    keepAlive(path, bytes, out);
    const error = statusError(
      status,
      bytes === null ? "CreateSession" : "CreateSessionFromArray",
      () => bytes === null ? `Loading ${source}` : `Loading a model from ${bytes.byteLength} bytes`,
    );
    if (signal?.aborted) {
      // Loaded before ORT saw the flag (or no flag in this ORT): not wanted any more.
      if (error === undefined) lib.api.ReleaseSession.call(readPointer(out, "CreateSession"));
      throw signal.reason;
    }
    if (error !== undefined) throw error;
    return readPointer(out, "CreateSession");
  } finally {
    lib.api.ReleaseSessionOptions.call(so);
  }
}
