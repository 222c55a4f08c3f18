/**
 * NatsTransport against a real nats-server (tests/support/nats_server.ts): whole ParaStep runs
 * compared bit for bit with the in-process engine, generations side by side, dropped messages,
 * the server's max_payload, credentials, and the server going away mid-run.
 */

import {
  assignDevices,
  type Exchange,
  ExchangeError,
  type ParaStepPlan,
  runInProcess,
  runRank,
} from "../../../src/parastep/mod.ts";
import {
  connectNats,
  encodeStepMessage,
  type Float32StepMessage,
  NatsConnectError,
  natsSubject,
  NatsTransport,
  type NatsTransportOptions,
  pairOneWayMs,
  parseNatsUrl,
} from "../../../src/parastep/nats/mod.ts";
import { type NatsServer, skipNats, startNatsServer } from "../../support/nats_server.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../_assert.ts";
import { jsToyCond, type JsToyInit, jsToyX0, openSampler } from "../workers_js_sampler.ts";
import { firstBitDifference } from "../workers_expect.ts";
import { HANG_MS, within } from "../workers_support.ts";

const ignore = skipNats();
/** The bench model's latents. */
const DIMS = [1, 8, 64, 16];
const ELEMENTS = 8 * 64 * 16;

/** Every rank's transport, each on a connection of its own (as Workers on several hosts have). */
async function openRanks(
  server: NatsServer,
  gen: string,
  devices: number,
  options: Partial<NatsTransportOptions> = {},
): Promise<NatsTransport[]> {
  const ranks: NatsTransport[] = [];
  for (let rank = 0; rank < devices; rank++) {
    const connection = await connectNats(server.url, { name: `test rank ${rank}` });
    ranks.push(
      await NatsTransport.open(connection, gen, rank, devices, {
        dims: DIMS,
        ownsConnection: true,
        ...options,
      }),
    );
  }
  return ranks;
}

async function closeAll(transports: NatsTransport[]): Promise<void> {
  await Promise.all(transports.map((t) => t.close()));
}

function toy(plan: ParaStepPlan, extra: Partial<JsToyInit> = {}) {
  const init: JsToyInit = { steps: plan.steps, cond: jsToyCond(ELEMENTS), guidance: 3.5, ...extra };
  return openSampler(init, assignDevices(1)[0]!);
}

/** Run every rank of `plan` over `transports` in this process. */
function runAll(
  plan: ParaStepPlan,
  transports: NatsTransport[],
  sampler: ReturnType<typeof toy>,
  x0: Float32Array,
  gen: string,
  exchange: Exchange,
) {
  return Promise.all(
    transports.map((transport, rank) =>
      runRank(rank, plan, sampler, x0, transport, { gen, exchange })
    ),
  );
}

function epsMessage(
  gen: string,
  step: number,
  from: number,
  seed = 0,
): Float32StepMessage & { kind: "eps" } {
  const eps = jsToyX0(ELEMENTS, seed);
  return { gen, step, kind: "eps", from, depth: 1, eps };
}

Deno.test({
  name: "parseNatsUrl() reads credentials and ports and never shows the credentials",
  fn() {
    assertEquals(parseNatsUrl("nats://u:p%40ss@h:5000"), {
      host: "h",
      port: 5000,
      user: "u",
      pass: "p@ss",
      display: "nats://h:5000",
    });
    assertEquals(parseNatsUrl("tok@10.1.2.3"), {
      host: "10.1.2.3",
      port: 4222,
      token: "tok",
      display: "nats://10.1.2.3:4222",
    });
    assertEquals(parseNatsUrl("gpu7:4333").display, "nats://gpu7:4333");
    const tls = assertThrows(() => parseNatsUrl("tls://u:secret@h"), RangeError, "scheme is 'tls'");
    assert(!tls.message.includes("secret"), tls.message);
    assertThrows(() => parseNatsUrl("nats://"), RangeError);
  },
});

