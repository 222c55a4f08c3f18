/**
 * A sampler module for `bench --simulate-step MS`: the family's own denoiser (its guidance, its
 * scheduler step, its latents) with every model call replaced by a wait of `ms` milliseconds, so
 * that the engine's own cost (exchange, scheduling, guidance, steps) at N ranks can be measured
 * on a machine with fewer cores than ranks.
 *
 * The first call on each rank runs the real model once, to learn the shape of its output;
 * every later call returns, after the wait, a deterministic array of that shape (the latents
 * repeated, scaled by a step-dependent factor). The output means nothing; the timing is the point.
 *
 * @module
 */

import {
  type BoundSampler,
  type DeviceAssignment,
  type OpenedDenoiser,
  type OpenSamplerContext,
  samplerForm,
} from "../parastep/devices.ts";

/** The open payload: the family's module and payload, and the wait per model call. */
export interface SimulatedOpen {
  /** The family's sampler module (href). */
  readonly module: string;
  /** Its open payload. */
  readonly open: unknown;
  /** Milliseconds each model call waits instead of computing. */
  readonly ms: number;
}

/** Opens the family's denoiser, then replaces its model calls by waits (see the module doc). */
export async function openDenoiser(
  open: SimulatedOpen,
  device: DeviceAssignment,
  context: OpenSamplerContext,
): Promise<OpenedDenoiser> {
  const form = samplerForm(await import(open.module), open.module);
  if (form.kind !== "denoiser") {
    throw new TypeError(`Cannot simulate the steps of ${open.module}: it has no openDenoiser`);
  }
  const inner = await form.open(open.open, device, context);
  // Learned on the first generation's first call, kept for the next generations (a benchmark's
  // later runs then make no real call at all).
  let outputLength = -1;
  return {
    ...(inner.executionProvider === undefined
      ? {}
      : { executionProvider: inner.executionProvider }),
    bind(generation: unknown): BoundSampler {
      const bound = inner.bind(generation);
      return {
        async model(x: Float32Array, i: number): Promise<Float32Array> {
          if (outputLength < 0) {
            outputLength = (await bound.model(x, i)).length;
          }
          await new Promise((resolve) => setTimeout(resolve, open.ms));
          const out = new Float32Array(outputLength);
          const scale = 0.01 / (1 + i);
          for (let j = 0; j < outputLength; j++) out[j] = scale * x[j % x.length]!;
          return out;
        },
        guide: (eps) => bound.guide(eps),
        step: (guided, i, x) => bound.step(guided, i, x),
        [Symbol.dispose]() {
          bound[Symbol.dispose]();
        },
      };
    },
    [Symbol.asyncDispose]() {
      return inner[Symbol.asyncDispose]();
    },
  };
}
