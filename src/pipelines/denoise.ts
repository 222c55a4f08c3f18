/**
 * The denoising engines, for every family: all ranks in this process over one sampler
 * ({@linkcode denoiseInProcess}), or one Deno Worker per device exchanging steps over
 * BroadcastChannel ({@linkcode denoiseWithWorkers}). Both open the family's sampler module
 * (`openSampler(init, device)`), so they know no family.
 *
 * @module
 */

import type { ExecutionProvider } from "../../ffi/mod.ts";
import { median } from "../metrics/stats.ts";
import { runBatchStep } from "../parastep/batchstep.ts";
import { runWorkers } from "../parastep/coordinator.ts";
import {
  assignDevices,
  type DeviceAssignment,
  type OpenedSampler,
  type SamplerModule,
} from "../parastep/devices.ts";
import { type Exchange, runInProcess } from "../parastep/rounds.ts";

/** How the denoising loop is spread over devices. */
export type DenoiseMode = "parastep" | "batchstep" | "sequential";

/** The family's sampler module and the payload its `openSampler` gets. */
export interface SamplerSpec {
  /** The module URL (exports `openSampler`). */
  readonly module: URL;
  /** The structured-cloneable payload. */
  readonly init: unknown;
}

/** Everything a denoising engine gets. */
export interface DenoiseJob {
  /** What each rank opens. */
  readonly sampler: SamplerSpec;
  /** The initial latents `x_0`. */
  readonly x0: Float32Array<ArrayBuffer>;
  /** Steps T. */
  readonly steps: number;
  readonly mode: DenoiseMode;
  /** Devices N (ParaStep). */
  readonly devices: number;
  /** Warm-up W. */
  readonly warmup: number;
  /** BatchStep stride L. */
  readonly stride: number;
  readonly ep: ExecutionProvider | "auto";
  /** Denoiser intra-op threads per device. @default floor(cores / devices), at least 1 */
  readonly threads?: number;
  /**
   * The device id of each rank (CUDA ordinal), e.g. `[0, 0]` for two workers sharing one GPU.
   * @default rank r uses device r
   */
  readonly deviceIds?: readonly number[];
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
  /** Milliseconds spent opening the denoiser(s) (and starting Workers) before the first step. */
  readonly loadMs: number;
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
}

/** Runs a {@linkcode DenoiseJob}. */
export type DenoiseEngine = (job: DenoiseJob) => Promise<DenoiseReport>;

const NO_HOPS = { latents: null, eps: null } as const;

async function importSampler(module: URL): Promise<SamplerModule<unknown>> {
  const imported = await import(module.href) as Partial<SamplerModule<unknown>>;
  if (typeof imported.openSampler !== "function") {
    throw new TypeError(`Cannot open a sampler as ${module.href} exports no 'openSampler'`);
  }
  return imported as SamplerModule<unknown>;
}

/**
 * The in-process engine: one sampler on device 0 serves every rank (ParaStep ranks interleave
 * their calls), or the single device of sequential and BatchStep runs. Aborting `job.signal`
 * stops at the next step and cancels the call in flight.
 */
