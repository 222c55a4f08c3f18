/**
 * What the families' sampler modules share: opening one denoiser graph of a model folder on a
 * rank's device, off the thread and cancellable, as an `OpenedDenoiser` whose `bind` the family
 * supplies.
 *
 * @module
 */

import { Env, Session } from "../../ffi/mod.ts";
import type { ModelDtype } from "../models/manifest.ts";
import { type ModelFolder, openComponentAsync, resolveModel } from "../models/model.ts";
import type {
  BoundSampler,
  DeviceAssignment,
  OpenedDenoiser,
  OpenSamplerContext,
} from "../parastep/devices.ts";

/** The open payload of a family's denoiser: which graph of which folder (structured-cloneable). */
export interface DenoiserOpen {
  /** The model folder. */
  readonly modelDir: string;
  /** The component holding the denoiser, e.g. `"unet"`. */
  readonly component: string;
  /** The float type of the graphs to open (the folder's own, or one of its variants). */
  readonly dtype: ModelDtype;
}

/**
 * Opens `open.component` of `open.modelDir` on `device` (loaded off the thread, so an `abort`
 * still reaches a Worker, and cancelled by `context.signal`; through the graph cache when
 * `device.graphCache`), or borrows the session `device.borrow` names, with `bind` making each
 * generation's sampler over the session. Disposing the result cancels runs in flight, waits for
 * them, and releases the session (unless borrowed) and its env; it is idempotent.
 */
export async function openDenoiserGraph(
  open: DenoiserOpen,
  device: DeviceAssignment,
  context: OpenSamplerContext | undefined,
  bind: (session: Session, model: ModelFolder, generation: unknown) => BoundSampler,
): Promise<OpenedDenoiser> {
  const model = resolveModel(open.modelDir, open.dtype);
  const env = Env.create();
  try {
    const session = device.borrow !== undefined
      ? Session.borrow(env, device.borrow, device.ep === "auto" ? "cpu" : device.ep)
      : await openComponentAsync(env, model, open.component, {
        executionProvider: device.ep,
        deviceId: device.deviceId,
        intraOpThreads: device.intraOpThreads,
        // Several workers share the cores: idle threads must not spin on them.
        allowSpinning: device.devices === 1,
        cache: device.graphCache ?? false,
        ...(context ? { signal: context.signal } : {}),
      });
    let disposed: Promise<void> | null = null;
    return {
      executionProvider: session.executionProvider,
      ...(session.owned ? { sharedSession: session.address } : {}),
      bind: (generation) => bind(session, model, generation),
      [Symbol.asyncDispose]() {
        disposed ??= (async () => {
          await session.closeAsync(); // cancels and waits for runs in flight
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
