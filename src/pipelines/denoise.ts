/**
 * The denoising engines, for every family: all ranks in this process over one denoiser
 * ({@linkcode denoiseInProcess}), or one Deno Worker per device exchanging steps over
 * BroadcastChannel ({@linkcode denoiseWithWorkers}). An engine opens the family's sampler module
 * once (`openDenoiser(open, device)`: the sessions load) and then runs any number of generations
 * (`bind(generation)`), so it knows no family.
 *
 * @module
 */

import { autoCandidate, type ExecutionProvider } from "../../ffi/mod.ts";
import { median } from "../metrics/stats.ts";
import { runBatchStep } from "../parastep/batchstep.ts";
import { type GenerationResult, WorkerPool } from "../parastep/coordinator.ts";
import {
  assignDevices,
  type DeviceAssignment,
  type OpenedDenoiser,
  samplerForm,
} from "../parastep/devices.ts";
import {
  type Exchange,
  type RankLoss,
  runInProcess,
  runInProcessWithLosses,
} from "../parastep/rounds.ts";

/** How the denoising loop is spread over devices. */
export type DenoiseMode = "parastep" | "batchstep" | "sequential";

/** What an engine opens: the family's sampler module on the run's devices. */
export interface EngineSpec {
  /** The sampler module (exports `openDenoiser`). */
  readonly module: URL;
  /** The module's open payload (structured-cloneable). */
  readonly open: unknown;
  readonly mode: DenoiseMode;
  /** Devices N (ParaStep); single-device modes open one. */
  readonly devices: number;
  readonly ep: ExecutionProvider | "auto";
  /** Denoiser intra-op threads per device. @default floor(cores / devices), at least 1 */
  readonly threads?: number;
  /**
   * The device id of each rank (CUDA ordinal), e.g. `[0, 0]` for two workers sharing one GPU.
   * @default rank r uses device r
   */
  readonly deviceIds?: readonly number[];
  /** Load the denoiser through the graph cache (see `GraphCache`). @default {false} */
  readonly graphCache?: boolean;
  /**
   * Whether Workers on the CPU with one thread each run on one denoiser session this process
   * opens (`Session.borrow`) instead of loading one each: one load and one copy of the weights.
   * With one intra-op thread a run computes on the thread that called it, so ranks sharing the
   * session still run side by side. Ranks with more threads (a shared pool would be contended)
   * or on a GPU (one session, one stream) always open their own.
   * @default {true}
   */
  readonly shareSession?: boolean;
  /**
   * In-process ParaStep only: run as if ranks were lost at these round starts and the rest went
   * on at the given N (`runInProcessWithLosses`), which reproduces a re-planned multi-host run.
   */
  readonly replayLosses?: readonly Pick<RankLoss, "step" | "devices">[];
  /** Aborting it while the engine opens cancels the session loads; `open` rejects. */
  readonly signal?: AbortSignal;
}

/** One generation for an opened engine. */
export interface DenoiseJob {
  /** The family's generation payload (`bind`). */
  readonly generation: unknown;
  /** The initial latents `x_0`. */
  readonly x0: Float32Array<ArrayBuffer>;
  /** Steps T. */
  readonly steps: number;
  /** Warm-up W. */
  readonly warmup: number;
  /** BatchStep stride L. */
  readonly stride: number;
  /** How ParaStep ranks share a round's results. @default "gather" */
  readonly exchange?: Exchange;
  readonly onStep?: (i: number) => void;
  readonly signal?: AbortSignal;
  /** The Worker engine's stall timeout (see `GenerateOptions.stallTimeoutMs`). */
  readonly stallTimeoutMs?: number;
}

