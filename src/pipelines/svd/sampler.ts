/**
 * Stable Video Diffusion's sampler module: what each ParaStep Worker (and the in-process engine)
 * imports to run its rank ({@linkcode openSampler}, see `SamplerModule` in src/parastep/devices.ts),
 * with the payload that crosses to it.
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
import { euler } from "../../schedulers/euler.ts";
import { type Conditioning, Denoiser } from "./pipeline.ts";

/** What the sampler is opened with: structured-cloneable. */
export interface SvdSamplerInit {
  /** The model folder. */
  readonly modelDir: string;
  /** Euler steps T. */
  readonly steps: number;
  /** [1, F, C, h, w]. */
  readonly latentDims: readonly number[];
  /** The conditioning from `encodeImage` (typed arrays, copied once per worker). */
  readonly conditioning: Conditioning;
}

/** The init payload for a request's conditioning. */
export function samplerInit(
  modelDir: string,
  steps: number,
  latentDims: readonly number[],
  conditioning: Conditioning,
): SvdSamplerInit {
  return { modelDir, steps, latentDims, conditioning };
}

/**
 * Opens this rank's UNet (cancelled by `context.signal`) and returns its sampler (with BatchStep's batched model call);
 * disposing it cancels runs in flight and releases the session. Disposal is idempotent.
 */
export async function openSampler(
  init: SvdSamplerInit,
  device: DeviceAssignment,
  context?: OpenSamplerContext,
): Promise<OpenedSampler> {
  const model = resolveModel(init.modelDir);
  const env = Env.create();
  try {
    // Loaded off the thread (an `abort` still reaches a Worker) and cancelled by the context.
    const unet = await openComponentAsync(env, model, "unet", {
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
        unet,
        model,
        init.conditioning,
        euler(model.manifest.scheduler, init.steps),
        init.latentDims,
      );
    } catch (e) {
      unet.close();
      throw e;
    }
    let disposed: Promise<void> | null = null;
    return {
      executionProvider: unet.executionProvider,
      model: (x, i) => denoiser.model(x, i),
      modelBatch: (xs, is) => denoiser.modelBatch(xs, is),
      guide: (eps) => denoiser.guide(eps),
      step: (g, i, x) => denoiser.step(g, i, x),
      [Symbol.asyncDispose]() {
        disposed ??= (async () => {
          await unet.closeAsync(); // cancels and waits for runs in flight
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
