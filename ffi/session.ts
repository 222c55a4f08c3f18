/**
 * `OrtSession`: a loaded model, its inputs and outputs, and running it.
 *
 * @module
 */

import { GRAPH_OPTIMIZATION_LEVEL, LOGGING_LEVEL, ONNX_TYPE_TENSOR } from "./_defs.ts";
import type { Env, LogLevel } from "./env.ts";
import { ClosedError, OrtError } from "./errors.ts";
import { check, cString, ortLibrary, pointerOut, readPointer, statusError } from "./library.ts";
import { type ExecutionProvider, type ProviderAttempt, selectProvider } from "./providers.ts";
import type { DataType, Tensor } from "./tensor.ts";
import { describeTensorInfo, Value } from "./value.ts";

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

interface PreparedRun {
  inNames: BigUint64Array<ArrayBuffer>;
  inValues: BigUint64Array<ArrayBuffer>;
  nIn: bigint;
  outNames: BigUint64Array<ArrayBuffer>;
  outValues: BigUint64Array<ArrayBuffer>;
  outputNames: readonly string[];
  /** Values created for this call only, released after it. */
  temporary: Value[];
  /** Preallocated outputs by name. */
  preallocated: Map<string, Value>;
  /** Everything ORT reads during the call, kept referenced until it returns. */
  keepAlive: unknown[];
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
  /** The graph's inputs, in graph order. */
  readonly inputs: readonly TensorInfo[];
  /** The graph's outputs, in graph order. */
  readonly outputs: readonly TensorInfo[];
  /** The provider the session actually runs on. */
  readonly executionProvider: ExecutionProvider;
  /** Providers tried, in order (more than one only for `auto`). */
  readonly providerAttempts: readonly ProviderAttempt[];

  private constructor(
    ptr: Deno.PointerObject,
    env: Env,
    ep: ExecutionProvider,
    attempts: ProviderAttempt[],
  ) {
    this.#ptr = ptr;
    this.#env = env;
    env.retain();
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
  }

