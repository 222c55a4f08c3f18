/**
 * CogVideoX's sampler module: what each ParaStep Worker (and the in-process engine) imports to run
 * its rank ({@linkcode openDenoiser}, see `SamplerModule` in src/parastep/devices.ts), with the
 * payloads that cross to it.
 *
 * @module
 */

import type {
  BoundSampler,
  DeviceAssignment,
  OpenedDenoiser,
  OpenSamplerContext,
} from "../../parastep/devices.ts";
import type { SampleType } from "../../schedulers/cogvideox_ddim.ts";
import { type DenoiserOpen, openDenoiserGraph } from "../_denoiser.ts";
import { type Conditioning, Denoiser, scheduleFor } from "./pipeline.ts";

/** One generation's payload: structured-cloneable. */
export interface CogVideoXGeneration {
  /** DDIM steps T. */
  readonly steps: number;
  /** [1, F', C, h, w]. */
  readonly latentDims: readonly number[];
  /** The transformer's float type (the latents are kept in it). */
  readonly sampleType: SampleType;
  /** From `encodePrompt` (typed arrays, copied once per worker). */
  readonly conditioning: Conditioning;
}

/** The generation payload for a request's conditioning. */
export function generationInit(
  request: {
    readonly steps: number;
    readonly latentDims: readonly number[];
    readonly sampleType: SampleType;
  },
  conditioning: Conditioning,
): CogVideoXGeneration {
  return {
    steps: request.steps,
    latentDims: request.latentDims,
    sampleType: request.sampleType,
    conditioning,
  };
}

/**
 * Opens this rank's transformer graph for the request's shape (cancelled by `context.signal`);
 * each `bind` makes one generation's sampler (schedule, conditioning values, BatchStep's batched
 * call).
 */
export function openDenoiser(
  open: DenoiserOpen,
  device: DeviceAssignment,
  context?: OpenSamplerContext,
): Promise<OpenedDenoiser> {
  return openDenoiserGraph(open, device, context, (session, model, payload): BoundSampler => {
    const g = payload as CogVideoXGeneration;
    const denoiser = new Denoiser(
      session,
      model,
      open.component,
      g.conditioning,
      scheduleFor(model, g.steps, g.sampleType),
      g.latentDims,
    );
    return {
      model: (x, i) => denoiser.model(x, i),
      modelBatch: (xs, is) => denoiser.modelBatch(xs, is),
      guide: (v) => denoiser.guide(v),
      step: (e, i, x) => denoiser.step(e, i, x),
      [Symbol.dispose]: () => denoiser[Symbol.dispose](),
    };
  });
}
