/**
 * The Euler sampler of Karras et al. 2022 (EDM, https://arxiv.org/abs/2206.00364) as Stable Video
 * Diffusion configures diffusers' `EulerDiscreteScheduler`
 * (`src/diffusers/schedulers/scheduling_euler_discrete.py`): v-prediction, Karras sigmas, continuous
 * timesteps, no churn. A table plus pure functions of the step index.
 *
 * `euler(config, T)` is diffusers' `__init__` + `set_timesteps(T)`: the sigmas
 * `σ_k = (σmax^(1/ρ) + k/(T−1) · (σmin^(1/ρ) − σmax^(1/ρ)))^ρ`, ρ = 7, computed in double as numpy
 * does, then σ_T = 0, all rounded to float32; the denoiser's timesteps `c_noise = 0.25 ln σ`; and
 * the initial noise's standard deviation. `scaleModelInput(x, i)` (EDM's `c_in · x`) and
 * `step(v, i, x)` depend only on their arguments and the table: diffusers keeps a hidden step
 * counter (`_step_index`), this has none, so any ParaStep rank may replay any step.
 *
 * With Karras sigmas between a given `sigma_min` and `sigma_max` and continuous v-prediction
 * timesteps, the training schedule (betas, `num_train_timesteps`, `steps_offset`, interpolation)
 * does not reach the result: diffusers computes it and then overwrites it. Configs whose result
 * would depend on it, or on a feature not implemented here, are refused (see
 * {@linkcode parseEulerConfig}).
 *
 * Precision follows diffusers on the CPU: the table is float32, and `scaleModelInput` and `step`
 * round every operation to float32 in torch's order (the sample is divided by `√(σ² + 1)` rather
 * than multiplied by its reciprocal).
 *
 * @module
 */

import { checkStepArgs, ConfigFields, describe } from "./_config.ts";

/** The Karras schedule's ρ (diffusers and the EDM paper use 7). */
const RHO = 7;
/** The most steps a table may hold (a corrupt value must not allocate gigabytes). */
const MAX_STEPS = 100_000;
const CONFIG_ACTION = "Cannot build Euler tables";
const STEP_ACTION = "Cannot take an Euler step";

/** How `set_timesteps` spaces its steps; here it only decides `init_noise_sigma`. */
export type EulerSpacing = "leading" | "trailing" | "linspace";

/**
 * A validated Euler config, with diffusers' field names: the fields that shape the result. Other
 * fields of a `scheduler_config.json` are ignored (diffusers' leftovers such as `clip_sample`, and
 * the training schedule, which Karras sigmas with a given range overwrite).
 */
export interface EulerConfig {
  /** What the denoiser predicts; only the velocity v is implemented. */
  readonly prediction_type: "v_prediction";
  /** Karras sigmas; must be true. */
  readonly use_karras_sigmas: true;
  /** The smallest sigma of the schedule (before the final 0). */
  readonly sigma_min: number;
  /** The largest sigma of the schedule. */
  readonly sigma_max: number;
  /** Decides `init_noise_sigma`: √(σmax² + 1) for `leading`, σmax otherwise. @default "linspace" */
  readonly timestep_spacing: EulerSpacing;
  /** The denoiser's timesteps are `0.25 ln σ`; must be `continuous`. */
  readonly timestep_type: "continuous";
  /** The sigma after the last step; must be `zero`. @default "zero" */
  readonly final_sigmas_type: "zero";
}

/** The per-step tables of one Euler schedule and its pure functions. Frozen. */
export interface EulerTable {
  /** The validated config the table was built from. */
  readonly config: EulerConfig;
  /** Number of inference steps T. */
  readonly numInferenceSteps: number;
  /** [T + 1] σ_0 > σ_1 > … > σ_{T−1} and σ_T = 0, float32. */
  readonly sigmas: Float32Array;
  /** [T] the denoiser's timestep at step i: `c_noise = 0.25 ln σ_i`, float32. */
  readonly timesteps: Float32Array;
  /** Standard deviation of the initial noise (diffusers' `init_noise_sigma`), a float32 value. */
  readonly initNoiseSigma: number;
  /**
   * EDM's `c_in = 1 / √(σ_i² + 1)`, the factor the denoiser's latents input is scaled by
   * ({@linkcode EulerTable.scaleModelInput} applies it as torch does, by division).
   */
  scaleIn(i: number): number;
  /**
   * diffusers' `scale_model_input(x, t_i)`: `x / √(σ_i² + 1)` in float32.
   *
   * @param out optional destination; may alias `x`
   */
  scaleModelInput(x: Float32Array, i: number, out?: Float32Array): Float32Array;
  /**
   * One Euler step from x at σ_i to σ_{i+1}: `x0 = c_out · v + c_skip · x` with
   * `c_out = −σ/√(σ²+1)`, `c_skip = 1/(σ²+1)`; `d = (x − x0)/σ`; `x' = x + d · (σ_{i+1} − σ_i)`.
   *
   * @param v [L] the (guided) v-prediction at (x, σ_i)
   * @param i step index, 0 ≤ i < T
   * @param x [L] the current latents
   * @param out [L] optional destination; may alias `x` or `v`
   * @returns `out`, or a new Float32Array, holding the latents at σ_{i+1}
   */
  step(v: Float32Array, i: number, x: Float32Array, out?: Float32Array): Float32Array;
}

