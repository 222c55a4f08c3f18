/**
 * DDIM (Song et al. 2021, https://arxiv.org/abs/2010.02502) as a table plus a pure step, compatible
 * with diffusers' `DDIMScheduler` (`src/diffusers/schedulers/scheduling_ddim.py`) at `eta = 0`.
 *
 * `ddim(config, T)` is diffusers' `__init__` + `set_timesteps(T)`: it validates a
 * `scheduler_config.json` object and precomputes, per step index `i` (0 = the noisiest step),
 * the timestep `t_i`, `ᾱ(t_i)` and the `ᾱ` of the step it leads to. `step(eps, i, x)` then depends
 * only on its arguments and that table: there is no step counter, so any rank may replay any step.
 *
 * Precision follows diffusers on the CPU: betas, `ᾱ` and every operation of `step` are float32
 * (each intermediate rounded with `Math.fround`, as torch does elementwise), `ᾱ = cumprod(1 - β)`
 * accumulates in double like torch's CPU cumprod, and timesteps round half to even like `np.round`.
 *
 * @module
 */

import { checkStepArgs, ConfigFields, describe } from "./_config.ts";
import { roundHalfEven, torchCumprodF32, torchLinspaceF32 } from "./_f32.ts";

/** diffusers' `beta_schedule` values that DDIM supports. */
export type BetaSchedule = "linear" | "scaled_linear" | "squaredcos_cap_v2";
/** What the denoiser predicts: the noise ε, the velocity v, or the clean sample x₀. */
export type PredictionType = "epsilon" | "v_prediction" | "sample";
/** How `set_timesteps` spreads T steps over the training timesteps (Lin et al. 2023, Table 2). */
export type TimestepSpacing = "leading" | "trailing" | "linspace";

/**
 * A validated DDIM config, with diffusers' field names. Missing fields take diffusers' defaults;
 * fields DDIM does not use at `eta = 0` (`_class_name`, `dynamic_thresholding_ratio`,
 * `sample_max_value`, `skip_prk_steps`, ...) are ignored.
 */
export interface DdimConfig {
  /** Number of training timesteps N. @default 1000 */
  readonly num_train_timesteps: number;
  /** First beta of the `linear` / `scaled_linear` schedules. @default 0.0001 */
  readonly beta_start: number;
  /** Last beta of the `linear` / `scaled_linear` schedules. @default 0.02 */
  readonly beta_end: number;
  /** Beta schedule; ignored when `trained_betas` is given. @default "linear" */
  readonly beta_schedule: BetaSchedule;
  /** Explicit betas (length `num_train_timesteps`), or null. @default null */
  readonly trained_betas: readonly number[] | null;
  /** What the model predicts. @default "epsilon" */
  readonly prediction_type: PredictionType;
  /** Clip the predicted x₀ to ±`clip_sample_range`. @default true */
  readonly clip_sample: boolean;
  /** Bound used by `clip_sample`. @default 1.0 */
  readonly clip_sample_range: number;
  /** Use ᾱ = 1 after the last step (true) or ᾱ of timestep 0 (false). @default true */
  readonly set_alpha_to_one: boolean;
  /** Added to every timestep with `leading` spacing. @default 0 */
  readonly steps_offset: number;
  /** Timestep spacing. @default "leading" */
  readonly timestep_spacing: TimestepSpacing;
  /** Dynamic thresholding; must be false (not supported). @default false */
  readonly thresholding: false;
  /** Rescale betas to zero terminal SNR (Lin et al. 2023, Algorithm 1). @default false */
  readonly rescale_betas_zero_snr: boolean;
}

/**
 * The per-step tables of one DDIM schedule and its pure step. Frozen; its typed arrays must be
 * treated as read-only.
 */
