/**
 * The ParaStep Worker: owns one rank's device and denoiser, runs that rank of the loop
 * ({@link runRank}) over a {@link ChannelTransport} for each generation it is given, and reports
 * to the coordinator.
 *
 * Started by the coordinator's {@link WorkerPool} as `new Worker(new URL("./worker.ts",
 * import.meta.url), { type: "module" })`; as a Worker's main module it serves the protocol below on
 * its global scope. Importing it elsewhere only gives the protocol types and {@link serveWorker}.
 *
 * Protocol (coordinator -> worker, worker -> coordinator), every reply carrying the rank:
 * 1. `init` (once) -> the worker imports the sampler module and, for a two-phase module, calls
 *    `openDenoiser(open, device, { signal })` (the session loads here, while the main thread may
 *    still be encoding); it replies `ready` (or `error` with stage `open`).
 * 2. `prepare` (per generation) -> the worker opens the generation's step channels and binds the
 *    denoiser to the generation's payload (a one-phase module: `openSampler(payload, ...)`), then
 *    replies `prepared`. The coordinator starts a generation only once every rank is prepared, so
 *    every channel listens before any rank sends.
 * 3. `run` -> `runRank`; rank 0 sends `step` progress (throttled) and every rank releases the
 *    generation's binding and channels and replies `done` with its stats (rank 0 also with the
 *    output), or `error` with the step and the cause. Every rank also beats its heartbeat slots
 *    (heartbeat.ts) around each model call and scheduler step, which the coordinator polls for
 *    stalls: no message per step. Then the worker waits for the next `prepare`.
 * 4. `abort` (sent to every worker when the pool closes, on success too) -> the worker aborts its
 *    run and the `signal` given to `openDenoiser` (which cancels a session still loading), waits
 *    for the open to settle, releases the generation and disposes the denoiser (which cancels model
 *    runs in flight), waits until no model call is in flight, closes its channels and replies
 *    `closed`. Only then may the coordinator terminate it: terminating a Worker with a nonblocking
 *    ORT call in flight is unsafe (ort-c-api.md §10.9).
 *
 * On any failure (open, model, exchange, or an uncaught error in the worker) the worker reports
 * `error` once and releases its resources at once, without waiting for `abort`: a failed worker
 * serves no further generation.
 *
 * @module
 */

import { shareWebGpuLock } from "../../ffi/mod.ts";
import { type ChannelCounters, ChannelTransport } from "./channel.ts";
import {
  type BoundSampler,
  type DeviceAssignment,
  type OpenedDenoiser,
  type OpenedSampler,
  samplerForm,
} from "./devices.ts";
import { HeartbeatWriter } from "./heartbeat.ts";
import {
  type Exchange,
  type ParaStepPlan,
  runRank,
  type RunRankOptions,
  type Sampler,
  SamplerError,
} from "./rounds.ts";
import { ExchangeError, type MessageTag, type Transport } from "./transport.ts";
import type { NatsStepSpec } from "./nats/spec.ts";

/** A rank's step exchange: BroadcastChannel in one process, or NATS across hosts. */
type StepTransport =
  & Pick<ChannelTransport, "fail" | "waitMsByStep" | "sendMsByStep" | "undelivered" | "counters">
  & Transport<Float32Array>
  & { close(): void | Promise<void> };

/** Coordinator -> worker, once: who this worker is and what it opens. */
export interface InitRequest {
  /** Always `"init"`. */
  readonly type: "init";
  /** This worker's rank. */
  readonly rank: number;
  /** Absolute URL (href) of the sampler module (see `SamplerModule`). */
  readonly module: string;
  /** The family's open payload, passed to `openDenoiser` as is (unused by one-phase modules). */
  readonly open: unknown;
  /** Where and how this rank runs. */
  readonly device: DeviceAssignment;
  /** Rank 0 reports progress at most once per this many milliseconds (and always the last step). */
  readonly progressIntervalMs: number;
}

/** Coordinator -> worker, per generation: what this rank needs for it. */
export interface PrepareRequest {
  /** Always `"prepare"`. */
  readonly type: "prepare";
  /** `T`, `W`, `N`. */
  readonly plan: ParaStepPlan;
  /** The generation id (message tags and channel names). */
  readonly gen: string;
  /** The family's generation payload (`bind`), or a one-phase module's `openSampler` init. */
  readonly payload: unknown;
  /** The initial latents on rank 0; an empty array on other ranks (they get `x_W` from rank 0). */
  readonly x0: Float32Array;
  /** Shared payload arenas, one per rank, the same objects on every rank (see channel.ts). */
  readonly arenas?: readonly SharedArrayBuffer[];
  /** How ranks share a round's results (the same on every rank); absent: `"gather"`. */
  readonly exchange?: Exchange;
  /** The generation's heartbeat slots of every rank (heartbeat.ts); this rank writes its own. */
  readonly heartbeats?: SharedArrayBuffer;
  /** Exchange steps over NATS (src/parastep/nats/) instead of BroadcastChannel. */
  readonly nats?: NatsStepSpec;
}

