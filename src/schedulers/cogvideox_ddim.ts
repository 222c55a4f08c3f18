/**
 * diffusers' `CogVideoXDDIMScheduler` (`schedulers/scheduling_ddim_cogvideox.py`, 0.42.1) as a
 * table plus a pure step: the DDIM update in the form CogVideoX uses, with v-prediction, the SD3
 * SNR shift `ᾱ / (s + (1 − s)·ᾱ)`, the zero-terminal-SNR rescale and diffusers' previous timestep
 * `t − N // T`, kept exactly: with trailing spacing and a T that does not divide N it is not the
 * next timestep (T = 7: 999 → 857 although the next step runs at 856). `step` ignores `eta`, as
 * diffusers does.
 *
 * `cogvideoxDdim(config, T)` is `__init__` + `set_timesteps(T)`; `step(v, i, x)` depends only on its
 * arguments and that table, so any ParaStep rank may replay any step.
 *
 * Precision follows diffusers on the CPU: with `scaled_linear` betas every schedule value is a
 * float64 (torch's `linspace` in float64 with fused multiply-adds, `cumprod`, the shift and the
 * rescale), the step's coefficients are float64 0-d tensors, and the step's tensor operations are
 * float32, each coefficient rounded to float32 first. One difference: torch's float64 `sqrt` on
 * arrays of this size (MKL's vectorised one, on the AVX-512 build host) is not correctly rounded and
 * ours is, so 14 of the 1000 `alphas_cumprod` differ from diffusers' in the last bits (relative
 * ≤ 7e-15); every float32 step coefficient, and every step output, is bit-exact against the fixtures
 * (tests/fixtures/cogvideox_ddim).
 *
 * Half-precision pipelines: diffusers multiplies float16/bfloat16 latents by the coefficients in
 * that type (the product rounded to it) and everything else in float32, then casts the new latents
 * to the type (`latents.to(prompt_embeds.dtype)`); {@linkcode CogVideoXDdimOptions.sample} does the
 * same, including that final cast.
 *
 * @module
 */

import { checkStepArgs, ConfigFields } from "./_config.ts";
import { torchLinspaceF64 } from "./_f64.ts";
import { spacedTimesteps, type TimestepSpacing } from "./ddim.ts";

/** A validated CogVideoXDDIMScheduler config, with diffusers' field names. */
export interface CogVideoXDdimConfig {
  /** Training timesteps N. @default 1000 */
  readonly num_train_timesteps: number;
  /** @default 0.00085 */
  readonly beta_start: number;
  /** @default 0.012 */
  readonly beta_end: number;
  /** Only `scaled_linear` (what every CogVideoX checkpoint uses) is implemented. */
  readonly beta_schedule: "scaled_linear";
  /** Only `v_prediction` (CogVideoX's transformers predict v) is implemented. */
  readonly prediction_type: "v_prediction";
  /** ᾱ after the last step: 1 (true) or ᾱ(0). @default true */
  readonly set_alpha_to_one: boolean;
  /** Added to the timesteps with `leading` spacing. @default 0 */
  readonly steps_offset: number;
  /** @default "leading" (the CogVideoX checkpoints say "trailing") */
  readonly timestep_spacing: TimestepSpacing;
  /** Rescale √ᾱ to zero terminal SNR (Lin et al. 2023, Algorithm 1). @default false */
  readonly rescale_betas_zero_snr: boolean;
  /** s of the SNR shift ᾱ / (s + (1 − s)·ᾱ): 3 for CogVideoX-2b, 1 (none) for -5b. @default 3 */
  readonly snr_shift_scale: number;
}

/** The float type the pipeline keeps its latents in (the transformer's). */
export type SampleType = "float32" | "float16" | "bfloat16";

/** Options for {@linkcode cogvideoxDdim}. */
export interface CogVideoXDdimOptions {
  /** The latents' type: products with the latents and the step's result are rounded to it. @default "float32" */
  readonly sample?: SampleType;
}

