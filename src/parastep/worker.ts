/**
 * The ParaStep Worker: owns one rank's device and sampler, runs that rank of the loop
 * ({@link runRank}) over a {@link ChannelTransport}, and reports to the coordinator.
 *
 * Started by {@link runWorkers} as `new Worker(new URL("./worker.ts", import.meta.url), { type:
 * "module" })`; as a Worker's main module it serves the protocol below on its global scope.
 * Importing it elsewhere only gives the protocol types and {@link serveWorker}.
 *
 * Protocol (coordinator -> worker, worker -> coordinator), every reply carrying the rank:
 * 1. `init` -> the worker opens its step channels, imports the sampler module, calls
 *    `openSampler(init, device)`, and replies `ready` (or `error` with stage `open`).
 * 2. `run` -> `runRank`; rank 0 sends `step` progress (throttled) and every rank replies `done`
 *    with its stats (rank 0 also with the output), or `error` with the step and the cause.
 * 3. `abort` (sent to every worker at the end, on success too) -> the worker aborts its run,
 *    disposes the sampler (which cancels model runs in flight), waits until no model call is in
 *    flight, closes its channels and replies `closed`. Only then may the coordinator terminate it:
 *    terminating a Worker with a nonblocking ORT call in flight is unsafe (ort-c-api.md §10.9).
 *
 * On any failure (open, model, exchange, or an uncaught error in the worker) the worker reports
 * `error` once and releases its resources at once, without waiting for `abort`.
 *
 * @module
 */

import { shareWebGpuLock } from "../../ffi/mod.ts";
import { type ChannelCounters, ChannelTransport } from "./channel.ts";
import type { DeviceAssignment, OpenedSampler, SamplerModule } from "./devices.ts";
import {
  type Exchange,
  type ParaStepPlan,
  runRank,
  type RunRankOptions,
  type Sampler,
  SamplerError,
} from "./rounds.ts";
import { ExchangeError, type MessageTag } from "./transport.ts";

/** Coordinator -> worker: everything one rank needs, sent once per generation. */
export interface InitRequest {
  /** Always `"init"`. */
  readonly type: "init";
  /** This worker's rank. */
  readonly rank: number;
  /** `T`, `W`, `N`. */
  readonly plan: ParaStepPlan;
  /** The generation id (message tags and channel names). */
  readonly gen: string;
  /** Absolute URL (href) of the sampler module (see {@link SamplerModule}). */
  readonly module: string;
  /** The family's structured-cloneable init payload, passed to `openSampler` as is. */
  readonly init: unknown;
  /** The initial latents on rank 0; an empty array on other ranks (they get `x_W` from rank 0). */
  readonly x0: Float32Array;
  /** Where and how this rank runs. */
  readonly device: DeviceAssignment;
  /** Rank 0 reports progress at most once per this many milliseconds (and always the last step). */
  readonly progressIntervalMs: number;
  /** Shared payload arenas, one per rank, the same objects on every rank (see channel.ts). */
  readonly arenas?: readonly SharedArrayBuffer[];
  /** How ranks share a round's results (the same on every rank); absent: `"gather"`. */
  readonly exchange?: Exchange;
}

/** Coordinator -> worker: start the run (every rank is ready). */
export interface RunRequest {
  /** Always `"run"`. */
  readonly type: "run";
}

/** Coordinator -> worker: stop, release everything, reply `closed`. */
export interface AbortRequest {
  /** Always `"abort"`. */
  readonly type: "abort";
}

/** Any coordinator -> worker message. */
export type ToWorker = InitRequest | RunRequest | AbortRequest;

/** Worker -> coordinator: the sampler is open and the step channels listen. */
export interface ReadyReply {
  /** Always `"ready"`. */
  readonly type: "ready";
  /** The sender's rank. */
  readonly rank: number;
  /** The provider the sampler reports it runs on, if it says. */
  readonly executionProvider: string | null;
  /** Milliseconds from `init` to ready (channels, module import, `openSampler`). */
  readonly openMs: number;
}

/** Worker -> coordinator (rank 0 only): step `i` has been applied to the true latents. */
export interface StepReply {
  /** Always `"step"`. */
  readonly type: "step";
  /** The sender's rank (0). */
  readonly rank: number;
  /** The step index. */
  readonly i: number;
}

