/**
 * Diffusion schedulers as plain tables plus a pure `step(eps, i, x)`.
 *
 * @module
 */

export { ddim, parseDdimConfig } from "./ddim.ts";
export type {
  BetaSchedule,
  DdimConfig,
  DdimTable,
  PredictionType,
  TimestepSpacing,
} from "./ddim.ts";
export { euler, parseEulerConfig } from "./euler.ts";
export type { EulerConfig, EulerSpacing, EulerTable } from "./euler.ts";
export {
  cogvideoxAlphasCumprod,
  cogvideoxDdim,
  parseCogVideoXDdimConfig,
} from "./cogvideox_ddim.ts";
export type {
  CogVideoXDdimConfig,
  CogVideoXDdimOptions,
  CogVideoXDdimTable,
  SampleType,
} from "./cogvideox_ddim.ts";
