/**
 * Where and how one ParaStep rank runs, and the contract a model family implements so that a
 * generic Worker can run its denoiser on that rank.
 *
 * A family (AudioLDM2, SVD, ...) ships a *sampler module*: an ES module exporting
 * {@link SamplerModule.openDenoiser}. The coordinator sends each Worker the module's URL, a
 * structured-cloneable open payload (the model folder, whatever shapes the graph) and the rank's
 * {@link DeviceAssignment}; the Worker imports the module and opens the denoiser once. For each
 * generation it then gets the family's generation payload (conditioning tensors as typed arrays with
 * their dims, guidance, steps) and runs its rank of the loop with the bound sampler. The engine
 * never looks inside either payload.
 *
 * @module
 */

import { webGpuLock } from "../../ffi/mod.ts";
import type { Sampler } from "./rounds.ts";

/** The execution provider a run asks for; `"auto"` lets each rank's session pick (cuda, webgpu, cpu). */
export type DeviceEp = "cpu" | "cuda" | "webgpu" | "auto";

/** The execution providers {@link assignDevices} accepts. */
export const DEVICE_EPS: readonly DeviceEp[] = ["cpu", "cuda", "webgpu", "auto"];

/** Where and how one rank runs. */
export interface DeviceAssignment {
  /** This rank `r` in `0..devices-1`. */
  readonly rank: number;
  /** `N`: ranks in the generation. */
  readonly devices: number;
  /** The execution provider the rank's sessions must use (`"auto"`: the session picks and says which). */
  readonly ep: DeviceEp;
  /** Device ordinal for the provider (the CUDA device of this rank; 0 for cpu and webgpu). */
  readonly deviceId: number;
  /**
   * Intra-op threads for the rank's sessions: the CPU cores this rank may use, so that `N` CPU ranks
   * side by side do not oversubscribe the machine.
   */
  readonly intraOpThreads: number;
  /**
   * The process's WebGPU lock (`webGpuLock().buffer`), present when the rank may run on WebGPU
   * (`webgpu`, `auto`). ORT gives every WebGPU session of a process one shared context that
   * must be used by one thread at a time, so each Worker adopts this lock before it opens a
   * session (see ffi/lock.ts).
   */
  readonly webgpuLock?: SharedArrayBuffer;
  /**
   * Load the denoiser's graph through the graph cache (`GraphCache`: the graph ORT optimised
   * once, loaded with optimisation off). @default {false}
   */
  readonly graphCache?: boolean;
  /**
   * The address of a denoiser session another realm of this process opened
   * ({@link OpenedDenoiser.sharedSession}): the rank runs on it (`Session.borrow`) instead of
   * loading its own. That realm keeps it open until this rank's Worker has closed.
   */
  readonly borrow?: bigint;
}

/**
 * One generation's sampler on a rank: the denoiser bound to that generation's conditioning and
 * schedule. Disposing it releases what the binding made (conditioning values), never the
 * denoiser's session.
 *
 * As for every {@link Sampler}, the arrays returned by `model`, `guide` and `step` are kept across
 * later calls and sent to other ranks: they must not alias a buffer that a later call overwrites.
 */
export interface BoundSampler extends Sampler<Float32Array, Float32Array>, Disposable {
  /**
   * BatchStep's batched call: the model on several latents at their own steps in one call
   * (absent when the family has none; BatchStep then refuses to run).
   */
  readonly modelBatch?: (xs: Float32Array[], is: number[]) => Promise<Float32Array[]>;
}

/**
 * A rank's denoiser, open on its device for any number of generations (sessions, env).
 *
 * Disposing it must cancel model runs in flight (ORT's terminate flag, e.g. `Session.closeAsync()`)
 * and resolve only when none is left, because the Worker is terminated after it: terminating a
 * Worker with a nonblocking ORT call in flight is unsafe (docs/reference/ort-c-api.md §10.9).
 * A model call cancelled this way should reject. Disposal is idempotent.
 */
