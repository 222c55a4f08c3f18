import assert from "node:assert/strict";
import { expectDtype, readNpy } from "../../../src/io/npy.ts";
import { resolveModel } from "../../../src/models/model.ts";
import { resizeCropRegion, rotaryTables } from "../../../src/pipelines/cogvideox/rope.ts";

const TINY_5B = new URL("../../../models/cogvideox-tiny-5b", import.meta.url).pathname;
const model = resolveModel(TINY_5B);
const c = model.manifest.config as Record<string, number>;
const config = {
  attentionHeadDim: c.attentionHeadDim!,
  patchSize: c.patchSize!,
  vaeScaleFactorSpatial: c.vaeScaleFactorSpatial!,
  sampleHeight: c.sampleHeight!,
  sampleWidth: c.sampleWidth!,
};

/** One float32 ulp at 1: torch's vectorised pow/cos/sin are within about that of ours. */
const TOLERANCE = 2 ** -23;

interface RopeShape {
  dir: string;
  frames: number;
  height: number;
  width: number;
  latentFrames: number;
  gridHeight: number;
  gridWidth: number;
  shape: [number, number];
}

async function compare(dir: string, latentFrames: number, height: number, width: number) {
  const got = rotaryTables(config, latentFrames, height, width);
  const worst = { cos: 0, sin: 0 };
  for (const name of ["cos", "sin"] as const) {
    const want = expectDtype(await readNpy(`${dir}/freqs_${name}.npy`), "float32");
    assert.deepEqual(got.dims, want.shape, `${dir} ${name} shape`);
    for (let k = 0; k < want.data.length; k++) {
      worst[name] = Math.max(worst[name], Math.abs(got[name][k]! - want.data[k]!));
    }
    assert.ok(worst[name] <= TOLERANCE, `${dir} ${name}: max |diff| ${worst[name]}`);
  }
  return worst;
}

Deno.test("rotary tables match diffusers' at every committed shape (integer and fractional grids)", async () => {
  const { shapes } = JSON.parse(
    await Deno.readTextFile(`${TINY_5B}/reference/rope/rope.json`),
  ) as { shapes: RopeShape[] };
  assert.equal(shapes.length, 4);
  const lines: string[] = [];
  for (const s of shapes) {
    const w = await compare(`${TINY_5B}/reference/${s.dir}`, s.latentFrames, s.height, s.width);
    lines.push(`${s.dir} cos ${w.cos.toExponential(1)} sin ${w.sin.toExponential(1)}`);
  }
  // And the tables the pipeline passed in the two 5b reference cases.
  for (const [name, f, h, w] of [["case1", 3, 32, 48], ["case2", 4, 32, 64]] as const) {
    const d = await compare(`${TINY_5B}/reference/${name}`, f, h, w);
    lines.push(`${name} cos ${d.cos.toExponential(1)} sin ${d.sin.toExponential(1)}`);
  }
  console.log(`rotary tables, max |diff| against diffusers: ${lines.join("; ")}`);
});

Deno.test("the crop region follows get_resize_crop_region_for_grid, Python rounding included", () => {
  // Expected values printed by diffusers 0.42.1's own function for the same arguments.
  const cases: [number, number, number, number, [number, number, number, number]][] = [
    [30, 45, 45, 30, [0, 0, 30, 45]], // the real 5b at 480 x 720: the whole base grid
    [40, 45, 45, 30, [0, 6, 30, 40]], // taller: full height, width round(30 / 40 * 45) = 34
    [2, 4, 3, 2, [0, 0, 2, 3]], // the tiny 5b's case 2: height round(1.5) = 2 (half to even)
    [3, 2, 3, 2, [0, 1, 2, 2]],
    [5, 2, 4, 3, [0, 2, 3, 3]], // left round((4 - 1) / 2) = round(1.5) = 2
  ];
  for (const [gh, gw, bw, bh, [top, left, bottom, right]] of cases) {
    assert.deepEqual(resizeCropRegion(gh, gw, bw, bh), { top, left, bottom, right });
  }
});

Deno.test("rotary tables refuse a head width that does not split and a video without a patch", () => {
  assert.throws(
    () => rotaryTables({ ...config, attentionHeadDim: 12 }, 3, 32, 48),
    /head width 12 must split into D\/4 \+ 3D\/8 \+ 3D\/8 even parts/,
  );
  assert.throws(() => rotaryTables(config, 3, 8, 48), /no patch/);
});