export interface DdimTable {
  /** The validated config the table was built from. */
  readonly config: DdimConfig;
  /** Number of inference steps T. */
  readonly numInferenceSteps: number;
  /** [T] training timestep t_i of step i, descending (what the denoiser is called with). */
  readonly timesteps: Int32Array;
  /** [T] t_i − N // T, as diffusers computes it; negative means "after the last step". */
  readonly prevTimesteps: Int32Array;
  /** [T] ᾱ(t_i), float32 values. */
  readonly alphaBar: Float64Array;
  /** [T] ᾱ(t_i − N // T), or the final ᾱ when that is negative; float32 values. */
  readonly alphaBarPrev: Float64Array;
  /** [N] ᾱ of every training timestep (diffusers' `alphas_cumprod`), float32 values. */
  readonly alphasCumprod: Float64Array;
  /** ᾱ used after the last step: 1, or ᾱ(0) when `set_alpha_to_one` is false. */
  readonly finalAlphaCumprod: number;
  /** Standard deviation of the initial noise (diffusers' `init_noise_sigma`): 1 for DDIM. */
  readonly initNoiseSigma: number;
  /**
   * One deterministic DDIM step (eta = 0) from x_{t_i} to x_{t_{i+1}}.
   *
   * @param eps [L] the model output at (x, t_i): ε, v or x₀ according to `prediction_type`.
   * @param i Step index, 0 ≤ i < T.
   * @param x [L] the current sample x_{t_i}.
   * @param out [L] optional destination; may alias `x` or `eps`.
   * @returns `out`, or a new Float32Array, holding x_{t_{i+1}}.
   */
  step(eps: Float32Array, i: number, x: Float32Array, out?: Float32Array): Float32Array;
}

const BETA_SCHEDULES: readonly BetaSchedule[] = ["linear", "scaled_linear", "squaredcos_cap_v2"];
const PREDICTION_TYPES: readonly PredictionType[] = ["epsilon", "v_prediction", "sample"];
const SPACINGS: readonly TimestepSpacing[] = ["leading", "trailing", "linspace"];

// From diffusers' betas_for_alpha_bar (the "squaredcos_cap_v2" / Glide cosine schedule).
const COSINE_MAX_BETA = 0.999;
const COSINE_S = 0.008;

const CONFIG_ACTION = "Cannot build DDIM tables";
/**
 * The most training timesteps a config may declare: real models use 1000, and the tables hold
 * one float per timestep, so a corrupt value must not allocate gigabytes.
 */
const MAX_TRAIN_TIMESTEPS = 100_000;
const STEP_ACTION = "Cannot take a DDIM step";

/**
 * Validate a diffusers `scheduler_config.json` object for DDIM and fill in diffusers' defaults.
 *
 * @param raw The parsed JSON object.
 * @returns The validated config.
 * @throws {TypeError} If `raw` is not an object or a field has the wrong type.
 * @throws {RangeError} If a field has a value outside its allowed set or range (including
 *   `thresholding: true`, which is not supported).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseDdimConfig } from "./ddim.ts";
 * const c = parseDdimConfig({ beta_schedule: "scaled_linear", steps_offset: 1 });
 * assert.ok(c.num_train_timesteps === 1000 && c.prediction_type === "epsilon");
 * ```
 */
export function parseDdimConfig(raw: unknown): DdimConfig {
  const fields = ConfigFields.of(raw, CONFIG_ACTION);
  const numTrain = fields.integer("num_train_timesteps", 1000, 1, MAX_TRAIN_TIMESTEPS);
  const betaStart = fields.number("beta_start", 0.0001, 0, 1);
  const betaEnd = fields.number("beta_end", 0.02, 0, 1);
  const betaSchedule = fields.literal("beta_schedule", BETA_SCHEDULES, "linear");
  const trainedBetas = trainedBetasField(fields.obj, numTrain);
  const predictionType = fields.literal("prediction_type", PREDICTION_TYPES, "epsilon");
  const clipSample = fields.boolean("clip_sample", true);
  const clipSampleRange = fields.number("clip_sample_range", 1.0, 0, Infinity, true);
  const setAlphaToOne = fields.boolean("set_alpha_to_one", true);
  const stepsOffset = fields.integer("steps_offset", 0, 0, MAX_TRAIN_TIMESTEPS);
  const spacing = fields.literal("timestep_spacing", SPACINGS, "leading");
  const thresholding = fields.boolean("thresholding", false);
  if (thresholding) {
    throw new RangeError(
      `${CONFIG_ACTION} as 'thresholding' must be false (dynamic thresholding is not supported): current value is true`,
    );
  }
  const rescale = fields.boolean("rescale_betas_zero_snr", false);
  return Object.freeze({
    num_train_timesteps: numTrain,
    beta_start: betaStart,
    beta_end: betaEnd,
    beta_schedule: betaSchedule,
    trained_betas: trainedBetas,
    prediction_type: predictionType,
    clip_sample: clipSample,
    clip_sample_range: clipSampleRange,
    set_alpha_to_one: setAlphaToOne,
    steps_offset: stepsOffset,
    timestep_spacing: spacing,
    thresholding: false,
    rescale_betas_zero_snr: rescale,
  });
}

