/**
 * The ParaStep coordinator: one Worker per device, each running one rank of the loop with its own
 * sampler, exchanging steps over `BroadcastChannel` (see worker.ts for the protocol and channel.ts
 * for the exchange).
 *
 * Lifecycle of a {@link WorkerPool}: spawn `N` Workers -> send each `init` (sampler module URL,
 * open payload, device) -> wait for every `ready` (sessions open). Then per generation: `prepare`
 * (generation payload, and `x0` to rank 0: the conditioning and latents cross once) -> wait for
 * every `prepared` -> `run` -> collect rank 0's output and every rank's stats. Finally shut every
 * worker down: `abort`, wait for `closed` (bounded), `terminate()`. The shutdown runs on every
 * path, success, failure or abort, and always after the workers have cancelled their model runs
 * (and their session loads). While a generation runs, a watchdog polls every rank's heartbeat
 * (heartbeat.ts) and ends the run when one stalls. {@link runWorkers} is a pool opened, run once
 * and closed.
 *
 * A worker that does not reply `closed` in time is terminated anyway, and may have left a native
 * call running on its thread: that is recorded ({@link noteStrandedNativeCall}) so that the
 * process leaves through `_exit` rather than tear ONNX Runtime down under it (ffi/exit.ts).
 *
 * @module
 */

import { noteStrandedNativeCall } from "../../ffi/exit.ts";
import { assignDevices, type DeviceAssignment, type DeviceEp } from "./devices.ts";
import {
  createHeartbeats,
  readHeartbeat,
  type Stall,
  StallWatch,
  writeHeartbeat,
} from "./heartbeat.ts";
import { checkCount } from "./_check.ts";
import {
  checkExchange,
  checkPlan,
  type Exchange,
  type ParaStepPlan,
  type RankLoss,
} from "./rounds.ts";
import { ExchangeError } from "./transport.ts";
import { createArenas } from "./shared_payloads.ts";
import type { NatsStepSpec } from "./nats/spec.ts";
import type {
  CloseReport,
  DoneReply,
  ErrorReply,
  FailureStage,
  FromWorker,
  RankStats,
  ReplannedReply,
  SerializedError,
  ToWorker,
} from "./worker.ts";

/** What to run: the plan, the family's sampler module and its payload, and the initial latents. */
export interface SamplerJob<Init> {
  /** `T`, `W`, `N`; `N` Workers are started. */
  plan: ParaStepPlan;
  /**
   * Absolute URL of the sampler module (e.g. `new URL("./unet_sampler.ts", import.meta.url)`);
   * see {@link SamplerModule}.
   */
  module: string | URL;
  /**
   * The generation payload: `bind`'s for a two-phase module, `openSampler`'s for a one-phase one;
   * must be structured-cloneable.
   */
  init: Init;
  /** A two-phase module's `openDenoiser` payload (structured-cloneable). */
  open?: unknown;
  /**
   * How ranks share a round's results.
   *
   * @default {"gather"}
   */
  exchange?: Exchange;
  /** The initial latents `x_0`, identical for every rank by construction (only rank 0 gets them). */
  x0: Float32Array;
  /**
   * The most floats one step message carries (the warm-up message: latents plus the guided
   * eps, the same size): sizes the shared payload arenas. Larger messages go inline on the channel.
   *
   * @default {2 * x0.length}
   */
  payloadFloats?: number;
}

/** Options for {@link runWorkers}. */
export interface RunWorkersOptions {
  /**
   * The execution provider of every rank (see {@link assignDevices}); ignored when `devices` is
   * given.
   *
   * @default {"cpu"}
   */
  ep?: DeviceEp;
  /**
   * CPU cores shared among CPU ranks; ignored when `devices` is given.
   *
   * @default {navigator.hardwareConcurrency}
   */
  cores?: number;
  /** Explicit per-rank assignments (one per rank, indexed by rank), instead of `ep` and `cores`. */
  devices?: readonly DeviceAssignment[];
  /**
   * Move step payloads through shared memory (see shared_payloads.ts); false sends them inline on
   * the BroadcastChannel (about 30 MB/s in Deno 2.9).
   *
   * @default {true}
   */
  sharedPayloads?: boolean;
  /**
   * The generation id (message tags and channel names); a new one for each generation.
   *
   * @default {a random UUID}
   */
  gen?: string;
  /**
   * Aborting it (e.g. on SIGINT) shuts every worker down cleanly; `runWorkers` then rejects with
   * `signal.reason`.
   */
  signal?: AbortSignal;
  /**
   * Progress: called with increasing step indices after rank 0 applies them, at most once per
   * `progressIntervalMs`, and always for the last step `T - 1`. An exception thrown here fails the
   * run.
   */
  onStep?: (i: number) => void;
  /**
   * Least milliseconds between two progress reports from rank 0 (0: every step).
   *
   * @default {50}
   */
  progressIntervalMs?: number;
  /**
   * How long to wait for a worker to reply `closed` (after cancelling its model runs and session
   * loads) before terminating it anyway.
   *
   * @default {10000}
   */
  closeTimeoutMs?: number;
  /**
   * The stall watchdog: a rank whose model call (or scheduler step) has not returned for this
   * many milliseconds, or no rank progressing at all for as long, ends the run with a
   * {@link RankError} of stage `stall` naming the rank and the step (a hung device or driver would
   * otherwise hang the run until Ctrl-C). `Infinity` turns the watchdog off. Opening the samplers
   * is not watched.
   *
   * @default {max(60000, 10 x the slowest model call seen so far on any rank)}
   */
  stallTimeoutMs?: number;
  /**
   * The Worker script, for layouts where it does not sit beside this module (e.g. a compiled
   * binary) and for tests.
   *
   * @default {new URL("./worker.ts", import.meta.url)}
   */
  workerUrl?: string | URL;
  /** Called once every worker has been shut down, on success, failure and abort alike. */
  onShutdown?: (reports: ShutdownReport[]) => void;
}

