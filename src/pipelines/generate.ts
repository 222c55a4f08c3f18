/**
 * One generation, for any family: check the plan and every component, encode, prepare latents,
 * denoise (with the chosen engine and mode), decode. diffusers' `__call__` blocks, with the loop
 * handed to the ParaStep engine.
 *
 * @module
 */

import { autoCandidate, Env, type ExecutionProvider, type LogLevel } from "../../ffi/mod.ts";
import {
  checkComponentGraphs,
  type ModelFolder,
  type OpenComponentOptions,
} from "../models/model.ts";
import { checkBatchStepPlan } from "../parastep/batchstep.ts";
import { checkPlan, type Exchange, EXCHANGES } from "../parastep/rounds.ts";
import {
  type DenoiseEngine,
  denoiseInProcess,
  type DenoiseMode,
  type DenoiseReport,
  type OpenedEngine,
} from "./denoise.ts";
import type { MediaDecoder, PipelineFamily, RequestBase } from "./family.ts";

/** Options for {@linkcode generate}. Every field is optional. */
export interface GenerateOptions {
  /** Execution provider for every session. @default "cpu" */
  readonly ep?: ExecutionProvider | "auto";
  /** Denoising mode. @default "parastep" */
  readonly mode?: DenoiseMode;
  /** Devices N for ParaStep (1 is the sequential sampler). @default 1 */
  readonly devices?: number;
  /** Warm-up steps W. @default manifest defaults.warmup (capped at T) */
  readonly warmup?: number;
  /** BatchStep stride L. @default 2 */
  readonly stride?: number;
  /** How ParaStep ranks share a round's results (see `Exchange`). @default "gather" */
  readonly exchange?: Exchange;
  /** Intra-op threads of the encode and decode sessions; 0 lets ORT choose. @default 0 */
  readonly threads?: number;
  /** Intra-op threads of each device's denoiser. @default floor(cores / devices), at least 1 */
  readonly denoiserThreads?: number;
  /**
   * Open every graph through the graph cache (`defaultGraphCache()`): the first open stores the
   * graph as ORT optimised it, later opens load that with optimisation off. Outputs are the same.
   * @default {false}
   */
  readonly graphCache?: boolean;
  /** The least severe ONNX Runtime message printed. @default "error" */
  readonly logLevel?: LogLevel;
  /** Called after step `i` of `T` is applied to the true latents. */
  readonly onStep?: (i: number, T: number) => void;
  /** Aborting stops the run at the next model call and cancels calls in flight. */
  readonly signal?: AbortSignal;
  /**
   * The Worker engine's stall watchdog (`RunWorkersOptions.stallTimeoutMs`): a device whose call
   * has not returned for this long ends the run naming the rank and the step.
   * @default max(60 s, 10 x the slowest denoiser call)
   */
  readonly stallTimeoutMs?: number;
  /**
   * Runs the denoising loop; the default runs every rank in this process over one sampler. The
   * CLI passes the Worker engine here.
   */
  readonly denoiseWith?: DenoiseEngine;
}

/** A finished generation. */
export interface Generation<R, M> {
  readonly request: R;
  readonly media: M;
  readonly denoise: DenoiseReport & {
    readonly mode: DenoiseMode;
    readonly devices: number;
    readonly warmup: number;
    /** How the ranks shared each round's results; null when nothing was exchanged. */
    readonly exchange: Exchange | null;
  };
  /** Wall time of each stage, in milliseconds. */
  readonly timings: {
    /** Encoding the conditioning (while the denoisers load). */
    readonly encodeMs: number;
    /**
     * Opening the denoiser session(s) and starting Workers; it overlaps encoding, so it is not
     * part of the total by itself. 0 when the engine was already open (a later request).
     */
    readonly loadMs: number;
    /** Waiting, after encoding, for the denoisers to finish loading. */
    readonly loadWaitMs: number;
    /** The denoising loop. */
    readonly denoiseMs: number;
    readonly decodeMs: number;
    /** The whole request, first check to decoded media. */
    readonly totalMs: number;
  };
}

/** The model's warm-up W for a run of `steps` steps: its manifest default, at most `steps`. */
export function defaultWarmup(model: ModelFolder, steps: number): number {
  return Math.min(model.manifest.defaults.warmup, steps);
}

/**
 * Checks a ParaStep plan for the CLI: besides `checkPlan`'s rules, N devices need at least N
 * steps after the warm-up, or some would never predict one.
 *
 * @throws {RangeError} naming the value and the limit
 */
