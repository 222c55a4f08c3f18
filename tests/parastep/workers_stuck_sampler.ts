/**
 * A sampler module (see `SamplerModule` in src/parastep/devices.ts) that gets stuck on purpose,
 * for the tests of Ctrl-C, hung workers and process exit. Its arithmetic is the JS toy's
 * (workers_js_sampler.ts); what differs is where it waits:
 * - `load-async`: `openSampler` loads a slow-loading ONNX model with `Session.createAsync` and the
 *   Worker's signal (cancellable, the Worker's event loop stays free);
 * - `load-sync`: the same load with the blocking `Session.create`: the Worker's thread is inside
 *   ONNX Runtime until the model has loaded, deaf to `abort`;
 * - `hang-run`: the model call of one rank at one step runs a graph that takes a minute or more
 *   (600 MatMuls of 2048 x 2048: 10 TFLOP; 512 x 512 ones took only 2.6 s on a newer host) through
 *   the blocking `Session.run`, with no run options to terminate it: a device or driver hang, as
 *   far as the engine can tell.
 *
 * Each rank announces on the `probe` BroadcastChannel `{ rank, event }` with `event` `loading`
 * just before its load and `hanging` just before the hung call, so a test can act then.
 *
 * @module
 */

import { Env, Session, Tensor } from "../../ffi/mod.ts";
import type {
  DeviceAssignment,
  OpenedSampler,
  OpenSamplerContext,
} from "../../src/parastep/mod.ts";
import { type JsToyInit, openSampler as openJsToy } from "./workers_js_sampler.ts";

/** The structured-cloneable init payload. */
export interface StuckInit {
  /** Where it gets stuck (see the module doc). */
  mode: "load-async" | "load-sync" | "hang-run";
  /** The JS toy's payload: the arithmetic of every call that does not hang. */
  toy: JsToyInit;
  /** ONNX model bytes: the slow-loading model (`load-*`) or the slow-running one (`hang-run`). */
  model: Uint8Array;
  /** `hang-run`: the rank and step whose model call hangs. */
  hang?: { rank: number; step: number };
  /** The BroadcastChannel name for the `loading` and `hanging` announcements. */
  probe: string;
}

/**
 * Open the stuck sampler.
 *
 * @param init See {@link StuckInit}.
 * @param device The rank's assignment.
 * @param context The Worker's signal.
 * @returns The sampler; disposing it closes the session (if any) and the toy.
 */
export async function openSampler(
  init: StuckInit,
  device: DeviceAssignment,
  context?: OpenSamplerContext,
): Promise<OpenedSampler> {
  const probe = new BroadcastChannel(init.probe);
  const announce = (event: string) => probe.postMessage({ rank: device.rank, event });
  const env = Env.create();
  let session: Session | null = null;
  try {
    const options = { intraOpThreads: 1, allowSpinning: false };
    if (init.mode === "hang-run") {
      session = Session.create(env, init.model, options);
    } else {
      announce("loading");
      session = init.mode === "load-sync"
        ? Session.create(env, init.model, options)
        : await Session.createAsync(env, init.model, {
          ...options,
          ...(context ? { signal: context.signal } : {}),
        });
    }
  } catch (error) {
    probe.close();
    env.close();
    throw error;
  }
  const toy = openJsToy(init.toy, device);
  const hung = session;
  const hang = init.hang?.rank === device.rank ? init.hang.step : null;
  return {
    executionProvider: "js",
    model(x, i) {
      if (i === hang) {
        announce("hanging");
        const [size] = hung.inputs[0]!.dims as number[];
        hung.run({ x: new Tensor("float32", new Float32Array(size! * size!), [size!, size!]) });
      }
      return toy.model(x, i);
    },
    guide: (eps) => toy.guide(eps),
    step: (e, i, x) => toy.step(e, i, x),
    async [Symbol.asyncDispose]() {
      probe.close();
      await toy[Symbol.asyncDispose]();
      await hung.closeAsync();
      env.close();
    },
  };
}
