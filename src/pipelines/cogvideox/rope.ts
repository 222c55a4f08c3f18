/**
 * CogVideoX-5b's rotary position tables, as `CogVideoXPipeline._prepare_rotary_positional_embeddings`
 * computes them for CogVideoX 1.0 (`get_resize_crop_region_for_grid`, then diffusers'
 * `get_3d_rotary_pos_embed` with `grid_type="linspace"` and θ = 10000; models/README.md, "Rotary
 * tables (5b)"). The transformer graph takes them as its `freqs_cos` and `freqs_sin` inputs.
 *
 * diffusers computes in float32: the positions with `torch.linspace`, the inverse frequencies
 * `1 / 10000^(2k/d)`, the angles `pos · inv` and their cosines and sines, each rounded to float32.
 * This port rounds at the same places (the angle's rounding matters at real sizes: 44 · inv loses
 * up to 2.6e-6 in float32), so it agrees with diffusers to about one float32 ulp, the accuracy of
 * torch's vectorised `pow`, `cos` and `sin`.
 *
 * @module
 */

import { torchLinspaceF32 } from "../../schedulers/_f32.ts";

/** The transformer and VAE numbers the tables depend on (manifest `config`). */
export interface RotaryConfig {
  /** The transformer's attention head width D: the tables' width. */
  readonly attentionHeadDim: number;
  /** Spatial patch size p. */
  readonly patchSize: number;
  /** VAE spatial factor (8). */
  readonly vaeScaleFactorSpatial: number;
  /** The transformer's sample height and width in latent units (60, 90): the base grid. */
  readonly sampleHeight: number;
  readonly sampleWidth: number;
}

/** `freqs_cos` and `freqs_sin`, [rows, D] float32 each, rows = F'·gh·gw. */
export interface RotaryTables {
  readonly cos: Float32Array<ArrayBuffer>;
  readonly sin: Float32Array<ArrayBuffer>;
  /** [F'·gh·gw, D]. */
  readonly dims: readonly [number, number];
}

/** Python's `round` of a double: half to even. */
function pyRound(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  return d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1;
}

/**
 * `get_resize_crop_region_for_grid((gh, gw), bw, bh)`: the patch grid fitted into the base grid,
 * keeping its aspect: ((top, left), (bottom, right)).
 */
export function resizeCropRegion(
  gh: number,
  gw: number,
  baseWidth: number,
  baseHeight: number,
): { top: number; left: number; bottom: number; right: number } {
  let rh: number;
  let rw: number;
  if (gh / gw > baseHeight / baseWidth) {
    rh = baseHeight;
    rw = pyRound(baseHeight / gh * gw);
  } else {
    rw = baseWidth;
    rh = pyRound(baseWidth / gw * gh);
  }
  const top = pyRound((baseHeight - rh) / 2);
  const left = pyRound((baseWidth - rw) / 2);
  return { top, left, bottom: top + rh, right: left + rw };
}

/** `get_1d_rotary_pos_embed(dim, pos, use_real=True)`: cos and sin [n, dim], columns doubled. */
function axis(dim: number, pos: Float64Array): { cos: Float64Array; sin: Float64Array } {
  const f = Math.fround;
  const half = dim / 2;
  const inv = new Float64Array(half);
  for (let k = 0; k < half; k++) inv[k] = f(1 / f(Math.pow(10000, f((2 * k) / dim))));
  const cos = new Float64Array(pos.length * dim);
  const sin = new Float64Array(pos.length * dim);
  for (let n = 0; n < pos.length; n++) {
    for (let k = 0; k < half; k++) {
      const angle = f(pos[n]! * inv[k]!);
      const c = f(Math.cos(angle));
      const s = f(Math.sin(angle));
      cos[n * dim + 2 * k] = c;
      cos[n * dim + 2 * k + 1] = c;
      sin[n * dim + 2 * k] = s;
      sin[n * dim + 2 * k + 1] = s;
    }
  }
  return { cos, sin };
}

/**
 * The rotary tables for a video of `latentFrames` latent frames at `height` x `width` pixels.
 *
 * @throws {RangeError} when the head width cannot be split into the t/h/w parts (D/4, 3D/8, 3D/8,
 *   each even) or the video has no patch
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { rotaryTables } from "./rope.ts";
 * const config = {
 *   attentionHeadDim: 16, patchSize: 2, vaeScaleFactorSpatial: 8, sampleHeight: 4, sampleWidth: 6,
 * };
 * const { cos, dims } = rotaryTables(config, 3, 32, 48);
 * assert.deepEqual(dims, [18, 16]); // 3 frames of 2 x 3 patches
 * assert.equal(cos[0], 1); // position 0 on every axis
 * ```
 */
export function rotaryTables(
  config: RotaryConfig,
  latentFrames: number,
  height: number,
  width: number,
): RotaryTables {
  const D = config.attentionHeadDim;
  const dt = Math.floor(D / 4);
  const dh = Math.floor(D / 8) * 3;
  const dw = dh;
  if (dt % 2 !== 0 || dh % 2 !== 0 || dt + dh + dw !== D) {
    throw new RangeError(
      `Cannot compute rotary tables as the head width ${D} must split into D/4 + 3D/8 + 3D/8 even parts (a multiple of 16)`,
    );
  }
  const p = config.patchSize;
  const gh = Math.floor(height / (config.vaeScaleFactorSpatial * p));
  const gw = Math.floor(width / (config.vaeScaleFactorSpatial * p));
  const T = latentFrames;
  if (gh < 1 || gw < 1 || T < 1) {
    throw new RangeError(
      `Cannot compute rotary tables for ${T} latent frames of ${width}x${height}: no patch`,
    );
  }
  const baseWidth = Math.floor(config.sampleWidth / p);
  const baseHeight = Math.floor(config.sampleHeight / p);
  const crop = resizeCropRegion(gh, gw, baseWidth, baseHeight);
  const t = axis(dt, torchLinspaceF32(0, (T * (T - 1)) / T, T));
  const h = axis(dh, torchLinspaceF32(crop.top, (crop.bottom * (gh - 1)) / gh, gh));
  const w = axis(dw, torchLinspaceF32(crop.left, (crop.right * (gw - 1)) / gw, gw));
  const rows = T * gh * gw;
  const cos = new Float32Array(rows * D);
  const sin = new Float32Array(rows * D);
  for (let f = 0; f < T; f++) {
    for (let i = 0; i < gh; i++) {
      for (let j = 0; j < gw; j++) {
        const at = ((f * gh + i) * gw + j) * D;
        cos.set(t.cos.subarray(f * dt, (f + 1) * dt), at);
        cos.set(h.cos.subarray(i * dh, (i + 1) * dh), at + dt);
        cos.set(w.cos.subarray(j * dw, (j + 1) * dw), at + dt + dh);
        sin.set(t.sin.subarray(f * dt, (f + 1) * dt), at);
        sin.set(h.sin.subarray(i * dh, (i + 1) * dh), at + dt);
        sin.set(w.sin.subarray(j * dw, (j + 1) * dw), at + dt + dh);
      }
    }
  }
  return { cos, sin, dims: [rows, D] };
}
