/**
 * AudioLDM2's sampler module: what each ParaStep Worker (and the in-process engine) imports to
 * run its rank ({@linkcode openDenoiser}, see `SamplerModule` in src/parastep/devices.ts), with
 * the payloads that cross to it.
 *
 * @module
 */

import { Tensor } from "../../../ffi/mod.ts";
import type {
  BoundSampler,
  DeviceAssignment,
  OpenedDenoiser,
  OpenSamplerContext,
} from "../../parastep/devices.ts";
import { ddim } from "../../schedulers/ddim.ts";
import { type DenoiserOpen, openDenoiserGraph } from "../_denoiser.ts";
import { type Conditioning, Denoiser } from "./pipeline.ts";

/** A tensor as plain data, the form it crosses `postMessage` in. */
export interface PlainTensor<T> {
  readonly data: T;
  readonly dims: readonly number[];
}

/** One generation's payload: structured-cloneable. */
export interface AudioLdm2Generation {
  /** DDIM steps T. */
  readonly steps: number;
  /** [1, C, F, Wl]. */
  readonly latentDims: readonly number[];
  readonly guidance: number;
  readonly generated: PlainTensor<Float32Array<ArrayBuffer>>;
  readonly t5: PlainTensor<Float32Array<ArrayBuffer>>;
  readonly t5Mask: PlainTensor<BigInt64Array<ArrayBuffer>>;
}

/** The generation payload for `conditioning` (typed arrays are copied by postMessage, per worker). */
export function generationInit(
  steps: number,
  latentDims: readonly number[],
  conditioning: Conditioning,
): AudioLdm2Generation {
  const plain = <T>(t: { data: T; dims: readonly number[] }) => ({ data: t.data, dims: t.dims });
  return {
    steps,
    latentDims,
    guidance: conditioning.guidance,
    generated: plain(conditioning.generated),
    t5: plain(conditioning.t5),
    t5Mask: plain(conditioning.t5Mask),
  };
}

/**
 * Opens this rank's UNet (cancelled by `context.signal`); each `bind` makes one generation's
 * sampler (DDIM table, conditioning values, BatchStep's batched call).
 */
export function openDenoiser(
  open: DenoiserOpen,
  device: DeviceAssignment,
  context?: OpenSamplerContext,
): Promise<OpenedDenoiser> {
  return openDenoiserGraph(open, device, context, (session, model, payload): BoundSampler => {
    const g = payload as AudioLdm2Generation;
    const conditioning: Conditioning = {
      guidance: g.guidance,
      generated: new Tensor("float32", g.generated.data, g.generated.dims),
      t5: new Tensor("float32", g.t5.data, g.t5.dims),
      t5Mask: new Tensor("int64", g.t5Mask.data, g.t5Mask.dims),
    };
    const denoiser = new Denoiser(
      session,
      conditioning,
      ddim(model.manifest.scheduler, g.steps),
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
