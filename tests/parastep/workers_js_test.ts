import assert from "node:assert/strict";
import {
  channelName,
  type Exchange,
  type ParaStepPlan,
  RankError,
  runWorkers,
  type ShutdownReport,
  type WorkersResult,
} from "../../src/parastep/mod.ts";
import { jsToyCond, type JsToyInit, jsToyX0, openSampler } from "./workers_js_sampler.ts";
import { expectedAllGatherCosts, expectedCosts, firstBitDifference } from "./workers_expect.ts";
import {
  assertAllClosed,
  HANG_MS,
  inProcessReference,
  JS_MODULE,
  within,
} from "./workers_support.ts";

const N_LATENT = 64;
const GUIDANCE = 3.5;

function init(steps: number, extra: Partial<JsToyInit> = {}): JsToyInit {
  return { steps, cond: jsToyCond(N_LATENT), guidance: GUIDANCE, ...extra };
}

/**
 * Check a workers run against the in-process engine with the same exchange, and against the counts
 * that exchange implies (workers_expect.ts).
 */
async function assertMatchesReference(
  plan: ParaStepPlan,
  result: WorkersResult,
  x0: Float32Array,
  exchange: Exchange = "gather",
): Promise<void> {
  const reference = await inProcessReference(
    plan,
    (d) => openSampler(init(plan.steps), d),
    x0,
    1,
    exchange,
  );
  const diff = firstBitDifference(result.output, reference.output);
  assert.equal(diff, -1, `output differs from runInProcess at element ${diff}`);
  assert.deepEqual(result.modelCalls, reference.modelCalls);
  assert.equal(result.criticalPathCalls, reference.criticalPathCalls);
  assert.deepEqual(result.ranks.map((r) => r.depth), reference.depths);

  const expected = (exchange === "gather" ? expectedCosts : expectedAllGatherCosts)(
    plan,
    N_LATENT,
  );
  assert.deepEqual(result.modelCalls, expected.ranks.map((r) => r.modelCalls));
  assert.equal(result.criticalPathCalls, expected.criticalPathCalls);
  assert.equal(result.messages, expected.messages);
  assert.equal(result.bytesExchanged, expected.bytes);
  result.ranks.forEach((stats, rank) => {
    const want = expected.ranks[rank]!;
    const got = stats.counters;
    const where = `${JSON.stringify(plan)} ${exchange} rank ${rank}`;
    assert.equal(got.messagesSent, want.messagesSent, `${where} messages sent`);
    assert.equal(got.bytesSent, want.bytesSent, `${where} bytes sent`);
    assert.equal(got.messagesReceived, want.messagesReceived, `${where} messages received`);
    assert.equal(got.bytesReceived, want.bytesReceived, `${where} bytes received`);
    assert.equal(got.strayMessages, 0, `${where} stray messages`);
    assert.deepEqual(stats.undelivered, [], `${where} undelivered`);
    assert.equal(stats.waitMsPerRound.length, Math.ceil((plan.steps - plan.warmup) / plan.devices));
    assert.equal(stats.executionProvider, "js");
  });
  assertAllClosed(result.shutdown, plan.devices);
}

Deno.test("runWorkers() with the JS toy at N = 2 matches runInProcess bit for bit, with the spec's calls and bytes", async () => {
  // T - W = 11 is odd: five full rounds and a last partial round of one position.
  const plan = { steps: 13, warmup: 2, devices: 2 };
  const x0 = jsToyX0(N_LATENT);
  const result = await within(
    HANG_MS,
    runWorkers({ plan, module: JS_MODULE, init: init(plan.steps), x0 }),
  );
  await assertMatchesReference(plan, result, x0);
  // Independent of the reference: the warm-up x and cache, then 5 rounds of one guided eps and
  // one latents broadcast, 256 B each (the raw CFG-doubled eps would be 512 B).
  assert.equal(result.bytesExchanged, 1 * (256 + 256) + 5 * 256 + 5 * 256);
});

Deno.test("runWorkers() with the JS toy at N = 3 matches runInProcess bit for bit, with and without a partial round", async () => {
  for (const plan of [{ steps: 14, warmup: 3, devices: 3 }, { steps: 12, warmup: 3, devices: 3 }]) {
    const x0 = jsToyX0(N_LATENT, plan.steps);
    const result = await within(
      HANG_MS,
      runWorkers({ plan, module: JS_MODULE, init: init(plan.steps), x0 }),
    );
    await assertMatchesReference(plan, result, x0);
  }
});