const SPACINGS: readonly EulerSpacing[] = ["leading", "trailing", "linspace"];

/**
 * Validate a diffusers `scheduler_config.json` object for the Euler-Karras-v sampler.
 *
 * Refused, with the field named, because they are not implemented: `prediction_type` other than
 * `v_prediction`; `use_karras_sigmas` false (or exponential or beta sigmas); `sigma_min` or
 * `sigma_max` missing or null (diffusers would then take them from the training schedule);
 * `timestep_type` `discrete`; `final_sigmas_type` `sigma_min`; `interpolation_type` other than
 * `linear`.
 *
 * @throws {TypeError} if `raw` is not an object or a field has the wrong type
 * @throws {RangeError} if a field has a value that is not implemented or out of range
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseEulerConfig } from "./euler.ts";
 * const c = parseEulerConfig({
 *   prediction_type: "v_prediction", use_karras_sigmas: true, sigma_min: 0.002, sigma_max: 700,
 *   timestep_type: "continuous", timestep_spacing: "leading",
 * });
 * assert.equal(c.sigma_max, 700);
 * ```
 */
export function parseEulerConfig(raw: unknown): EulerConfig {
  const fields = ConfigFields.of(raw, CONFIG_ACTION);
  const only = <T extends string | boolean>(key: string, value: T, why: string) => {
    const v = fields.obj[key];
    if (v !== value) {
      const Ctor = typeof v === typeof value || v === undefined ? RangeError : TypeError;
      throw new Ctor(
        `${CONFIG_ACTION} as '${key}' must be ${JSON.stringify(value)} (${why}): current value is ${
          v === undefined ? "missing" : describe(v)
        }`,
      );
    }
  };
  // Read with diffusers' defaults, then refuse what is not implemented.
  const prediction = fields.literal(
    "prediction_type",
    ["epsilon", "v_prediction", "sample", "original_sample"],
    "epsilon",
  );
  if (prediction !== "v_prediction") {
    throw new RangeError(
      `${CONFIG_ACTION} as 'prediction_type' must be v_prediction (the only one implemented): current value is ${prediction}`,
    );
  }
  if (fields.boolean("use_karras_sigmas", false) !== true) {
    only("use_karras_sigmas", true, "only Karras sigmas are implemented");
  }
  for (const key of ["use_exponential_sigmas", "use_beta_sigmas"]) {
    if (fields.boolean(key, false)) only(key, false, "only Karras sigmas are implemented");
  }
  fields.literal("interpolation_type", ["linear", "log_linear"], "linear");
  if (fields.obj.interpolation_type === "log_linear") {
    only("interpolation_type", "linear", "the only one implemented");
  }
  const timestepType = fields.literal("timestep_type", ["discrete", "continuous"], "discrete");
  if (timestepType !== "continuous") {
    only("timestep_type", "continuous", "discrete timesteps are not implemented");
  }
  const finalType = fields.literal("final_sigmas_type", ["zero", "sigma_min"], "zero");
  if (finalType !== "zero") only("final_sigmas_type", "zero", "the only one implemented");
  for (const key of ["sigma_min", "sigma_max"]) {
    const v = fields.obj[key];
    if (v === undefined || v === null) {
      throw new RangeError(
        `${CONFIG_ACTION} as '${key}' must be a number (a schedule taking it from the training sigmas is not implemented): current value is ${
          v === undefined ? "missing" : "null"
        }`,
      );
    }
  }
  const sigmaMin = fields.number("sigma_min", NaN, 0, Infinity, true);
  const sigmaMax = fields.number("sigma_max", NaN, 0, Infinity, true);
  if (!(sigmaMin < sigmaMax)) {
    throw new RangeError(
      `${CONFIG_ACTION} as 'sigma_min' must be below 'sigma_max' (${sigmaMax}): current value is ${sigmaMin}`,
    );
  }
  const spacing = fields.literal("timestep_spacing", SPACINGS, "linspace");
  return Object.freeze({
    prediction_type: "v_prediction",
    use_karras_sigmas: true,
    sigma_min: sigmaMin,
    sigma_max: sigmaMax,
    timestep_spacing: spacing,
    timestep_type: "continuous",
    final_sigmas_type: "zero",
  });
}

/**
 * Build the Euler tables for T steps: diffusers' `EulerDiscreteScheduler.from_config(config)`
 * followed by `set_timesteps(T)`.
 *
 * @param config a diffusers `scheduler_config.json` object (see {@linkcode parseEulerConfig})
 * @param T number of inference steps, 1 ≤ T ≤ 100000
 * @throws {TypeError | RangeError} for a config that is not implemented or an invalid T
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { euler } from "./euler.ts";
 * const table = euler({
 *   prediction_type: "v_prediction", use_karras_sigmas: true, sigma_min: 0.002, sigma_max: 700,
 *   timestep_type: "continuous", timestep_spacing: "leading",
 * }, 25);
 * assert.equal(table.sigmas[0], 700);
 * assert.equal(table.sigmas[25], 0);
 * ```
 */