export function checkDevices(T: number, W: number, N: number): void {
  checkPlan({ steps: T, warmup: W, devices: N });
  if (N > 1 && N > T - W) {
    throw new RangeError(
      `Cannot run ParaStep on ${N} devices with ${T} steps and ${W} warm-up steps: ` +
        `only ${T - W} steps run in parallel, so use at most ${Math.max(1, T - W)} devices`,
    );
  }
}

/** The checked shape of a run: mode, devices, warm-up, stride, exchange. */
export interface RunPlan {
  readonly mode: DenoiseMode;
  readonly devices: number;
  readonly warmup: number;
  readonly stride: number;
  readonly exchange: Exchange;
}

/**
 * Checks the run's shape for a request of `steps` steps, filling the defaults.
 *
 * @throws {RangeError} naming the value and its limits
 */
export function checkRunPlan(
  model: ModelFolder,
  steps: number,
  options: Pick<GenerateOptions, "mode" | "devices" | "warmup" | "stride" | "exchange">,
): RunPlan {
  const mode = options.mode ?? "parastep";
  const devices = options.devices ?? 1;
  if (!Number.isInteger(devices) || devices < 1) {
    throw new RangeError(
      `Cannot generate as 'devices' must be an integer >= 1: current value is ${devices}`,
    );
  }
  const warmup = options.warmup ?? defaultWarmup(model, steps);
  const stride = options.stride ?? 2;
  const exchange = options.exchange ?? "gather";
  if (!EXCHANGES.includes(exchange)) {
    throw new RangeError(
      `Cannot generate as 'exchange' must be one of ${
        EXCHANGES.join(", ")
      }: current value is ${exchange}`,
    );
  }
  if (mode === "batchstep") checkBatchStepPlan({ steps, warmup, stride });
  else checkDevices(steps, warmup, mode === "sequential" ? 1 : devices);
  return { mode, devices, warmup, stride, exchange };
}

/** What bounds a run by this machine: its cores and memory. */
export interface Capacity {
  /** CPU cores (logical). @default navigator.hardwareConcurrency */
  readonly cores?: number;
  /** Bytes of memory available. @default Deno.systemMemoryInfo().available */
  readonly availableBytes?: number;
}

/**
 * A device's memory, estimated from its denoiser graph's bytes: weights, their prepacked copies
 * and ORT's arena. Measured here (CPU, RSS growth per extra session, before any run): the bench
 * UNet (23 MiB) added 23 to 69 MiB per session, the tiny UNet (4 MiB) 24 MiB. A call's
 * activations and the Worker's own isolate come on top, hence the generous constants.
 */
const SESSION_BYTES_PER_GRAPH_BYTE = 3;
/** The most CPU devices per core a run may start. */
const CPU_DEVICES_PER_CORE = 4;
/** What one more device costs besides its session's weights: an isolate, thread pools. */
const WORKER_OVERHEAD_BYTES = 64 * 2 ** 20;

/**
 * Refuses a run this machine cannot hold, with the reason: more threads than cores, more CPU
 * devices than cores (each needs one), or more denoiser sessions than memory holds.
 *
 * @throws {RangeError} naming the flag, the limit and why
 */
export function checkCapacity(
  model: ModelFolder,
  denoiser: string,
  run: { ep: ExecutionProvider | "auto"; devices: number; threads?: number },
  capacity: Capacity = {},
): void {
  const cores = capacity.cores ?? navigator.hardwareConcurrency;
  if (run.threads !== undefined && run.threads > cores) {
    throw new RangeError(
      `Cannot use ${run.threads} threads per session: this machine has ${cores} cores and ` +
        `more threads than cores only contend; use --threads 1..${cores}`,
    );
  }
  const ep = run.ep === "auto" ? autoCandidate() : run.ep;
  // CPU devices beyond the cores still run (time-sliced, one thread each), which tests and
  // experiments use; far beyond, they only cost memory and threads.
  const maxCpuDevices = CPU_DEVICES_PER_CORE * cores;
  if (ep === "cpu" && run.devices > maxCpuDevices) {
    throw new RangeError(
      `Cannot run ${run.devices} CPU devices: this machine has ${cores} cores, and more than ` +
        `${maxCpuDevices} devices would only take turns on them; use --gpus ${maxCpuDevices} or fewer`,
    );
  }
  if (run.devices === 1) return;
  const spec = model.manifest.components[denoiser];
  if (spec === undefined) return;
  let graphBytes = 0;
  for (const file of [spec.file, `${spec.file}.data`]) {
    try {
      graphBytes += Deno.statSync(`${model.dir}/${file}`).size;
    } catch {
      // no external data
    }
  }
  const perDevice = graphBytes * SESSION_BYTES_PER_GRAPH_BYTE + WORKER_OVERHEAD_BYTES;
  const available = capacity.availableBytes ?? Deno.systemMemoryInfo().available;
  // On a GPU the weights live in device memory, but each Worker still holds its host copy.
  if (run.devices * perDevice > available) {
    const fit = Math.max(1, Math.floor(available / perDevice));
    const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
    throw new RangeError(
      `Cannot run ${run.devices} devices: each holds its own ${denoiser} session (about ${
        gib(perDevice)
      } here), ${gib(run.devices * perDevice)} in all, and ${gib(available)} of memory is ` +
        `available; use --gpus ${fit} or fewer`,
    );
  }
}