/** How one worker was shut down. */
export interface ShutdownReport {
  /** The rank. */
  rank: number;
  /** It replied `closed` in time: its sampler was disposed and no model call was in flight. */
  closed: boolean;
  /** It had not replied when `closeTimeoutMs` ran out, and was terminated anyway. */
  timedOut: boolean;
  /** It had died (an error event the worker could not handle) and was not asked to close. */
  died: boolean;
  /** What the worker said when it closed; `null` without a `closed` reply. */
  close: CloseReport | null;
}

/** Wall-clock milliseconds of the phases of {@link runWorkers}. */
export interface WorkersWallTimes {
  /** Spawning the workers until every rank is ready (module import, sessions). */
  startMs: number;
  /** `run` until every rank is done: the denoising loop. */
  runMs: number;
  /** Closing and terminating every worker. */
  shutdownMs: number;
  /** The whole call. */
  totalMs: number;
}

/** What {@link runWorkers} returns. */
export interface WorkersResult {
  /** The generation id used. */
  gen: string;
  /** `x_T` from rank 0. */
  output: Float32Array;
  /** Per-rank stats, indexed by rank. */
  ranks: RankStats[];
  /** Network calls per rank, indexed by rank. */
  modelCalls: number[];
  /** Network calls on the measured critical path: rank 0's logical clock at the end. */
  criticalPathCalls: number;
  /** Messages sent by all ranks (a broadcast counts once). */
  messages: number;
  /** Payload bytes sent by all ranks (a broadcast counts once). */
  bytesExchanged: number;
  /** Milliseconds every rank spent waiting for messages, per round: `[rank][round]`. */
  waitMsPerRound: number[][];
  /** Milliseconds every rank spent sending messages, per round: `[rank][round]`. */
  sendMsPerRound: number[][];
  /** Wall times of the phases. */
  wallMs: WorkersWallTimes;
  /** How each worker was shut down, indexed by rank. */
  shutdown: ShutdownReport[];
  /** Ranks lost and re-planned around (`onRankLoss: "continue"`); absent when none. */
  losses?: RankLoss[];
}

/**
 * A rank failed: its sampler did not open, a model call or scheduler step threw, an exchange went
 * wrong, or its worker died. Carries the rank, the step (when known), the stage, and the worker's
 * original error as `cause` (an `Error` with the original `name`, `message` and `stack`).
 */
export class RankError extends Error {
  override name = "RankError";
  /** The rank that failed. */
  readonly rank: number;
  /** The step index it was working on, or `null` when not known (open, worker death). */
  readonly step: number | null;
  /** Where it failed. */
  readonly stage: FailureStage;

  /**
   * @param rank The failed rank.
   * @param step The step index, or `null`.
   * @param stage Where it failed.
   * @param cause The original error as the worker described it.
   */
  constructor(rank: number, step: number | null, stage: FailureStage, cause: SerializedError) {
    const where = stage === "open"
      ? `rank ${rank} failed to open its sampler`
      : stage === "worker"
      ? `the worker of rank ${rank} failed`
      : stage === "lost"
      ? `rank ${rank} was lost${step === null ? "" : ` at step ${step}`}`
      : stage === "stall"
      ? `rank ${rank} stalled${step === null ? "" : ` at step ${step}`}`
      : step === null
      ? `rank ${rank} failed (${stage})`
      : `rank ${rank} failed at step ${step} (${stage})`;
    super(`Cannot run ParaStep as ${where}: ${cause.message}`, { cause: revive(cause) });
    this.rank = rank;
    this.step = step;
    this.stage = stage;
  }
}

function revive(serialized: SerializedError): Error {
  const error = new Error(serialized.message);
  error.name = serialized.name;
  if (serialized.stack !== undefined) error.stack = serialized.stack;
  return error;
}

const DEFAULT_PROGRESS_INTERVAL_MS = 50;
const DEFAULT_CLOSE_TIMEOUT_MS = 10_000;
/**
 * How long a stalled rank gets to reply `closed`: a run that honours ORT's terminate flag ends in
 * milliseconds, a hung driver call never does.
 */
const STALLED_CLOSE_TIMEOUT_MS = 2_000;