  /**
   * Loads a model from a file path or from its bytes.
   *
   * A path lets ORT find external data (`<file>.data`) beside the model.
   *
   * @throws {OrtError} for a missing file, corrupt bytes or a refused provider
   */
  static create(env: Env, source: string | Uint8Array, options: SessionOptions = {}): Session {
    const { api } = ortLibrary();
    const so = buildOptions(options);
    try {
      const selected = selectProvider(so, options.executionProvider ?? "cpu", {
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
        check(
          api.CreateSessionFromArray.call(env.pointer, source, BigInt(source.byteLength), so, out),
          "CreateSessionFromArray",
          `Loading a model from ${source.byteLength} bytes`,
        );
      }
      return new Session(readPointer(out, "CreateSession"), env, selected.ep, selected.attempts);
    } finally {
      api.ReleaseSessionOptions.call(so);
    }
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

  /** Runs on the calling thread and returns the outputs copied into host tensors. */
  run(feeds: Feeds, options: RunOptions = {}): Record<string, Tensor> {
    const session = this.pointer;
    const call = this.#prepare(feeds, options);
    try {
      check(
        ortLibrary().api.Run.call(
          session,
          null,
          call.inNames,
          call.inValues,
          call.nIn,
          call.outNames,
          BigInt(call.outputNames.length),
          call.outValues,
        ),
        "Run",
      );
      return this.#collect(call);
    } finally {
      this.#cleanup(call);
    }
  }

  /**
   * Runs on a Deno worker thread, leaving the event loop free (messages,
   * timers, cancellation). Aborting `signal` sets ORT's terminate flag, which
   * ORT checks between operators.
   */
  async runAsync(feeds: Feeds, options: AsyncRunOptions = {}): Promise<Record<string, Tensor>> {
    const { api, runNonblocking } = ortLibrary();
    const session = this.pointer;
    options.signal?.throwIfAborted();
    const call = this.#prepare(feeds, options);
    let runOptions: Deno.PointerObject;
    try {
      const out = pointerOut();
      check(api.CreateRunOptions.call(out), "CreateRunOptions");
      runOptions = readPointer(out, "CreateRunOptions");
    } catch (e) {
      this.#cleanup(call);
      throw e;
    }
    const terminate = () => api.RunOptionsSetTerminate.call(runOptions);
    options.signal?.addEventListener("abort", terminate);
    this.#inflight.add(runOptions);
    try {
      const error = statusError(
        await runNonblocking.call(
          session,
          runOptions,
          call.inNames,
          call.inValues,
          call.nIn,
          call.outNames,
          BigInt(call.outputNames.length),
          call.outValues,
        ),
        "Run",
      );
      if (error !== undefined) {
        if (options.signal?.aborted) throw options.signal.reason;
        if (this.#closing) throw new ClosedError("session", `finish a run (${error.ortMessage})`);
        throw error;
      }
      return this.#collect(call);
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
    ortLibrary().api.ReleaseSession.call(this.#ptr);
    this.#ptr = null;
    this.#env.release();
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

  /** The address of `name` as a C string; names not in the graph live in `keep` for one call. */
  #address(name: string, keep: unknown[]): bigint {
    const known = this.#names.get(name);
    if (known) return known.address;
    // Unknown names still go to ORT, which names the problem in its own words.
    const c = cString(name);
    keep.push(c);
    return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(c)));
  }

  #prepare(feeds: Feeds, options: RunOptions): PreparedRun {
    const env = this.#env;
    const inputNames = Object.keys(feeds);
    const temporary: Value[] = [];
    const keep: unknown[] = [];
    const inNames = new BigUint64Array(inputNames.length);
    const inValues = new BigUint64Array(inputNames.length);
    const preallocated = new Map<string, Value>();
    try {
      inputNames.forEach((name, k) => {
        const feed = feeds[name]!;
        let value: Value;
        if (feed instanceof Value) {
          value = feed;
        } else {
          value = Value.fromTensor(env, feed);
          temporary.push(value);
        }
        keep.push(feed);
        inNames[k] = this.#address(name, keep);
        inValues[k] = BigInt(Deno.UnsafePointer.value(value.pointer));
      });
      const requested = options.outputs;
      let outputNames: readonly string[];
      if (requested === undefined) {
        outputNames = this.outputs.map((o) => o.name);
      } else if (Array.isArray(requested)) {
        outputNames = requested as readonly string[];
      } else {
        const byName = requested as Readonly<Record<string, Tensor | Value>>;
        outputNames = Object.keys(byName);
        for (const name of outputNames) {
          const t = byName[name]!;
          let value: Value;
          if (t instanceof Value) {
            value = t;
          } else {
            value = Value.fromTensor(env, t);
            temporary.push(value);
          }
          keep.push(t);
          preallocated.set(name, value);
        }
      }
      const outNames = new BigUint64Array(outputNames.length);
      const outValues = new BigUint64Array(outputNames.length);
      outputNames.forEach((name, k) => {
        outNames[k] = this.#address(name, keep);
        const pre = preallocated.get(name);
        if (pre) outValues[k] = BigInt(Deno.UnsafePointer.value(pre.pointer));
      });
      keep.push(inNames, inValues, outNames, outValues);
      return {
        inNames,
        inValues,
        nIn: BigInt(inputNames.length),
        outNames,
        outValues,
        outputNames,
        temporary,
        preallocated,
        keepAlive: keep,
      };
    } catch (e) {
      for (const v of temporary) v.close();
      throw e;
    }
  }

  #collect(call: PreparedRun): Record<string, Tensor> {
    const result: Record<string, Tensor> = {};
    call.outputNames.forEach((name, k) => {
      const pre = call.preallocated.get(name);
      if (pre) {
        const t = pre.tensor;
        result[name] = t ?? pre.toTensor();
        return;
      }
      const ptr = Deno.UnsafePointer.create(call.outValues[k] ?? 0n);
      if (ptr === null) throw new OrtError("Run", 1, `output '${name}' was not produced`);
      using value = Value.adopt(ptr);
      call.outValues[k] = 0n;
      result[name] = value.toTensor();
    });
    return result;
  }

  #cleanup(call: PreparedRun): void {
    const { api } = ortLibrary();
    // Outputs ORT allocated but that were not collected (a failed run or a
    // failure while copying) are released here.
    call.outputNames.forEach((name, k) => {
      if (call.preallocated.has(name)) return;
      const ptr = Deno.UnsafePointer.create(call.outValues[k] ?? 0n);
      if (ptr !== null) api.ReleaseValue.call(ptr);
      call.outValues[k] = 0n;
    });
    for (const v of call.temporary) v.close();
  }
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
    if (options.allowSpinning === false) {
      check(
        api.AddSessionConfigEntry.call(
          so,
          cString("session.intra_op.allow_spinning"),
          cString("0"),
        ),
        "AddSessionConfigEntry",
      );
    }
    return so;
  } catch (e) {
    api.ReleaseSessionOptions.call(so);
    throw e;
  }
}