for (const exchange of ["gather", "allgather"] as const) {
  for (const devices of [2, 3]) {
    Deno.test({
      name: `runRank over NatsTransport, N = ${devices}, ${exchange}: the output of runInProcess ` +
        `bit for bit, with its message counts`,
      ignore,
      async fn() {
        // T - W = 11: a last partial round for N = 2 and N = 3.
        const plan = { steps: 13, warmup: 2, devices };
        const sampler = toy(plan);
        const x0 = jsToyX0(ELEMENTS, devices);
        const reference = await runInProcess(plan, () => sampler, x0, { exchange });
        await using server = await startNatsServer();
        const gen = crypto.randomUUID();
        const transports = await openRanks(server, gen, devices, { steps: plan.steps });
        try {
          const results = await within(
            HANG_MS,
            runAll(plan, transports, sampler, x0, gen, exchange),
          );
          const output = results[0]!.output!;
          assertEquals(firstBitDifference(output, reference.output), -1, "first differing bit");
          transports.forEach((transport, rank) => {
            const got = transport.counters();
            const want = reference.counters[rank]!;
            const where = `rank ${rank}`;
            assertEquals(
              [got.messagesSent, got.bytesSent, got.messagesReceived, got.bytesReceived],
              [want.messagesSent, want.bytesSent, want.messagesReceived, want.bytesReceived],
              where,
            );
            // On the wire: the payload plus one 128-byte header per message, nothing more.
            assertEquals(got.wireBytesSent, got.bytesSent + 128 * got.messagesSent, where);
            assertEquals(got.strayMessages, 0, where);
            assertEquals(transport.undelivered(), [], where);
            assertEquals(results[rank]!.modelCalls, reference.modelCalls[rank], where);
            assertEquals(results[rank]!.depth, reference.depths[rank], where);
            const transits = [
              ...got.transitMs.eps,
              ...got.transitMs.latents,
              ...got.transitMs.warmup,
            ];
            assertEquals(transits.length, got.messagesReceived, where);
            assert(transits.every((ms) => ms >= 0 && ms < HANG_MS), `${where}: ${transits}`);
          });
        } finally {
          await closeAll(transports);
          await sampler[Symbol.asyncDispose]();
        }
      },
    });
  }
}

Deno.test({
  name: "two generations on one server at the same time never see each other's messages",
  ignore,
  async fn() {
    const plan = { steps: 12, warmup: 2, devices: 2 };
    const sampler = toy(plan);
    await using server = await startNatsServer();
    const runs = [0, 1].map((seed) => ({ gen: crypto.randomUUID(), x0: jsToyX0(ELEMENTS, seed) }));
    const transports = await Promise.all(runs.map((run) => openRanks(server, run.gen, 2)));
    try {
      const outputs = await within(
        HANG_MS,
        Promise.all(runs.map(async (run, g) => {
          const results = await runAll(plan, transports[g]!, sampler, run.x0, run.gen, "gather");
          return results[0]!.output!;
        })),
      );
      for (const [g, run] of runs.entries()) {
        const reference = await runInProcess(plan, () => sampler, run.x0);
        assertEquals(firstBitDifference(outputs[g]!, reference.output), -1, `generation ${g}`);
        for (const transport of transports[g]!) {
          // Nothing of the other generation even arrived: the subjects differ.
          assertEquals(transport.counters().strayMessages, 0);
          assertEquals(transport.undelivered(), []);
        }
      }
      assert(firstBitDifference(outputs[0]!, outputs[1]!) !== -1, "the two runs differ");
    } finally {
      await Promise.all(transports.map(closeAll));
      await sampler[Symbol.asyncDispose]();
    }
  },
});