export interface OpenedDenoiser extends AsyncDisposable {
  /** The provider the rank's denoiser actually runs on (reported back to the coordinator). */
  readonly executionProvider?: string;
  /**
   * The address of the denoiser's session, when other Workers of this process may run on it
   * ({@link DeviceAssignment.borrow}); absent for a borrowed one.
   */
  readonly sharedSession?: bigint;
  /** The sampler of one generation: `generation` is the family's per-generation payload. */
  bind(generation: unknown): BoundSampler;
}

/**
 * A rank's sampler plus the resources behind it, opened for one generation (the one-phase form,
 * {@link SamplerModule.openSampler}). Disposal as for {@link OpenedDenoiser}.
 */
export interface OpenedSampler extends Sampler<Float32Array, Float32Array>, AsyncDisposable {
  /** The provider the rank's denoiser actually runs on (reported back to the coordinator). */
  readonly executionProvider?: string;
  /** BatchStep's batched call, if the family has one (see {@link BoundSampler.modelBatch}). */
  readonly modelBatch?: (xs: Float32Array[], is: number[]) => Promise<Float32Array[]>;
}

/** What the Worker gives `openDenoiser` / `openSampler` besides the payload and the device. */
export interface OpenSamplerContext {
  /**
   * Aborted when the run ends before the denoiser is open (Ctrl-C, another rank failed).
   * Loading that takes long should stop on it (`Session.createAsync(env, model, { signal })`
   * cancels ORT's session load) and reject; the open must settle only once no native call of it
   * is left running, since the Worker is terminated after.
   */
  readonly signal: AbortSignal;
}

/**
 * What a sampler module exports: one of two forms. The Worker imports the module by URL.
 *
 * - Two phases (what the model families use): `openDenoiser(open, device, context)` once, when the
 *   Worker starts (sessions load while the main thread still encodes the prompt), then
 *   `bind(generation)` for each generation the Worker serves.
 * - One phase: `openSampler(init, device, context)` per generation, with everything at once.
 *
 * Payloads arrive through `postMessage`, so they must be structured-cloneable: plain objects,
 * arrays, numbers, strings, typed arrays (`Float32Array` conditioning with its dims), `Uint8Array`
 * model bytes, `Map`, `Date`... but no functions, class instances with behaviour, ORT handles or
 * sessions. Each Worker receives its own copy.
 *
 * @typeParam Open The payload of `openDenoiser` (or `openSampler`'s whole init).
 * @example
 * ```ts ignore
 * // my_family_sampler.ts
 * export async function openDenoiser(
 *   open: { unetPath: string },
 *   device: DeviceAssignment,
 *   { signal }: OpenSamplerContext,
 * ): Promise<OpenedDenoiser> {
 *   const env = Env.create();
 *   const session = await Session.createAsync(env, open.unetPath, {
 *     executionProvider: device.ep, deviceId: device.deviceId, intraOpThreads: device.intraOpThreads,
 *     signal,
 *   });
 *   return {
 *     executionProvider: session.executionProvider,
 *     bind: (generation) => ({ model: async (x, i) => ..., guide: (eps) => ..., step: (e, i, x) => ...,
 *       [Symbol.dispose]() {} }),
 *     async [Symbol.asyncDispose]() { await session.closeAsync(); env.close(); },
 *   };
 * }
 * ```
 */
export interface SamplerModule<Open> {
  /**
   * Open this rank's denoiser on its device, for any number of generations.
   *
   * @param open The family's open payload, as given to the coordinator.
   * @param device Where and how this rank runs.
   * @param context The signal that stops a long open (see {@link OpenSamplerContext}).
   */
  openDenoiser?(
    open: Open,
    device: DeviceAssignment,
    context: OpenSamplerContext,
  ): Promise<OpenedDenoiser> | OpenedDenoiser;
  /**
   * Open this rank's sampler for one generation (the one-phase form).
   *
   * @param init The family's payload, as given to the coordinator.
   * @param device Where and how this rank runs.
   * @param context The signal that stops a long open (see {@link OpenSamplerContext}).
   * @returns The sampler; the Worker disposes it when the generation ends or fails.
   */
  openSampler?(
    init: Open,
    device: DeviceAssignment,
    context: OpenSamplerContext,
  ): Promise<OpenedSampler> | OpenedSampler;
}