/** One spawned worker and the replies it has given. */
interface RankHandle {
  readonly rank: number;
  readonly worker: WorkerLike;
  readonly ready: PromiseWithResolvers<void>;
  /** Replaced for each generation. */
  prepared: PromiseWithResolvers<void>;
  /** Replaced for each generation. */
  done: PromiseWithResolvers<DoneReply>;
  readonly closed: PromiseWithResolvers<CloseReport | null>;
  died: boolean;
  /** Replaced for each re-plan. */
  replanned: PromiseWithResolvers<ReplannedReply>;
  /** It replied `done` for the generation in progress. */
  finished: boolean;
}

/** What a {@link WorkerPool} opens: the family's sampler module and its open payload. */
export interface PoolSpec {
  /**
   * Absolute URL of the sampler module (e.g. `new URL("./sampler.ts", import.meta.url)`); see
   * `SamplerModule`.
   */
  module: string | URL;
  /** The payload of the module's `openDenoiser` (structured-cloneable; unused by one-phase modules). */
  open?: unknown;
  /** `N`: Workers (ranks) to start. */
  devices: number;
}

/** Options for {@link WorkerPool.open}. */
export interface PoolOptions {
  /**
   * The execution provider of every rank (see {@link assignDevices}); ignored when `devices` is
   * given.
   *
   * @default {"cpu"}
   */
  ep?: DeviceEp;
  /**
   * CPU cores shared among CPU ranks; ignored when `devices` is given.
   *
   * @default {navigator.hardwareConcurrency}
   */
  cores?: number;
  /** Explicit per-rank assignments (one per rank, indexed by rank), instead of `ep` and `cores`. */
  devices?: readonly DeviceAssignment[];
  /**
   * Aborting it while the workers open shuts them down cleanly (their session loads cancelled);
   * `open` then rejects with `signal.reason`.
   */
  signal?: AbortSignal;
  /**
   * Least milliseconds between two progress reports from rank 0 (0: every step).
   *
   * @default {50}
   */
  progressIntervalMs?: number;
  /**
   * How long to wait for a worker to reply `closed` (after cancelling its model runs and session
   * loads) before terminating it anyway.
   *
   * @default {10000}
   */
  closeTimeoutMs?: number;
  /**
   * The Worker script, for layouts where it does not sit beside this module (e.g. a compiled
   * binary) and for tests.
   *
   * @default {new URL("./worker.ts", import.meta.url)}
   */
  workerUrl?: string | URL;
  /**
   * Called once the pool's workers have been shut down: when opening fails (with the workers it
   * had started), or when the pool closes.
   */
  onShutdown?: (reports: ShutdownReport[]) => void;
  /**
   * Starts rank `rank`'s worker instead of `new Worker(workerUrl)`: e.g. a rank on another host
   * (src/parastep/nats/remote.ts), which speaks the same protocol.
   *
   * @default {a local Worker of workerUrl}
   */
  spawnWorker?: (rank: number, workerUrl: URL) => WorkerLike;
}

/**
 * What the pool needs of a rank's worker: the parts of `Worker` it uses. A local `Worker`, or a
 * stand-in for a rank on another host.
 */
export interface WorkerLike {
  /** Send a protocol message (see worker.ts). */
  postMessage(message: ToWorker): void;
  /** The worker's replies. */
  onmessage: ((event: MessageEvent<FromWorker>) => void) | null;
  /** The worker died (an error it could not handle itself). */
  onerror: ((event: ErrorEvent) => void) | null;
  /** A reply could not be deserialized. */
  onmessageerror: ((event: MessageEvent) => void) | null;
  /** Stop it at once. */
  terminate(): void;
}

/** One generation for a {@link WorkerPool}: its plan, payload and initial latents. */
export interface GenerationJob {
  /** `T`, `W`, `N`; `N` must be the pool's device count. */
  plan: ParaStepPlan;
  /** The family's generation payload (`bind`), or a one-phase module's `openSampler` init. */
  payload: unknown;
  /** The initial latents `x_0`, identical for every rank by construction (only rank 0 gets them). */
  x0: Float32Array;
  /**
   * How ranks share a round's results.
   *
   * @default {"gather"}
   */
  exchange?: Exchange;
  /**
   * The most floats one step message carries (the warm-up message: latents plus the guided
   * eps, the same size): sizes the shared payload arenas. Larger messages go inline on the channel.
   *
   * @default {2 * x0.length}
   */
  payloadFloats?: number;
}