Deno.test("runWorkers() with N = 1 is the sequential sampler: T calls and no messages", async () => {
  const plan = { steps: 6, warmup: 1, devices: 1 };
  const x0 = jsToyX0(N_LATENT, 3);
  const result = await within(
    HANG_MS,
    runWorkers({ plan, module: JS_MODULE, init: init(plan.steps), x0 }),
  );
  await assertMatchesReference(plan, result, x0);
  assert.deepEqual(result.modelCalls, [6]);
  assert.equal(result.messages, 0);
});

Deno.test("runWorkers() with the all-gather exchange matches runInProcess bit for bit (either exchange), with its own message counts", async () => {
  // N = 2 with a partial last round, N = 3 with a partial and with a full last round.
  for (
    const plan of [
      { steps: 13, warmup: 2, devices: 2 },
      { steps: 14, warmup: 3, devices: 3 },
      { steps: 12, warmup: 3, devices: 3 },
    ]
  ) {
    const x0 = jsToyX0(N_LATENT, plan.steps);
    const result = await within(
      HANG_MS,
      runWorkers({ plan, module: JS_MODULE, init: init(plan.steps), x0, exchange: "allgather" }),
    );
    await assertMatchesReference(plan, result, x0, "allgather");
    // And the gather engine's output: the exchange changes who applies the steps, not the steps.
    const gather = await inProcessReference(plan, (d) => openSampler(init(plan.steps), d), x0);
    assert.equal(firstBitDifference(result.output, gather.output), -1);
  }
});

Deno.test("runWorkers() with the all-gather exchange ends naming the rank when a model fails", async () => {
  // Rank 2 predicts at steps 5, 8, 11 (W = 3, N = 3); the others wait for its eps.
  const plan = { steps: 14, warmup: 3, devices: 3 };
  let shutdown: ShutdownReport[] | undefined;
  const run = runWorkers(
    {
      plan,
      module: JS_MODULE,
      init: init(plan.steps, { delayMs: 5, fail: { rank: 2, step: 8, how: "model" } }),
      x0: jsToyX0(N_LATENT),
      exchange: "allgather",
    },
    { onShutdown: (reports) => shutdown = reports },
  );
  const error = await within(HANG_MS, run.then(() => null, (e: unknown) => e));
  assert.ok(error instanceof RankError, `expected a RankError, got ${String(error)}`);
  assert.equal(error.rank, 2);
  assert.equal(error.step, 8);
  assertAllClosed(shutdown, 3);
});

/** Run a failing generation; return the error, the shutdown reports and the elapsed time. */
async function failingRun(plan: ParaStepPlan, toy: JsToyInit, workerUrl?: URL) {
  let shutdown: ShutdownReport[] | undefined;
  const started = performance.now();
  const run = runWorkers(
    { plan, module: JS_MODULE, init: toy, x0: jsToyX0(N_LATENT) },
    {
      onShutdown: (reports) => shutdown = reports,
      ...(workerUrl === undefined ? {} : { workerUrl }),
    },
  );
  const error = await within(HANG_MS, run.then(() => null, (e: unknown) => e));
  assert.ok(error instanceof RankError, `expected a RankError, got ${String(error)}`);
  return { error, shutdown, ms: performance.now() - started };
}

Deno.test("runWorkers() rejects naming rank 1, step 7 and the cause when rank 1's model fails there", async () => {
  // Rank 1 predicts at steps 3, 5, 7, ...; a delay keeps rank 0 busy in its own calls meanwhile.
  const plan = { steps: 13, warmup: 2, devices: 2 };
  const { error, shutdown } = await failingRun(
    plan,
    init(plan.steps, { delayMs: 5, fail: { rank: 1, step: 7, how: "model" } }),
  );
  assert.equal(error.rank, 1);
  assert.equal(error.step, 7);
  assert.equal(error.stage, "model");
  assert.equal(
    error.message,
    "Cannot run ParaStep as rank 1 failed at step 7 (model): injected failure at step 7 on rank 1",
  );
  assert.ok(error.cause instanceof Error);
  assertAllClosed(shutdown, 2);
});