/** One rank's numbers for one generation. */
export interface RankStats {
  /** The rank. */
  rank: number;
  /** Network (model) calls this rank made. */
  modelCalls: number;
  /** This rank's final logical clock; on rank 0 the measured critical path (see `RankResult`). */
  depth: number;
  /** Exchange counters of this rank's channel. */
  counters: ChannelCounters;
  /** Milliseconds waiting for messages of warm-up steps (ranks > 0: the warm-up broadcast). */
  warmupWaitMs: number;
  /** Milliseconds waiting for messages, per round `floor((i - W) / N)`. */
  waitMsPerRound: number[];
  /** Milliseconds sending messages (arena copy and post), per round. */
  sendMsPerRound: number[];
  /** Milliseconds from `init` to ready. */
  openMs: number;
  /** Milliseconds of `runRank`. */
  runMs: number;
  /** The provider the sampler reports, if it says. */
  executionProvider: string | null;
  /** Where the rank ran. */
  device: DeviceAssignment;
  /** Tags of messages that reached this rank but were never received (a protocol fault if any). */
  undelivered: MessageTag[];
}

/** Worker -> coordinator: this rank's run finished. */
export interface DoneReply {
  /** Always `"done"`. */
  readonly type: "done";
  /** The sender's rank. */
  readonly rank: number;
  /** `x_T` on rank 0; `null` on other ranks. */
  readonly output: Float32Array | null;
  /** The rank's numbers. */
  readonly stats: RankStats;
}

/** Where in a rank's life a failure happened. */
export type FailureStage =
  | "open"
  | "model"
  | "guide"
  | "step"
  | "exchange"
  | "run"
  | "worker";

/** An error as it crosses `postMessage` (custom error classes do not survive structured clone). */
export interface SerializedError {
  /** The error's `name` (`OrtError`, `ExchangeError`, ...). */
  readonly name: string;
  /** Its message. */
  readonly message: string;
  /** Its stack, if any. */
  readonly stack?: string;
}

/** Worker -> coordinator: this rank failed. Sent at most once. */
export interface ErrorReply {
  /** Always `"error"`. */
  readonly type: "error";
  /** The failed rank. */
  readonly rank: number;
  /** The step index it was working on, when known. */
  readonly step: number | null;
  /** Where it failed. */
  readonly stage: FailureStage;
  /** The original cause (for a sampler callback, what the callback threw). */
  readonly cause: SerializedError;
}

/** How a worker closed. */
export interface CloseReport {
  /** The rank. */
  rank: number;
  /** Model calls in flight when the worker began to close. */
  inFlightAtClose: number;
  /** Of those, calls that ended by rejecting (cancelled by the sampler's disposal). */
  cancelledCalls: number;
  /** The message of an error thrown while disposing the sampler, or `null`. */
  disposeError: string | null;
}

/** Worker -> coordinator: everything is released; the worker may be terminated. */
export interface ClosedReply {
  /** Always `"closed"`. */
  readonly type: "closed";
  /** The sender's rank. */
  readonly rank: number;
  /** How it closed. */
  readonly report: CloseReport;
}

/** Any worker -> coordinator message. */
export type FromWorker = ReadyReply | StepReply | DoneReply | ErrorReply | ClosedReply;

/** The parts of a Worker's global scope the worker uses. */
export interface WorkerScope {
  /** Post to the coordinator. */
  postMessage(message: FromWorker): void;
  /** Messages from the coordinator. */
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
  /** Uncaught errors and unhandled rejections inside the worker. */
  addEventListener(type: "error", listener: (event: ErrorEvent) => void): void;
  /** Uncaught errors and unhandled rejections inside the worker. */
  addEventListener(
    type: "unhandledrejection",
    listener: (event: PromiseRejectionEvent) => void,
  ): void;
}

/**
 * Serve the worker protocol on `scope`. Called on the Worker's global scope when this file is the
 * Worker's main module; exported for Worker scripts that wrap it.
 *
 * Uncaught errors and unhandled rejections in the worker (a sampler's stray callback, say) are
 * reported as stage `worker` and the worker closes its resources, instead of dying with a model
 * run in flight.
 *
 * @param scope The Worker's global scope.
 */
export function serveWorker(scope: WorkerScope): void {
  let rank: RankWorker | null = null;
  scope.addEventListener("error", (event) => {
    event.preventDefault();
    (rank ?? orphan(scope)).fail("worker", event.error ?? event.message);
  });
  scope.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    (rank ?? orphan(scope)).fail("worker", event.reason);
  });
  scope.onmessage = (event) => {
    const request = event.data;
    switch (request.type) {
      case "init":
        if (rank !== null) {
          rank.fail("worker", new Error("A worker serves one generation: received a second init"));
          return;
        }
        rank = new RankWorker(scope, request);
        rank.open();
        return;
      case "run":
        rank?.run();
        return;
      case "abort":
        if (rank === null) {
          scope.postMessage({
            type: "closed",
            rank: -1,
            report: { rank: -1, inFlightAtClose: 0, cancelledCalls: 0, disposeError: null },
          });
          return;
        }
        void rank.close().then((report) =>
          scope.postMessage({ type: "closed", rank: report.rank, report })
        );
        return;
    }
  };
}