Deno.test({
  name:
    "a foreign generation, wrong dims or dtype, an unknown sender or garbage is dropped and counted",
  ignore,
  async fn() {
    await using server = await startNatsServer();
    const gen = "mine";
    const [zero, one] = await openRanks(server, gen, 2);
    const intruder = await connectNats(server.url);
    try {
      const tag = { gen, step: 4, kind: "eps", from: 1 } as const;
      const pending = zero!.receive(tag);
      const subject = natsSubject(gen, 0);
      const good = (message: Float32StepMessage, dims = DIMS) =>
        encodeStepMessage(message, dims, 0);
      intruder.publish(subject, good(epsMessage("theirs", 4, 1)));
      // Half the latents, declared as such: well-formed, but not this generation's shape.
      const half = { ...epsMessage(gen, 4, 1), eps: new Float32Array(ELEMENTS / 2) };
      intruder.publish(subject, good(half, [1, 8, 32, 16]));
      const float16 = good(epsMessage(gen, 4, 1));
      float16[6] = 2; // dtype code 2: not float32
      intruder.publish(subject, float16);
      intruder.publish(subject, good(epsMessage(gen, 4, 7))); // rank 7 of 2
      intruder.publish(subject, new TextEncoder().encode('{"eps":[1,2]}'));
      intruder.publish(natsSubject(gen), good(epsMessage(gen, 4, 9))); // on the broadcast subject
      await intruder.flush();
      one!.send(0, epsMessage(gen, 4, 1, 5));
      const message = await within(HANG_MS, pending);
      assert(message.kind === "eps");
      assertEquals(firstBitDifference(message.eps, jsToyX0(ELEMENTS, 5)), -1);
      const counters = zero!.counters();
      assertEquals(counters.dropped, {
        foreignGen: 1,
        wrongShape: 2,
        unknownSender: 2,
        malformed: 1,
      });
      assertEquals(counters.strayMessages, 6);
      assertEquals(counters.messagesReceived, 1);
      assert(counters.lastDropped?.includes("rank 9") === true, String(counters.lastDropped));
      assertEquals(zero!.undelivered(), []);
    } finally {
      await intruder.close();
      await closeAll([zero!, one!]);
    }
  },
});

Deno.test({
  name: "a generation whose warm-up message exceeds the server's max_payload is refused at open",
  ignore,
  async fn() {
    await using server = await startNatsServer({ maxPayload: 4096 });
    const connection = await connectNats(server.url);
    try {
      const largest = 128 + 2 * ELEMENTS * 4;
      const error = await assertRejects(
        NatsTransport.open(connection, "g", 0, 2, { dims: DIMS }),
        RangeError,
        `: ${largest} bytes) is larger than the server's max_payload (4096 bytes): ` +
          `set max_payload to at least ${largest}`,
      );
      assert(!error.message.includes("\n"));
      // Latents of [1, 2, 8, 16] fit: 128 + 2 * 1024 = 2176 bytes.
      const small = await NatsTransport.open(connection, "g", 0, 2, { dims: [1, 2, 8, 16] });
      await small.close();
    } finally {
      await connection.close();
    }
  },
});

Deno.test({
  name: "wrong or missing credentials give one line naming the server, never the secret",
  ignore,
  async fn() {
    for (
      const [options, good, bad] of [
        [{ user: "alice", pass: "s3cret-pw" }, "alice:s3cret-pw@", "alice:wrong-pw@"],
        [{ token: "t0ken-s3cret" }, "t0ken-s3cret@", "wrong-t0ken@"],
      ] as const
    ) {
      await using server = await startNatsServer(options);
      const at = server.url.replace("nats://", "");
      for (const url of [`nats://${bad}${at}`, server.url]) {
        const error = await assertRejects(
          connectNats(url),
          NatsConnectError,
          `Cannot connect to NATS at ${server.url} as the server refused the credentials`,
        );
        assert(!error.message.includes("\n"), error.message);
        assert(!error.message.includes("wrong"), error.message);
      }
      const connection = await connectNats(`nats://${good}${at}`);
      assertEquals(connection.isClosed(), false);
      await connection.close();
    }
    // Nobody listening: also one line, also saying what to do.
    const server = await startNatsServer();
    const url = server.url;
    await server.stop();
    await assertRejects(connectNats(url), NatsConnectError, "nothing accepts connections there");
  },
});

Deno.test({
  name: "the server stopping mid-run fails every rank within seconds with the connection loss",
  ignore,
  async fn() {
    const plan = { steps: 40, warmup: 2, devices: 2 };
    // 20 ms per model call: the run would take about half a second without the stop.
    const sampler = toy(plan, { delayMs: 20 });
    const server = await startNatsServer();
    const gen = crypto.randomUUID();
    const transports = await openRanks(server, gen, 2);
    try {
      const steps: number[] = [];
      const runs = transports.map((transport, rank) =>
        runRank(rank, plan, sampler, jsToyX0(ELEMENTS), transport, {
          gen,
          ...(rank === 0 ? { onStep: (i: number) => steps.push(i) } : {}),
        }).then(() => null, (error: unknown) => error)
      );
      while (steps.length < 4) await new Promise((resolve) => setTimeout(resolve, 5));
      const stopped = performance.now();
      await server.stop();
      const errors = await within(HANG_MS, Promise.all(runs));
      const elapsed = performance.now() - stopped;
      assert(elapsed < 5000, `the ranks took ${elapsed} ms to notice`);
      for (const error of errors) {
        assert(error instanceof ExchangeError, String(error));
        assert(error.message.includes("lost its connection to the NATS server"), error.message);
      }
      assert(steps.length < plan.steps, "the run ended early");
    } finally {
      await closeAll(transports);
      await server.stop();
      await sampler[Symbol.asyncDispose]();
    }
  },
});