/** Coordinator -> worker: start the prepared generation (every rank is prepared). */
export interface RunRequest {
  /** Always `"run"`. */
  readonly type: "run";
}

/** Coordinator -> worker: stop, release everything, reply `closed`. */
export interface AbortRequest {
  /** Always `"abort"`. */
  readonly type: "abort";
}

/**
 * Coordinator -> worker, during a run (`--on-rank-loss continue`, docs/multihost.md §7): a rank
 * was lost; stop the run, open the exchange of the next epoch (`gen`, `devices` ranks, this
 * worker renumbered `rank`) and reply `replanned` (rank 0 with the step its round started at).
 */
export interface ReplanRequest {
  /** Always `"replan"`. */
  readonly type: "replan";
  /** The next epoch's generation id (message tags and subjects). */
  readonly gen: string;
  /** `N'`: ranks left. */
  readonly devices: number;
  /** This worker's rank in the next epoch. */
  readonly rank: number;
}

/** Coordinator -> worker: run the re-planned epoch from step `step` (every survivor replanned). */
export interface ResumeRequest {
  /** Always `"resume"`. */
  readonly type: "resume";
  /** The step the epoch resumes at (rank 0's round start). */
  readonly step: number;
}

/** Any coordinator -> worker message. */
export type ToWorker =
  | InitRequest
  | PrepareRequest
  | RunRequest
  | AbortRequest
  | ReplanRequest
  | ResumeRequest;

/** Worker -> coordinator: the denoiser is open (or, one-phase, the module is loaded). */
export interface ReadyReply {
  /** Always `"ready"`. */
  readonly type: "ready";
  /** The sender's rank. */
  readonly rank: number;
  /** The provider the denoiser reports it runs on, if it says (and is open yet). */
  readonly executionProvider: string | null;
  /** Milliseconds from `init` to ready (module import, `openDenoiser`). */
  readonly openMs: number;
}