/** What a denoising engine reports besides the final latents. */
export interface DenoiseReport {
  readonly output: Float32Array;
  /** Execution provider the denoiser ran on. */
  readonly ep: ExecutionProvider;
  /** Model calls per rank (one entry for single-device modes). */
  readonly modelCalls: readonly number[];
  /** Network calls on the critical path (measured). */
  readonly criticalPathCalls: number;
  /** Bytes of steps exchanged between devices. */
  readonly bytesExchanged: number;
  /** Milliseconds of the denoising loop itself, first step to last. */
  readonly loopMs: number;
  /**
   * Milliseconds per round that exchanging steps adds to the critical path, as rank 0 lives it:
   * the median over rounds of its time sending (with gather its latents broadcast, with
   * all-gather its eps) plus its wait, after its own call, for the other ranks' eps. The wait holds
   * the message hops on the round's critical path (with gather, latents out and eps back; with
   * all-gather, eps back) and any lead the other ranks' calls had over rank 0's own (or, when
   * their calls were quicker, hides the hops). 0 in process.
   */
  readonly exchangeMsPerRound: number;
  /**
   * Median one-way transit of each kind of round message, post to payload in hand: `latents`
   * (rank 0 to the others; gather only) and `eps` (into rank 0); null for a kind never sent.
   */
  readonly hopMs: { readonly latents: number | null; readonly eps: number | null };
  /** Ranks lost and re-planned around (`gen --nats --on-rank-loss continue`); absent: none. */
  readonly losses?: readonly RankLoss[];
}

/** An engine with its denoisers open, ready for generation after generation. */
export interface OpenedEngine extends AsyncDisposable {
  /** Milliseconds opening took (module import, sessions; Workers started). */
  readonly loadMs: number;
  /**
   * Denoiser sessions opened: one in process, one per Worker, or one that CPU Workers share
   * (see {@linkcode EngineSpec.shareSession}).
   */
  readonly denoiserSessions: number;
  /** Run one generation. An engine serves one at a time. */
  run(job: DenoiseJob): Promise<DenoiseReport>;
}

/** Opens an engine for an {@linkcode EngineSpec}. */
export type DenoiseEngine = (spec: EngineSpec) => Promise<OpenedEngine>;

/** Opens `engine` for `spec`, runs `job` once, and closes it (tests, one-off checks). */
export async function denoiseOnce(
  engine: DenoiseEngine,
  spec: EngineSpec,
  job: DenoiseJob,
): Promise<DenoiseReport & { readonly loadMs: number }> {
  await using opened = await engine(spec);
  return { ...(await opened.run(job)), loadMs: opened.loadMs };
}

const NO_HOPS = { latents: null, eps: null } as const;

async function openDenoiserIn(
  spec: EngineSpec,
  device: DeviceAssignment,
): Promise<OpenedDenoiser> {
  const module: unknown = await import(spec.module.href);
  const form = samplerForm(module, spec.module.href);
  if (form.kind !== "denoiser") {
    throw new TypeError(
      `Cannot open a denoiser in process as ${spec.module.href} exports no 'openDenoiser'`,
    );
  }
  const opening = new AbortController();
  const stop = () => opening.abort(spec.signal?.reason);
  spec.signal?.addEventListener("abort", stop, { once: true });
  try {
    return await form.open(spec.open, device, { signal: opening.signal });
  } finally {
    spec.signal?.removeEventListener("abort", stop);
  }
}

/**
 * The in-process engine: one denoiser on device 0 serves every rank (ParaStep ranks interleave
 * their calls), or the single device of sequential and BatchStep runs. Its session loads off the
 * main thread. Aborting a job's signal stops at the next step and cancels the call in flight
 * (the denoiser is then disposed: the engine is done).
 */
