/**
 * A sampler module (see `SamplerModule` in src/parastep/devices.ts) with a pure-JS float32 toy:
 * a non-linear "denoiser" with a CFG-doubled output `[eps_u; eps_c]`, guidance, and a DDIM-like
 * step whose coefficients depend only on `i`. Deterministic, so every Worker computes the same
 * bits as the main thread.
 *
 * For the failure tests it can wait before each model call (cancelled by disposal, as ORT runs
 * are) and inject a failure on one rank: a throw in `model` or `step`, an uncaught error escaping
 * the promise chain (`crash`), a failure to open, or a disposal that never ends.
 *
 * @module
 */

import type { DeviceAssignment, OpenedSampler } from "../../src/parastep/mod.ts";
import { guideFloat32, stepFloat32, toyTable } from "./_toy.ts";

/** How the toy fails, and where. */
export interface JsToyFailure {
  /** The rank that fails. */
  rank: number;
  /** The step index it fails at (ignored for `open`). */
  step: number;
  /**
   * - `model`: the model call at `step` rejects;
   * - `step`: the scheduler step at `step` throws;
   * - `crash`: the model call at `step` throws from a timer (an uncaught error in the Worker)
   *   and never settles until the sampler is disposed;
   * - `open`: `openSampler` throws;
   * - `hang`: the model call at `step` never settles until the sampler is disposed (a device
   *   that stopped answering, but that disposal can still cancel).
   */
  how: "model" | "step" | "crash" | "open" | "hang";
}

/** The structured-cloneable init payload of the JS toy. */
export interface JsToyInit {
  /** `T`: the tables are built for this many steps. */
  steps: number;
  /** `[n]`: the conditioning added inside the conditional half (its length is the latent size). */
  cond: Float32Array;
  /** Guidance scale `g`. */
  guidance: number;
  /** Milliseconds each model call waits before computing. @default {0} */
  delayMs?: number;
  /** An injected failure. */
  fail?: JsToyFailure;
  /** Disposal never resolves (a sampler that cannot cancel), for the close timeout. */
  disposeHangs?: boolean;
}

/** Deterministic conditioning of length `n`. */
export function jsToyCond(n: number): Float32Array {
  const cond = new Float32Array(n);
  for (let j = 0; j < n; j++) cond[j] = 0.4 * Math.sin(0.7 * j + 0.1);
  return cond;
}

/** Deterministic initial latents of length `n`, shifted by `seed`. */
export function jsToyX0(n: number, seed = 0): Float32Array {
  const x = new Float32Array(n);
  for (let j = 0; j < n; j++) x[j] = 1.2 * Math.cos(1 + 2.7 * j + seed);
  return x;
}

/**
 * Open the toy on `device`.
 *
 * @param init See {@link JsToyInit}.
 * @param device The rank's assignment (the rank selects injected failures).
 * @returns The sampler; disposing it rejects pending delayed calls.
 */
export function openSampler(init: JsToyInit, device: DeviceAssignment): OpenedSampler {
  const { steps: T, cond, guidance: g } = init;
  const n = cond.length;
  const delayMs = init.delayMs ?? 0;
  const fail = init.fail?.rank === device.rank ? init.fail : undefined;
  if (fail?.how === "open") throw new Error(`injected open failure on rank ${device.rank}`);

  // Per-step tables for T steps: alpha-bar rises from noisy (small) to clean (near 1).
  const { alphaBar, c, d } = toyTable(T);

  // Delayed calls in flight: disposal rejects them, as closing a session cancels its runs.
  const pending = new Set<
    { timer: ReturnType<typeof setTimeout> | undefined; reject: (e: Error) => void }
  >();
  let closed = false;
  const wait = (ms: number, settle: boolean): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const entry = { timer: undefined as ReturnType<typeof setTimeout> | undefined, reject };
      if (settle) {
        entry.timer = setTimeout(() => {
          pending.delete(entry);
          resolve();
        }, ms);
      }
      pending.add(entry);
    });

  const compute = (x: Float32Array, i: number): Float32Array => {
    const ci = c[i]!;
    const di = d[i]!;
    const eps = new Float32Array(2 * n); // [2 * n]: CFG-doubled output [uncond; cond]
    for (let j = 0; j < n; j++) {
      const xj = x[j]!;
      const neighbour = x[(j + 1) % n]!;
      eps[j] = Math.sin(xj + 0.3 * neighbour) * ci + xj * di;
      eps[n + j] = Math.sin(1.3 * xj - 0.2 * neighbour + cond[j]!) * ci + xj * di +
        0.1 * Math.cos(i + j);
    }
    return eps;
  };

  return {
    executionProvider: "js",
    async model(x, i) {
      if (closed) throw new Error("toy sampler is closed");
      if (fail?.how === "crash" && i === fail.step) {
        setTimeout(() => {
          throw new Error(`injected crash at step ${i} on rank ${device.rank}`);
        }, 0);
        await wait(0, false); // never settles on its own
      }
      if (fail?.how === "hang" && i === fail.step) await wait(0, false);
      if (delayMs > 0) await wait(delayMs, true);
      if (fail?.how === "model" && i === fail.step) {
        throw new Error(`injected failure at step ${i} on rank ${device.rank}`);
      }
      return compute(x, i);
    },
    guide: (eps) => guideFloat32(eps, n, g),
    step(e, i, x) {
      if (fail?.how === "step" && i === fail.step) {
        throw new Error(`injected step failure at step ${i} on rank ${device.rank}`);
      }
      return stepFloat32(alphaBar, e, i, x);
    },
    [Symbol.asyncDispose]() {
      closed = true;
      for (const entry of pending) {
        clearTimeout(entry.timer);
        entry.reject(new Error(`toy sampler of rank ${device.rank} closed`));
      }
      pending.clear();
      return init.disposeHangs ? new Promise<void>(() => {}) : Promise.resolve();
    },
  };
}
