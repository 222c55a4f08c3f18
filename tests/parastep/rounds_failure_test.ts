import {
  type Exchange,
  ExchangeError,
  EXCHANGES,
  InMemoryHub,
  runInProcess,
  runRank,
  type Sampler,
  SamplerError,
} from "../../src/parastep/mod.ts";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { SCALAR_X0, type ScalarEps, scalarToy } from "./_toy.ts";

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("runRank() on rank 0 throws ExchangeError when rank 1 sends eps for the wrong step", async () => {
  const plan = { steps: 6, warmup: 2, devices: 2 };
  const toy = scalarToy(6);
  for (const [field, wrong] of [["step", { step: 4 }], ["gen", { gen: "stale" }]] as const) {
    const hub = new InMemoryHub<number>(2);
    const rank0 = runRank(0, plan, toy, SCALAR_X0, hub.endpoint(0), { gen: "g" });
    // A faulty rank 1: takes the warm-up, then answers for the wrong tag.
    const peer = hub.endpoint(1);
    await peer.receive({ gen: "g", step: 1, kind: "warmup", from: 0 });
    await peer.send(0, {
      gen: "g",
      step: 3,
      kind: "eps",
      from: 1,
      depth: 3,
      eps: 0,
      ...wrong,
    });
    const error = await assertRejects(rank0, ExchangeError, "expected {gen=g, step=3, kind=eps");
    assertEquals(error.expected, { gen: "g", step: 3, kind: "eps", from: 1 }, field);
    assertEquals(error.received, { gen: "g", step: 3, kind: "eps", from: 1, ...wrong }, field);
  }
});

Deno.test("runRank() on rank 1 throws ExchangeError when the warm-up comes from another generation", async () => {
  const plan = { steps: 6, warmup: 2, devices: 2 };
  const hub = new InMemoryHub<number>(2);
  const rank1 = runRank(1, plan, scalarToy(6), SCALAR_X0, hub.endpoint(1), { gen: "new" });
  await hub.endpoint(0).broadcast({
    gen: "old",
    step: 1,
    kind: "warmup",
    from: 0,
    depth: 2,
    x: 0,
    cache: 0,
  });
  const error = await assertRejects(rank1, ExchangeError, "received {gen=old");
  assertEquals(error.expected?.gen, "new");
});

Deno.test("runRank() checks tags itself even over a transport that does not", async () => {
  const plan = { steps: 4, warmup: 1, devices: 2 };
  // A careless transport: hands over whatever it has.
  const careless = {
    send: () => {},
    broadcast: () => {},
    receive: () =>
      Promise.resolve(
        {
          gen: "g",
          step: 0,
          kind: "latents",
          from: 0,
          depth: 1,
          x: 0,
        } as const,
      ),
    counters: () => ({
      messagesSent: 0,
      bytesSent: 0,
      messagesReceived: 0,
      bytesReceived: 0,
      waitMs: 0,
    }),
  };
  const error = await assertRejects(
    runRank<number, ScalarEps>(1, plan, scalarToy(4), SCALAR_X0, careless, { gen: "g" }),
    ExchangeError,
  );
  assertEquals(error.expected?.kind, "warmup");
  assertEquals(error.received?.kind, "latents");
});

Deno.test("aborting runRank() while it waits for a missing peer rejects promptly, with either exchange", async () => {
  const plan = { steps: 8, warmup: 2, devices: 2 };
  const toy = scalarToy(8);
  for (const exchange of EXCHANGES) {
    for (const rank of [0, 1]) {
      const hub = new InMemoryHub<number>(2);
      const controller = new AbortController();
      const started = performance.now();
      const run = runRank(rank, plan, toy, SCALAR_X0, hub.endpoint(rank), {
        signal: controller.signal,
        exchange,
      });
      const timer = setTimeout(() => controller.abort(new Error(`stop rank ${rank}`)), 10);
      await assertRejects(run, Error, `stop rank ${rank}`);
      clearTimeout(timer);
      assert(performance.now() - started < 1000, "the abort did not end the wait promptly");
      // Rank 0 got through warm-up and position 0 before waiting on rank 1 (with all-gather it
      // also shared its eps); rank 1 sent nothing, waiting for the warm-up.
      const sent = rank === 1 ? [] : exchange === "gather" ? ["warmup"] : ["warmup", "eps"];
      assertEquals(hub.log().map((m) => m.kind), sent, `${exchange} rank ${rank}`);
    }
  }
});