/** The per-step tables of one schedule and its pure step. Frozen; treat its arrays as read-only. */
export interface CogVideoXDdimTable {
  readonly config: CogVideoXDdimConfig;
  /** Inference steps T. */
  readonly numInferenceSteps: number;
  /** [T] training timestep t_i of step i, descending (the transformer's `timestep`). */
  readonly timesteps: Int32Array;
  /** [T] t_i − N // T, as diffusers' `step` computes it; negative: the final ᾱ is used. */
  readonly prevTimesteps: Int32Array;
  /** [N] diffusers' `alphas_cumprod` after the shift and the rescale (float64). */
  readonly alphasCumprod: Float64Array;
  /** ᾱ after the last step: 1, or ᾱ(0) when `set_alpha_to_one` is false. */
  readonly finalAlphaCumprod: number;
  /** diffusers' `init_noise_sigma`: 1. */
  readonly initNoiseSigma: number;
  /** The latents' type the step rounds to. */
  readonly sample: SampleType;
  /**
   * One step x_{t_i} → x_{t_i − N//T} (eta = 0):
   * `x0 = √ᾱ_t·x − √(1 − ᾱ_t)·v`, `x' = a_t·x + b_t·x0` with `a_t = √((1 − ᾱ_p)/(1 − ᾱ_t))`,
   * `b_t = √ᾱ_p − √ᾱ_t·a_t`.
   *
   * @param v [L] the (guided) v-prediction at (x, t_i), float32
   * @param i step index, 0 ≤ i < T
   * @param x [L] the current latents
   * @param out [L] optional destination; may alias `x` or `v`
   * @returns `out`, or a new Float32Array, holding the next latents (rounded to `sample`)
   */
  step(v: Float32Array, i: number, x: Float32Array, out?: Float32Array): Float32Array;
}

const ACTION = "Cannot build the CogVideoX DDIM tables";
const STEP_ACTION = "Cannot take a CogVideoX DDIM step";
/** Real models use 1000; a corrupt value must not allocate gigabytes. */
const MAX_TRAIN_TIMESTEPS = 100_000;

/**
 * Validates a `scheduler_config.json` object for CogVideoXDDIMScheduler and fills in diffusers'
 * defaults. Fields the step ignores (`clip_sample`, `clip_sample_range`, `sample_max_value`,
 * `_class_name`, ...) are ignored here too.
 *
 * @throws {TypeError} for a field of the wrong type
 * @throws {RangeError} for a value out of range or a variant that is not implemented
 */
export function parseCogVideoXDdimConfig(raw: unknown): CogVideoXDdimConfig {
  const fields = ConfigFields.of(raw, ACTION);
  const className = fields.obj["_class_name"];
  if (className !== undefined && className !== "CogVideoXDDIMScheduler") {
    throw new RangeError(
      `${ACTION} as '_class_name' must be CogVideoXDDIMScheduler: current value is ${
        String(className)
      } (export the checkpoint with its DDIM scheduler)`,
    );
  }
  const numTrain = fields.integer("num_train_timesteps", 1000, 1, MAX_TRAIN_TIMESTEPS);
  const betaStart = fields.number("beta_start", 0.00085, 0, 1);
  const betaEnd = fields.number("beta_end", 0.012, 0, 1);
  const betaSchedule = fields.literal("beta_schedule", ["scaled_linear"] as const, "scaled_linear");
  const trained = fields.obj["trained_betas"];
  if (trained !== undefined && trained !== null) {
    throw new RangeError(`${ACTION} as 'trained_betas' must be null (not implemented)`);
  }
  const prediction = fields.literal("prediction_type", ["v_prediction"] as const, "v_prediction");
  const spacing = fields.literal(
    "timestep_spacing",
    ["leading", "trailing", "linspace"] as const,
    "leading",
  );
  return Object.freeze({
    num_train_timesteps: numTrain,
    beta_start: betaStart,
    beta_end: betaEnd,
    beta_schedule: betaSchedule,
    prediction_type: prediction,
    set_alpha_to_one: fields.boolean("set_alpha_to_one", true),
    steps_offset: fields.integer("steps_offset", 0, 0, MAX_TRAIN_TIMESTEPS),
    timestep_spacing: spacing,
    rescale_betas_zero_snr: fields.boolean("rescale_betas_zero_snr", false),
    snr_shift_scale: fields.number("snr_shift_scale", 3.0, 0, 1e6, true),
  });
}

/**
 * diffusers' `alphas_cumprod` of a CogVideoX schedule, float64: betas
 * `linspace(√β0, √β1, N)²`, `cumprod(1 − β)`, the SNR shift, and optionally the rescale to zero
 * terminal SNR (on √ᾱ: shift the last to 0, scale the first back, square).
 */
export function cogvideoxAlphasCumprod(cfg: CogVideoXDdimConfig): Float64Array {
  const N = cfg.num_train_timesteps;
  const roots = torchLinspaceF64(Math.sqrt(cfg.beta_start), Math.sqrt(cfg.beta_end), N);
  const alphas = new Float64Array(N);
  let acc = 1;
  for (let i = 0; i < N; i++) {
    acc *= 1 - roots[i]! * roots[i]!;
    alphas[i] = acc;
  }
  const s = cfg.snr_shift_scale;
  for (let i = 0; i < N; i++) alphas[i] = alphas[i]! / (s + (1 - s) * alphas[i]!);
  if (cfg.rescale_betas_zero_snr) {
    const roots = alphas.map(Math.sqrt);
    const first = roots[0]!;
    const last = roots[N - 1]!;
    const scale = first / (first - last);
    for (let i = 0; i < N; i++) {
      const r = (roots[i]! - last) * scale;
      alphas[i] = r * r;
    }
  }
  return alphas;
}

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/** A float32 value rounded to the nearest bfloat16 (ties to even), as torch's cast does. */
export function roundBf16(x: number): number {
  F32[0] = x;
  if (Number.isNaN(F32[0])) return NaN;
  const bits = U32[0]!;
  U32[0] = ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) << 16;
  return F32[0]!;
}

