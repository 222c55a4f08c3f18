/**
 * Stable Video Diffusion's sampler module: what each ParaStep Worker (and the in-process engine)
 * imports to run its rank ({@linkcode openDenoiser}, see `SamplerModule` in
 * src/parastep/devices.ts), with the payloads that cross to it.
 *
 * @module
 */

import type {
  BoundSampler,
  DeviceAssignment,
  OpenedDenoiser,
  OpenSamplerContext,
} from "../../parastep/devices.ts";
import { euler } from "../../schedulers/euler.ts";
import { type DenoiserOpen, openDenoiserGraph } from "../_denoiser.ts";
import { type Conditioning, Denoiser } from "./pipeline.ts";

/** One generation's payload: structured-cloneable. */
export interface SvdGeneration {
  /** Euler steps T. */
  readonly steps: number;
  /** [1, F, C, h, w]. */
  readonly latentDims: readonly number[];
  /** The conditioning from `encodeImage` (typed arrays, copied once per worker). */
  readonly conditioning: Conditioning;
}

/** The generation payload for a request's conditioning. */
export function generationInit(
  steps: number,
  latentDims: readonly number[],
  conditioning: Conditioning,
): SvdGeneration {
  return { steps, latentDims, conditioning };
}

/**
 * Opens this rank's UNet (cancelled by `context.signal`); each `bind` makes one generation's
 * sampler (Euler table, conditioning values, BatchStep's batched call).
 */
export function openDenoiser(
  open: DenoiserOpen,
  device: DeviceAssignment,
  context?: OpenSamplerContext,
): Promise<OpenedDenoiser> {
  return openDenoiserGraph(open, device, context, (session, model, payload): BoundSampler => {
    const g = payload as SvdGeneration;
    const denoiser = new Denoiser(
      session,
      model,
      g.conditioning,
      euler(model.manifest.scheduler, g.steps),
      g.latentDims,
    );
    return {
      model: (x, i) => denoiser.model(x, i),
      modelBatch: (xs, is) => denoiser.modelBatch(xs, is),
      guide: (eps) => denoiser.guide(eps),
      step: (e, i, x) => denoiser.step(e, i, x),
      [Symbol.dispose]: () => denoiser[Symbol.dispose](),
    };
  });
}
