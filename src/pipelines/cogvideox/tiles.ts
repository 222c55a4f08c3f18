/**
 * Tiled VAE decode, as diffusers' `AutoencoderKLCogVideoX.tiled_decode` (0.42.1,
 * `models/autoencoders/autoencoder_kl_cogvideox.py`; docs/reference/video-pipelines.md §4.2), which
 * `vae.enable_tiling()` turns on: the latents [1, C, F', h, w] are cut into overlapping tiles of at
 * most `tileLatentMinHeight` x `tileLatentMinWidth` latents, starting every `overlapHeight` rows and
 * `overlapWidth` columns (the last ones smaller); each tile is decoded whole (the frame-batched
 * decoder graph with symbolic height and width); then, tile by tile in row order, the bottom rows of
 * the tile above and the right columns of the tile to the left are blended linearly into its first
 * rows and columns (`blend_v`, `blend_h`, in place, in float32), and each tile is cropped to
 * `rowLimitHeight` x `rowLimitWidth` pixels before the crops are concatenated. The blending changes
 * the pixels, so a tiled video is a different output from an untiled one, as in diffusers.
 *
 * Pure functions: the caller runs the decoder graph on each tile.
 *
 * @module
 */

import { ManifestError } from "../../models/manifest.ts";
import type { ModelFolder } from "../../models/model.ts";

/** The manifest's `vaeTiling`: the VAE's tile sizes and overlaps (`vae.enable_tiling` arguments). */
export interface VaeTiling {
  /** `tile_sample_min_height`: a tile's height in pixels. */
  readonly tileSampleMinHeight: number;
  /** `tile_sample_min_width`: a tile's width in pixels. */
  readonly tileSampleMinWidth: number;
  /** `tile_latent_min_height`: `int(tileSampleMinHeight / vaeScaleFactorSpatial)`. */
  readonly tileLatentMinHeight: number;
  /** `tile_latent_min_width`. */
  readonly tileLatentMinWidth: number;
  /** `tile_overlap_factor_height` (diffusers' default 1/6). */
  readonly tileOverlapFactorHeight: number;
  /** `tile_overlap_factor_width` (diffusers' default 1/5). */
  readonly tileOverlapFactorWidth: number;
}

/** One row or column of tiles: where it starts and how many latents it covers. */
export interface TileSpan {
  /** First latent row (column) of the tile. */
  readonly start: number;
  /** Latent rows (columns) in the tile: `tileLatentMin…` or fewer at the edge. */
  readonly size: number;
}

/** How a latent grid is cut, blended and cropped ({@linkcode tilePlan}). */
export interface TilePlan {
  /** Whether diffusers tiles at all: the latents are wider or taller than one tile. */
  readonly tiled: boolean;
  /** Tile rows (all of h when not tiled). */
  readonly rows: readonly TileSpan[];
  /** Tile columns. */
  readonly cols: readonly TileSpan[];
  /** Pixels blended between vertically adjacent tiles (before clamping to the tiles' heights). */
  readonly blendExtentHeight: number;
  readonly blendExtentWidth: number;
  /** Pixel rows kept of each tile. */
  readonly rowLimitHeight: number;
  readonly rowLimitWidth: number;
  /** The decoded video's height and width in pixels (the crops concatenated). */
  readonly height: number;
  readonly width: number;
}

const TILING_FIELDS = [
  "tileSampleMinHeight",
  "tileSampleMinWidth",
  "tileLatentMinHeight",
  "tileLatentMinWidth",
  "tileOverlapFactorHeight",
  "tileOverlapFactorWidth",
] as const;

/**
 * The manifest's `vaeTiling`, checked (null: the folder has no tiled decode). The latent tile size
 * must be diffusers' `int(tileSampleMin / spatial)`, and the overlaps must give a tile step of at
 * least one latent.
 *
 * @throws {ManifestError} naming the field
 */
