/**
 * `deno task bench:exchange`: one-way time of one step message between two ranks, over NATS on
 * loopback against `BroadcastChannel` with shared payloads (what `gen --gpus N` uses on one host).
 * Rank 0 runs here, rank 1 in a Worker (as the engine places ranks); rank 0 sends latents of the
 * bench model's size ([1, 8, 64, 16] float32, 32 KiB) and rank 1 sends them back as eps. The
 * one-way time is half of each round trip, so no clocks are compared.
 *
 * Usage: deno task bench:exchange [--rounds 500] [--dims 1,8,64,16] [--nats nats://host:port]
 *                                 [--json PATH]
 * Without --nats it starts a nats-server on 127.0.0.1 (tests/support/nats_server.ts).
 *
 * Numbers from a loaded machine say little: run it on an idle one.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ChannelTransport } from "../src/parastep/channel.ts";
import { createArenas } from "../src/parastep/shared_payloads.ts";
import type { Transport } from "../src/parastep/transport.ts";
import { connectNats, NatsTransport } from "../src/parastep/nats/mod.ts";
import { median } from "../src/metrics/stats.ts";
import { startNatsServer } from "../tests/support/nats_server.ts";
import type { EchoInit } from "./_exchange_echo.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "500" },
    dims: { type: "string", default: "1,8,64,16" },
    nats: { type: "string" },
    json: { type: "string" },
  },
});
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 20) {
  console.error(
    `bench:exchange: --rounds must be an integer >= 20: current value is ${values.rounds}`,
  );
  Deno.exit(2);
}
const dims = values.dims.split(",").map(Number);
if (dims.some((d) => !Number.isInteger(d) || d < 1)) {
  console.error(
    `bench:exchange: --dims must be integers >= 1 joined by commas: current value is ${values.dims}`,
  );
  Deno.exit(2);
}
const elements = dims.reduce((n, d) => n * d, 1);
/** Round trips left out of the statistics (connections and JIT warming up). */
const WARMUP = Math.floor(rounds / 10);

/** Ping-pong `rounds` times between `zero` here and a Worker echoing as rank 1. */
async function pingPong(
  zero: Transport<Float32Array>,
  init: EchoInit,
): Promise<number[]> {
  const worker = new Worker(new URL("./_exchange_echo.ts", import.meta.url), { type: "module" });
  try {
    const opened = Promise.withResolvers<void>();
    const done = Promise.withResolvers<void>();
    worker.onmessage = (event) => {
      const reply = event.data as { type: string; message?: string };
      if (reply.type === "ready") opened.resolve();
      else if (reply.type === "done") done.resolve();
      else {
        const error = new Error(`the echo worker failed: ${reply.message}`);
        opened.reject(error);
        done.reject(error);
      }
    };
    worker.postMessage(init);
    await opened.promise;
    const x = new Float32Array(elements).map((_, j) => Math.sin(j));
    const oneWayMs: number[] = [];
    for (let k = 0; k < rounds; k++) {
      const started = performance.now();
      await zero.send(1, { gen: init.gen, step: k, kind: "latents", from: 0, depth: 0, x });
      const back = await zero.receive({ gen: init.gen, step: k, kind: "eps", from: 1 });
      if (k >= WARMUP) oneWayMs.push((performance.now() - started) / 2);
      if (back.kind !== "eps" || back.eps[1] !== x[1]) {
        throw new Error("the echo changed the payload");
      }
    }
    await done.promise;
    return oneWayMs;
  } finally {
    worker.terminate();
  }
}

function summary(name: string, oneWayMs: number[]) {
  const sorted = oneWayMs.slice().sort((a, b) => a - b);
  return {
    name,
    rounds: oneWayMs.length,
    medianMs: median(oneWayMs),
    p10Ms: sorted[Math.floor(0.1 * (sorted.length - 1))]!,
    p90Ms: sorted[Math.floor(0.9 * (sorted.length - 1))]!,
  };
}

const results = [];

// 1. BroadcastChannel with shared payloads, as `gen --gpus N` exchanges steps on one host.
{
  const gen = crypto.randomUUID();
  const arenas = createArenas(2, 2 * elements);
  const zero = new ChannelTransport(gen, 0, 2, { arenas });
  try {
    const times = await pingPong(zero, { kind: "channel", gen, rounds, dims, arenas });
    results.push(summary("BroadcastChannel + shared memory", times));
  } finally {
    zero.close();
  }
}

// 2. NATS: each rank its own connection, through the server.
{
  // The local server's max_payload fits the warm-up message (two arrays) of any --dims.
  const maxPayload = Math.max(1 << 20, 128 + 2 * 4 * elements);
  await using server = values.nats === undefined
    ? await startNatsServer({ maxPayload })
    : undefined;
  const url = values.nats ?? server!.url;
  const gen = crypto.randomUUID();
  const connection = await connectNats(url, { name: "bench rank 0" });
  const zero = await NatsTransport.open(connection, gen, 0, 2, { dims, ownsConnection: true });
  try {
    const times = await pingPong(zero, { kind: "nats", gen, rounds, dims, url });
    results.push(
      summary(`NATS (${values.nats === undefined ? "local nats-server" : "--nats"})`, times),
    );
  } finally {
    await zero.close();
  }
}

const bytes = elements * 4;
console.log(
  `one-way time of a ${bytes}-byte payload (dims [${dims}]), half a round trip, ${
    rounds - WARMUP
  } rounds:`,
);
for (const r of results) {
  console.log(
    `  ${r.name.padEnd(36)} median ${r.medianMs.toFixed(3)} ms  (p10 ${r.p10Ms.toFixed(3)}, p90 ${
      r.p90Ms.toFixed(3)
    })`,
  );
}
if (values.json !== undefined) {
  await Deno.writeTextFile(values.json, JSON.stringify({ dims, bytes, results }, null, 2) + "\n");
}