/** Before `init` there is no rank: an error then is reported under rank -1. */
function orphan(scope: WorkerScope): { fail(stage: FailureStage, error: unknown): void } {
  return {
    fail(stage, error) {
      scope.postMessage({ type: "error", rank: -1, step: null, stage, cause: serialize(error) });
    },
  };
}

/** One rank of one generation inside this worker. */
class RankWorker {
  readonly #scope: WorkerScope;
  readonly #request: InitRequest;
  readonly #controller = new AbortController();
  readonly #started = performance.now();
  #transport: ChannelTransport | null = null;
  #opening: Promise<OpenedSampler | null> | null = null;
  #tracker: ModelTracker | null = null;
  #executionProvider: string | null = null;
  #openMs = 0;
  #running: Promise<void> | null = null;
  #closing: Promise<CloseReport> | null = null;
  #reported = false;

  constructor(scope: WorkerScope, request: InitRequest) {
    this.#scope = scope;
    this.#request = request;
  }

  get rank(): number {
    return this.#request.rank;
  }

  /** Open channels and sampler, then reply `ready`. */
  open(): void {
    const request = this.#request;
    this.#opening = (async () => {
      try {
        // The channels first: peers may post as soon as every rank is ready.
        this.#transport = new ChannelTransport(request.gen, request.rank, request.plan.devices, {
          steps: request.plan.steps,
          ...(request.arenas ? { arenas: request.arenas } : {}),
        });
        // WebGPU sessions of every realm run one at a time (ffi/lock.ts).
        if (request.device.webgpuLock) shareWebGpuLock(request.device.webgpuLock);
        const module: unknown = await import(request.module);
        const openSampler = samplerModule(module, request.module).openSampler;
        const sampler = await openSampler(request.init, request.device);
        this.#tracker = new ModelTracker(sampler);
        this.#executionProvider = sampler.executionProvider ?? null;
        return sampler;
      } catch (error) {
        this.fail("open", error);
        return null;
      }
    })();
    void this.#opening.then((sampler) => {
      if (sampler === null || this.#closing !== null) return;
      this.#openMs = performance.now() - this.#started;
      this.#scope.postMessage({
        type: "ready",
        rank: request.rank,
        executionProvider: this.#executionProvider,
        openMs: this.#openMs,
      });
    });
  }

  /** Run this rank's loop; reply `done` or `error`. */
  run(): void {
    const tracker = this.#tracker;
    const transport = this.#transport;
    if (tracker === null || transport === null || this.#closing !== null || this.#running) return;
    const { rank, plan, gen, x0, progressIntervalMs } = this.#request;
    const options: RunRankOptions = { gen, signal: this.#controller.signal };
    if (this.#request.exchange !== undefined) options.exchange = this.#request.exchange;
    if (rank === 0) options.onStep = this.#progress(plan.steps, progressIntervalMs);
    this.#running = (async () => {
      const started = performance.now();
      try {
        const result = await runRank(rank, plan, tracker, x0, transport, options);
        const runMs = performance.now() - started;
        const waits = perRound(plan, transport.waitMsByStep());
        const stats: RankStats = {
          rank,
          modelCalls: result.modelCalls,
          depth: result.depth,
          counters: transport.counters(),
          warmupWaitMs: waits.warmup,
          waitMsPerRound: waits.perRound,
          sendMsPerRound: perRound(plan, transport.sendMsByStep()).perRound,
          openMs: this.#openMs,
          runMs,
          executionProvider: this.#executionProvider,
          device: this.#request.device,
          undelivered: transport.undelivered(),
        };
        this.#scope.postMessage({ type: "done", rank, output: result.output ?? null, stats });
      } catch (error) {
        // After an abort every failure is an echo of it (the coordinator knows the cause).
        if (this.#controller.signal.aborted) return;
        this.fail("run", error);
      }
    })();
  }

  /**
   * Report a failure (once) and release resources now. `stage` is the default; a SamplerError or
   * ExchangeError says more precisely where it happened.
   */
  fail(stage: FailureStage, error: unknown): void {
    if (!this.#reported) {
      this.#reported = true;
      this.#scope.postMessage({ type: "error", rank: this.rank, ...describeFailure(stage, error) });
    }
    void this.close();
  }

  /** Abort, dispose the sampler (cancelling model runs), wait for quiet, close channels. Idempotent. */
  close(): Promise<CloseReport> {
    this.#closing ??= (async () => {
      const reason = new Error(`Rank ${this.rank} is shutting down`);
      this.#controller.abort(reason);
      this.#transport?.fail(reason);
      let disposeError: string | null = null;
      const sampler = await this.#opening;
      const tracker = this.#tracker;
      const inFlightAtClose = tracker?.beginClose() ?? 0;
      if (sampler) {
        try {
          await sampler[Symbol.asyncDispose]();
        } catch (error) {
          disposeError = error instanceof Error ? error.message : String(error);
        }
      }
      // Whatever the sampler's disposal promised, no model call may outlive this reply.
      await tracker?.idle();
      await this.#running;
      this.#transport?.close();
      return {
        rank: this.rank,
        inFlightAtClose,
        cancelledCalls: tracker?.cancelledCalls ?? 0,
        disposeError,
      };
    })();
    return this.#closing;
  }

  /** Rank 0's onStep: post progress at most once per interval, and always the last step. */
  #progress(steps: number, intervalMs: number): (i: number) => void {
    let last = -Infinity;
    return (i) => {
      const now = performance.now();
      if (i !== steps - 1 && now - last < intervalMs) return;
      last = now;
      this.#scope.postMessage({ type: "step", rank: 0, i });
    };
  }
}