export function vaeTiling(model: ModelFolder, spatial: number): VaeTiling | null {
  const raw = model.manifest.raw.vaeTiling;
  if (raw === undefined) return null;
  const fail = (what: string): never => {
    throw new ManifestError(model.manifestFile, `'vaeTiling' ${what}; re-export the model`);
  };
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) fail("must be an object");
  const o = raw as Record<string, unknown>;
  const values = {} as Record<(typeof TILING_FIELDS)[number], number>;
  for (const field of TILING_FIELDS) {
    const v = o[field];
    const factor = field.startsWith("tileOverlap");
    const ok = typeof v === "number" && Number.isFinite(v) &&
      (factor ? v > 0 && v < 1 : Number.isInteger(v) && v >= 1 && v <= 1 << 20);
    if (!ok) {
      fail(
        `field '${field}' must be ${factor ? "a number in (0, 1)" : "a positive integer"}: found ${
          v === undefined ? "missing" : JSON.stringify(v)
        }`,
      );
    }
    values[field] = v as number;
  }
  const t = values as VaeTiling;
  for (
    const [latent, sample] of [["Height", t.tileSampleMinHeight], [
      "Width",
      t.tileSampleMinWidth,
    ]] as const
  ) {
    const want = Math.trunc(sample / spatial);
    if (t[`tileLatentMin${latent}`] !== want) {
      fail(
        `field 'tileLatentMin${latent}' must be int(${sample} / ${spatial}) = ${want}: found ${
          t[`tileLatentMin${latent}`]
        }`,
      );
    }
  }
  const plan = steps(t);
  if (plan.overlapHeight < 1 || plan.overlapWidth < 1) {
    fail("gives tiles that do not advance (an overlap factor too close to 1 for the tile size)");
  }
  return t;
}

/** diffusers' derived numbers (Python's `int()` truncates; JavaScript's doubles round alike). */
function steps(t: VaeTiling) {
  return {
    overlapHeight: Math.trunc(t.tileLatentMinHeight * (1 - t.tileOverlapFactorHeight)),
    overlapWidth: Math.trunc(t.tileLatentMinWidth * (1 - t.tileOverlapFactorWidth)),
    blendExtentHeight: Math.trunc(t.tileSampleMinHeight * t.tileOverlapFactorHeight),
    blendExtentWidth: Math.trunc(t.tileSampleMinWidth * t.tileOverlapFactorWidth),
  };
}

function spans(length: number, step: number, tile: number): TileSpan[] {
  const out: TileSpan[] = [];
  for (let start = 0; start < length; start += step) {
    out.push({ start, size: Math.min(tile, length - start) });
  }
  return out;
}

/**
 * How diffusers cuts latents of `latentHeight` x `latentWidth` (`_decode`: only when wider or
 * taller than one tile; otherwise one tile, the whole grid) and the size of the video it gives
 * (which is the untiled size only when the crops add up: true of diffusers' defaults at 480 x 720
 * and of the tiny model's tiles, not of every tile size).
 *
 * @example diffusers' default tiles for the real VAE at 480 x 720 (60 x 90 latents)
 * ```ts
 * import assert from "node:assert/strict";
 * import { tilePlan } from "./tiles.ts";
 * const plan = tilePlan({
 *   tileSampleMinHeight: 240, tileSampleMinWidth: 360, tileLatentMinHeight: 30,
 *   tileLatentMinWidth: 45, tileOverlapFactorHeight: 1 / 6, tileOverlapFactorWidth: 1 / 5,
 * }, 60, 90, 8);
 * assert.deepEqual(plan.rows.map((t) => t.start), [0, 25, 50]);
 * assert.deepEqual([plan.height, plan.width], [480, 720]);
 * ```
 */
export function tilePlan(
  tiling: VaeTiling,
  latentHeight: number,
  latentWidth: number,
  spatial: number,
): TilePlan {
  const s = steps(tiling);
  const rowLimitHeight = tiling.tileSampleMinHeight - s.blendExtentHeight;
  const rowLimitWidth = tiling.tileSampleMinWidth - s.blendExtentWidth;
  const tiled = latentWidth > tiling.tileLatentMinWidth ||
    latentHeight > tiling.tileLatentMinHeight;
  if (!tiled) {
    return {
      tiled,
      rows: [{ start: 0, size: latentHeight }],
      cols: [{ start: 0, size: latentWidth }],
      blendExtentHeight: s.blendExtentHeight,
      blendExtentWidth: s.blendExtentWidth,
      rowLimitHeight,
      rowLimitWidth,
      height: latentHeight * spatial,
      width: latentWidth * spatial,
    };
  }
  const rows = spans(latentHeight, s.overlapHeight, tiling.tileLatentMinHeight);
  const cols = spans(latentWidth, s.overlapWidth, tiling.tileLatentMinWidth);
  const sum = (list: TileSpan[], limit: number) =>
    list.reduce((a, t) => a + Math.min(limit, t.size * spatial), 0);
  return {
    tiled,
    rows,
    cols,
    blendExtentHeight: s.blendExtentHeight,
    blendExtentWidth: s.blendExtentWidth,
    rowLimitHeight,
    rowLimitWidth,
    height: sum(rows, rowLimitHeight),
    width: sum(cols, rowLimitWidth),
  };
}

