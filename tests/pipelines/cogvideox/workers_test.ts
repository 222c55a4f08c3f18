import assert from "node:assert/strict";
import { resolveModel } from "../../../src/models/model.ts";
import { denoiseInProcess, denoiseWithWorkers, generate } from "../../../src/pipelines/mod.ts";
import { checkRequest, cogvideox } from "../../../src/pipelines/cogvideox/mod.ts";

const TINY = new URL("../../../models/cogvideox-tiny", import.meta.url).pathname;
const TINY_5B = new URL("../../../models/cogvideox-tiny-5b", import.meta.url).pathname;

const cases = [
  // 2b layout, even F' (16 frames), dynamic guidance: each rank guides with its step's scale.
  [TINY, { prompt: "A red kite over a beach", frames: 16, dynamicCfg: true, steps: 7 }],
  // 5b layout: the rotary tables cross to each Worker with the conditioning.
  [TINY_5B, { prompt: "A red kite over a beach", steps: 7 }],
] as const;

for (const [folder, asked] of cases) {
  const model = resolveModel(folder);
  const request = checkRequest(model, { ...asked, seed: 4 });
  Deno.test(`CogVideoX ${model.manifest.name}: ParaStep on 2 Workers gives the in-process engine's frames bit for bit`, async () => {
    const workers = await generate(cogvideox, model, request, {
      ep: "cpu",
      devices: 2,
      warmup: 3,
      denoiseWith: denoiseWithWorkers,
    });
    const inProcess = await generate(cogvideox, model, request, {
      ep: "cpu",
      devices: 2,
      warmup: 3,
      denoiseWith: denoiseInProcess,
    });
    assert.deepEqual(workers.media.frames, inProcess.media.frames);
    assert.deepEqual(workers.denoise.modelCalls, inProcess.denoise.modelCalls);
    // T = 7, W = 3, N = 2: 3 + ceil(4 / 2) = 5 calls on the critical path.
    assert.equal(workers.denoise.criticalPathCalls, 5);
    const [, F, C, h, w] = request.latentDims;
    const x = F * C * h * w * 4;
    // The warm-up broadcast of x and eps, then per full round one eps in and one latents out.
    assert.equal(workers.denoise.bytesExchanged, 2 * x + 2 * 2 * x);
    assert.equal(workers.media.count, request.shape.frames);
    // Not the sequential sampler: ParaStep reuses stale predictions; the measures see it.
    const sequential = await generate(cogvideox, model, request, { ep: "cpu", devices: 1 });
    assert.notDeepEqual(sequential.media.frames, workers.media.frames);
    const [psnr, ssim] = cogvideox.quality(sequential.media, workers.media);
    assert.equal(psnr!.name, "PSNR dB");
    assert.ok(Number.isFinite(psnr!.value) && psnr!.value > 5, `PSNR ${psnr!.value}`);
    assert.ok(ssim!.value > 0 && ssim!.value < 1, `SSIM ${ssim!.value}`);
    assert.deepEqual(cogvideox.quality(workers.media, inProcess.media), [
      { name: "PSNR dB", value: Infinity },
      { name: "SSIM", value: 1 },
    ]);
    assert.equal(cogvideox.samples(workers.media), workers.media.frames);
  });
}

Deno.test("CogVideoX: BatchStep's batched transformer call gives each latent its own step's prediction", async () => {
  const model = resolveModel(TINY);
  const request = checkRequest(model, { prompt: "rain", steps: 4, dynamicCfg: true, seed: 1 });
  // At stride 1 BatchStep is the sequential sampler, through the batched call.
  const batch = await generate(cogvideox, model, request, {
    ep: "cpu",
    mode: "batchstep",
    stride: 1,
  });
  const sequential = await generate(cogvideox, model, request, { ep: "cpu", mode: "sequential" });
  assert.deepEqual(batch.media.frames, sequential.media.frames);
  const strided = await generate(cogvideox, model, request, {
    ep: "cpu",
    mode: "batchstep",
    stride: 2,
    warmup: 1,
  });
  // W = 1, then steps 1-2 in one batched call and step 3 in another.
  assert.equal(strided.denoise.criticalPathCalls, 3);
  assert.notDeepEqual(strided.media.frames, sequential.media.frames);
});