Deno.test({
  name: "a receive pending when the server is killed rejects at once, and sends then throw",
  ignore,
  async fn() {
    const server = await startNatsServer();
    const [zero, one] = await openRanks(server, "g", 2);
    try {
      // Settled into a value at once: it rejects while the kill is still being awaited.
      const pending = zero!.receive({ gen: "g", step: 3, kind: "eps", from: 1 }).then(
        () => null,
        (error: unknown) => error,
      );
      const killed = performance.now();
      await server.kill();
      const error = await within(5000, pending);
      assert(error instanceof ExchangeError, String(error));
      assert(error.message.includes("lost its connection"), error.message);
      assert(performance.now() - killed < 5000);
      // The other rank noticed too: it refuses to send into a connection that lost messages.
      await within(
        5000,
        one!.receive({ gen: "g", step: 2, kind: "latents", from: 0 }).catch(() => {}),
      );
      assertThrows(() => one!.send(0, epsMessage("g", 3, 1)), ExchangeError, "lost its connection");
    } finally {
      await closeAll([zero!, one!]);
    }
  },
});

Deno.test({
  name:
    "close() fails the pending receive, unsubscribes, closes an owned connection, and is idempotent",
  ignore,
  async fn() {
    await using server = await startNatsServer();
    const shared = await connectNats(server.url);
    const sender = await connectNats(server.url);
    try {
      const borrowed = await NatsTransport.open(shared, "g", 0, 2, { dims: DIMS });
      const pending = borrowed.receive({ gen: "g", step: 3, kind: "eps", from: 1 });
      await borrowed.close();
      await borrowed.close();
      assertEquals(borrowed.closed, true);
      await assertRejects(pending, ExchangeError, "is closed");
      assertThrows(
        () =>
          borrowed.broadcast({
            gen: "g",
            step: 3,
            kind: "latents",
            from: 0,
            depth: 1,
            x: new Float32Array(ELEMENTS),
          }),
        ExchangeError,
        "closed NATS step exchange",
      );
      // The borrowed connection stays open but hears nothing on the subjects any more.
      assertEquals(shared.isClosed(), false);
      const before = shared.stats().inMsgs;
      sender.publish(natsSubject("g", 0), encodeStepMessage(epsMessage("g", 3, 1), DIMS, 0));
      sender.publish(natsSubject("g"), encodeStepMessage(epsMessage("g", 3, 1), DIMS, 0));
      await sender.flush();
      await shared.flush(); // anything the server routed to it has arrived by its PONG
      assertEquals(shared.stats().inMsgs, before);
      // An owned connection is closed with the transport.
      const own = await connectNats(server.url);
      const owned = await NatsTransport.open(own, "h", 0, 1, { dims: DIMS, ownsConnection: true });
      assertEquals(own.isClosed(), false);
      await owned.close();
      assertEquals(own.isClosed(), true);
    } finally {
      await shared.close();
      await sender.close();
    }
  },
});

Deno.test({
  name: "sends are checked: another rank's name, another generation, a payload of another size",
  ignore,
  async fn() {
    await using server = await startNatsServer();
    const [zero, one] = await openRanks(server, "g", 2);
    try {
      const eps = epsMessage("g", 0, 1);
      assertThrows(() => one!.send(1, eps), RangeError, "'to' must be another rank");
      assertThrows(() => one!.send(2, eps), RangeError, "'to' must be another rank");
      assertThrows(() => one!.send(0, { ...eps, from: 0 }), RangeError, "'from' is 0");
      assertThrows(() => one!.send(0, { ...eps, gen: "h" }), RangeError, "'gen' is h");
      assertThrows(
        () => one!.send(0, { ...eps, eps: new Float32Array(7) }),
        RangeError,
        "Float32Array of 8192 floats",
      );
      assertEquals(one!.counters().messagesSent, 0);
      const connection = await connectNats(server.url);
      try {
        await assertRejects(
          NatsTransport.open(connection, "a.b", 0, 2, { dims: DIMS }),
          RangeError,
          "generation id",
        );
        await assertRejects(
          NatsTransport.open(connection, "g", 2, 2, { dims: DIMS }),
          RangeError,
          "'rank' must be an integer in 0..1",
        );
        await assertRejects(
          NatsTransport.open(connection, "g", 0, 2, { dims: DIMS, prefix: "a..b" }),
          RangeError,
          "'prefix'",
        );
      } finally {
        await connection.close();
      }
    } finally {
      await closeAll([zero!, one!]);
    }
  },
});

