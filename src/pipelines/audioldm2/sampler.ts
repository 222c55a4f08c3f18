/**
 * AudioLDM2's sampler module: what each ParaStep Worker (and the in-process engine) imports to
 * run its rank ({@linkcode openSampler}, see `SamplerModule` in src/parastep/devices.ts), with the
 * payload that crosses to it.
 *
 * @module
 */

import { Env, Tensor } from "../../../ffi/mod.ts";
import { openComponentAsync, resolveModel } from "../../models/model.ts";
import type {
  DeviceAssignment,
  OpenedSampler,
  OpenSamplerContext,
} from "../../parastep/devices.ts";
import { ddim } from "../../schedulers/ddim.ts";
import { type Conditioning, Denoiser } from "./pipeline.ts";

/** A tensor as plain data, the form it crosses `postMessage` in. */
export interface PlainTensor<T> {
  readonly data: T;
  readonly dims: readonly number[];
}

/** What the sampler is opened with: structured-cloneable. */
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
 * Opens this rank's UNet (cancelled by `context.signal`) and returns its sampler (with BatchStep's batched model call);
 * disposing it cancels runs in flight and releases the session. Disposal is idempotent.
 */
export async function openSampler(
  init: AudioLdm2SamplerInit,
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