Deno.test("runWorkers() rejects naming rank 0 and the step when rank 0's model fails", async () => {
  // Rank 0 computes at the warm-up steps 0, 1 and then at 2, 4, 6, ...
  const plan = { steps: 13, warmup: 2, devices: 2 };
  const { error, shutdown } = await failingRun(
    plan,
    init(plan.steps, { delayMs: 5, fail: { rank: 0, step: 6, how: "model" } }),
  );
  assert.equal(error.rank, 0);
  assert.equal(error.step, 6);
  assert.match(error.message, /rank 0 failed at step 6 \(model\): injected failure at step 6/);
  assertAllClosed(shutdown, 2);
});

Deno.test("runWorkers() names the scheduler step when a rank's step() throws", async () => {
  // At step 5 (k = 3, position 0 of round 1) rank 1 reuses its cache: a scheduler step only.
  const plan = { steps: 13, warmup: 2, devices: 3 };
  const { error, shutdown } = await failingRun(
    plan,
    init(plan.steps, { fail: { rank: 1, step: 5, how: "step" } }),
  );
  assert.equal(error.rank, 1);
  assert.equal(error.step, 5);
  assert.equal(error.stage, "step");
  assert.match(error.message, /rank 1 failed at step 5 \(step\): injected step failure/);
  assertAllClosed(shutdown, 3);
});

Deno.test("runWorkers() rejects when a rank's sampler fails to open, and closes the others", async () => {
  const plan = { steps: 8, warmup: 2, devices: 3 };
  const { error, shutdown } = await failingRun(
    plan,
    init(plan.steps, { fail: { rank: 2, step: 0, how: "open" } }),
  );
  assert.equal(error.rank, 2);
  assert.equal(error.stage, "open");
  assert.equal(error.step, null);
  assert.equal(
    error.message,
    "Cannot run ParaStep as rank 2 failed to open its sampler: injected open failure on rank 2",
  );
  assertAllClosed(shutdown, 3);
});

Deno.test("runWorkers() rejects when the module has neither openDenoiser nor openSampler", async () => {
  const plan = { steps: 4, warmup: 1, devices: 2 };
  const module = new URL("./workers_expect.ts", import.meta.url);
  let shutdown: ShutdownReport[] | undefined;
  const error = await within(
    HANG_MS,
    runWorkers(
      { plan, module, init: {}, x0: jsToyX0(N_LATENT) },
      { onShutdown: (r) => shutdown = r },
    ).then(() => null, (e: unknown) => e),
  );
  assert.ok(error instanceof RankError);
  assert.equal(error.stage, "open");
  assert.match(error.message, /exports neither 'openDenoiser' nor 'openSampler'/);
  assertAllClosed(shutdown, 2);
});

Deno.test("runWorkers() reports an uncaught error inside a worker as that rank's failure", async () => {
  const plan = { steps: 13, warmup: 2, devices: 2 };
  const { error, shutdown } = await failingRun(
    plan,
    init(plan.steps, { fail: { rank: 1, step: 5, how: "crash" } }),
  );
  assert.equal(error.rank, 1);
  assert.equal(error.stage, "worker");
  assert.match(error.message, /the worker of rank 1 failed: injected crash at step 5 on rank 1/);
  // The worker survived its uncaught error long enough to cancel the hung call and close.
  assertAllClosed(shutdown, 2);
  assert.equal(shutdown![1]!.close?.inFlightAtClose, 1);
  assert.equal(shutdown![1]!.close?.cancelledCalls, 1);
});

Deno.test("runWorkers() rejects when a worker dies without a message, and still closes the others", async () => {
  const plan = { steps: 8, warmup: 2, devices: 2 };
  const { error, shutdown } = await failingRun(
    plan,
    init(plan.steps),
    new URL("./workers_dying_worker.ts", import.meta.url),
  );
  assert.equal(error.rank, 1);
  assert.equal(error.stage, "worker");
  assert.match(error.message, /the worker of rank 1 failed: .*died on init/);
  assert.ok(shutdown);
  assert.deepEqual(shutdown[1], {
    rank: 1,
    closed: false,
    timedOut: false,
    died: true,
    close: null,
  });
  assert.equal(shutdown[0]!.closed, true);
});