/** z[:, :, :, top : top + th, left : left + tw] of latents [1, C, F', h, w], as a new array. */
export function cropLatents(
  z: Float32Array,
  dims: readonly number[],
  row: TileSpan,
  col: TileSpan,
): Float32Array<ArrayBuffer> {
  const [, C, F, h, w] = dims as [number, number, number, number, number];
  const out = new Float32Array(C * F * row.size * col.size);
  let k = 0;
  for (let plane = 0; plane < C * F; plane++) {
    for (let y = 0; y < row.size; y++) {
      const from = (plane * h + row.start + y) * w + col.start;
      out.set(z.subarray(from, from + col.size), k);
      k += col.size;
    }
  }
  return out;
}

/** One decoded tile: `planes` planes (3 channels x F frames) of `height` x `width` pixels. */
export interface DecodedTile {
  readonly data: Float32Array;
  readonly height: number;
  readonly width: number;
}

/**
 * `blend_v(a, b, extent)`: b's first rows become a's last rows faded out plus b's faded in,
 * `a·(1 − y/e) + b·(y/e)` with e = min(a's rows, b's rows, extent), in place on b. The weights are
 * Python floats that torch rounds to float32; each product and the sum are rounded to float32.
 */
export function blendV(a: DecodedTile, b: DecodedTile, planes: number, extent: number): void {
  const e = Math.min(a.height, b.height, extent);
  const W = b.width;
  const f = Math.fround;
  for (let y = 0; y < e; y++) {
    const wa = f(1 - y / e);
    const wb = f(y / e);
    for (let p = 0; p < planes; p++) {
      const ra = (p * a.height + a.height - e + y) * a.width;
      const rb = (p * b.height + y) * W;
      for (let x = 0; x < W; x++) {
        b.data[rb + x] = f(f(a.data[ra + x]! * wa) + f(b.data[rb + x]! * wb));
      }
    }
  }
}

/** `blend_h(a, b, extent)`: the same across columns, in place on b. */
export function blendH(a: DecodedTile, b: DecodedTile, planes: number, extent: number): void {
  const e = Math.min(a.width, b.width, extent);
  const H = b.height;
  const f = Math.fround;
  for (let x = 0; x < e; x++) {
    const wa = f(1 - x / e);
    const wb = f(x / e);
    for (let p = 0; p < planes; p++) {
      for (let y = 0; y < H; y++) {
        const ra = (p * a.height + y) * a.width + a.width - e + x;
        const rb = (p * H + y) * b.width + x;
        b.data[rb] = f(f(a.data[ra]! * wa) + f(b.data[rb]! * wb));
      }
    }
  }
}

/**
 * The second half of `tiled_decode`: blends the decoded tiles (row-major, `tiles[i][j]`, each
 * [1, 3, F, th, tw]) in place in diffusers' order and concatenates their crops into the video
 * [1, 3, F, plan.height, plan.width].
 */
export function blendTiles(
  tiles: readonly (readonly DecodedTile[])[],
  planes: number,
  plan: TilePlan,
): Float32Array<ArrayBuffer> {
  const H = plan.height;
  const W = plan.width;
  const out = new Float32Array(planes * H * W);
  let top = 0;
  tiles.forEach((row, i) => {
    let left = 0;
    let keptRows = 0;
    row.forEach((tile, j) => {
      if (i > 0) blendV(tiles[i - 1]![j]!, tile, planes, plan.blendExtentHeight);
      if (j > 0) blendH(row[j - 1]!, tile, planes, plan.blendExtentWidth);
      const rows = Math.min(plan.rowLimitHeight, tile.height);
      const cols = Math.min(plan.rowLimitWidth, tile.width);
      for (let p = 0; p < planes; p++) {
        for (let y = 0; y < rows; y++) {
          const from = (p * tile.height + y) * tile.width;
          out.set(tile.data.subarray(from, from + cols), (p * H + top + y) * W + left);
        }
      }
      left += cols;
      keptRows = rows;
    });
    top += keptRows;
  });
  return out;
}
