import assert from "node:assert/strict";
import {
  assignDevices,
  RankError,
  runWorkers,
  type ShutdownReport,
} from "../../src/parastep/mod.ts";
import { expectedCosts, firstBitDifference } from "./workers_expect.ts";
import { type OnnxToyInit, onnxToyModel, openSampler, WIDTH } from "./workers_onnx_sampler.ts";
import {
  assertAllClosed,
  HANG_MS,
  inProcessReference,
  ONNX_MODULE,
  within,
} from "./workers_support.ts";
import { testFloats } from "../support/models.ts";

const GUIDANCE = 3.0;
/**
 * Layers of the slow toy: about 0.25 ms each for [256, 256] x [256, 256] on one thread here, so
 * a call takes a few hundred ms, far longer than a failure or abort takes to reach a worker.
 */
const SLOW_DEPTH = 1500;

function toy(rows: number, steps: number, depth: number, extra: Partial<OnnxToyInit> = {}) {
  return {
    model: onnxToyModel(depth),
    rows,
    steps,
    guidance: GUIDANCE,
    cond: testFloats(rows * WIDTH, 31).map((v) => 0.5 * v),
    ...extra,
  } satisfies OnnxToyInit;
}

Deno.test("runWorkers() with the ONNX toy at N = 2 matches runInProcess over one session bit for bit", async () => {
  // [64, 256] latents: 64 KiB, eps 128 KiB (CFG-doubled); 3 MatMul layers per call.
  const rows = 64;
  const plan = { steps: 9, warmup: 2, devices: 2 };
  const init = toy(rows, plan.steps, 3);
  const x0 = testFloats(rows * WIDTH, 7);
  const devices = assignDevices(plan.devices, { ep: "cpu" });
  const result = await within(
    HANG_MS,
    runWorkers({ plan, module: ONNX_MODULE, init, x0 }, { devices }),
  );
  // The reference: every rank on one session with the thread count each worker had.
  const threads = devices[0]!.intraOpThreads;
  const reference = await inProcessReference(plan, (d) => openSampler(init, d), x0, threads);
  const diff = firstBitDifference(result.output, reference.output);
  assert.equal(diff, -1, `output differs from runInProcess at element ${diff}`);
  assert.deepEqual(result.modelCalls, reference.modelCalls);
  assert.equal(result.criticalPathCalls, reference.criticalPathCalls);

  const expected = expectedCosts(plan, rows * WIDTH);
  assert.deepEqual(result.modelCalls, expected.ranks.map((r) => r.modelCalls));
  assert.equal(result.criticalPathCalls, expected.criticalPathCalls);
  assert.equal(result.messages, expected.messages);
  assert.equal(result.bytesExchanged, expected.bytes);
  // T - W = 7: three full rounds and one partial. Warm-up x + guided eps, 3 latents, 3 guided eps.
  assert.equal(result.bytesExchanged, (65536 + 65536) + 3 * 65536 + 3 * 65536);
  for (const stats of result.ranks) {
    assert.equal(stats.executionProvider, "cpu");
    assert.equal(stats.device.intraOpThreads, threads);
    assert.equal(stats.counters.bytesReceived, expected.ranks[stats.rank]!.bytesReceived);
  }
  assertAllClosed(result.shutdown, 2);
});

Deno.test("when rank 1 fails, rank 0's ORT run in flight is cancelled and both workers close", async () => {
  // Long calls on rank 0; rank 1 fails at its first prediction (step 2), while rank 0 is inside
  // its model call for step 1.
  const rows = 128;
  const plan = { steps: 6, warmup: 1, devices: 2 };
  let shutdown: ShutdownReport[] | undefined;
  const run = runWorkers(
    {
      plan,
      module: ONNX_MODULE,
      init: toy(rows, plan.steps, SLOW_DEPTH, { fail: { rank: 1, step: 2, how: "model" } }),
      x0: testFloats(rows * WIDTH, 8),
    },
    { onShutdown: (r) => shutdown = r },
  );
  const error = await within(HANG_MS, run.then(() => null, (e: unknown) => e));
  assert.ok(error instanceof RankError, String(error));
  assert.equal(error.rank, 1);
  assert.equal(error.step, 2);
  assert.equal(
    error.message,
    "Cannot run ParaStep as rank 1 failed at step 2 (model): injected failure at step 2 on rank 1",
  );
  assertAllClosed(shutdown, 2);
  // Rank 0 was running step 1 when told to stop: the run was terminated, not waited out.
  assert.deepEqual(shutdown![0]!.close, {
    rank: 0,
    inFlightAtClose: 1,
    cancelledCalls: 1,
    disposeError: null,
    generations: 0,
  });
});

Deno.test("a rank whose session fails to open (corrupt model bytes) ends the run with the ORT error", async () => {
  const rows = 16;
  const plan = { steps: 5, warmup: 1, devices: 2 };
  let shutdown: ShutdownReport[] | undefined;
  const run = runWorkers(
    {
      plan,
      module: ONNX_MODULE,
      init: toy(rows, plan.steps, 2, { fail: { rank: 1, step: 0, how: "open" } }),
      x0: testFloats(rows * WIDTH, 9),
    },
    { onShutdown: (r) => shutdown = r },
  );
  const error = await within(HANG_MS, run.then(() => null, (e: unknown) => e));
  assert.ok(error instanceof RankError, String(error));
  assert.equal(error.rank, 1);
  assert.equal(error.stage, "open");
  assert.match(error.message, /^Cannot run ParaStep as rank 1 failed to open its sampler: /);
  assert.match(error.message, /Loading a model from 64 bytes failed \[ORT INVALID_PROTOBUF\]/);
  assert.equal((error.cause as Error).name, "OrtError");
  assertAllClosed(shutdown, 2);
});

Deno.test("aborting mid-run cancels the ORT runs in flight on every rank", async () => {
  const rows = 128;
  const plan = { steps: 8, warmup: 1, devices: 2 };
  const controller = new AbortController();
  const reason = new Error("interrupted");
  // Abort once rank 0 (step 1) and rank 1 (step 2) have both started their long calls.
  const probe = new BroadcastChannel(`onnx-toy-probe-${crypto.randomUUID()}`);
  const started = new Set<number>();
  probe.onmessage = (event: MessageEvent<{ rank: number; step: number }>) => {
    if (event.data.step >= plan.warmup) started.add(event.data.rank);
    if (started.size === plan.devices) controller.abort(reason);
  };
  let shutdown: ShutdownReport[] | undefined;
  try {
    const run = runWorkers(
      {
        plan,
        module: ONNX_MODULE,
        init: toy(rows, plan.steps, SLOW_DEPTH, { probe: probe.name }),
        x0: testFloats(rows * WIDTH, 10),
      },
      { signal: controller.signal, onShutdown: (r) => shutdown = r },
    );
    await within(HANG_MS, assert.rejects(run, (e: unknown) => e === reason));
  } finally {
    probe.close();
  }
  assertAllClosed(shutdown, 2);
  for (const report of shutdown!) {
    assert.equal(report.close?.inFlightAtClose, 1, `rank ${report.rank} had no run in flight`);
    assert.equal(report.close?.cancelledCalls, 1, `rank ${report.rank}'s run was not cancelled`);
  }
});
