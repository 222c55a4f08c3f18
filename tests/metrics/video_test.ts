import assert from "node:assert/strict";
import { framePsnr, frameSsim, meanFinite } from "../../src/metrics/video.ts";
import { loadJson, loadNpy } from "../fixtures/mod.ts";

interface Expected {
  shape: [number, number, number, number];
  dataRange: number;
  psnr: (number | "Infinity")[];
  ssim: number[];
}

const { cases } = (await loadJson("video_metrics", "expected.json")) as {
  cases: Record<string, Expected>;
};

Deno.test("per-frame PSNR and SSIM match independent numpy formulas", async () => {
  assert.ok(Object.keys(cases).length >= 3);
  for (const [name, want] of Object.entries(cases)) {
    const ref = (await loadNpy("float32", "video_metrics", `${name}_ref.npy`)).data;
    const est = (await loadNpy("float32", "video_metrics", `${name}_est.npy`)).data;
    const [frames, channels, height, width] = want.shape;
    const shape = { frames, channels, height, width };
    const psnr = framePsnr(ref, est, shape, want.dataRange);
    const ssim = frameSsim(ref, est, shape, want.dataRange);
    want.psnr.forEach((p, f) => {
      if (p === "Infinity") assert.equal(psnr[f], Infinity, `${name} frame ${f}`);
      else assert.ok(Math.abs(psnr[f]! - p) < 1e-9, `${name} PSNR frame ${f}: ${psnr[f]} vs ${p}`);
    });
    want.ssim.forEach((s, f) => {
      assert.ok(Math.abs(ssim[f]! - s) < 1e-9, `${name} SSIM frame ${f}: ${ssim[f]} vs ${s}`);
    });
  }
});

Deno.test("identical frames: PSNR Infinity and SSIM 1; meanFinite skips them", () => {
  const shape = { frames: 2, channels: 1, height: 12, width: 13 };
  const a = Float32Array.from({ length: 312 }, (_, k) => Math.sin(k) * 0.5 + 0.5);
  const b = a.slice();
  b[200] = b[200]! + 0.1;
  assert.deepEqual(frameSsim(a, a, shape), [1, 1]);
  const psnr = framePsnr(a, b, shape);
  assert.equal(psnr[0], Infinity);
  assert.ok(Number.isFinite(psnr[1]));
  assert.equal(meanFinite(psnr), psnr[1]);
  assert.equal(meanFinite([Infinity, Infinity]), Infinity);
  assert.throws(
    () => framePsnr(a, b.subarray(1), shape),
    /'estimate' must hold \[2, 1, 12, 13\] = 312 values: current length is 311/,
  );
});