/**
 * Build the DDIM tables for T inference steps: diffusers' `DDIMScheduler(**config)` followed by
 * `set_timesteps(T)`.
 *
 * @param config A diffusers `scheduler_config.json` object (validated by
 *   {@linkcode parseDdimConfig}) or an already validated {@linkcode DdimConfig}.
 * @param T Number of inference steps, 1 ≤ T ≤ `num_train_timesteps`.
 * @returns The frozen table with its pure `step`.
 * @throws {TypeError | RangeError} For an invalid config or T, or a schedule diffusers would get
 *   wrong (a timestep outside 0..N−1, or `trailing` spacing where numpy's `arange` yields T+1
 *   timesteps, e.g. N = 1000, T = 61).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ddim } from "./ddim.ts";
 * const table = ddim({
 *   beta_schedule: "scaled_linear", beta_start: 0.0015, beta_end: 0.0195,
 *   set_alpha_to_one: false, steps_offset: 1, clip_sample: false,
 * }, 200);
 * assert.ok(table.timesteps[0] === 996 && table.timesteps[199] === 1);
 * const x = new Float32Array(4).fill(1);
 * const next = table.step(new Float32Array(4), 0, x);
 * assert.ok(next.length === 4);
 * ```
 */
export function ddim(config: unknown, T: number): DdimTable {
  const cfg = parseDdimConfig(config);
  const N = cfg.num_train_timesteps;
  if (typeof T !== "number") {
    throw new TypeError(
      `${CONFIG_ACTION} as 'T' must be a number: current value is ${describe(T)}`,
    );
  }
  if (!Number.isInteger(T) || T < 1 || T > N) {
    throw new RangeError(
      `${CONFIG_ACTION} as 'T' must be an integer in 1..${N} (num_train_timesteps): current value is ${T}`,
    );
  }

  // __init__: betas, then alphas_cumprod, all float32 (values held in doubles).
  const betas = makeBetas(cfg);
  const alphasCumprod = torchCumprodF32(betas.map((b) => Math.fround(1 - b)));
  const finalAlphaCumprod = cfg.set_alpha_to_one ? 1 : alphasCumprod[0]!;

  // set_timesteps(T)
  const timesteps = spacedTimesteps(
    cfg.timestep_spacing,
    N,
    T,
    cfg.steps_offset,
    CONFIG_ACTION,
  );
  const stepRatio = Math.floor(N / T); // step() uses N // T even for trailing/linspace spacing
  const prevTimesteps = new Int32Array(T);
  const alphaBar = new Float64Array(T);
  const alphaBarPrev = new Float64Array(T);
  for (let i = 0; i < T; i++) {
    const t = timesteps[i]!;
    if (t < 0 || t >= N) {
      throw new RangeError(
        `${CONFIG_ACTION} as timestep ${i} must lie in 0..${N - 1}: current value is ${t} ` +
          `(timestep_spacing ${cfg.timestep_spacing}, steps_offset ${cfg.steps_offset}, T ${T})`,
      );
    }
    const prev = t - stepRatio;
    prevTimesteps[i] = prev;
    alphaBar[i] = alphasCumprod[t]!;
    alphaBarPrev[i] = prev >= 0 ? alphasCumprod[prev]! : finalAlphaCumprod;
  }

  const clipRange = Math.fround(cfg.clip_sample_range);
  const prediction = cfg.prediction_type;
  const clip = cfg.clip_sample;
  const f = Math.fround;

  // Notation (variable -> DDIM paper, eq. 12 and 16):
  //   eps          -> ε_θ(x_t, t), the model output (or v, or x₀, per prediction_type)
  //   a, aPrev     -> α_t, α_{t−1} (the paper's α is diffusers' ᾱ = alphas_cumprod)
  //   x0           -> f_θ(x_t, t), the "predicted x₀"
  //   sigma        -> σ_t(η), zero here since η = 0
  //   dir          -> √(1 − α_{t−1} − σ_t²), the "direction pointing to x_t" coefficient
  //   out          -> x_{t−1}
  function step(eps: Float32Array, i: number, x: Float32Array, out?: Float32Array): Float32Array {
    checkStepArgs(STEP_ACTION, "eps", eps, i, x, out, T);
    const dst = out ?? new Float32Array(x.length);

    // 1. get previous step value (= t − N // T), precomputed in the table
    // 2. compute alphas, betas (float32, like torch's 0-d tensors)
    const a = alphaBar[i]!;
    const aPrev = alphaBarPrev[i]!;
    const sqrtA = f(Math.sqrt(a));
    const sqrtB = f(Math.sqrt(f(1 - a))); // √β_prod_t = √(1 − α_t)
    const sqrtAPrev = f(Math.sqrt(aPrev));
    // 5. compute variance σ_t(η) (eq. 16): η = 0, so σ_t = 0 (hoisted: it does not depend on x)
    const sigma = 0;
    // 6. coefficient of the "direction pointing to x_t" (eq. 12), hoisted likewise
    const dir = f(Math.sqrt(f(f(1 - aPrev) - sigma * sigma)));

    for (let k = 0; k < dst.length; k++) {
      const e = eps[k]!;
      const xk = x[k]!;
      // 3. compute predicted original sample x₀ and predicted noise ε (eq. 12)
      let x0: number;
      let pe: number;
      if (prediction === "epsilon") {
        x0 = f(f(xk - f(sqrtB * e)) / sqrtA);
        pe = e;
      } else if (prediction === "v_prediction") {
        x0 = f(f(sqrtA * xk) - f(sqrtB * e));
        pe = f(f(sqrtA * e) + f(sqrtB * xk));
      } else {
        x0 = e;
        pe = f(f(xk - f(sqrtA * x0)) / sqrtB);
      }
      // 4. clip "predicted x₀"
      if (clip) x0 = x0 < -clipRange ? -clipRange : x0 > clipRange ? clipRange : x0;
      // 7. compute x_{t−1} = √α_{t−1} · x₀ + √(1 − α_{t−1} − σ_t²) · ε (eq. 12, no noise term)
      dst[k] = f(f(sqrtAPrev * x0) + f(dir * pe));
    }
    return dst;
  }

  return Object.freeze({
    config: cfg,
    numInferenceSteps: T,
    timesteps,
    prevTimesteps,
    alphaBar,
    alphaBarPrev,
    alphasCumprod,
    finalAlphaCumprod,
    initNoiseSigma: 1,
    step,
  });
}