/** The rounding of a value to `type` (float32 values in, exact values of the type out). */
export function rounder(type: SampleType): (x: number) => number {
  return type === "float16" ? Math.f16round : type === "bfloat16" ? roundBf16 : Math.fround;
}

/**
 * The tables for T inference steps: diffusers' `CogVideoXDDIMScheduler(**config)` then
 * `set_timesteps(T)`.
 *
 * @param config a `scheduler_config.json` object (see {@linkcode parseCogVideoXDdimConfig})
 * @param T inference steps, 1 ≤ T ≤ `num_train_timesteps`
 * @throws {TypeError | RangeError} for a bad config or T, or a T that trailing spacing cannot give
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cogvideoxDdim } from "./cogvideox_ddim.ts";
 * const table = cogvideoxDdim({
 *   timestep_spacing: "trailing", prediction_type: "v_prediction", rescale_betas_zero_snr: true,
 * }, 7);
 * assert.deepEqual(Array.from(table.timesteps.subarray(0, 2)), [999, 856]);
 * assert.equal(table.prevTimesteps[0], 857); // t − 1000 // 7, not the next timestep
 * ```
 */
export function cogvideoxDdim(
  config: unknown,
  T: number,
  options: CogVideoXDdimOptions = {},
): CogVideoXDdimTable {
  const cfg = parseCogVideoXDdimConfig(config);
  const N = cfg.num_train_timesteps;
  if (typeof T !== "number" || !Number.isInteger(T) || T < 1 || T > N) {
    throw new RangeError(
      `${ACTION} as 'T' must be an integer in 1..${N} (num_train_timesteps): current value is ${T}`,
    );
  }
  const sample = options.sample ?? "float32";
  const alphasCumprod = cogvideoxAlphasCumprod(cfg);
  const finalAlphaCumprod = cfg.set_alpha_to_one ? 1 : alphasCumprod[0]!;
  const timesteps = spacedTimesteps(cfg.timestep_spacing, N, T, cfg.steps_offset, ACTION);
  const ratio = Math.floor(N / T);
  const prevTimesteps = new Int32Array(T);
  // Per step: √ᾱ_t, √(1 − ᾱ_t), a_t, b_t, each rounded to float32 as torch applies a float64
  // 0-d tensor to a float32 one.
  const coefficients = new Float64Array(4 * T);
  const f = Math.fround;
  for (let i = 0; i < T; i++) {
    const t = timesteps[i]!;
    if (t < 0 || t >= N) {
      throw new RangeError(
        `${ACTION} as timestep ${i} must lie in 0..${N - 1}: current value is ${t} ` +
          `(timestep_spacing ${cfg.timestep_spacing}, steps_offset ${cfg.steps_offset}, T ${T})`,
      );
    }
    const prev = t - ratio;
    prevTimesteps[i] = prev;
    const a = alphasCumprod[t]!;
    const aPrev = prev >= 0 ? alphasCumprod[prev]! : finalAlphaCumprod;
    const at = Math.sqrt((1 - aPrev) / (1 - a));
    const bt = Math.sqrt(aPrev) - Math.sqrt(a) * at;
    coefficients.set([f(Math.sqrt(a)), f(Math.sqrt(1 - a)), f(at), f(bt)], 4 * i);
  }
  const round = rounder(sample);

  function step(v: Float32Array, i: number, x: Float32Array, out?: Float32Array): Float32Array {
    checkStepArgs(STEP_ACTION, "v", v, i, x, out, T);
    const dst = out ?? new Float32Array(x.length);
    const sqrtA = coefficients[4 * i]!;
    const sqrtB = coefficients[4 * i + 1]!;
    const at = coefficients[4 * i + 2]!;
    const bt = coefficients[4 * i + 3]!;
    for (let k = 0; k < dst.length; k++) {
      const xk = x[k]!;
      // Products with the latents are in their type (float32 arithmetic, then rounded to it);
      // the rest is float32 (v is float32 after guidance).
      const x0 = f(round(f(sqrtA * xk)) - f(sqrtB * v[k]!));
      dst[k] = round(f(round(f(at * xk)) + f(bt * x0)));
    }
    return dst;
  }

  return Object.freeze({
    config: cfg,
    numInferenceSteps: T,
    timesteps,
    prevTimesteps,
    alphasCumprod,
    finalAlphaCumprod,
    initNoiseSigma: 1,
    sample,
    step,
  });
}
