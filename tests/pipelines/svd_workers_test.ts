import assert from "node:assert/strict";
import { resolveModel } from "../../src/models/model.ts";
import { denoiseInProcess, denoiseWithWorkers, generate } from "../../src/pipelines/mod.ts";
import { checkRequest, svd } from "../../src/pipelines/svd/mod.ts";

const TINY = new URL("../../models/svd-tiny", import.meta.url).pathname;
const model = resolveModel(TINY);
const request = checkRequest(model, {
  image: `${TINY}/reference/case2/image.png`,
  seed: 3,
  steps: 6,
  frames: 3,
  width: 32,
  height: 40,
});

Deno.test("SVD: ParaStep on 2 Workers gives the in-process engine's frames bit for bit", async () => {
  const workers = await generate(svd, model, request, {
    ep: "cpu",
    devices: 2,
    denoiseWith: denoiseWithWorkers,
  });
  const inProcess = await generate(svd, model, request, {
    ep: "cpu",
    devices: 2,
    denoiseWith: denoiseInProcess,
  });
  assert.deepEqual(workers.media.frames, inProcess.media.frames);
  assert.deepEqual(workers.denoise.modelCalls, inProcess.denoise.modelCalls);
  // T = 6, W = 3 (the tiny model's default), N = 2: 3 + ceil(3 / 2) = 5 calls on the critical path.
  assert.equal(workers.denoise.warmup, 3);
  assert.equal(workers.denoise.criticalPathCalls, 5);
  // Exchanged, all latents-sized ([1, 3, 4, 20, 16] floats; eps travel guided): the warm-up
  // broadcast of x and eps, then per full round one eps in and one latents broadcast out.
  const x = 3 * 4 * 20 * 16 * 4;
  const fullRounds = Math.floor((6 - 3) / 2);
  assert.equal(workers.denoise.bytesExchanged, 2 * x + fullRounds * 2 * x);
  // Not the sequential sampler: ParaStep reuses stale predictions.
  const sequential = await generate(svd, model, request, { ep: "cpu", devices: 1 });
  assert.notDeepEqual(sequential.media.frames, workers.media.frames);
  // The quality measures see the difference, and see none between identical outputs.
  const [psnr, ssim] = svd.quality(sequential.media, workers.media);
  assert.equal(psnr!.name, "PSNR dB");
  assert.ok(Number.isFinite(psnr!.value) && psnr!.value > 10, `PSNR ${psnr!.value}`);
  assert.ok(ssim!.value > 0 && ssim!.value < 1, `SSIM ${ssim!.value}`);
  assert.deepEqual(svd.quality(workers.media, inProcess.media), [
    { name: "PSNR dB", value: Infinity },
    { name: "SSIM", value: 1 },
  ]);
  assert.equal(svd.samples(workers.media), workers.media.frames);
});

Deno.test("SVD: BatchStep's batched UNet call gives each latent its own step's prediction", async () => {
  // At stride 1 BatchStep is the sequential sampler, through the batched call.
  const short = { ...request, steps: 4 };
  const batch = await generate(svd, model, short, { ep: "cpu", mode: "batchstep", stride: 1 });
  const sequential = await generate(svd, model, short, { ep: "cpu", mode: "sequential" });
  assert.deepEqual(batch.media.frames, sequential.media.frames);
  const strided = await generate(svd, model, short, { ep: "cpu", mode: "batchstep", stride: 2 });
  assert.equal(strided.denoise.criticalPathCalls, 3 + 1); // W = 3, then one call for the last step
});