/** Wrap a sampler: async model (a macrotask per call), optional failure, call log. */
function instrumented(
  rank: number,
  fail: { rank: number; step: number; stage: "model" | "guide" | "step" } | null,
  log: { rank: number; i: number; at: number }[],
): Sampler<number, ScalarEps> {
  const toy = scalarToy(20);
  const boom = (i: number, stage: string) => {
    if (fail !== null && fail.rank === rank && fail.step === i && fail.stage === stage) {
      throw new Error("boom");
    }
  };
  let lastI = -1;
  return {
    async model(x, i) {
      log.push({ rank, i, at: performance.now() });
      await delay(1);
      boom(i, "model");
      lastI = i;
      return toy.model(x, i) as ScalarEps;
    },
    guide(eps) {
      boom(lastI, "guide");
      return toy.guide(eps);
    },
    step(e, i, x) {
      boom(i, "step");
      return toy.step(e, i, x);
    },
  };
}

Deno.test("a rank whose model throws makes runInProcess() reject naming rank and step, and the other ranks stop (either exchange)", async () => {
  const plan = { steps: 20, warmup: 3, devices: 3 };
  // Rank 1 predicts at steps 4, 7, 10, ...; rank 0 computes at 3, 6, 9, ...
  const cases = [
    { rank: 1, step: 7, stage: "model" },
    { rank: 0, step: 9, stage: "model" },
    { rank: 2, step: 4, stage: "step" }, // a reuse step: rank 2 extrapolates at 3, 4
    { rank: 0, step: 1, stage: "guide" },
  ] as const;
  for (const [exchange, fail] of EXCHANGES.flatMap((e) => cases.map((c) => [e, c] as const))) {
    const log: { rank: number; i: number; at: number }[] = [];
    const error = await assertRejects(
      runInProcess(plan, (r) => instrumented(r, fail, log), SCALAR_X0, { exchange }),
      SamplerError,
      `Cannot run '${fail.stage}' at step ${fail.step} on rank ${fail.rank}: boom`,
    );
    assertEquals([error.rank, error.step, error.stage], [fail.rank, fail.step, fail.stage]);
    assert(error.cause instanceof Error && error.cause.message === "boom");
    const rejectedAt = performance.now();
    const calls = log.length;
    await delay(20);
    assertEquals(log.length, calls, "no model call may start after runInProcess() rejected");
    assert(log.every((c) => c.at <= rejectedAt));
    // Nobody got past the round after the failure.
    assert(log.every((c) => c.i <= fail.step + plan.devices), JSON.stringify(log.at(-1)));
  }
});

Deno.test("aborting runInProcess() from outside ends every rank with the signal's reason (either exchange)", async () => {
  const plan = { steps: 20, warmup: 3, devices: 3 };
  for (const exchange of EXCHANGES) {
    const log: { rank: number; i: number; at: number }[] = [];
    const controller = new AbortController();
    const run = runInProcess(plan, (r) => instrumented(r, null, log), SCALAR_X0, {
      signal: controller.signal,
      exchange,
      onStep: (i) => {
        if (i === 8) controller.abort(new Error("user cancelled"));
      },
    });
    await assertRejects(run, Error, "user cancelled");
    const calls = log.length;
    await delay(20);
    assertEquals(log.length, calls, exchange);
    assert(log.every((c) => c.i <= 11), exchange);
  }
  const log: { rank: number; i: number; at: number }[] = [];
  // An already aborted signal stops it before any model call.
  const before = log.length;
  await assertRejects(
    runInProcess(plan, (r) => instrumented(r, null, log), SCALAR_X0, {
      signal: AbortSignal.abort(new Error("too late")),
    }),
    Error,
    "too late",
  );
  assertEquals(log.length, before);
});

Deno.test("runRank() and runInProcess() validate the plan and rank up front", async () => {
  const toy = scalarToy(5);
  const hub = new InMemoryHub<number>(2);
  await assertRejects(
    runRank(2, { steps: 5, warmup: 1, devices: 2 }, toy, 0, hub.endpoint(0)),
    RangeError,
    "Cannot run ParaStep as 'rank' must be an integer in 0..1: current value is 2",
  );
  await assertRejects(
    runInProcess({ steps: 5, warmup: 0, devices: 2 }, () => toy, 0),
    RangeError,
    "Cannot run ParaStep as 'warmup' must be an integer >= 1: current value is 0",
  );
  await assertRejects(
    runInProcess({ steps: 5, warmup: 6, devices: 2 }, () => toy, 0),
    RangeError,
    "'warmup' must be <= 'steps' (5): current value is 6",
  );
  // An exchange that is not one of EXCHANGES (say, from JavaScript or JSON) is refused, not run
  // as gather.
  const ring = { exchange: "ring" as Exchange };
  await assertRejects(
    runRank(0, { steps: 5, warmup: 1, devices: 2 }, toy, 0, hub.endpoint(0), ring),
    RangeError,
    "Cannot run ParaStep as 'exchange' must be one of gather, allgather: current value is ring",
  );
  await assertRejects(
    runInProcess({ steps: 5, warmup: 1, devices: 2 }, () => toy, 0, ring),
    RangeError,
    "'exchange' must be one of gather, allgather",
  );
  assertEquals(hub.log(), []);
});
