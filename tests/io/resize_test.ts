import assert from "node:assert/strict";
import {
  antialiasKernel,
  interpolateBicubic,
  resizeLanczos,
  resizeWithAntialiasing,
} from "../../src/io/resize.ts";
import { clipPixelValues, vaeImage } from "../../src/pipelines/svd/preprocess.ts";
import { expectDtype, readNpy } from "../../src/io/npy.ts";
import { assertAllClose, loadJson, loadNpy } from "../fixtures/mod.ts";

const index = (await loadJson("image", "index.json")) as {
  cases: { kind: string; name: string; in: [number, number]; out: [number, number] }[];
};
const LANCZOS = index.cases.filter((c) => c.kind === "lanczos");
const CLIP = index.cases.filter((c) => c.kind === "clip") as unknown as {
  name: string;
  in: [number, number];
  mean: number[];
  std: number[];
}[];

/**
 * The CLIP path against diffusers: torch's convolution and interpolation may sum in another order
 * than ours (and contract to fused multiply-adds), so values agree to a few float32 ulps of the
 * inputs' range rather than bit for bit (measured: 4.8e-7 at most).
 */
const CLIP_TOL = { rtol: 0, atol: 2e-6 } as const;

Deno.test("resizeLanczos equals Pillow's Image.resize(LANCZOS) bit for bit", async () => {
  assert.ok(LANCZOS.length >= 5);
  for (const c of LANCZOS) {
    const src = await loadNpy("uint8", "image", "lanczos", `${c.name}_in.npy`);
    const want = await loadNpy("uint8", "image", "lanczos", `${c.name}_out.npy`);
    const image = { width: c.in[0], height: c.in[1], data: src.data };
    const got = resizeLanczos(image, c.out[0], c.out[1]);
    assert.deepEqual([got.width, got.height], c.out);
    assert.deepEqual(got.data, want.data, c.name);
    if (c.out[0] === c.in[0] && c.out[1] === c.in[1]) assert.notEqual(got.data, image.data);
  }
});

Deno.test("vaeImage equals diffusers' VideoProcessor.preprocess bit for bit", async () => {
  for (const c of LANCZOS) {
    const src = await loadNpy("uint8", "image", "lanczos", `${c.name}_in.npy`);
    const want = await loadNpy("float32", "image", "lanczos", `${c.name}_vae.npy`);
    assert.deepEqual(want.shape, [1, 3, c.out[1], c.out[0]]);
    const got = vaeImage({ width: c.in[0], height: c.in[1], data: src.data }, c.out[0], c.out[1]);
    assert.deepEqual(got, want.data, c.name);
  }
});

Deno.test("clipPixelValues matches diffusers' _encode_image preprocessing", async () => {
  assert.ok(CLIP.length >= 2);
  for (const c of CLIP) {
    const src = await loadNpy("uint8", "image", "clip", `${c.name}_in.npy`);
    const want = await loadNpy("float32", "image", "clip", `${c.name}_out.npy`);
    const got = clipPixelValues(
      { width: c.in[0], height: c.in[1], data: src.data },
      224,
      c.mean,
      c.std,
    );
    const d = assertAllClose(got, want.data, CLIP_TOL, c.name);
    console.log(`${c.name}: max abs diff ${d.maxAbs.toExponential(2)}`);
  }
});

Deno.test("antialiasKernel picks diffusers' sigma and odd tap counts", () => {
  // 576 -> 224: sigma 0.7857, 3 taps; 1024 -> 224: sigma 1.7857, 7 taps (video-pipelines.md §2.1).
  assert.deepEqual(antialiasKernel(576, 224).size, 3);
  assert.ok(Math.abs(antialiasKernel(576, 224).sigma - 0.7857142857) < 1e-9);
  assert.deepEqual(antialiasKernel(1024, 224).size, 7);
  assert.deepEqual(antialiasKernel(100, 224), { sigma: 0.001, size: 3 });
});

Deno.test("bicubic align_corners keeps the corners and a constant image", () => {
  const src = {
    channels: 1,
    height: 3,
    width: 4,
    data: Float32Array.from({ length: 12 }, (_, k) => k * 0.5 - 2),
  };
  const out = interpolateBicubic(src, 5, 7);
  assert.equal(out.data[0], src.data[0]);
  assert.equal(out.data[6], src.data[3]);
  assert.equal(out.data[34], src.data[11]);
  const flat = interpolateBicubic({ ...src, data: new Float32Array(12).fill(0.25) }, 9, 2);
  for (const v of flat.data) assert.ok(Math.abs(v - 0.25) < 1e-7);
  assert.throws(
    () =>
      resizeWithAntialiasing({ channels: 1, height: 1, width: 4, data: new Float32Array(4) }, 1, 2),
    /its height \(1\) is too small for a 3-tap blur/,
  );
});

Deno.test("resizeWithAntialiasing matches diffusers' _resize_with_antialiasing (svd-tiny's fixtures)", async () => {
  const dir = new URL("../../models/svd-tiny/reference/resize/", import.meta.url);
  const info = JSON.parse(await Deno.readTextFile(new URL("resize.json", dir))) as {
    cases: {
      name: string;
      input: string;
      output: string;
      inputShape: [number, number, number, number];
      size: [number, number];
      kernelSize: [number, number];
      sigma: [number, number];
    }[];
  };
  assert.ok(info.cases.length >= 3);
  for (const c of info.cases) {
    const [B, C, h, w] = c.inputShape;
    const [outH, outW] = c.size;
    const ky = antialiasKernel(h, outH);
    const kx = antialiasKernel(w, outW);
    assert.deepEqual([ky.size, kx.size], c.kernelSize, c.name);
    assert.ok(Math.abs(ky.sigma - c.sigma[0]) < 1e-12 && Math.abs(kx.sigma - c.sigma[1]) < 1e-12);
    const input = expectDtype(await readNpy(new URL(c.input, dir)), "float32").data;
    const want = expectDtype(await readNpy(new URL(c.output, dir)), "float32").data;
    const image = C * h * w;
    for (let b = 0; b < B; b++) {
      const got = resizeWithAntialiasing(
        { channels: C, height: h, width: w, data: input.slice(b * image, (b + 1) * image) },
        outH,
        outW,
      );
      const n = C * outH * outW;
      assertAllClose(got.data, want.subarray(b * n, (b + 1) * n), CLIP_TOL, `${c.name}[${b}]`);
    }
  }
});