/** Worker -> coordinator: the generation's channels listen and its sampler is bound. */
export interface PreparedReply {
  /** Always `"prepared"`. */
  readonly type: "prepared";
  /** The sender's rank. */
  readonly rank: number;
  /** The provider the sampler reports it runs on, if it says. */
  readonly executionProvider: string | null;
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
  /** Milliseconds from `prepare` to prepared (channels, binding; a one-phase module's open). */
  prepareMs: number;
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
  | "worker"
  | "stall"
  | "lost";

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
  /** Of those, calls that ended by rejecting (cancelled by the denoiser's disposal). */
  cancelledCalls: number;
  /** The message of an error thrown while disposing the denoiser or sampler, or `null`. */
  disposeError: string | null;
  /** Generations this worker ran to the end. */
  generations: number;
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

/** Worker -> coordinator: the run stopped and the next epoch's exchange listens. */
export interface ReplannedReply {
  /** Always `"replanned"`. */
  readonly type: "replanned";
  /** The sender's (original) rank. */
  readonly rank: number;
  /** Rank 0: the step its last round started at (where the epoch resumes); others: null. */
  readonly step: number | null;
}

/** Any worker -> coordinator message. */
export type FromWorker =
  | ReadyReply
  | PreparedReply
  | StepReply
  | DoneReply
  | ErrorReply
  | ClosedReply
  | ReplannedReply;

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
          rank.fail("worker", new Error("A worker opens once: received a second init"));
          return;
        }
        rank = new RankWorker(scope, request);
        rank.open();
        return;
      case "prepare":
        rank?.prepare(request);
        return;
      case "run":
        rank?.run();
        return;
      case "replan":
        rank?.replan(request);
        return;
      case "resume":
        rank?.resume(request);
        return;
      case "abort":
        if (rank === null) {
          scope.postMessage({
            type: "closed",
            rank: -1,
            report: {
              rank: -1,
              inFlightAtClose: 0,
              cancelledCalls: 0,
              disposeError: null,
              generations: 0,
            },
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

/** What a one-phase module's `openSampler` or a two-phase `bind` gave for one generation. */
type GenerationSampler =
  | { readonly kind: "bound"; readonly sampler: BoundSampler }
  | { readonly kind: "opened"; readonly sampler: OpenedSampler };

/** One generation in this worker: its request, channels, sampler and run. */
interface Generation {
  readonly request: PrepareRequest;
  /** Replaced by a re-plan. */
  transport: StepTransport;
  readonly sampler: GenerationSampler;
  readonly tracker: ModelTracker;
  readonly prepareMs: number;
  running: Promise<void> | null;
  /** This epoch's generation id, plan and rank (the request's until a re-plan). */
  gen: string;
  plan: ParaStepPlan;
  rank: number;
  /** Stops this epoch's run (a re-plan). */
  stop: AbortController;
  /** Rank 0: `x_s` and `G(eps_{s-1})` of its last round start. */
  roundStart: { s: number; x: unknown; cache: unknown } | null;
  /** A re-plan is stopping the run: its failure is not an error. */
  replanning: boolean;
}

/** One rank inside this worker: its denoiser, and the generation it is serving. */
class RankWorker {
  readonly #scope: WorkerScope;
  readonly #request: InitRequest;
  readonly #controller = new AbortController();
  readonly #started = performance.now();
  #opening: Promise<boolean> | null = null;
  #form: ReturnType<typeof samplerForm> | null = null;
  #denoiser: OpenedDenoiser | null = null;
  #executionProvider: string | null = null;
  #openMs = 0;
  #preparing: Promise<void> | null = null;
  /** Releasing the last generation's sampler (a one-phase sampler's disposal closes a session). */
  #releasing: Promise<void> = Promise.resolve();
  #generation: Generation | null = null;
  #generations = 0;
  #releaseError: string | null = null;
  #closing: Promise<CloseReport> | null = null;
  #reported = false;

  constructor(scope: WorkerScope, request: InitRequest) {
    this.#scope = scope;
    this.#request = request;
  }

  get rank(): number {
    return this.#request.rank;
  }

  /** Import the module and open the denoiser (two-phase modules), then reply `ready`. */
  open(): void {
    const request = this.#request;
    this.#opening = (async () => {
      try {
        // WebGPU sessions of every realm run one at a time (ffi/lock.ts).
        if (request.device.webgpuLock) shareWebGpuLock(request.device.webgpuLock);
        const module: unknown = await import(request.module);
        const form = samplerForm(module, request.module);
        this.#form = form;
        const signal = this.#controller.signal;
        signal.throwIfAborted();
        if (form.kind === "denoiser") {
          this.#denoiser = await form.open(request.open, request.device, { signal });
          this.#executionProvider = this.#denoiser.executionProvider ?? null;
        }
        return true;
      } catch (error) {
        // Closing aborted the open (a session load cancelled): an echo of the shutdown.
        if (!this.#controller.signal.aborted) this.fail("open", error);
        return false;
      }
    })();
    void this.#opening.then((opened) => {
      if (!opened || this.#closing !== null) return;
      this.#openMs = performance.now() - this.#started;
      this.#scope.postMessage({
        type: "ready",
        rank: request.rank,
        executionProvider: this.#executionProvider,
        openMs: this.#openMs,
      });
    });
  }

  /** Open the generation's channels and bind its sampler, then reply `prepared`. */
  prepare(request: PrepareRequest): void {
    if (this.#closing !== null) return;
    if (this.#generation !== null || this.#preparing !== null) {
      this.fail("worker", new Error("A worker serves one generation at a time: received a second"));
      return;
    }
    const started = performance.now();
    this.#preparing = (async () => {
      let transport: StepTransport | null = null;
      try {
        if (!(await this.#opening)) return;
        await this.#releasing;
        // The channels first: peers may post as soon as every rank is prepared.
        transport = request.nats === undefined
          ? new ChannelTransport(request.gen, this.rank, request.plan.devices, {
            steps: request.plan.steps,
            ...(request.arenas ? { arenas: request.arenas } : {}),
          })
          // Loaded only for a NATS run, so single-host runs never load the NATS client.
          : await (await import("./nats/spec.ts")).openStepTransport(
            request.nats,
            request.gen,
            this.rank,
            request.plan,
          );
        const sampler = await this.#bind(request.payload);
        if (this.#closing !== null) {
          await release(sampler);
          await transport.close();
          return;
        }
        if (sampler.kind === "opened") {
          this.#executionProvider = sampler.sampler.executionProvider ?? null;
        }
        this.#generation = {
          request,
          transport,
          sampler,
          tracker: new ModelTracker(
            sampler.sampler,
            request.heartbeats === undefined
              ? null
              : new HeartbeatWriter(request.heartbeats, this.rank),
          ),
          prepareMs: performance.now() - started,
          running: null,
          gen: request.gen,
          plan: request.plan,
          rank: this.rank,
          stop: new AbortController(),
          roundStart: null,
          replanning: false,
        };
        this.#scope.postMessage({
          type: "prepared",
          rank: this.rank,
          executionProvider: this.#executionProvider,
        });
      } catch (error) {
        await transport?.close();
        if (!this.#controller.signal.aborted) this.fail("open", error);
      } finally {
        this.#preparing = null;
      }
    })();
  }

  async #bind(payload: unknown): Promise<GenerationSampler> {
    const form = this.#form!;
    if (form.kind === "denoiser") return { kind: "bound", sampler: this.#denoiser!.bind(payload) };
    const signal = this.#controller.signal;
    return {
      kind: "opened",
      sampler: await form.open(payload, this.#request.device, { signal }),
    };
  }

  /** Run the prepared generation; release it; reply `done` or `error`. */
  run(): void {
    const generation = this.#generation;
    if (generation === null || this.#closing !== null || generation.running !== null) return;
    this.#start(generation, generation.gen, undefined);
  }

  /**
   * A rank was lost: stop this epoch's run, open the next epoch's exchange, reply `replanned`.
   */
  replan(request: ReplanRequest): void {
    const generation = this.#generation;
    if (generation === null || this.#closing !== null) {
      this.fail("worker", new Error("Cannot re-plan as this rank serves no generation"));
      return;
    }
    generation.replanning = true;
    generation.stop.abort(new Error("re-planned"));
    void (async () => {
      try {
        await generation.running;
        await generation.transport.close();
        const plan = { ...generation.plan, devices: request.devices };
        const spec = generation.request.nats;
        generation.transport = spec === undefined
          ? new ChannelTransport(request.gen, request.rank, request.devices, { steps: plan.steps })
          : await (await import("./nats/spec.ts")).openStepTransport(
            spec,
            request.gen,
            request.rank,
            plan,
          );
        generation.gen = request.gen;
        generation.plan = plan;
        generation.rank = request.rank;
        generation.stop = new AbortController();
        generation.running = null;
        generation.replanning = false;
        this.#scope.postMessage({
          type: "replanned",
          rank: this.rank,
          step: request.rank === 0 ? generation.roundStart?.s ?? null : null,
        });
      } catch (error) {
        if (!this.#controller.signal.aborted) this.fail("exchange", error);
      }
    })();
  }

  /** Run the re-planned epoch from `request.step`. */
  resume(request: ResumeRequest): void {
    const generation = this.#generation;
    if (generation === null || this.#closing !== null || generation.running !== null) return;
    generation.plan = { ...generation.plan, warmup: request.step };
    const state = generation.roundStart;
    if (generation.rank === 0 && (state === null || state.s !== request.step)) {
      this.fail("worker", new Error(`Cannot resume at step ${request.step}: no state saved there`));
      return;
    }
    this.#start(
      generation,
      generation.gen,
      generation.rank === 0 ? { x: state!.x, cache: state!.cache } : undefined,
    );
  }

  #start(
    generation: Generation,
    gen: string,
    resume: { x: unknown; cache: unknown } | undefined,
  ): void {
    const { request, tracker } = generation;
    const transport = generation.transport;
    const { progressIntervalMs } = this.#request;
    const { x0 } = request;
    const plan = generation.plan;
    const rank = generation.rank;
    const options: RunRankOptions = {
      gen,
      signal: AbortSignal.any([this.#controller.signal, generation.stop.signal]),
    };
    if (request.exchange !== undefined) options.exchange = request.exchange;
    if (rank === 0) {
      options.onStep = this.#progress(plan.steps, progressIntervalMs);
      options.onRoundStart = (s, x, cache) => {
        generation.roundStart = { s, x, cache };
      };
      if (resume !== undefined) options.resume = resume;
    }
    generation.running = (async () => {
      const started = performance.now();
      try {
        const result = await runRank(rank, plan, tracker, x0, transport, options);
        tracker.done();
        const runMs = performance.now() - started;
        const waits = perRound(plan, transport.waitMsByStep());
        const stats: RankStats = {
          rank: this.rank,
          modelCalls: result.modelCalls,
          depth: result.depth,
          counters: transport.counters(),
          warmupWaitMs: waits.warmup,
          waitMsPerRound: waits.perRound,
          sendMsPerRound: perRound(plan, transport.sendMsByStep()).perRound,
          openMs: this.#openMs,
          prepareMs: generation.prepareMs,
          runMs,
          executionProvider: this.#executionProvider,
          device: this.#request.device,
          undelivered: transport.undelivered(),
        };
        this.#generation = null;
        await transport.close();
        this.#generations += 1;
        this.#scope.postMessage({
          type: "done",
          rank: this.rank,
          output: result.output ?? null,
          stats,
        });
        // After `done`: a one-phase sampler's disposal closes its session, which the result need
        // not wait for. The next `prepare` (and `close`) waits for it.
        this.#releasing = release(generation.sampler).catch((error) => {
          this.#releaseError = error instanceof Error ? error.message : String(error);
        });
      } catch (error) {
        // After an abort every failure is an echo of it (the coordinator knows the cause).
        if (this.#controller.signal.aborted || generation.replanning) return;
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

  /**
   * Abort (the run, and a denoiser still opening), release the generation, dispose the denoiser
   * (cancelling model runs), wait for quiet, close channels. Idempotent.
   */
  close(): Promise<CloseReport> {
    this.#closing ??= (async () => {
      const reason = new Error(`Rank ${this.rank} is shutting down`);
      this.#controller.abort(reason);
      const generation = this.#generation;
      generation?.transport.fail(reason);
      let disposeError: string | null = null;
      const noteError = (error: unknown) => {
        disposeError ??= error instanceof Error ? error.message : String(error);
      };
      // Settles once no native call of the opening is left (a session load returns when cancelled).
      await this.#opening;
      await this.#preparing;
      const current = this.#generation ?? generation;
      const tracker = current?.tracker;
      const inFlightAtClose = tracker?.beginClose() ?? 0;
      // The denoiser first: its disposal cancels the model runs in flight.
      try {
        await this.#denoiser?.[Symbol.asyncDispose]();
      } catch (error) {
        noteError(error);
      }
      if (current) {
        try {
          await release(current.sampler);
        } catch (error) {
          noteError(error);
        }
      }
      await this.#releasing;
      if (this.#releaseError !== null) noteError(new Error(this.#releaseError));
      // Whatever the disposals promised, no model call may outlive this reply.
      await tracker?.idle();
      await current?.running;
      await current?.transport.close();
      this.#generation = null;
      return {
        rank: this.rank,
        inFlightAtClose,
        cancelledCalls: tracker?.cancelledCalls ?? 0,
        disposeError,
        generations: this.#generations,
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

/** Releases a generation's sampler: a binding (sync), or a one-phase sampler with its session. */
async function release(sampler: GenerationSampler): Promise<void> {
  if (sampler.kind === "bound") sampler.sampler[Symbol.dispose]();
  else await sampler.sampler[Symbol.asyncDispose]();
}

/**
 * The sampler as runRank sees it, counting model calls in flight so that closing can wait for
 * them and say how many were cancelled, and beating the rank's heartbeat around every call.
 */
class ModelTracker implements Sampler<Float32Array, Float32Array> {
  readonly #inner: Sampler<Float32Array, Float32Array>;
  readonly #heartbeat: HeartbeatWriter | null;
  #inFlight = 0;
  #idle: PromiseWithResolvers<void> | null = null;
  #closing = false;
  /** Calls that rejected after closing began. */
  cancelledCalls = 0;

  constructor(inner: Sampler<Float32Array, Float32Array>, heartbeat: HeartbeatWriter | null) {
    this.#inner = inner;
    this.#heartbeat = heartbeat;
  }

  async model(x: Float32Array, i: number): Promise<Float32Array> {
    this.#inFlight += 1;
    this.#heartbeat?.modelStart(i);
    try {
      return await this.#inner.model(x, i);
    } catch (error) {
      if (this.#closing) this.cancelledCalls += 1;
      throw error;
    } finally {
      this.#heartbeat?.modelEnd();
      this.#inFlight -= 1;
      if (this.#inFlight === 0) this.#idle?.resolve();
    }
  }

  guide(eps: Float32Array): Float32Array {
    this.#heartbeat?.hostStart(null);
    try {
      return this.#inner.guide(eps);
    } finally {
      this.#heartbeat?.hostEnd();
    }
  }

  step(guided: Float32Array, i: number, x: Float32Array): Float32Array {
    this.#heartbeat?.hostStart(i);
    try {
      return this.#inner.step(guided, i, x);
    } finally {
      this.#heartbeat?.hostEnd();
    }
  }

  /** The rank's run has ended: its heartbeat is no longer watched. */
  done(): void {
    this.#heartbeat?.done();
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