/**
 * A module's sampler form, checked: which of `openDenoiser` or `openSampler` it exports.
 *
 * @throws {TypeError} naming the module when it exports neither
 */
export function samplerForm(
  module: unknown,
  url: string,
):
  | { kind: "denoiser"; open: NonNullable<SamplerModule<unknown>["openDenoiser"]> }
  | { kind: "sampler"; open: NonNullable<SamplerModule<unknown>["openSampler"]> } {
  const exports = typeof module === "object" && module !== null
    ? module as Record<string, unknown>
    : {};
  if (typeof exports.openDenoiser === "function") {
    return {
      kind: "denoiser",
      open: exports.openDenoiser as NonNullable<SamplerModule<unknown>["openDenoiser"]>,
    };
  }
  if (typeof exports.openSampler === "function") {
    return {
      kind: "sampler",
      open: exports.openSampler as NonNullable<SamplerModule<unknown>["openSampler"]>,
    };
  }
  throw new TypeError(
    `Cannot open a sampler as module ${url} exports neither 'openDenoiser' nor 'openSampler'`,
  );
}

/** Options for {@link assignDevices}. */
export interface AssignDevicesOptions {
  /**
   * The execution provider every rank uses.
   *
   * @default {"cpu"}
   */
  ep?: DeviceEp;
  /**
   * CPU cores to share among the ranks.
   *
   * @default {navigator.hardwareConcurrency}
   */
  cores?: number;
}

/**
 * Assign each of `devices` ranks its device (design.md, "Devices and workers"):
 * - `cuda`: rank `r` on CUDA device `r`;
 * - `webgpu`: every rank on the one WebGPU device (0), their calls serialised by the process's
 *   WebGPU lock (ORT shares one WebGPU context among all sessions of a process);
 * - `cpu`: device 0, and `max(1, floor(cores / N))` intra-op threads per rank so that the ranks
 *   run side by side on disjoint cores;
 * - `auto`: as cuda (device `r`) should the session pick CUDA; the CPU share as for cpu.
 *
 * Every provider gets the CPU share as its intra-op thread count, since operators a GPU provider
 * does not take still run on the CPU.
 *
 * @param devices `N`, an integer >= 1.
 * @param options See {@link AssignDevicesOptions}.
 * @returns One assignment per rank, indexed by rank.
 * @throws {RangeError} For a bad `devices`, `ep` or `cores`.
 * @example
 * ```ts
 * const [a, b] = assignDevices(2, { ep: "cpu", cores: 8 });
 * if (a?.intraOpThreads !== 4 || b?.rank !== 1) throw new Error();
 * ```
 */
export function assignDevices(
  devices: number,
  options: AssignDevicesOptions = {},
): DeviceAssignment[] {
  if (!Number.isInteger(devices) || devices < 1) {
    throw new RangeError(
      `Cannot assign devices as 'devices' must be an integer >= 1: current value is ${devices}`,
    );
  }
  const ep = options.ep ?? "cpu";
  if (!DEVICE_EPS.includes(ep)) {
    throw new RangeError(
      `Cannot assign devices as 'ep' must be one of ${DEVICE_EPS.join(", ")}: ` +
        `current value is ${ep}`,
    );
  }
  const cores = options.cores ?? navigator.hardwareConcurrency;
  if (!Number.isInteger(cores) || cores < 1) {
    throw new RangeError(
      `Cannot assign devices as 'cores' must be an integer >= 1: current value is ${cores}`,
    );
  }
  const intraOpThreads = Math.max(1, Math.floor(cores / devices));
  const lock = ep === "webgpu" || ep === "auto" ? { webgpuLock: webGpuLock().buffer } : {};
  const assignments: DeviceAssignment[] = [];
  for (let rank = 0; rank < devices; rank++) {
    const deviceId = ep === "cuda" || ep === "auto" ? rank : 0;
    assignments.push({ rank, devices, ep, deviceId, intraOpThreads, ...lock });
  }
  return assignments;
}