/** Options for {@link WorkerPool.run}. */
export interface GenerationOptions {
  /**
   * The generation id (message tags and channel names); a new one for each generation.
   *
   * @default {a random UUID}
   */
  gen?: string;
  /**
   * Aborting it (e.g. on SIGINT) fails the generation; `run` rejects with `signal.reason`, and the
   * pool must then be closed.
   */
  signal?: AbortSignal;
  /**
   * Progress: called with increasing step indices after rank 0 applies them, at most once per
   * `progressIntervalMs`, and always for the last step `T - 1`. An exception thrown here fails the
   * run.
   */
  onStep?: (i: number) => void;
  /** The stall watchdog (see {@link RunWorkersOptions.stallTimeoutMs}). */
  stallTimeoutMs?: number;
  /**
   * Move step payloads through shared memory (see shared_payloads.ts); false sends them inline on
   * the BroadcastChannel (about 30 MB/s in Deno 2.9).
   *
   * @default {true}
   */
  sharedPayloads?: boolean;
  /**
   * Exchange steps over NATS instead of BroadcastChannel (src/parastep/nats/): every rank opens
   * a NatsTransport as this says (then `sharedPayloads` does not apply).
   */
  nats?: NatsStepSpec;
  /**
   * What a rank reported lost (a remote rank that stopped answering) does: `fail` the run, or
   * `continue` with the ranks left (docs/multihost.md §7; the result's `losses` say what happened).
   *
   * @default {"fail"}
   */
  onRankLoss?: "fail" | "continue";
}

/** What {@link WorkerPool.run} returns: {@link WorkersResult} without the shutdown. */
export type GenerationResult = Omit<WorkersResult, "shutdown">;

/**
 * `N` Workers, one rank each, with the family's denoiser open on every device, serving
 * generation after generation ({@link WorkerPool.run}) until {@link WorkerPool.close}. Opening
 * starts the session loads at once, so a caller can encode its prompt meanwhile.
 *
 * A failed generation (a rank failed, stalled or died, or the run was aborted) breaks the pool:
 * every later `run` rejects with the same error, and the pool must be closed. Closing shuts every
 * worker down (`abort`, `closed` bounded by `closeTimeoutMs`, `terminate()`), always after the
 * workers have cancelled their model runs and session loads.
 */
export class WorkerPool implements AsyncDisposable {
  /** `N`. */
  readonly devices: number;
  /** Milliseconds from spawning the workers until every rank was ready (modules, sessions). */
  readonly openMs: number;
  readonly #handles: RankHandle[];
  readonly #failure: PromiseWithResolvers<never>;
  readonly #closeTimeoutMs: number;
  #failed = false;
  #onStep: ((i: number) => void) | undefined;
  #busy = false;
  #stalledRank: number | null = null;
  #arenas: { floats: number; arenas: SharedArrayBuffer[] } | null = null;
  #closing: Promise<ShutdownReport[]> | null = null;
  /** During a `continue` run: takes a rank reported lost (returns false to fail the run). */
  #onLost: ((rank: number) => boolean) | null = null;
  #onShutdown: ((reports: ShutdownReport[]) => void) | undefined;

  private constructor(
    handles: RankHandle[],
    failure: PromiseWithResolvers<never>,
    closeTimeoutMs: number,
    openMs: number,
  ) {
    this.#handles = handles;
    this.#failure = failure;
    this.#closeTimeoutMs = closeTimeoutMs;
    this.devices = handles.length;
    this.openMs = openMs;
  }

