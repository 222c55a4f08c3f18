import {
  type BatchSampler,
  batchStepCalls,
  type BatchStepPlan,
  checkBatchStepPlan,
  runBatchStep,
  runInProcess,
  SamplerError,
} from "../../src/parastep/mod.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import { literalParaStep, referenceBatchStep, sequential } from "./_reference.ts";
import {
  assertSameBits,
  batched,
  maxAbsDiff,
  SCALAR_X0,
  type ScalarEps,
  scalarToy,
  syncModel,
  vectorToy,
  vectorX0,
} from "./_toy.ts";

function refBatch<X, E>(s: BatchSampler<X, E>) {
  return {
    modelBatch: (xs: X[], is: number[]) => s.modelBatch(xs, is) as E[],
    guide: s.guide,
    step: s.step,
  };
}

Deno.test("runBatchStep() matches the reference for all T <= 30, W <= T, L <= 6", async () => {
  for (let T = 1; T <= 30; T++) {
    const toy = batched(scalarToy(T));
    for (let W = 1; W <= T; W++) {
      for (let L = 1; L <= 6; L++) {
        const where = `T=${T} W=${W} L=${L}`;
        const result = await runBatchStep({ steps: T, warmup: W, stride: L }, toy, SCALAR_X0);
        const ref = referenceBatchStep(T, W, L, refBatch(toy), SCALAR_X0);
        assertSameBits(result.output, ref.output);
        assertEquals(result.batchSizes, ref.groups.map((g) => g.length), where);
        const calls = T === W ? T : W + Math.ceil((T - 1 - W) / L) + 1;
        assertEquals(result.modelCalls, calls, where);
        assertEquals(batchStepCalls({ steps: T, warmup: W, stride: L }), calls, where);
        // The final step is never predicted: it always runs alone.
        assertEquals(result.batchSizes.at(-1), 1, where);
      }
    }
  }
});

Deno.test("runBatchStep() on Float64Array latents matches the reference", async () => {
  const x0 = vectorX0(4);
  for (const [T, W, L] of [[12, 2, 3], [9, 1, 2], [16, 4, 5], [7, 7, 2]] as const) {
    const toy = batched(vectorToy(T));
    const result = await runBatchStep({ steps: T, warmup: W, stride: L }, toy, x0);
    assertSameBits(result.output, referenceBatchStep(T, W, L, refBatch(toy), x0).output);
  }
});

Deno.test("runBatchStep() passes per-sample step indices and predicted latents in one call", async () => {
  const T = 9;
  const toy = scalarToy(T);
  const seen: number[][] = [];
  const sampler: BatchSampler<number, ScalarEps> = {
    modelBatch(xs, is) {
      seen.push(is.slice());
      return xs.map((x, j) => toy.model(x, is[j] as number) as ScalarEps);
    },
    guide: toy.guide,
    step: toy.step,
  };
  await runBatchStep({ steps: T, warmup: 2, stride: 3 }, sampler, SCALAR_X0);
  // Warm-up alone; then strides of 3 ending at T - 2 = 7; then T - 1 alone.
  assertEquals(seen, [[0], [1], [2, 3, 4], [5, 6, 7], [8]]);
});

Deno.test("runBatchStep() with L = 1 equals the sequential sampler bit for bit", async () => {
  for (const [T, W] of [[1, 1], [5, 1], [20, 3], [30, 30]] as const) {
    const toy = scalarToy(T);
    const result = await runBatchStep({ steps: T, warmup: W, stride: 1 }, batched(toy), SCALAR_X0);
    const s = { model: syncModel(toy), guide: toy.guide, step: toy.step };
    assertSameBits(result.output, sequential(T, s, SCALAR_X0));
    assertEquals(result.modelCalls, T);
  }
});

Deno.test("BatchStep L = 2 equals ParaStep N = 2 bit for bit when T - W is odd", async () => {
  for (let T = 2; T <= 30; T++) {
    for (let W = 1; W < T; W++) {
      if ((T - W) % 2 === 0) continue;
      const toy = scalarToy(T);
      const batch = await runBatchStep({ steps: T, warmup: W, stride: 2 }, batched(toy), SCALAR_X0);
      const s = { model: syncModel(toy), guide: toy.guide, step: toy.step };
      assertSameBits(batch.output, literalParaStep(T, W, 2, s, SCALAR_X0).output);
      const para = await runInProcess({ steps: T, warmup: W, devices: 2 }, () => toy, SCALAR_X0);
      assertSameBits(batch.output, para.output);
      assertEquals(batch.modelCalls, para.criticalPathCalls, `T=${T} W=${W}`);
    }
  }
});