export async function denoiseInProcess(spec: EngineSpec): Promise<OpenedEngine> {
  // ParaStep ranks in process share the cores as Workers would; single-device modes get them all.
  const ranks = spec.mode === "parastep" ? spec.devices : 1;
  const threads = spec.threads ?? Math.max(1, Math.floor(navigator.hardwareConcurrency / ranks));
  spec.signal?.throwIfAborted();
  const started = performance.now();
  const denoiser = await openDenoiserIn(spec, {
    rank: 0,
    devices: 1,
    ep: spec.ep,
    deviceId: spec.deviceIds?.[0] ?? 0,
    // Also for GPU providers: it sizes the pool of the kernels that fall back to the CPU.
    intraOpThreads: threads,
    ...(spec.graphCache ? { graphCache: true } : {}),
  });
  const loadMs = performance.now() - started;
  const ep =
    (denoiser.executionProvider ?? (spec.ep === "auto" ? "cpu" : spec.ep)) as ExecutionProvider;
  return {
    loadMs,
    denoiserSessions: 1,
    async run(job) {
      using sampler = denoiser.bind(job.generation);
      // Ctrl-C: disposing cancels the call in flight (the loop itself stops at its next step).
      const cancel = () => void denoiser[Symbol.asyncDispose]();
      job.signal?.addEventListener("abort", cancel, { once: true });
      const signalOption = job.signal ? { signal: job.signal } : {};
      const onStepOption = job.onStep ? { onStep: job.onStep } : {};
      try {
        const T = job.steps;
        const loopStart = performance.now();
        if (spec.mode === "batchstep") {
          const modelBatch = sampler.modelBatch;
          if (modelBatch === undefined) {
            throw new RangeError(
              "Cannot run BatchStep as this model family has no batched denoiser",
            );
          }
          const { output, modelCalls } = await runBatchStep(
            { steps: T, warmup: job.warmup, stride: job.stride },
            {
              modelBatch,
              guide: (e) => sampler.guide(e),
              step: (g, i, x) => sampler.step(g, i, x),
            },
            job.x0,
            {
              ...signalOption,
              ...onStepOption,
              ...(job.exchange ? { exchange: job.exchange } : {}),
            },
          );
          return {
            output,
            ep,
            modelCalls: [modelCalls],
            criticalPathCalls: modelCalls,
            bytesExchanged: 0,
            loopMs: performance.now() - loopStart,
            exchangeMsPerRound: 0,
            hopMs: NO_HOPS,
          };
        }
        const devices = spec.mode === "sequential" ? 1 : spec.devices;
        const plan = { steps: T, warmup: job.warmup, devices };
        const losses = devices > 1 ? spec.replayLosses ?? [] : [];
        const result = losses.length === 0
          ? await runInProcess(plan, () => sampler, job.x0, { ...signalOption, ...onStepOption })
          : await runInProcessWithLosses(plan, () => sampler, job.x0, losses, {
            ...signalOption,
            ...(job.exchange ? { exchange: job.exchange } : {}),
          });
        return {
          // Which ranks were lost is not known here: -1.
          ...(losses.length > 0 ? { losses: losses.map((l) => ({ rank: -1, ...l })) } : {}),
          output: result.output,
          ep,
          modelCalls: result.modelCalls,
          criticalPathCalls: result.criticalPathCalls,
          bytesExchanged: result.counters.reduce((a, c) => a + c.bytesSent, 0),
          loopMs: performance.now() - loopStart,
          exchangeMsPerRound: 0,
          hopMs: NO_HOPS,
        };
      } finally {
        job.signal?.removeEventListener("abort", cancel);
      }
    },
    [Symbol.asyncDispose]() {
      return denoiser[Symbol.asyncDispose]();
    },
  };
}

/** A job as a `WorkerPool.run` request and its options, on `devices` ranks. */
export function poolJob(job: DenoiseJob, devices: number): {
  request: Parameters<WorkerPool["run"]>[0];
  options: NonNullable<Parameters<WorkerPool["run"]>[1]>;
} {
  return {
    request: {
      plan: { steps: job.steps, warmup: job.warmup, devices },
      payload: job.generation,
      x0: job.x0,
      ...(job.exchange ? { exchange: job.exchange } : {}),
    },
    options: {
      ...(job.signal ? { signal: job.signal } : {}),
      ...(job.onStep ? { onStep: job.onStep } : {}),
      ...(job.stallTimeoutMs !== undefined ? { stallTimeoutMs: job.stallTimeoutMs } : {}),
    },
  };
}