/** Betas as diffusers' `__init__` makes them: float32 values in a Float64Array. */
function makeBetas(cfg: DdimConfig): Float64Array {
  const N = cfg.num_train_timesteps;
  let betas: Float64Array;
  if (cfg.trained_betas !== null) {
    betas = Float64Array.from(cfg.trained_betas, (b) => Math.fround(b));
  } else if (cfg.beta_schedule === "linear") {
    betas = torchLinspaceF32(cfg.beta_start, cfg.beta_end, N);
  } else if (cfg.beta_schedule === "scaled_linear") {
    // linspace(√β0, √β1, N) ** 2, in float32
    const roots = torchLinspaceF32(Math.sqrt(cfg.beta_start), Math.sqrt(cfg.beta_end), N);
    betas = roots.map((r) => Math.fround(r * r));
  } else {
    betas = cosineBetas(N);
  }
  return cfg.rescale_betas_zero_snr ? rescaleZeroTerminalSnr(betas) : betas;
}

/**
 * diffusers' `betas_for_alpha_bar(N)` with the cosine transform (Nichol & Dhariwal 2021): computed
 * in double, then stored as float32.
 */
function cosineBetas(N: number): Float64Array {
  const alphaBarFn = (t: number) => {
    const c = Math.cos((((t + COSINE_S) / (1 + COSINE_S)) * Math.PI) / 2);
    return c * c;
  };
  const betas = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    const t1 = i / N;
    const t2 = (i + 1) / N;
    betas[i] = Math.fround(Math.min(1 - alphaBarFn(t2) / alphaBarFn(t1), COSINE_MAX_BETA));
  }
  return betas;
}