/**
 * The sampler as runRank sees it, counting model calls in flight so that closing can wait for
 * them and say how many were cancelled.
 */
class ModelTracker implements Sampler<Float32Array, Float32Array> {
  readonly #inner: OpenedSampler;
  #inFlight = 0;
  #idle: PromiseWithResolvers<void> | null = null;
  #closing = false;
  /** Calls that rejected after closing began. */
  cancelledCalls = 0;

  constructor(inner: OpenedSampler) {
    this.#inner = inner;
  }

  async model(x: Float32Array, i: number): Promise<Float32Array> {
    this.#inFlight += 1;
    try {
      return await this.#inner.model(x, i);
    } catch (error) {
      if (this.#closing) this.cancelledCalls += 1;
      throw error;
    } finally {
      this.#inFlight -= 1;
      if (this.#inFlight === 0) this.#idle?.resolve();
    }
  }

  guide(eps: Float32Array): Float32Array {
    return this.#inner.guide(eps);
  }

  step(guided: Float32Array, i: number, x: Float32Array): Float32Array {
    return this.#inner.step(guided, i, x);
  }

  /** Mark closing; returns the calls in flight now. */
  beginClose(): number {
    this.#closing = true;
    return this.#inFlight;
  }

  /** Resolves when no model call is in flight. */
  idle(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    this.#idle ??= Promise.withResolvers<void>();
    return this.#idle.promise;
  }
}

function samplerModule(module: unknown, url: string): SamplerModule<unknown> {
  const openSampler = typeof module === "object" && module !== null
    ? (module as Record<string, unknown>).openSampler
    : undefined;
  if (typeof openSampler !== "function") {
    throw new TypeError(
      `Cannot open a sampler as module ${url} does not export a function 'openSampler'`,
    );
  }
  return module as SamplerModule<unknown>;
}

/** Stage, step and cause of a failure, from the error classes that carry them. */
function describeFailure(
  stage: FailureStage,
  error: unknown,
): { stage: FailureStage; step: number | null; cause: SerializedError } {
  if (error instanceof SamplerError) {
    return { stage: error.stage, step: error.step, cause: serialize(error.cause ?? error) };
  }
  if (error instanceof ExchangeError) {
    const step = error.expected?.step ?? error.received?.step ?? null;
    return { stage: "exchange", step, cause: serialize(error) };
  }
  return { stage, step: null, cause: serialize(error) };
}

function serialize(error: unknown): SerializedError {
  if (error instanceof Error) {
    return error.stack === undefined
      ? { name: error.name, message: error.message }
      : { name: error.name, message: error.message, stack: error.stack };
  }
  return { name: "Error", message: String(error) };
}

/** Times by step -> the warm-up's total and each round's total. */
function perRound(
  plan: ParaStepPlan,
  byStep: Float64Array,
): { warmup: number; perRound: number[] } {
  const { steps: T, warmup: W, devices: N } = plan;
  const perRound = new Array<number>(Math.ceil((T - W) / N)).fill(0);
  let warmup = 0;
  byStep.forEach((ms, i) => {
    if (i < W) warmup += ms;
    else perRound[Math.floor((i - W) / N)]! += ms;
  });
  return { warmup, perRound };
}

if (import.meta.main) serveWorker(globalThis as unknown as WorkerScope);
