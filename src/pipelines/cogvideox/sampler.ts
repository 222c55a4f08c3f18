/**
 * CogVideoX's sampler module: what each ParaStep Worker (and the in-process engine) imports to run
 * its rank ({@linkcode openSampler}, see `SamplerModule` in src/parastep/devices.ts), with the
 * payload that crosses to it.
 *
 * @module
 */

import { Env } from "../../../ffi/mod.ts";
import { openComponentAsync, resolveModel } from "../../models/model.ts";
import type {
  DeviceAssignment,
  OpenedSampler,
  OpenSamplerContext,
} from "../../parastep/devices.ts";
import type { SampleType } from "../../schedulers/cogvideox_ddim.ts";
import { type Conditioning, Denoiser, scheduleFor } from "./pipeline.ts";

/** What the sampler is opened with: structured-cloneable. */
export interface CogVideoXSamplerInit {
  /** The model folder. */
  readonly modelDir: string;
  /** The transformer component of the request's shape. */
  readonly transformer: string;
  /** DDIM steps T. */
  readonly steps: number;
  /** [1, F', C, h, w]. */
  readonly latentDims: readonly number[];
  /** The transformer's float type (the latents are kept in it). */
  readonly sampleType: SampleType;
  /** From `encodePrompt` (typed arrays, copied once per worker). */
  readonly conditioning: Conditioning;
}

/** The init payload for a request's conditioning. */
export function samplerInit(
  modelDir: string,
  request: {
    readonly shape: { readonly transformer: string };
    readonly steps: number;
    readonly latentDims: readonly number[];
    readonly sampleType: SampleType;
  },
  conditioning: Conditioning,
): CogVideoXSamplerInit {
  return {
    modelDir,
    transformer: request.shape.transformer,
    steps: request.steps,
    latentDims: request.latentDims,
    sampleType: request.sampleType,
    conditioning,
  };
}

/**
 * Opens this rank's transformer (cancelled by `context.signal`) and returns its sampler (with
 * BatchStep's batched model call); disposing it cancels runs in flight and releases the session.
 * Disposal is idempotent.
 */
export async function openSampler(
  init: CogVideoXSamplerInit,
  device: DeviceAssignment,
  context?: OpenSamplerContext,
): Promise<OpenedSampler> {
  const model = resolveModel(init.modelDir);
  const env = Env.create();
  try {
    // Loaded off the thread (an `abort` still reaches a Worker) and cancelled by the context.
    const transformer = await openComponentAsync(env, model, init.transformer, {
      executionProvider: device.ep,
      deviceId: device.deviceId,
      intraOpThreads: device.intraOpThreads,
      // Several workers share the cores: idle threads must not spin on them.
      allowSpinning: device.devices === 1,
      ...(context ? { signal: context.signal } : {}),
    });
    let denoiser: Denoiser;
    try {
      denoiser = new Denoiser(
        transformer,
        model,
        init.transformer,
        init.conditioning,
        scheduleFor(model, init.steps, init.sampleType),
        init.latentDims,
      );
    } catch (e) {
      transformer.close();
      throw e;
    }
    let disposed: Promise<void> | null = null;
    return {
      executionProvider: transformer.executionProvider,
      model: (x, i) => denoiser.model(x, i),
      modelBatch: (xs, is) => denoiser.modelBatch(xs, is),
      guide: (v) => denoiser.guide(v),
      step: (g, i, x) => denoiser.step(g, i, x),
      [Symbol.asyncDispose]() {
        disposed ??= (async () => {
          await transformer.closeAsync(); // cancels and waits for runs in flight
          denoiser[Symbol.dispose]();
          env.close();
        })();
        return disposed;
      },
    };
  } catch (e) {
    env.close();
    throw e;
  }
}