Deno.test({
  name: "transit times: raw ones carry the clock offset, pairOneWayMs cancels it",
  ignore,
  async fn() {
    await using server = await startNatsServer();
    const offsetMs = 10_000;
    const clocks = [
      () => performance.timeOrigin + performance.now(),
      () => performance.timeOrigin + performance.now() + offsetMs, // rank 1's clock runs ahead
    ];
    const transports: NatsTransport[] = [];
    for (const [rank, clock] of clocks.entries()) {
      const connection = await connectNats(server.url);
      transports.push(
        await NatsTransport.open(connection, "g", rank, 2, {
          dims: DIMS,
          ownsConnection: true,
          clock,
        }),
      );
    }
    const [zero, one] = transports as [NatsTransport, NatsTransport];
    try {
      for (let round = 0; round < 5; round++) {
        const step = 2 * round;
        one.send(0, epsMessage("g", step, 1));
        await zero.receive({ gen: "g", step, kind: "eps", from: 1 });
        zero.broadcast({
          gen: "g",
          step: step + 1,
          kind: "latents",
          from: 0,
          depth: 1,
          x: jsToyX0(ELEMENTS),
        });
        await one.receive({ gen: "g", step: step + 1, kind: "latents", from: 0 });
      }
      const zeroFromOne = zero.counters().transitMsBySender[1]!;
      const oneFromZero = one.counters().transitMsBySender[0]!;
      assertEquals([zeroFromOne.length, oneFromZero.length], [5, 5]);
      assert(zeroFromOne.every((ms) => ms < -offsetMs / 2), `rank 0 sees ${zeroFromOne}`);
      assert(oneFromZero.every((ms) => ms > offsetMs / 2), `rank 1 sees ${oneFromZero}`);
      assertEquals(one.counters().transitMs.latents, oneFromZero);
      const oneWay = pairOneWayMs(zeroFromOne, oneFromZero);
      assert(oneWay >= 0 && oneWay < 1000, `one-way ${oneWay} ms`);
    } finally {
      await closeAll(transports);
    }
  },
});

Deno.test({
  name:
    "video-sized messages (SVD latents, f32 [1,14,4,72,128]) pass bit for bit with max_payload raised",
  ignore,
  async fn() {
    const dims = [1, 14, 4, 72, 128];
    const n = 14 * 4 * 72 * 128; // 516096 floats: 1.97 MiB per array, 3.94 MiB per warm-up
    await using server = await startNatsServer({ maxPayload: 8 * 1024 * 1024 });
    const transports = await openRanks(server, "video", 2, { dims });
    const [zero, one] = transports as [NatsTransport, NatsTransport];
    try {
      const x = jsToyX0(n, 1);
      const cache = jsToyX0(n, 2);
      zero.broadcast({ gen: "video", step: 4, kind: "warmup", from: 0, depth: 5, x, cache });
      one.send(0, { gen: "video", step: 5, kind: "eps", from: 1, depth: 6, eps: cache });
      const warm = await within(
        HANG_MS,
        one.receive({ gen: "video", step: 4, kind: "warmup", from: 0 }),
      );
      const eps = await within(
        HANG_MS,
        zero.receive({ gen: "video", step: 5, kind: "eps", from: 1 }),
      );
      assert(warm.kind === "warmup" && eps.kind === "eps");
      assertEquals(firstBitDifference(warm.x, x), -1);
      assertEquals(firstBitDifference(warm.cache, cache), -1);
      assertEquals(firstBitDifference(eps.eps, cache), -1);
      assertEquals(one.counters().bytesReceived, 2 * n * 4);
    } finally {
      await closeAll(transports);
    }
  },
});
