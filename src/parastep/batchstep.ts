/**
 * BatchStep: ParaStep's reuse-then-predict on one device, with the predictions batched into one
 * network call (docs/parastep.md, "BatchStep").
 *
 * After `W` sequential warm-up steps, at step `i`: apply `S` with the freshest guided noise (the
 * one applied at step `i - 1`) `h` times from `x_i` to get `x^_{i+1} .. x^_{i+h}`; run the model
 * once on `[x_i, x^_{i+1}, .., x^_{i+h}]` at steps `[i, .., i+h]`; apply the `h + 1` outputs in
 * order to the true latents. `h = min(L - 1, T - 2 - i)`, so the final step always runs alone.
 *
 * @module
 */

import { checkCount, checkStepsAndWarmup } from "./_check.ts";
import { SamplerError } from "./rounds.ts";

/**
 * A sampler whose model takes a batch of latents, each at its own step index. As for `Sampler`,
 * returned values must not alias buffers that a later call overwrites.
 *
 * @typeParam X Latents.
 * @typeParam E Pre-guidance noise.
 */
export interface BatchSampler<X, E> {
  /** `eps(xs[j], t_{is[j]})` for each `j`, before guidance, in the same order (may be async). */
  modelBatch(xs: X[], is: number[]): E[] | Promise<E[]>;
  /** G(eps): guided noise, same type as latents. */
  guide(eps: E): X;
  /** S(e, i, x): pure scheduler step x_i -> x_{i+1}. Must not mutate its arguments. */
  step(guided: X, i: number, x: X): X;
}

/** The shape of one BatchStep generation. */
export interface BatchStepPlan {
  /** `T`: denoising steps, an integer >= 1. */
  steps: number;
  /** `W`: sequential warm-up steps, an integer in `1..T`. */
  warmup: number;
  /** `L`: the stride, steps per batched call (batch size), an integer >= 1. */
  stride: number;
}

/**
 * Throw a `RangeError` naming the first field of `plan` that is out of range.
 *
 * @param plan The plan to check.
 * @throws {RangeError} Unless `T >= 1`, `1 <= W <= T` and `L >= 1`, all integers.
 */
export function checkBatchStepPlan(plan: BatchStepPlan): void {
  checkStepsAndWarmup("BatchStep", plan.steps, plan.warmup);
  checkCount("BatchStep", "stride", plan.stride);
}

/**
 * Network calls of a BatchStep run: `W + ceil((T - 1 - W) / L) + 1`, or `T` when `T = W`
 * (nothing after warm-up, so there is no separate final step).
 *
 * @example
 * ```ts
 * if (batchStepCalls({ steps: 50, warmup: 5, stride: 2 }) !== 28) throw new Error();
 * ```
 */
export function batchStepCalls(plan: BatchStepPlan): number {
  checkBatchStepPlan(plan);
  const { steps: T, warmup: W, stride: L } = plan;
  return T === W ? T : W + Math.ceil((T - 1 - W) / L) + 1;
}

/** Options for {@link runBatchStep}. */
export interface BatchStepOptions {
  /** Aborting it ends the run before the next network call. */
  signal?: AbortSignal;
  /** Called after step `i` is applied to the true latents (for progress bars). */
  onStep?: (i: number) => void;
}

/** What {@link runBatchStep} returns. */
export interface BatchStepResult<X> {
  /** `x_T`. */
  output: X;
  /** Network calls made. */
  modelCalls: number;
  /** The batch size of each call, in order. */
  batchSizes: number[];
}

/**
 * Run one BatchStep generation with stride `L`. `L = 1` is the sequential sampler; `L = 2` gives
 * ParaStep's `N = 2` output exactly when `T - W` is odd.
 *
 * @param plan `T`, `W`, `L`.
 * @param sampler Batched model, guidance and scheduler step.
 * @param x0 The initial latents.
 * @param options See {@link BatchStepOptions}.
 * @returns The output, the call count and the batch sizes.
 * @throws {RangeError} For an invalid plan.
 * @throws {TypeError} When `modelBatch` returns a different number of outputs than it was given.
 * @throws {SamplerError} When a sampler callback throws (rank 0, the step of the batch's first
 *   sample for `model`).
 * @example
 * ```ts
 * const sampler = {
 *   modelBatch: (xs: number[]) => xs,
 *   guide: (e: number) => e,
 *   step: (e: number, _i: number, x: number) => x - 0.1 * e,
 * };
 * const result = await runBatchStep({ steps: 6, warmup: 1, stride: 2 }, sampler, 1);
 * if (result.modelCalls !== 4) throw new Error(); // 1 + ceil(4 / 2) + 1
 * ```
 */
export async function runBatchStep<X, E>(
  plan: BatchStepPlan,
  sampler: BatchSampler<X, E>,
  x0: X,
  options: BatchStepOptions = {},
): Promise<BatchStepResult<X>> {
  checkBatchStepPlan(plan);
  const { steps: T, warmup: W, stride: L } = plan;
  const batchSizes: number[] = [];
  let x = x0;
  // The guided eps applied at step i - 1: the reuse source for the next predictions.
  let freshest: X | undefined;
  let i = 0;
  while (i < T) {
    options.signal?.throwIfAborted();
    const h = i < W ? 0 : Math.max(0, Math.min(L - 1, T - 2 - i));
    // [h + 1]: x_i, then x^_{i+1} .. x^_{i+h} extrapolated with the freshest guided eps.
    const xs: X[] = [x];
    const is: number[] = [i];
    for (let j = 1; j <= h; j++) {
      const previous = xs[j - 1] as X;
      xs.push(callStep(sampler, freshest as X, i + j - 1, previous));
      is.push(i + j);
    }
    let outputs: E[];
    try {
      outputs = await sampler.modelBatch(xs, is);
    } catch (error) {
      throw new SamplerError(0, i, "model", error);
    }
    if (outputs.length !== xs.length) {
      throw new TypeError(
        `Cannot run BatchStep as 'modelBatch' must return one output per sample: ` +
          `got ${outputs.length} for a batch of ${xs.length} at step ${i}`,
      );
    }
    batchSizes.push(xs.length);
    for (const [j, eps] of outputs.entries()) {
      let guided: X;
      try {
        guided = sampler.guide(eps);
      } catch (error) {
        throw new SamplerError(0, i + j, "guide", error);
      }
      x = callStep(sampler, guided, i + j, x);
      freshest = guided;
      options.onStep?.(i + j);
    }
    i += h + 1;
  }
  return { output: x, modelCalls: batchSizes.length, batchSizes };
}

function callStep<X, E>(sampler: BatchSampler<X, E>, guided: X, i: number, x: X): X {
  try {
    return sampler.step(guided, i, x);
  } catch (error) {
    throw new SamplerError(0, i, "step", error);
  }
}