export function euler(config: unknown, T: number): EulerTable {
  const cfg = parseEulerConfig(config);
  if (typeof T !== "number") {
    throw new TypeError(
      `${CONFIG_ACTION} as 'T' must be a number: current value is ${describe(T)}`,
    );
  }
  if (!Number.isInteger(T) || T < 1 || T > MAX_STEPS) {
    throw new RangeError(
      `${CONFIG_ACTION} as 'T' must be an integer in 1..${MAX_STEPS}: current value is ${T}`,
    );
  }
  const f = Math.fround;

  // _convert_to_karras, in double as numpy: ramp = linspace(0, 1, T); the final 0 appended; then
  // cast to float32.
  const sigmas = new Float32Array(T + 1);
  const minInvRho = cfg.sigma_min ** (1 / RHO);
  const maxInvRho = cfg.sigma_max ** (1 / RHO);
  for (let k = 0; k < T; k++) {
    const ramp = T === 1 ? 0 : k === T - 1 ? 1 : k * (1 / (T - 1));
    sigmas[k] = (maxInvRho + ramp * (minInvRho - maxInvRho)) ** RHO;
  }
  sigmas[T] = 0;

  // Continuous v-prediction timesteps: 0.25 * log(σ) on float32 values. Our log is correctly
  // rounded; torch's vectorised float32 log is not, so some values differ from diffusers' by one ulp.
  const timesteps = new Float32Array(T);
  for (let k = 0; k < T; k++) timesteps[k] = f(0.25 * f(Math.log(sigmas[k]!)));

  // init_noise_sigma from the largest sigma (a float32 tensor): √(σ² + 1) for leading spacing.
  let maxSigma = 0;
  for (const s of sigmas) maxSigma = Math.max(maxSigma, s);
  const initNoiseSigma = cfg.timestep_spacing === "leading"
    ? f(Math.sqrt(f(f(maxSigma * maxSigma) + 1)))
    : maxSigma;

  // Per step, in float32 as torch computes with the 0-d sigma tensor: σ² + 1 and its root.
  const sigmaSqPlus1 = new Float64Array(T);
  const root = new Float64Array(T);
  for (let i = 0; i < T; i++) {
    const s = sigmas[i]!;
    sigmaSqPlus1[i] = f(f(s * s) + 1);
    root[i] = f(Math.sqrt(sigmaSqPlus1[i]!));
  }

  function scaleIn(i: number): number {
    checkIndex(i, T);
    return f(1 / root[i]!);
  }

  function scaleModelInput(x: Float32Array, i: number, out?: Float32Array): Float32Array {
    checkStepArgs(STEP_ACTION, "x", x, i, x, out, T);
    const dst = out ?? new Float32Array(x.length);
    const d = root[i]!;
    for (let k = 0; k < x.length; k++) dst[k] = x[k]! / d;
    return dst;
  }

  // Notation (variable -> EDM, Karras et al. 2022, Table 1 and Algorithm 1 with σ_data = 1, no churn):
  //   v            -> the network output F_θ (v-prediction)
  //   cOut, cSkip  -> c_out(σ) = −σ/√(σ²+1), c_skip(σ) = 1/(σ²+1)
  //   x0           -> D_θ(x; σ) = c_skip·x + c_out·F_θ, the denoised estimate
  //   d            -> dx/dσ = (x − D_θ)/σ
  //   dt           -> σ_{i+1} − σ_i (σ̂ = σ since γ = 0)
  function step(v: Float32Array, i: number, x: Float32Array, out?: Float32Array): Float32Array {
    checkStepArgs(STEP_ACTION, "v", v, i, x, out, T);
    const dst = out ?? new Float32Array(x.length);
    const sigma = sigmas[i]!;
    const cOut = f(-sigma / root[i]!);
    const skipDen = sigmaSqPlus1[i]!;
    const dt = f(sigmas[i + 1]! - sigma);
    for (let k = 0; k < dst.length; k++) {
      const xk = x[k]!;
      // torch: model_output * c_out + sample / (σ² + 1)
      const x0 = f(f(v[k]! * cOut) + f(xk / skipDen));
      const d = f(f(xk - x0) / sigma);
      dst[k] = f(xk + f(d * dt));
    }
    return dst;
  }

  return Object.freeze({
    config: cfg,
    numInferenceSteps: T,
    sigmas,
    timesteps,
    initNoiseSigma,
    scaleIn,
    scaleModelInput,
    step,
  });
}

function checkIndex(i: number, T: number): void {
  if (!Number.isInteger(i) || i < 0 || i >= T) {
    throw new RangeError(
      `${STEP_ACTION} as 'i' must be an integer in 0..${T - 1}: current value is ${i}`,
    );
  }
}