export async function denoiseInProcess(job: DenoiseJob): Promise<DenoiseReport> {
  const { x0, mode } = job;
  // ParaStep ranks in process share the cores as Workers would; single-device modes get them all.
  const ranks = mode === "parastep" ? job.devices : 1;
  const threads = job.threads ?? Math.max(1, Math.floor(navigator.hardwareConcurrency / ranks));
  const device: DeviceAssignment = {
    rank: 0,
    devices: 1,
    ep: job.ep,
    deviceId: job.deviceIds?.[0] ?? 0,
    // Also for GPU providers: it sizes the pool of the kernels that fall back to the CPU.
    intraOpThreads: threads,
  };
  job.signal?.throwIfAborted();
  const t0 = performance.now();
  const { openSampler } = await importSampler(job.sampler.module);
  const opening = new AbortController();
  const stopOpening = () => opening.abort(job.signal?.reason);
  job.signal?.addEventListener("abort", stopOpening, { once: true });
  let opened: OpenedSampler;
  try {
    opened = await openSampler(job.sampler.init, device, { signal: opening.signal });
  } finally {
    job.signal?.removeEventListener("abort", stopOpening);
  }
  await using sampler = opened;
  const loadMs = performance.now() - t0;
  // Ctrl-C: disposing cancels the call in flight (the loop itself stops at its next step).
  const cancel = () => void sampler[Symbol.asyncDispose]();
  job.signal?.addEventListener("abort", cancel, { once: true });
  const signalOption = job.signal ? { signal: job.signal } : {};
  const onStepOption = job.onStep ? { onStep: job.onStep } : {};
  try {
    const T = job.steps;
    const loopStart = performance.now();
    if (mode === "batchstep") {
      const modelBatch = sampler.modelBatch;
      if (modelBatch === undefined) {
        throw new RangeError("Cannot run BatchStep as this model family has no batched denoiser");
      }
      const { output, modelCalls } = await runBatchStep(
        { steps: T, warmup: job.warmup, stride: job.stride },
        { modelBatch, guide: (e) => sampler.guide(e), step: (g, i, x) => sampler.step(g, i, x) },
        x0,
        { ...signalOption, ...onStepOption, ...(job.exchange ? { exchange: job.exchange } : {}) },
      );
      return {
        output,
        ep: executionProvider(sampler, job.ep),
        modelCalls: [modelCalls],
        criticalPathCalls: modelCalls,
        bytesExchanged: 0,
        loadMs,
        loopMs: performance.now() - loopStart,
        exchangeMsPerRound: 0,
        hopMs: NO_HOPS,
      };
    }
    const devices = mode === "sequential" ? 1 : job.devices;
    const result = await runInProcess(
      { steps: T, warmup: job.warmup, devices },
      () => sampler,
      x0,
      { ...signalOption, ...onStepOption },
    );
    return {
      output: result.output,
      ep: executionProvider(sampler, job.ep),
      modelCalls: result.modelCalls,
      criticalPathCalls: result.criticalPathCalls,
      bytesExchanged: result.counters.reduce((a, c) => a + c.bytesSent, 0),
      loadMs,
      loopMs: performance.now() - loopStart,
      exchangeMsPerRound: 0,
      hopMs: NO_HOPS,
    };
  } finally {
    job.signal?.removeEventListener("abort", cancel);
  }
}

function executionProvider(sampler: OpenedSampler, asked: ExecutionProvider | "auto") {
  return (sampler.executionProvider ?? (asked === "auto" ? "cpu" : asked)) as ExecutionProvider;
}

/**
 * The Worker engine: ParaStep with one Deno Worker per device, each opening the family's sampler
 * on its own device and exchanging steps over BroadcastChannel. Single-device modes run in
 * process.
 */
export async function denoiseWithWorkers(job: DenoiseJob): Promise<DenoiseReport> {
  if (job.mode !== "parastep" || job.devices === 1) return denoiseInProcess(job);
  const result = await runWorkers({
    plan: { steps: job.steps, warmup: job.warmup, devices: job.devices },
    module: job.sampler.module,
    init: job.sampler.init,
    x0: job.x0,
    ...(job.exchange ? { exchange: job.exchange } : {}),
  }, {
    devices: assignDevices(job.devices, { ep: job.ep }).map((d) => ({
      ...d,
      ...(job.threads !== undefined ? { intraOpThreads: job.threads } : {}),
      ...(job.deviceIds !== undefined ? { deviceId: job.deviceIds[d.rank] ?? d.deviceId } : {}),
    })),
    ...(job.signal ? { signal: job.signal } : {}),
    ...(job.onStep ? { onStep: job.onStep } : {}),
    ...(job.stallTimeoutMs !== undefined ? { stallTimeoutMs: job.stallTimeoutMs } : {}),
  });
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
    ep: (ep ?? job.ep) as ExecutionProvider,
    modelCalls: result.modelCalls,
    criticalPathCalls: result.criticalPathCalls,
    bytesExchanged: result.bytesExchanged,
    loadMs: result.wallMs.startMs,
    loopMs: result.wallMs.runMs,
    exchangeMsPerRound: medianOrNull(exchange) ?? 0,
    hopMs: { latents: medianOrNull(latentsHops), eps: medianOrNull(epsHops) },
  };
}

function medianOrNull(values: readonly number[]): number | null {
  return values.length === 0 ? null : median(values);
}