Deno.test("a rank whose model call never returns is reported stalled, naming the rank and step, and every worker closes", async () => {
  // Rank 1 predicts at steps 3, 5, 7, ... (W = 2, N = 2); its call at step 7 never settles.
  const plan = { steps: 13, warmup: 2, devices: 2 };
  let shutdown: ShutdownReport[] | undefined;
  const started = performance.now();
  const run = runWorkers(
    {
      plan,
      module: JS_MODULE,
      init: init(plan.steps, { delayMs: 5, fail: { rank: 1, step: 7, how: "hang" } }),
      x0: jsToyX0(N_LATENT),
    },
    { stallTimeoutMs: 400, onShutdown: (reports) => shutdown = reports },
  );
  const error = await within(HANG_MS, run.then(() => null, (e: unknown) => e));
  const ms = performance.now() - started;
  assert.ok(error instanceof RankError, `expected a RankError, got ${String(error)}`);
  assert.equal(error.rank, 1);
  assert.equal(error.step, 7);
  assert.equal(error.stage, "stall");
  assert.match(
    error.message,
    /^Cannot run ParaStep as rank 1 stalled at step 7: its model call has not returned for 0\.\d s \(the stall timeout is 0\.4 s; a hung device or driver\?\)$/,
  );
  // Disposing the toy cancels the hung call: the stalled rank still closes cleanly.
  assertAllClosed(shutdown, 2);
  assert.equal(shutdown![1]!.close?.inFlightAtClose, 1);
  assert.equal(shutdown![1]!.close?.cancelledCalls, 1);
  assert.ok(ms >= 400, `reported a stall after ${ms.toFixed(0)} ms, before the timeout`);
});

Deno.test("the stall watchdog leaves slow but progressing runs alone: the output is unchanged", async () => {
  // Every call takes 100 ms and ranks 1 and 2 wait through the warm-up (5 calls, 500 ms): with a
  // 400 ms timeout only a watchdog that blamed waiting ranks, or missed progress, would fire.
  const plan = { steps: 14, warmup: 5, devices: 3 };
  const x0 = jsToyX0(N_LATENT, 9);
  const result = await within(
    HANG_MS,
    runWorkers(
      { plan, module: JS_MODULE, init: init(plan.steps, { delayMs: 100 }), x0 },
      { stallTimeoutMs: 400 },
    ),
  );
  await assertMatchesReference(plan, result, x0);
});

Deno.test("runWorkers() refuses a stall timeout that is not > 0", async () => {
  for (const stallTimeoutMs of [0, -1, Number.NaN]) {
    await assert.rejects(
      runWorkers(
        {
          plan: { steps: 4, warmup: 1, devices: 2 },
          module: JS_MODULE,
          init: init(4),
          x0: jsToyX0(4),
        },
        { stallTimeoutMs },
      ),
      (e: unknown) =>
        e instanceof RangeError && /'stallTimeoutMs' must be a number > 0/.test(e.message),
    );
  }
});

Deno.test("aborting runWorkers() mid-run rejects with the abort reason and closes every worker", async () => {
  const plan = { steps: 40, warmup: 2, devices: 2 };
  const controller = new AbortController();
  const reason = new Error("interrupted (SIGINT)");
  const seen: number[] = [];
  let shutdown: ShutdownReport[] | undefined;
  const run = runWorkers(
    { plan, module: JS_MODULE, init: init(plan.steps, { delayMs: 10 }), x0: jsToyX0(N_LATENT) },
    {
      signal: controller.signal,
      progressIntervalMs: 0,
      onStep: (i) => {
        seen.push(i);
        if (i === 5) controller.abort(reason);
      },
      onShutdown: (r) => shutdown = r,
    },
  );
  await within(HANG_MS, assert.rejects(run, (e: unknown) => e === reason));
  assert.ok(seen.includes(5));
  assert.ok(!seen.includes(plan.steps - 1), "the run finished despite the abort");
  assertAllClosed(shutdown, 2);
});

