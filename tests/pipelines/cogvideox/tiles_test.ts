import assert from "node:assert/strict";
import {
  blendH,
  blendTiles,
  blendV,
  cropLatents,
  type DecodedTile,
  tilePlan,
  type VaeTiling,
} from "../../../src/pipelines/cogvideox/mod.ts";

/** diffusers' defaults for the real VAE (sample 480 x 720): half the sample size, overlaps 1/6 and 1/5. */
const REAL: VaeTiling = {
  tileSampleMinHeight: 240,
  tileSampleMinWidth: 360,
  tileLatentMinHeight: 30,
  tileLatentMinWidth: 45,
  tileOverlapFactorHeight: 1 / 6,
  tileOverlapFactorWidth: 1 / 5,
};

Deno.test("tilePlan at 480 x 720 with diffusers' default tiles is video-pipelines.md §4.2's 3 x 3 tiles", () => {
  const plan = tilePlan(REAL, 60, 90, 8);
  assert.equal(plan.tiled, true);
  // Tiles start every int(30·5/6) = 25 rows and int(45·0.8) = 36 columns; edge tiles are smaller.
  assert.deepEqual(plan.rows, [{ start: 0, size: 30 }, { start: 25, size: 30 }, {
    start: 50,
    size: 10,
  }]);
  assert.deepEqual(plan.cols, [{ start: 0, size: 45 }, { start: 36, size: 45 }, {
    start: 72,
    size: 18,
  }]);
  // Blended over 40 rows / 72 columns, cropped to 200 x 288 per tile: the crops give 480 x 720.
  assert.deepEqual(
    [plan.blendExtentHeight, plan.blendExtentWidth, plan.rowLimitHeight, plan.rowLimitWidth],
    [40, 72, 200, 288],
  );
  assert.deepEqual([plan.height, plan.width], [480, 720]);
  // No larger than one tile: diffusers decodes whole.
  const small = tilePlan(REAL, 30, 45, 8);
  assert.equal(small.tiled, false);
  assert.deepEqual([small.rows, small.cols], [[{ start: 0, size: 30 }], [{ start: 0, size: 45 }]]);
});

Deno.test("cropLatents takes z[:, :, :, top:top+th, left:left+tw]", () => {
  // [1, C=2, F=1, h=3, w=4], values = their index.
  const z = Float32Array.from({ length: 24 }, (_, k) => k);
  const tile = cropLatents(z, [1, 2, 1, 3, 4], { start: 1, size: 2 }, { start: 2, size: 2 });
  assert.deepEqual(Array.from(tile), [6, 7, 10, 11, 18, 19, 22, 23]);
});

Deno.test("blendV and blendH fade the neighbour's edge into the tile's as diffusers' blend_v/blend_h, in float32", () => {
  // a: 3 rows x 2 columns of 1s; b: 2 rows x 2 columns of 5s; extent 4 clamps to min(3, 2, 4) = 2.
  const a: DecodedTile = { data: new Float32Array(6).fill(1), height: 3, width: 2 };
  const b: DecodedTile = { data: new Float32Array(4).fill(5), height: 2, width: 2 };
  blendV(a, b, 1, 4);
  // y = 0: a's row 1 · 1 + b · 0; y = 1: a's row 2 · 0.5 + b · 0.5.
  assert.deepEqual(Array.from(b.data), [1, 1, 3, 3]);
  // blend_h over 3 columns: weights (1 − x/3, x/3) rounded to float32, each product and sum rounded.
  const left: DecodedTile = {
    data: Float32Array.from([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
    height: 1,
    width: 6,
  };
  const right: DecodedTile = { data: Float32Array.from([0.7, 0.8, 0.9, 1]), height: 1, width: 4 };
  const before = Array.from(right.data);
  blendH(left, right, 1, 3);
  const f = Math.fround;
  const want = [0, 1, 2].map((x) =>
    f(f(left.data[3 + x]! * f(1 - x / 3)) + f(before[x]! * f(x / 3)))
  );
  assert.deepEqual(Array.from(right.data), [...want, before[3]]);
});

Deno.test("blendTiles blends in row-major order, in place, and concatenates the crops", () => {
  // Tiles of 1 plane: 2 x 2 tiles of 2 x 2 pixels, blend extent 1 (so blending copies nothing: the
  // weights at y = 0 are 1 and 0), crop 1 x 1: the result is each tile's top-left pixel.
  const tile = (v: number): DecodedTile => ({
    data: Float32Array.from([v, v + 1, v + 2, v + 3]),
    height: 2,
    width: 2,
  });
  const plan = {
    tiled: true,
    rows: [{ start: 0, size: 1 }, { start: 1, size: 1 }],
    cols: [{ start: 0, size: 1 }, { start: 1, size: 1 }],
    blendExtentHeight: 1,
    blendExtentWidth: 1,
    rowLimitHeight: 1,
    rowLimitWidth: 1,
    height: 2,
    width: 2,
  };
  const tiles = [[tile(0), tile(10)], [tile(20), tile(30)]];
  const out = blendTiles(tiles, 1, plan);
  // With extent 1 a blend copies the neighbour's last row (column): weights 1 − 0/1 and 0/1.
  // (0,1): column 0 := (0,0)'s column 1 → [[1, 11], [3, 13]]; (1,0): row 0 := (0,0)'s row 1 →
  // [[2, 3], [22, 23]]; (1,1): row 0 := the blended (0,1)'s row 1 → [3, 13], then column 0 := the
  // blended (1,0)'s column 1 → [[3, 13], [23, 33]]. The crops are the top-left pixels.
  assert.deepEqual(Array.from(out), [0, 1, 2, 3]);
  assert.deepEqual(Array.from(tiles[1]![1]!.data), [3, 13, 23, 33]);
});