Deno.test("BatchStep L = 2 with T - W even runs the last two steps alone, unlike ParaStep N = 2", async () => {
  // ParaStep's last round predicts step T-1 from extrapolated latents; BatchStep never predicts the
  // final step, so it runs T-2 alone (nothing left to pair it with) and then T-1 on true latents:
  // the same x_{T-1} as ParaStep, one more network call, and an exact final step.
  for (let T = 3; T <= 30; T++) {
    for (let W = 1; W < T; W++) {
      if ((T - W) % 2 === 1) continue;
      const where = `T=${T} W=${W}`;
      const toy = scalarToy(T);
      const s = { model: syncModel(toy), guide: toy.guide, step: toy.step };
      const batch = await runBatchStep({ steps: T, warmup: W, stride: 2 }, batched(toy), SCALAR_X0);
      const beforeLast = literalParaStep(T - 1, W, 2, s, SCALAR_X0).output; // x_{T-1}
      const exactLast = s.step(s.guide(s.model(beforeLast, T - 1)), T - 1, beforeLast);
      assertSameBits(batch.output, exactLast);
      const para = literalParaStep(T, W, 2, s, SCALAR_X0).output;
      assert(maxAbsDiff(batch.output, para) > 0, `${where}: ParaStep predicts its last step`);
      assertEquals(batch.modelCalls, W + (T - W) / 2 + 1, where);
      assertEquals(batch.batchSizes.slice(-2), [1, 1], where);
    }
  }
});

Deno.test("checkBatchStepPlan() rejects each out-of-range field with a message naming it", () => {
  const bad: [BatchStepPlan, string][] = [
    [
      { steps: 10, warmup: 0, stride: 2 },
      "Cannot run BatchStep as 'warmup' must be an integer >= 1: current value is 0",
    ],
    [
      { steps: 10, warmup: 11, stride: 2 },
      "Cannot run BatchStep as 'warmup' must be <= 'steps' (10): current value is 11",
    ],
    [
      { steps: 0, warmup: 1, stride: 2 },
      "Cannot run BatchStep as 'steps' must be an integer >= 1: current value is 0",
    ],
    [
      { steps: 10, warmup: 1, stride: 0 },
      "Cannot run BatchStep as 'stride' must be an integer >= 1: current value is 0",
    ],
    [
      { steps: 10, warmup: 1, stride: 1.5 },
      "Cannot run BatchStep as 'stride' must be an integer >= 1: current value is 1.5",
    ],
  ];
  for (const [plan, message] of bad) {
    assertEquals(assertThrows(() => checkBatchStepPlan(plan), RangeError).message, message);
    assertThrows(() => batchStepCalls(plan), RangeError);
  }
});

Deno.test("runBatchStep() rejects a model that returns the wrong number of outputs", async () => {
  const toy = scalarToy(6);
  const short: BatchSampler<number, ScalarEps> = {
    modelBatch: (xs, is) => [toy.model(xs[0] as number, is[0] as number) as ScalarEps],
    guide: toy.guide,
    step: toy.step,
  };
  await assertRejects(
    runBatchStep({ steps: 6, warmup: 1, stride: 2 }, short, SCALAR_X0),
    TypeError,
    "'modelBatch' must return one output per sample: got 1 for a batch of 2 at step 1",
  );
});

Deno.test("runBatchStep() accepts an async model and wraps its failures with the step", async () => {
  const T = 12;
  const toy = batched(scalarToy(T));
  const asyncToy: BatchSampler<number, ScalarEps> = {
    modelBatch: async (xs, is) => {
      await Promise.resolve();
      if (is.includes(9)) throw new Error("out of memory");
      return toy.modelBatch(xs, is);
    },
    guide: toy.guide,
    step: toy.step,
  };
  const ok = await runBatchStep({ steps: 8, warmup: 2, stride: 3 }, asyncToy, SCALAR_X0);
  assertSameBits(
    ok.output,
    referenceBatchStep(8, 2, 3, refBatch(toy), SCALAR_X0).output,
  );
  const error = await assertRejects(
    runBatchStep({ steps: T, warmup: 2, stride: 3 }, asyncToy, SCALAR_X0),
    SamplerError,
    "Cannot run 'model' at step 8 on rank 0: out of memory",
  );
  assertEquals(error.step, 8); // the batch [8, 9, 10] starts at 8
});

Deno.test("runBatchStep() reports each applied step to onStep and stops on abort", async () => {
  const toy = batched(scalarToy(10));
  const seen: number[] = [];
  await runBatchStep({ steps: 10, warmup: 2, stride: 4 }, toy, SCALAR_X0, {
    onStep: (i) => seen.push(i),
  });
  assertEquals(seen, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const controller = new AbortController();
  await assertRejects(
    runBatchStep({ steps: 10, warmup: 2, stride: 4 }, toy, SCALAR_X0, {
      signal: controller.signal,
      onStep: (i) => {
        if (i === 3) controller.abort(new Error("cancelled"));
      },
    }),
    Error,
    "cancelled",
  );
});