Deno.test("runWorkers() refuses an already aborted signal without starting workers", async () => {
  const controller = new AbortController();
  controller.abort(new Error("too late"));
  let called = false;
  await assert.rejects(
    runWorkers(
      {
        plan: { steps: 4, warmup: 1, devices: 2 },
        module: JS_MODULE,
        init: init(4),
        x0: jsToyX0(4),
      },
      { signal: controller.signal, onShutdown: () => called = true },
    ),
    /too late/,
  );
  assert.equal(called, false);
});

Deno.test("two concurrent generations on separate workers do not disturb each other", async () => {
  const plan = { steps: 11, warmup: 2, devices: 2 };
  const x0a = jsToyX0(N_LATENT, 1);
  const x0b = jsToyX0(N_LATENT, 2);
  const toy = init(plan.steps, { delayMs: 2 });
  const [a, b] = await within(
    HANG_MS,
    Promise.all([
      runWorkers({ plan, module: JS_MODULE, init: toy, x0: x0a }),
      runWorkers({ plan, module: JS_MODULE, init: toy, x0: x0b }),
    ]),
  );
  assert.notEqual(a.gen, b.gen);
  await assertMatchesReference(plan, a, x0a);
  await assertMatchesReference(plan, b, x0b);
});

Deno.test("stray posts on a generation's channels (another gen id, malformed) are ignored and counted", async () => {
  const plan = { steps: 16, warmup: 2, devices: 2 };
  const gen = `stray-${crypto.randomUUID()}`;
  const x0 = jsToyX0(N_LATENT, 5);
  const broadcast = new BroadcastChannel(channelName(gen));
  const toRank0 = new BroadcastChannel(channelName(gen, { from: 1, to: 0 }));
  let posted = false;
  try {
    const result = await within(
      HANG_MS,
      runWorkers(
        { plan, module: JS_MODULE, init: init(plan.steps, { delayMs: 20 }), x0 },
        {
          gen,
          progressIntervalMs: 0,
          onStep: (i) => {
            if (i !== plan.warmup || posted) return;
            posted = true;
            // Exactly the tags the ranks wait for next, but from another generation...
            const next = plan.warmup + 1;
            broadcast.postMessage({
              gen: "another",
              step: next,
              kind: "latents",
              from: 0,
              depth: 99,
              x: new Float32Array(N_LATENT),
            });
            toRank0.postMessage({
              gen: "another",
              step: next,
              kind: "eps",
              from: 1,
              depth: 99,
              eps: new Float32Array(2 * N_LATENT),
            });
            // ...and malformed ones of this generation.
            broadcast.postMessage("not a step message");
            broadcast.postMessage({
              gen,
              step: next,
              kind: "latents",
              from: 0,
              depth: 1,
              x: new Float64Array(N_LATENT),
            });
            toRank0.postMessage({
              gen,
              step: next,
              kind: "eps",
              from: 7,
              depth: 1,
              eps: new Float32Array(2 * N_LATENT),
            });
          },
        },
      ),
    );
    assert.ok(posted);
    const reference = await inProcessReference(
      plan,
      (d) => openSampler(init(plan.steps), d),
      x0,
    );
    assert.equal(firstBitDifference(result.output, reference.output), -1);
    // Rank 0 hears the broadcast channel (3 posts) and its pair channel (2); rank 1 the broadcasts.
    assert.equal(result.ranks[0]!.counters.strayMessages, 5);
    assert.equal(result.ranks[1]!.counters.strayMessages, 3);
  } finally {
    broadcast.close();
    toRank0.close();
  }
});

Deno.test("runWorkers() rejects a generation payload that cannot be cloned, and closes the workers", async () => {
  let shutdown: ShutdownReport[] | undefined;
  await assert.rejects(
    runWorkers(
      {
        plan: { steps: 4, warmup: 1, devices: 2 },
        module: JS_MODULE,
        init: { ...init(4), notCloneable: () => 1 },
        x0: jsToyX0(N_LATENT),
      },
      { onShutdown: (r) => shutdown = r },
    ),
    (e: unknown) =>
      e instanceof TypeError &&
      /the generation payload to rank 0 as it is not structured-cloneable/.test(e.message),
  );
  // The workers open before the payload is sent (it goes with each generation).
  assert.equal(shutdown?.length, 2);
  assert.ok(shutdown.every((r) => r.closed && !r.timedOut));
});