/**
 * The Worker engine: ParaStep with one Deno Worker per device, each running the family's denoiser
 * on its own device and exchanging steps over BroadcastChannel. CPU ranks with one thread each
 * share one session this process opens (see {@linkcode EngineSpec.shareSession}); others open
 * their own. Single-device modes run in process.
 */
export async function denoiseWithWorkers(spec: EngineSpec): Promise<OpenedEngine> {
  if (spec.mode !== "parastep" || spec.devices === 1) return await denoiseInProcess(spec);
  const started = performance.now();
  let devices = assignDevices(spec.devices, { ep: spec.ep }).map((d) => ({
    ...d,
    ...(spec.threads !== undefined ? { intraOpThreads: spec.threads } : {}),
    ...(spec.deviceIds !== undefined ? { deviceId: spec.deviceIds[d.rank] ?? d.deviceId } : {}),
    ...(spec.graphCache ? { graphCache: true } : {}),
  }));
  const ep = spec.ep === "auto" ? autoCandidate() : spec.ep;
  let owner: OpenedDenoiser | null = null;
  if (
    (spec.shareSession ?? true) && ep === "cpu" && devices.every((d) => d.intraOpThreads === 1) &&
    samplerForm(await import(spec.module.href), spec.module.href).kind === "denoiser"
  ) {
    const opened = await openDenoiserIn(spec, { ...devices[0]!, ep: "cpu" });
    const address = opened.sharedSession;
    if (address === undefined) {
      await opened[Symbol.asyncDispose]();
    } else {
      owner = opened;
      devices = devices.map((d) => ({ ...d, ep: "cpu", borrow: address }));
    }
  }
  let pool: WorkerPool;
  try {
    pool = await WorkerPool.open({ module: spec.module, open: spec.open, devices: spec.devices }, {
      devices,
      ...(spec.signal ? { signal: spec.signal } : {}),
    });
  } catch (e) {
    // Opening shut every Worker down (their borrowed sessions closed) before it threw.
    await owner?.[Symbol.asyncDispose]();
    throw e;
  }
  return {
    loadMs: performance.now() - started,
    denoiserSessions: owner === null ? spec.devices : 1,
    async run(job) {
      const { request, options } = poolJob(job, spec.devices);
      return workersReport(await pool.run(request, options), spec.ep);
    },
    async [Symbol.asyncDispose]() {
      const reports = await pool.close();
      // A Worker terminated without closing may have left a run in flight on the borrowed
      // session: releasing it under that run would crash the process, so it stays open.
      if (reports.every((r) => r.closed)) await owner?.[Symbol.asyncDispose]();
    },
  };
}

export function workersReport(
  result: GenerationResult,
  asked: ExecutionProvider | "auto",
): DenoiseReport {
  const ep = result.ranks[0]?.executionProvider;
  // Rank 0's exchange per round: sending (gather: the round's latents; all-gather: its eps), and
  // waiting from the end of its own call until the others' eps are in hand.
  const waits = result.waitMsPerRound[0] ?? [];
  const sends = result.sendMsPerRound[0] ?? [];
  const exchange = waits.map((wait, k) => wait + (sends[k] ?? 0));
  const latentsHops = result.ranks.slice(1).flatMap((r) => r.counters.transitMs.latents);
  const epsHops = result.ranks[0]?.counters.transitMs.eps ?? [];
  return {
    output: result.output,
    ep: (ep ?? asked) as ExecutionProvider,
    modelCalls: result.modelCalls,
    criticalPathCalls: result.criticalPathCalls,
    bytesExchanged: result.bytesExchanged,
    loopMs: result.wallMs.runMs,
    exchangeMsPerRound: medianOrNull(exchange) ?? 0,
    hopMs: { latents: medianOrNull(latentsHops), eps: medianOrNull(epsHops) },
  };
}

function medianOrNull(values: readonly number[]): number | null {
  return values.length === 0 ? null : median(values);
}