  /**
   * Spawn `spec.devices` Workers and open the sampler module on each; resolves once every rank is
   * ready. On failure (or abort) every worker is shut down before it rejects.
   *
   * @throws {RangeError} For a bad device count or option.
   * @throws {TypeError} For a module URL that is not absolute, or a payload that cannot be cloned.
   * @throws {RankError} When a rank fails to open.
   */
  static async open(spec: PoolSpec, options: PoolOptions = {}): Promise<WorkerPool> {
    const started = performance.now();
    const N = spec.devices;
    checkCount("ParaStep", "devices", N);
    const moduleUrl = absoluteUrl(spec.module, "module");
    const workerUrl = options.workerUrl === undefined
      ? new URL("./worker.ts", import.meta.url)
      : absoluteUrl(options.workerUrl, "workerUrl");
    const devices = options.devices ?? assignDevices(N, {
      ...(options.ep === undefined ? {} : { ep: options.ep }),
      ...(options.cores === undefined ? {} : { cores: options.cores }),
    });
    checkDevices(devices, N);
    const progressIntervalMs = nonNegative(
      options.progressIntervalMs ?? DEFAULT_PROGRESS_INTERVAL_MS,
      "progressIntervalMs",
    );
    const closeTimeoutMs = nonNegative(
      options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS,
      "closeTimeoutMs",
    );
    const { signal } = options;
    signal?.throwIfAborted();
    // The first failure wins and breaks the pool; later ones (echoes of it) are dropped.
    const failure = Promise.withResolvers<never>();
    failure.promise.catch(() => {});
    let pool: WorkerPool | null = null;
    let failed = false;
    const fail = (error: unknown): void => {
      if (failed) return;
      failed = true;
      if (pool) pool.#failed = true;
      failure.reject(error);
    };
    const progress = (i: number): void => {
      if (failed || pool === null) return;
      const onStep = pool.#onStep;
      onStep?.(i);
    };
    const handles: RankHandle[] = [];
    const onAbort = (): void => fail(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      for (let rank = 0; rank < N; rank++) {
        const handle = spawn(
          rank,
          workerUrl,
          progress,
          fail,
          options.spawnWorker,
          (lostRank) => (pool === null ? null : pool.#onLost)?.(lostRank) ?? false,
        );
        handles.push(handle);
        const init: ToWorker = {
          type: "init",
          rank,
          module: moduleUrl.href,
          open: spec.open,
          device: devices[rank]!,
          progressIntervalMs,
        };
        post(handle, init, "init");
      }
      await Promise.race([Promise.all(handles.map((h) => h.ready.promise)), failure.promise]);
    } catch (error) {
      if (handles.length > 0) {
        // Not `onShutdown?.(await ...)`: without a callback the shutdown itself would be skipped.
        const reports = await Promise.all(handles.map((h) => shutdownRank(h, closeTimeoutMs)));
        options.onShutdown?.(reports);
      }
      throw error;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    pool = new WorkerPool(handles, failure, closeTimeoutMs, performance.now() - started);
    pool.#onShutdown = options.onShutdown;
    pool.#failed = failed;
    return pool;
  }

  /** Whether a failure has broken the pool (it must be closed). */
  get failed(): boolean {
    return this.#failed;
  }

  /**
   * Run one generation on every rank. The output is bit for bit what {@link runInProcess} gives
   * with the same samplers, since the round logic is the same {@link runRank}.
   *
   * @throws {RangeError} For a bad plan, or one whose `N` is not the pool's.
   * @throws {TypeError} For an `x0` that is not a Float32Array or a payload that cannot be cloned.
   * @throws {RankError} When a rank fails (the pool is then broken).
   * @throws {ExchangeError} When a message reached a rank but was never received.
   */
  async run(job: GenerationJob, options: GenerationOptions = {}): Promise<GenerationResult> {
    const started = performance.now();
    const { plan, x0 } = job;
    checkPlan(plan);
    checkExchange(job.exchange);
    const N = this.devices;
    if (plan.devices !== N) {
      throw new RangeError(
        `Cannot run ParaStep as 'plan.devices' must be the pool's ${N} devices: current value is ${plan.devices}`,
      );
    }
    if (!(x0 instanceof Float32Array)) {
      throw new TypeError("Cannot run ParaStep workers as 'x0' must be a Float32Array");
    }
    const stallTimeoutMs = options.stallTimeoutMs;
    if (stallTimeoutMs !== undefined && !(stallTimeoutMs > 0)) {
      throw new RangeError(
        `Cannot run ParaStep workers as 'stallTimeoutMs' must be a number > 0 (Infinity: no ` +
          `watchdog): current value is ${stallTimeoutMs}`,
      );
    }
    if (this.#closing !== null) throw new Error("Cannot run ParaStep as the worker pool is closed");
    if (this.#busy) {
      throw new Error("Cannot run ParaStep as the worker pool is running a generation");
    }
    // A pool a failure has broken rejects with that failure.
    if (this.#failed) await this.#failure.promise;
    const { signal } = options;
    signal?.throwIfAborted();
    const gen = options.gen ?? crypto.randomUUID();
    const fail = (error: unknown) => WorkerPool.fail(this, error);
    const onAbort = (): void => fail(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    this.#busy = true;
    this.#onStep = options.onStep;
    const heartbeats = createHeartbeats(N);
    let watch: StallWatch | null = null;
    try {
      // Step payloads go through shared memory; BroadcastChannel carries the tagged messages.
      const arenas = options.sharedPayloads === false || options.nats !== undefined
        ? undefined
        : this.#arenasFor(job.payloadFloats ?? 2 * Math.max(1, x0.length));
      for (const handle of this.#handles) {
        handle.prepared = Promise.withResolvers<void>();
        handle.done = Promise.withResolvers<DoneReply>();
        handle.finished = false;
        const prepare: ToWorker = {
          type: "prepare",
          plan: { steps: plan.steps, warmup: plan.warmup, devices: N },
          gen,
          payload: job.payload,
          x0: handle.rank === 0 ? x0 : new Float32Array(0),
          heartbeats,
          ...(arenas ? { arenas } : {}),
          ...(job.exchange !== undefined ? { exchange: job.exchange } : {}),
          ...(options.nats !== undefined ? { nats: options.nats } : {}),
        };
        post(handle, prepare, "generation");
      }
      // Every rank's channels must listen before any rank sends.
      await Promise.race([
        Promise.all(this.#handles.map((h) => h.prepared.promise)),
        this.#failure.promise,
      ]);
      const startMs = performance.now() - started;
      const runStarted = performance.now();
      for (const handle of this.#handles) {
        handle.worker.postMessage({ type: "run" } satisfies ToWorker);
      }
      if (stallTimeoutMs !== Infinity) {
        watch = new StallWatch(heartbeats, N, stallTimeoutMs, (stall) => {
          this.#stalledRank = stall.rank;
          fail(stallError(stall));
        });
      }
      const { dones, losses } = await this.#await(gen, heartbeats, options.onRankLoss);
      const runMs = performance.now() - runStarted;
      const ranks = dones.map((d) => d.stats);
      for (const stats of ranks) {
        const left = stats.undelivered[0];
        if (left !== undefined) {
          throw new ExchangeError(null, left, `rank ${stats.rank} never received a message`);
        }
      }
      const output = dones[0]?.output;
      if (output === null || output === undefined) {
        throw new Error("Cannot run ParaStep workers as rank 0 returned no output");
      }
      return {
        gen,
        output,
        ranks,
        modelCalls: ranks.map((s) => s.modelCalls),
        criticalPathCalls: ranks[0]?.depth ?? 0,
        messages: ranks.reduce((sum, s) => sum + s.counters.messagesSent, 0),
        bytesExchanged: ranks.reduce((sum, s) => sum + s.counters.bytesSent, 0),
        waitMsPerRound: ranks.map((s) => s.waitMsPerRound),
        sendMsPerRound: ranks.map((s) => s.sendMsPerRound),
        wallMs: { startMs, runMs, shutdownMs: 0, totalMs: performance.now() - started },
        ...(losses.length > 0 ? { losses } : {}),
      };
    } catch (error) {
      fail(error);
      throw error;
    } finally {
      watch?.stop();
      signal?.removeEventListener("abort", onAbort);
      this.#onStep = undefined;
      this.#busy = false;
    }
  }

  /**
   * Wait for every rank's `done`. With `continue`, a rank reported lost (stage `lost`) is left
   * out instead: the ranks left stop, open the next epoch's exchange (`<gen>-e<k>`) renumbered in
   * order, and resume from the step rank 0's round started at (docs/multihost.md §7).
   */
  async #await(
    gen: string,
    heartbeats: SharedArrayBuffer,
    onRankLoss: "fail" | "continue" | undefined,
  ): Promise<{ dones: DoneReply[]; losses: RankLoss[] }> {
    let active = [...this.#handles];
    const losses: RankLoss[] = [];
    let lost = Promise.withResolvers<number>();
    if (onRankLoss === "continue") {
      this.#onLost = (rank) => {
        if (rank === 0 || !active.some((h) => h.rank === rank)) return false;
        lost.resolve(rank);
        return true;
      };
    }
    try {
      for (let epoch = 1;; epoch++) {
        const outcome = await Promise.race([
          Promise.all(active.map((h) => h.done.promise)),
          lost.promise,
          this.#failure.promise,
        ]);
        if (typeof outcome !== "number") return { dones: outcome, losses };
        lost = Promise.withResolvers<number>();
        // The lost rank is no longer watched; ranks that had finished their part stay finished.
        const beat = readHeartbeat(heartbeats, outcome);
        writeHeartbeat(heartbeats, outcome, { ...beat, beat: beat.beat + 1, phase: "done" });
        active = active.filter((h) => h.rank !== outcome && (h.rank === 0 || !h.finished));
        const epochGen = `${gen}-e${epoch}`;
        for (const [index, handle] of active.entries()) {
          handle.replanned = Promise.withResolvers<ReplannedReply>();
          handle.done = Promise.withResolvers<DoneReply>();
          handle.worker.postMessage(
            {
              type: "replan",
              gen: epochGen,
              devices: active.length,
              rank: index,
            } satisfies ToWorker,
          );
        }
        const replies = await Promise.race([
          Promise.all(active.map((h) => h.replanned.promise)),
          this.#failure.promise,
        ]);
        const step = replies[0]?.step ?? null;
        if (step === null) {
          throw new Error(
            `Cannot continue after losing rank ${outcome} as rank 0 had no round to resume from`,
          );
        }
        losses.push({ rank: outcome, step, devices: active.length });
        for (const handle of active) {
          handle.worker.postMessage({ type: "resume", step } satisfies ToWorker);
        }
      }
    } finally {
      this.#onLost = null;
    }
  }

  /** Arenas of at least `floats` floats per rank, reused across generations while large enough. */
  #arenasFor(floats: number): SharedArrayBuffer[] {
    if (this.#arenas === null || this.#arenas.floats < floats) {
      this.#arenas = { floats, arenas: createArenas(this.devices, floats) };
    }
    return this.#arenas.arenas;
  }

  /** Shut every worker down (idempotent); resolves with how each was shut down. */
  close(): Promise<ShutdownReport[]> {
    this.#closing ??= (async () => {
      // Ends a generation still running (its run rejects), so no worker waits for a message.
      WorkerPool.fail(this, new Error("The worker pool is closing"));
      const stalled = this.#stalledRank;
      const reports = await Promise.all(this.#handles.map((h) =>
        shutdownRank(
          h,
          h.rank === stalled
            ? Math.min(this.#closeTimeoutMs, STALLED_CLOSE_TIMEOUT_MS)
            : this.#closeTimeoutMs,
        )
      ));
      this.#onShutdown?.(reports);
      return reports;
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** @internal The pool's failure path (first error wins). */
  static fail(pool: WorkerPool, error: unknown): void {
    if (pool.#failed) return;
    pool.#failed = true;
    pool.#failure.reject(error);
  }
}

/** Post `message` to a worker, naming what could not be cloned. */
function post(handle: RankHandle, message: ToWorker, what: "init" | "generation"): void {
  try {
    handle.worker.postMessage(message);
  } catch (error) {
    throw new TypeError(
      `Cannot send the ${what} payload to rank ${handle.rank} as it is not structured-cloneable: ${
        error instanceof Error ? error.message : String(error)
      }`,
      { cause: error },
    );
  }
}

/**
 * Run one ParaStep generation on `N` Workers, one rank each, and shut them all down: a
 * {@link WorkerPool} opened, run once and closed.
 *
 * Each Worker imports `job.module`: a two-phase module gets `openDenoiser(job.open, device)` and
 * then `bind(job.init)`; a one-phase module `openSampler(job.init, device)` (see `SamplerModule`).
 * Ranks exchange steps over `BroadcastChannel`. The output is bit for bit what
 * {@link runInProcess} gives with the same samplers, since the round logic is the same
 * {@link runRank}.
 *
 * Failure: the first rank to fail (or die) ends the run; every worker is then told to abort, which
 * cancels its model runs in flight before it replies `closed` and is terminated. The call rejects
 * with a {@link RankError} naming the rank, the step and the cause ("Cannot run ParaStep as rank 1
 * failed at step 7 (model): ..."). Aborting `options.signal` does the same and rejects with
 * `signal.reason`.
 *
 * @param job The plan, the sampler module and its payloads, and `x0`.
 * @param options See {@link RunWorkersOptions}.
 * @returns Rank 0's output and the stats of every rank.
 * @throws {RangeError} For a bad plan or option.
 * @throws {TypeError} For a module URL that is not absolute, an `x0` that is not a Float32Array,
 *   or a payload that cannot be structured-cloned.
 * @throws {RankError} When a rank fails.
 * @throws {ExchangeError} When a message reached a rank but was never received.
 * @example
 * ```ts ignore
 * const result = await runWorkers(
 *   { plan: { steps: 200, warmup: 5, devices: 2 }, module: new URL("./unet_sampler.ts", import.meta.url), init, x0 },
 *   { ep: "cpu", signal: controller.signal, onStep: (i) => bar.update(i) },
 * );
 * ```
 */
export async function runWorkers<Init>(
  job: SamplerJob<Init>,
  options: RunWorkersOptions = {},
): Promise<WorkersResult> {
  const started = performance.now();
  // 1. Check inputs before any worker starts.
  const { plan, x0 } = job;
  checkPlan(plan);
  checkExchange(job.exchange);
  if (!(x0 instanceof Float32Array)) {
    throw new TypeError("Cannot run ParaStep workers as 'x0' must be a Float32Array");
  }
  const stallTimeoutMs = options.stallTimeoutMs;
  if (stallTimeoutMs !== undefined && !(stallTimeoutMs > 0)) {
    throw new RangeError(
      `Cannot run ParaStep workers as 'stallTimeoutMs' must be a number > 0 (Infinity: no ` +
        `watchdog): current value is ${stallTimeoutMs}`,
    );
  }
  options.signal?.throwIfAborted();
  // 2. Spawn and open.
  const pool = await WorkerPool.open(
    { module: job.module, open: job.open, devices: plan.devices },
    {
      ...(options.ep !== undefined ? { ep: options.ep } : {}),
      ...(options.cores !== undefined ? { cores: options.cores } : {}),
      ...(options.devices !== undefined ? { devices: options.devices } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.progressIntervalMs !== undefined
        ? { progressIntervalMs: options.progressIntervalMs }
        : {}),
      ...(options.closeTimeoutMs !== undefined ? { closeTimeoutMs: options.closeTimeoutMs } : {}),
      ...(options.workerUrl !== undefined ? { workerUrl: options.workerUrl } : {}),
      ...(options.onShutdown ? { onShutdown: options.onShutdown } : {}),
    },
  );
  // 3. Run; 4. shut every worker down, whatever happened.
  let outcome: { ok: true; result: GenerationResult } | { ok: false; error: unknown };
  try {
    const result = await pool.run({
      plan,
      payload: job.init,
      x0,
      ...(job.exchange !== undefined ? { exchange: job.exchange } : {}),
      ...(job.payloadFloats !== undefined ? { payloadFloats: job.payloadFloats } : {}),
    }, {
      ...(options.gen !== undefined ? { gen: options.gen } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onStep ? { onStep: options.onStep } : {}),
      ...(stallTimeoutMs !== undefined ? { stallTimeoutMs } : {}),
      ...(options.sharedPayloads !== undefined ? { sharedPayloads: options.sharedPayloads } : {}),
    });
    outcome = { ok: true, result };
  } catch (error) {
    outcome = { ok: false, error };
  }
  const shutdownStarted = performance.now();
  const shutdown = await pool.close();
  const shutdownMs = performance.now() - shutdownStarted;
  if (!outcome.ok) throw outcome.error;
  const { result } = outcome;
  return {
    ...result,
    wallMs: {
      startMs: pool.openMs + result.wallMs.startMs,
      runMs: result.wallMs.runMs,
      shutdownMs,
      totalMs: performance.now() - started,
    },
    shutdown,
  };
}

/** Start rank `rank`'s Worker and route its replies. */
function spawn(
  rank: number,
  workerUrl: URL,
  onStep: (i: number) => void,
  fail: (error: unknown) => void,
  spawnWorker?: (rank: number, workerUrl: URL) => WorkerLike,
  onLost?: (rank: number) => boolean,
): RankHandle {
  const worker = spawnWorker?.(rank, workerUrl) ??
    new Worker(workerUrl, { type: "module", name: `parastep rank ${rank}` });
  const handle: RankHandle = {
    rank,
    worker,
    ready: Promise.withResolvers<void>(),
    prepared: Promise.withResolvers<void>(),
    done: Promise.withResolvers<DoneReply>(),
    closed: Promise.withResolvers<CloseReport | null>(),
    died: false,
    replanned: Promise.withResolvers<ReplannedReply>(),
    finished: false,
  };
  worker.onmessage = (event: MessageEvent<FromWorker>) => {
    const reply = event.data;
    switch (reply.type) {
      case "ready":
        handle.ready.resolve();
        return;
      case "prepared":
        handle.prepared.resolve();
        return;
      case "step":
        try {
          onStep(reply.i);
        } catch (error) {
          fail(error);
        }
        return;
      case "done":
        handle.finished = true;
        handle.done.resolve(reply);
        return;
      case "error":
        if (reply.stage === "lost" && onLost?.(rank)) return;
        fail(rankError(rank, reply));
        return;
      case "replanned":
        handle.replanned.resolve(reply);
        return;
      case "closed":
        handle.closed.resolve(reply.report);
        return;
    }
  };
  // An error the worker could not handle itself (its script failed to load, say): it is gone.
  worker.onerror = (event) => {
    event.preventDefault();
    handle.died = true;
    handle.closed.resolve(null);
    fail(new RankError(rank, null, "worker", { name: "Error", message: event.message }));
  };
  worker.onmessageerror = () => {
    fail(
      new RankError(rank, null, "worker", {
        name: "DataCloneError",
        message: "a message from the worker could not be deserialized",
      }),
    );
  };
  return handle;
}

/** An error reply as a RankError; a reply under another rank's name is still this worker's. */
function rankError(rank: number, reply: ErrorReply): RankError {
  return new RankError(rank, reply.step, reply.stage, reply.cause);
}

/** The run's error for a stalled rank: which rank, at which step, doing what, for how long. */
function stallError(stall: Stall): RankError {
  const seconds = `${(stall.stillMs / 1000).toFixed(1)} s`;
  const limit = `the stall timeout is ${(stall.timeoutMs / 1000).toFixed(1)} s`;
  const message = stall.phase === "model"
    ? `its model call has not returned for ${seconds} (${limit}; a hung device or driver?)`
    : stall.phase === "host"
    ? `its scheduler step has not returned for ${seconds} (${limit})`
    : `no rank has made progress for ${seconds}, each waiting for another (${limit})`;
  return new RankError(stall.rank, stall.step, "stall", { name: "StallError", message });
}

/**
 * Ask the worker to close, wait for `closed` (bounded), then terminate it. A worker that did not
 * answer may be stuck in a native call, which terminating its JavaScript does not stop: recorded
 * as stranded, so the process will not run ONNX Runtime's static destructors under it.
 */
async function shutdownRank(handle: RankHandle, timeoutMs: number): Promise<ShutdownReport> {
  const { rank, worker } = handle;
  if (handle.died) {
    worker.terminate();
    return { rank, closed: false, timedOut: false, died: true, close: null };
  }
  worker.postMessage({ type: "abort" } satisfies ToWorker);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  const close = await Promise.race([handle.closed.promise, timeout]);
  clearTimeout(timer);
  worker.terminate();
  if (close === "timeout") {
    noteStrandedNativeCall(`the worker of rank ${rank} (no reply to close in ${timeoutMs} ms)`);
    return { rank, closed: false, timedOut: true, died: false, close: null };
  }
  return { rank, closed: close !== null, timedOut: false, died: handle.died, close };
}

function absoluteUrl(value: string | URL, name: string): URL {
  if (value instanceof URL) return value;
  try {
    return new URL(value);
  } catch {
    throw new TypeError(
      `Cannot run ParaStep workers as '${name}' must be an absolute URL ` +
        `(e.g. new URL("./sampler.ts", import.meta.url)): current value is ${value}`,
    );
  }
}

function checkDevices(devices: readonly DeviceAssignment[], N: number): void {
  if (devices.length !== N) {
    throw new RangeError(
      `Cannot run ParaStep workers as 'devices' must hold one assignment per rank (${N}): ` +
        `current length is ${devices.length}`,
    );
  }
  devices.forEach((device, rank) => {
    if (device.rank !== rank || device.devices !== N) {
      throw new RangeError(
        `Cannot run ParaStep workers as 'devices[${rank}]' must be rank ${rank} of ${N}: ` +
          `current value is rank ${device.rank} of ${device.devices}`,
      );
    }
  });
}

function nonNegative(value: number, name: string): number {
  if (!Number.isFinite(value) || value < 0) {
    throw new RangeError(
      `Cannot run ParaStep workers as '${name}' must be a finite number >= 0: ` +
        `current value is ${value}`,
    );
  }
  return value;
}
