/**
 * How a Worker opens its rank's step exchange over NATS: a structured-cloneable description
 * ({@link NatsStepSpec}) that the coordinator (or a serving host) puts in the `prepare` request,
 * and {@link openStepTransport}, which the Worker calls. The Worker imports this module only for
 * a NATS run.
 *
 * @module
 */

import type { ParaStepPlan } from "../rounds.ts";
import { connectNats } from "./connect.ts";
import { NatsTransport } from "./transport.ts";

/** Where and how a rank exchanges steps over NATS. */
export interface NatsStepSpec {
  /** `nats://[user:pass@|token@]host[:port]`; on a serving host, the host's own URL. */
  readonly url: string;
  /** The text of a NATS credentials file, if the host was given `--nats-creds`. */
  readonly creds?: string;
  /** The subject prefix. @default {"parastep"} */
  readonly prefix?: string;
  /** The latents' dims (every step message carries this shape). */
  readonly dims: readonly number[];
}

/**
 * Open rank `rank`'s NatsTransport for generation `gen` on a connection of its own (closed with
 * the transport).
 */
export async function openStepTransport(
  spec: NatsStepSpec,
  gen: string,
  rank: number,
  plan: ParaStepPlan,
): Promise<NatsTransport> {
  const connection = await connectNats(spec.url, {
    name: `parastep rank ${rank} of ${gen}`,
    ...(spec.creds === undefined ? {} : { creds: spec.creds }),
  });
  try {
    return await NatsTransport.open(connection, gen, rank, plan.devices, {
      dims: spec.dims,
      steps: plan.steps,
      ownsConnection: true,
      ...(spec.prefix === undefined ? {} : { prefix: spec.prefix }),
    });
  } catch (error) {
    await connection.close();
    throw error;
  }
}