/** Options for a {@linkcode Generator}: {@linkcode GenerateOptions} without per-request ones. */
export type GeneratorOptions = Omit<GenerateOptions, "onStep" | "signal">;

/**
 * Generation after generation with one model: the denoisers open once (on the run's devices,
 * Workers for ParaStep) and stay open while requests need the same ones, the decoder opens once.
 * The denoisers start loading as soon as the first request is known, so they load while its
 * conditioning is encoded.
 */
export class Generator<R extends RequestBase, C, M> implements AsyncDisposable {
  readonly #family: PipelineFamily<R, C, M>;
  readonly #model: ModelFolder;
  readonly #options: GeneratorOptions;
  readonly #env: Env;
  readonly #session: OpenComponentOptions;
  /** Aborts denoisers still loading when the generator closes. */
  readonly #closing = new AbortController();
  #decoder: MediaDecoder<R, M> | null = null;
  #engine: { key: string; opening: Promise<OpenedEngine>; started: number; used: boolean } | null =
    null;
  #closed = false;

  /**
   * Checks every component graph against the manifest (before any work) and creates the ORT env.
   *
   * @throws {ManifestError} for a component that disagrees with the manifest
   */
  constructor(family: PipelineFamily<R, C, M>, model: ModelFolder, options: GeneratorOptions = {}) {
    checkComponentGraphs(model, family.components);
    this.#family = family;
    this.#model = model;
    this.#options = options;
    const ep = options.ep ?? "cpu";
    this.#session = {
      executionProvider: ep,
      intraOpThreads: options.threads ?? 0,
      cache: options.graphCache ?? false,
    };
    this.#env = Env.create({ logLevel: options.logLevel ?? "error" });
  }

  /**
   * Checks the run's shape for `request` and starts opening the denoisers it needs, unless the
   * open ones serve it; returns the checked plan.
   *
   * @throws {RangeError} for an option out of range, or a run this machine cannot hold
   */
  prepare(request: R): RunPlan {
    if (this.#closed) throw new Error("Cannot generate as the generator is closed");
    const options = this.#options;
    const plan = checkRunPlan(this.#model, request.steps, options);
    const devices = plan.mode === "parastep" ? plan.devices : 1;
    const ep = options.ep ?? "cpu";
    const open = this.#family.denoiserInit(this.#model, request);
    checkCapacity(this.#model, open.component, {
      ep,
      devices,
      ...(options.denoiserThreads !== undefined ? { threads: options.denoiserThreads } : {}),
    });
    const key = JSON.stringify({ open, mode: plan.mode, devices: plan.devices });
    if (this.#engine?.key !== key) {
      const previous = this.#engine;
      if (previous) void previous.opening.then((e) => e[Symbol.asyncDispose](), () => {});
      const engine = options.denoiseWith ?? denoiseInProcess;
      const opening = engine({
        module: this.#family.samplerModule,
        open,
        mode: plan.mode,
        devices: plan.devices,
        ep,
        ...(options.denoiserThreads !== undefined ? { threads: options.denoiserThreads } : {}),
        ...(options.graphCache ? { graphCache: true } : {}),
        signal: this.#closing.signal,
      });
      opening.catch(() => {}); // awaited by generate(); a failure there is reported there
      this.#engine = { key, opening, started: performance.now(), used: false };
    }
    return plan;
  }

  /**
   * One generation: encode (while the denoisers load), prepare latents, denoise, decode.
   *
   * @param onStep called after step `i` of `T` is applied to the true latents
   * @param signal aborting it stops the run at the next model call and cancels calls in flight;
   *   the generator is then broken and must be closed
   * @throws {RangeError} for an option out of range, before any work for this request
   */
  async generate(
    request: R,
    options: { onStep?: (i: number, T: number) => void; signal?: AbortSignal } = {},
  ): Promise<Generation<R, M>> {
    const started = performance.now();
    const plan = this.prepare(request);
    const family = this.#family;
    const { signal } = options;
    const abortLoading = () => this.#closing.abort(signal?.reason);
    signal?.addEventListener("abort", abortLoading, { once: true });
    try {
      signal?.throwIfAborted();
      // 3. Encode the conditioning (the denoisers load meanwhile, off this thread)
      let t0 = performance.now();
      const conditioning = await family.encode(this.#env, this.#model, request, {
        session: this.#session,
      });
      const encodeMs = performance.now() - t0;
      signal?.throwIfAborted();
      this.#decoder ??= family.openDecoder(this.#env, this.#model, { session: this.#session });

      // 5. Prepare latent variables; 7. Denoising loop
      const x0 = family.prepareLatents(request);
      const slot = this.#engine!;
      t0 = performance.now();
      let engine: OpenedEngine;
      try {
        engine = await slot.opening;
      } catch (e) {
        if (signal?.aborted) throw signal.reason;
        throw e;
      }
      const loadWaitMs = performance.now() - t0;
      const loadMs = slot.used ? 0 : engine.loadMs;
      slot.used = true;
      const onStep = options.onStep;
      let report: DenoiseReport;
      try {
        report = await engine.run({
          generation: family.generationInit(this.#model, request, conditioning),
          x0,
          steps: request.steps,
          warmup: plan.warmup,
          stride: plan.stride,
          exchange: plan.exchange,
          ...(onStep ? { onStep: (i: number) => onStep(i, request.steps) } : {}),
          ...(signal ? { signal } : {}),
          ...(this.#options.stallTimeoutMs !== undefined
            ? { stallTimeoutMs: this.#options.stallTimeoutMs }
            : {}),
        });
      } catch (e) {
        // An abort surfaces as whatever failed first (a cancelled run, a closed channel).
        if (signal?.aborted) throw signal.reason;
        throw e;
      }
      signal?.throwIfAborted();

      // 8. Post-processing
      t0 = performance.now();
      const media = await this.#decoder.decode(request, report.output);
      const decodeMs = performance.now() - t0;
      const exchanges = plan.mode === "parastep" && plan.devices > 1;
      return {
        request,
        media,
        denoise: {
          ...report,
          mode: plan.mode,
          devices: plan.mode === "parastep" ? plan.devices : 1,
          warmup: plan.warmup,
          exchange: exchanges ? plan.exchange : null,
        },
        timings: {
          encodeMs,
          loadMs,
          loadWaitMs,
          denoiseMs: report.loopMs,
          decodeMs,
          totalMs: performance.now() - started,
        },
      };
    } finally {
      signal?.removeEventListener("abort", abortLoading);
    }
  }

  /** Closes the denoisers (Workers shut down), the decoder and the env. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing.abort(new Error("The generator is closing"));
    const engine = this.#engine;
    this.#engine = null;
    if (engine) {
      try {
        await (await engine.opening)[Symbol.asyncDispose]();
      } catch {
        // It failed to open (reported by generate) or was cancelled: nothing is left open.
      }
    }
    this.#decoder?.[Symbol.dispose]();
    this.#decoder = null;
    this.#env.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * The whole pipeline for one checked request: check the plan and every component graph against
 * the manifest (before any work, the same for every engine), open the denoisers while encoding,
 * prepare latents, denoise with the chosen engine and mode, decode.
 *
 * @throws {RangeError} for an option out of range, before any session opens
 * @throws {ManifestError} for a component that disagrees with the manifest, before any work
 */
export async function generate<R extends RequestBase, C, M>(
  family: PipelineFamily<R, C, M>,
  model: ModelFolder,
  request: R,
  options: GenerateOptions = {},
): Promise<Generation<R, M>> {
  // 1. Check inputs: the plan first, then every graph against the manifest.
  checkRunPlan(model, request.steps, options);
  options.signal?.throwIfAborted();
  await using generator = new Generator(family, model, options);
  return await generator.generate(request, {
    ...(options.onStep ? { onStep: options.onStep } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
}
