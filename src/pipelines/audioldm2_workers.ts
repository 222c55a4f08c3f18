/**
 * AudioLDM2 denoising with one Deno Worker per device: the engine that starts
 * the workers ({@linkcode denoiseWithWorkers}) and the sampler module each
 * worker imports to run its rank ({@linkcode openSampler}, see `SamplerModule`
 * in src/parastep/devices.ts), with the payload that crosses between them.
 *
 * @module
 */

import { Env, Tensor } from "../../ffi/mod.ts";
import { openComponentAsync, resolveModel } from "../models/model.ts";
import type { DeviceAssignment, OpenedSampler, OpenSamplerContext } from "../parastep/devices.ts";
import { ddim } from "../schedulers/ddim.ts";
import { median } from "../metrics/stats.ts";
import { runWorkers } from "../parastep/coordinator.ts";
import { assignDevices } from "../parastep/devices.ts";
import {
  type Conditioning,
  denoiseInProcess,
  type DenoiseJob,
  Denoiser,
  type DenoiseReport,
} from "./audioldm2.ts";
import type { ExecutionProvider } from "../../ffi/mod.ts";

/** A tensor as plain data, the form it crosses `postMessage` in. */
export interface PlainTensor<T> {
  readonly data: T;
  readonly dims: readonly number[];
}

/** What the coordinator sends each worker once: structured-cloneable. */
export interface AudioLdm2SamplerInit {
  /** The model folder. */
  readonly modelDir: string;
  /** DDIM steps T. */
  readonly steps: number;
  /** [1, C, F, Wl]. */
  readonly latentDims: readonly number[];
  readonly guidance: number;
  readonly generated: PlainTensor<Float32Array<ArrayBuffer>>;
  readonly t5: PlainTensor<Float32Array<ArrayBuffer>>;
  readonly t5Mask: PlainTensor<BigInt64Array<ArrayBuffer>>;
}

/** The init payload for `conditioning` (typed arrays are copied by postMessage, once per worker). */
export function samplerInit(
  modelDir: string,
  steps: number,
  latentDims: readonly number[],
  conditioning: Conditioning,
): AudioLdm2SamplerInit {
  const plain = <T>(t: { data: T; dims: readonly number[] }) => ({ data: t.data, dims: t.dims });
  return {
    modelDir,
    steps,
    latentDims,
    guidance: conditioning.guidance,
    generated: plain(conditioning.generated),
    t5: plain(conditioning.t5),
    t5Mask: plain(conditioning.t5Mask),
  };
}

/**
 * Opens this rank's UNet (off the Worker's thread: `abort` still reaches the Worker, and
 * `context.signal` cancels the load) and returns its sampler; disposing it cancels runs in flight.
 */
export async function openSampler(
  init: AudioLdm2SamplerInit,
  device: DeviceAssignment,
  context?: OpenSamplerContext,
): Promise<OpenedSampler> {
  const model = resolveModel(init.modelDir);
  const env = Env.create();
  try {
    const unet = await openComponentAsync(env, model, "unet", {
      executionProvider: device.ep,
      deviceId: device.deviceId,
      intraOpThreads: device.intraOpThreads,
      // Several workers share the cores: idle threads must not spin on them.
      allowSpinning: device.devices === 1,
      ...(context ? { signal: context.signal } : {}),
    });
    const conditioning: Conditioning = {
      guidance: init.guidance,
      generated: new Tensor("float32", init.generated.data, init.generated.dims),
      t5: new Tensor("float32", init.t5.data, init.t5.dims),
      t5Mask: new Tensor("int64", init.t5Mask.data, init.t5Mask.dims),
    };
    const denoiser = new Denoiser(
      unet,
      conditioning,
      ddim(model.manifest.scheduler, init.steps),
      init.latentDims,
    );
    return {
      executionProvider: unet.executionProvider,
      model: (x, i) => denoiser.model(x, i),
      guide: (eps) => denoiser.guide(eps),
      step: (g, i, x) => denoiser.step(g, i, x),
      async [Symbol.asyncDispose]() {
        await unet.closeAsync(); // cancels and waits for runs in flight
        denoiser[Symbol.dispose]();
        env.close();
      },
    };
  } catch (e) {
    env.close();
    throw e;
  }
}

/**
 * The Worker engine: ParaStep with one Deno Worker per device, each opening
 * the UNet on its own device ({@linkcode openSampler} in audioldm2_workers.ts)
 * and exchanging steps over BroadcastChannel. Single-device modes run in
 * process.
 */
export async function denoiseWithWorkers(job: DenoiseJob): Promise<DenoiseReport> {
  if (job.mode !== "parastep" || job.devices === 1) return denoiseInProcess(job);
  const { request } = job;
  const result = await runWorkers({
    plan: { steps: request.steps, warmup: job.warmup, devices: job.devices },
    module: new URL(import.meta.url),
    init: samplerInit(job.model.dir, request.steps, request.latentDims, job.conditioning),
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
    exchangeMsPerRound: medianOrZero(exchange),
    hopMs: { latents: medianOrNull(latentsHops), eps: medianOrNull(epsHops) },
  };
}

function medianOrZero(values: readonly number[]): number {
  return medianOrNull(values) ?? 0;
}

function medianOrNull(values: readonly number[]): number | null {
  return values.length === 0 ? null : median(values);
}