/**
 * diffusers' `rescale_zero_terminal_snr` (Lin et al. 2023, Algorithm 1), float32 throughout:
 * shift √ᾱ so the last is 0, scale so the first is unchanged, and convert back to betas.
 */
function rescaleZeroTerminalSnr(betas: Float64Array): Float64Array {
  const f = Math.fround;
  const N = betas.length;
  const alphasCumprod = torchCumprodF32(betas.map((b) => f(1 - b)));
  const sqrtAb = alphasCumprod.map((a) => f(Math.sqrt(a)));
  const s0 = sqrtAb[0]!;
  const sT = sqrtAb[N - 1]!;
  const scale = f(s0 / f(s0 - sT));
  const alphasBar = sqrtAb.map((s) => {
    const r = f(f(s - sT) * scale);
    return f(r * r);
  });
  const out = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    const alpha = i === 0 ? alphasBar[0]! : f(alphasBar[i]! / alphasBar[i - 1]!);
    out[i] = f(1 - alpha);
  }
  return out;
}

/**
 * diffusers' `set_timesteps` spacing (shared by `DDIMScheduler` and `CogVideoXDDIMScheduler`), with
 * numpy's arange/linspace arithmetic and rounding: T training timesteps of N, descending.
 *
 * @param action starts the message of the RangeError for a count trailing spacing cannot give
 * @throws {RangeError} when numpy's `arange` gives trailing spacing T + 1 timesteps (e.g. N = 1000,
 *   T = 61), which diffusers would run
 */
export function spacedTimesteps(
  spacing: TimestepSpacing,
  N: number,
  T: number,
  stepsOffset: number,
  action: string,
): Int32Array {
  const ts = new Int32Array(T);
  if (spacing === "leading") {
    // (arange(T) * (N // T)).round()[::-1] + steps_offset
    const ratio = Math.floor(N / T);
    for (let i = 0; i < T; i++) ts[i] = (T - 1 - i) * ratio + stepsOffset;
  } else if (spacing === "linspace") {
    // linspace(0, N - 1, T).round()[::-1]; numpy: y_k = k * step (+ 0), last = N - 1
    const div = T - 1;
    const step = div > 0 ? (N - 1) / div : NaN;
    for (let k = 0; k < T; k++) {
      let y: number;
      if (div === 0) y = 0;
      else if (k === T - 1) y = N - 1;
      else if (step === 0) y = (k / div) * (N - 1);
      else y = k * step;
      ts[T - 1 - k] = roundHalfEven(y);
    }
  } else {
    // round(arange(N, 0, -N / T)) - 1, with numpy's arange: length ceil((0 - N) / step),
    // values v0 = N, v1 = N + step, v_k = v0 + k * (v1 - v0).
    const step = -(N / T);
    const length = Math.ceil((0 - N) / step);
    if (length !== T) {
      throw new RangeError(
        `${action} as trailing spacing with T = ${T} and num_train_timesteps = ${N} ` +
          `gives ${length} timesteps in diffusers (numpy arange rounding): choose another T or spacing`,
      );
    }
    const v1 = N + step;
    const delta = v1 - N;
    for (let k = 0; k < T; k++) {
      const v = k === 0 ? N : k === 1 ? v1 : N + k * delta;
      ts[k] = roundHalfEven(v) - 1;
    }
  }
  return ts;
}

function trainedBetasField(
  obj: Readonly<Record<string, unknown>>,
  numTrain: number,
): readonly number[] | null {
  const v = obj["trained_betas"];
  if (v === undefined || v === null) return null;
  if (!Array.isArray(v)) {
    throw new TypeError(
      `${CONFIG_ACTION} as 'trained_betas' must be an array of numbers or null: current value is ${
        describe(v)
      }`,
    );
  }
  if (v.length !== numTrain) {
    throw new RangeError(
      `${CONFIG_ACTION} as 'trained_betas' must have num_train_timesteps (${numTrain}) entries: current length is ${v.length}`,
    );
  }
  v.forEach((b: unknown, k: number) => {
    if (typeof b !== "number" || !Number.isFinite(b) || b < 0 || b >= 1) {
      throw new RangeError(
        `${CONFIG_ACTION} as 'trained_betas' must hold finite numbers in [0, 1): entry ${k} is ${
          describe(b)
        }`,
      );
    }
  });
  return Object.freeze([...(v as number[])]);
}
