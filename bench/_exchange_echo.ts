/**
 * The far end of `bench/exchange.ts`: a Worker that opens rank 1 of a two-rank step exchange
 * (NATS or BroadcastChannel with shared payloads) and answers every `latents` message of step k
 * from rank 0 with an `eps` message of step k, the same size, until it has answered `rounds`.
 *
 * @module
 */

import { ChannelTransport } from "../src/parastep/channel.ts";
import type { Transport } from "../src/parastep/transport.ts";
import { connectNats, NatsTransport } from "../src/parastep/nats/mod.ts";

/** What the bench sends this Worker first. */
export interface EchoInit {
  /** Which exchange to open. */
  kind: "nats" | "channel";
  /** The generation id. */
  gen: string;
  /** Round trips to answer. */
  rounds: number;
  /** The payload dims. */
  dims: number[];
  /** The server, for `nats`. */
  url?: string;
  /** Shared payload arenas, for `channel`. */
  arenas?: SharedArrayBuffer[];
}

const scope = globalThis as unknown as {
  onmessage: ((event: MessageEvent<EchoInit>) => void) | null;
  postMessage(
    message: { type: "ready" } | { type: "done" } | { type: "error"; message: string },
  ): void;
};

scope.onmessage = async (event) => {
  const init = event.data;
  let transport: (Transport<Float32Array> & { close(): unknown }) | undefined;
  try {
    if (init.kind === "nats") {
      const connection = await connectNats(init.url!, { name: "bench echo" });
      transport = await NatsTransport.open(connection, init.gen, 1, 2, {
        dims: init.dims,
        ownsConnection: true,
      });
    } else {
      transport = new ChannelTransport(init.gen, 1, 2, { arenas: init.arenas! });
    }
    scope.postMessage({ type: "ready" });
    for (let k = 0; k < init.rounds; k++) {
      const message = await transport.receive({ gen: init.gen, step: k, kind: "latents", from: 0 });
      if (message.kind !== "latents") throw new Error("expected latents");
      await transport.send(0, {
        gen: init.gen,
        step: k,
        kind: "eps",
        from: 1,
        depth: 0,
        eps: message.x,
      });
    }
    scope.postMessage({ type: "done" });
  } catch (error) {
    scope.postMessage({
      type: "error",
      message: error instanceof Error ? error.message : String(error),
    });
  } finally {
    await transport?.close();
  }
};
