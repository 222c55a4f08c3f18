import assert from "node:assert/strict";
import { Env } from "../../ffi/mod.ts";
import { decodeImage } from "../../src/io/image.ts";
import { expectDtype, readNpy } from "../../src/io/npy.ts";
import { framesToRgb } from "../../src/io/video.ts";
import { resolveModel } from "../../src/models/model.ts";
import { runInProcess } from "../../src/parastep/rounds.ts";
import { GaussianStream } from "../../src/random.ts";
import {
  addedTimeIds,
  checkRequest,
  Decoder,
  Denoiser,
  encodeImage,
  openUnet,
  prepareLatents,
  unetInputs,
} from "../../src/pipelines/svd/mod.ts";
import { euler } from "../../src/schedulers/euler.ts";
import { relativeError } from "../support/compare.ts";

/** Largest relative error (max |a - b| / max |b|) accepted against diffusers in float32. */
const PARITY_TOLERANCE = 1e-4;

const TINY = new URL("../../models/svd-tiny", import.meta.url).pathname;
const model = resolveModel(TINY);

interface CaseInfo {
  image: string;
  width: number;
  height: number;
  numFrames: number;
  steps: number;
  fps: number;
  motionBucketId: number;
  noiseAugStrength: number;
  minGuidance: number;
  maxGuidance: number;
  decodeChunk: number;
  seed: number;
  initNoiseSigma: number;
}

async function loadCase(name: string) {
  const dir = `${TINY}/reference/${name}`;
  const info: CaseInfo = JSON.parse(await Deno.readTextFile(`${dir}/case.json`));
  const f32 = async (file: string) => expectDtype(await readNpy(`${dir}/${file}.npy`), "float32");
  const u8 = async (file: string) => expectDtype(await readNpy(`${dir}/${file}.npy`), "uint8");
  return { dir, info, f32, u8 };
}

const errors: Record<string, Record<string, number>> = {};

function close(caseName: string, label: string, got: ArrayLike<number>, want: ArrayLike<number>) {
  const { rel, maxAbs, index } = relativeError(got, want);
  (errors[caseName] ??= {})[label] = rel;
  assert.ok(
    rel <= PARITY_TOLERANCE,
    `${caseName} ${label}: relative error ${
      rel.toExponential(2)
    } (max |diff| ${maxAbs} at ${index})`,
  );
}

for (const caseName of ["case1", "case2"]) {
  Deno.test(`SVD ${caseName} matches diffusers stage by stage`, async () => {
    const { dir, info, f32, u8 } = await loadCase(caseName);
    const augNoise = (await f32("aug_noise")).data as Float32Array<ArrayBuffer>;
    const latentsNoise = await f32("latents_noise");
    const request = checkRequest(model, {
      image: `${dir}/${info.image}`,
      steps: info.steps,
      frames: info.numFrames,
      width: info.width,
      height: info.height,
      fps: info.fps,
      motionBucketId: info.motionBucketId,
      noiseAugStrength: info.noiseAugStrength,
      minGuidance: info.minGuidance,
      maxGuidance: info.maxGuidance,
      decodeChunk: info.decodeChunk,
      seed: info.seed,
      latents: latentsNoise.data as Float32Array<ArrayBuffer>,
      augNoise,
    });
    assert.deepEqual(request.latentDims, latentsNoise.shape);
    assert.equal(request.initNoiseSigma, info.initNoiseSigma);

    // The image as the pipeline saw it (PIL, / 255).
    const input = await f32("input_image");
    const [, , H0, W0] = input.shape;
    assert.deepEqual([request.image.width, request.image.height], [W0, H0]);
    for (let k = 0; k < W0! * H0!; k++) {
      for (let c = 0; c < 3; c++) {
        assert.equal(
          Math.fround(request.image.data[3 * k + c]! / 255),
          input.data[c * W0! * H0! + k],
        );
      }
    }

    using env = Env.create();
    const options = { session: { intraOpThreads: 1 } };
    const { conditioning, intermediates } = await encodeImage(env, model, request, options);
    close(
      caseName,
      "CLIP pixels",
      intermediates.pixelValues,
      (await f32("clip_pixel_values")).data,
    );
    close(caseName, "CLIP embeds", conditioning.imageEmbeds, (await f32("image_embeds")).data);
    close(caseName, "VAE image", intermediates.vaeImage, (await f32("vae_image")).data);
    close(
      caseName,
      "VAE input",
      intermediates.vaeEncoderImage,
      (await f32("vae_encoder_image")).data,
    );
    close(caseName, "VAE latent", conditioning.imageLatent, (await f32("image_latent")).data);
    const ids = (await f32("added_time_ids")).data;
    assert.deepEqual(Array.from(ids.subarray(0, 3)), Array.from(addedTimeIds(request)));
    assert.deepEqual(Array.from(ids.subarray(3, 6)), Array.from(addedTimeIds(request)));
    assert.deepEqual(conditioning.guidance, (await f32("guidance")).data);
    assert.equal(conditioning.cfg, info.maxGuidance > 1);

    const table = euler(model.manifest.scheduler, request.steps);
    assert.deepEqual(table.sigmas, (await f32("sigmas")).data);
    close(caseName, "timesteps", table.timesteps, (await f32("timesteps")).data);
    const x0 = prepareLatents(request);
    close(caseName, "initial latents", x0, (await f32("latents_initial")).data);

    const { sample, timestep } = unetInputs(table, conditioning, request.latentDims, [x0], [0]);
    close(caseName, "UNet sample 0", sample, (await f32("unet_sample_step0")).data);
    const t0 = (await f32("unet_timestep_step0")).data[0]!;
    for (const t of timestep) assert.ok(Math.abs(t - t0) <= 1e-6 * Math.abs(t0), `${t} vs ${t0}`);

    using unet = openUnet(env, model, { intraOpThreads: 1 });
    using denoiser = new Denoiser(unet, model, conditioning, table, request.latentDims);
    const v0 = await denoiser.model(x0, 0);
    close(caseName, "UNet step 0", v0, (await f32("unet_out_step0")).data);
    close(caseName, "guided step 0", denoiser.guide(v0), (await f32("guided_step0")).data);
    // BatchStep's batched call: each latent gets its own step's prediction.
    const x1 = denoiser.step(denoiser.guide(v0), 0, x0);
    const [b0, b1] = await denoiser.modelBatch([x0, x1], [0, 1]);
    assert.ok(relativeError(b0!, v0).rel < 1e-5);
    assert.ok(relativeError(b1!, await denoiser.model(x1, 1)).rel < 1e-5);

    // Every step of the sequential loop, each from our own previous latents.
    const steps = (await f32("latents_steps")).data;
    const n = x0.length;
    let x: Float32Array = x0;
    let worst = 0;
    for (let i = 0; i < request.steps; i++) {
      x = denoiser.step(denoiser.guide(await denoiser.model(x, i)), i, x);
      worst = Math.max(worst, relativeError(x, steps.subarray(i * n, (i + 1) * n)).rel);
    }
    (errors[caseName] ??= {})["worst step"] = worst;
    assert.ok(worst <= PARITY_TOLERANCE, `${caseName}: a step differs by ${worst}`);

    // The engine's sequential sampler gives the same.
    const result = await runInProcess(
      { steps: request.steps, warmup: Math.min(3, request.steps), devices: 1 },
      () => denoiser,
      x0,
    );
    assert.deepEqual(result.output, x);
    close(caseName, "final latents", result.output, (await f32("latents_final")).data);

    using decoder = Decoder.open(env, model, options);
    const decoded = await decoder.decode(request, result.output);
    const wantFrames = await f32("frames_decoded");
    assert.deepEqual([decoded.count, 3, decoded.height, decoded.width], wantFrames.shape);
    close(caseName, "frames", decoded.frames, wantFrames.data);

    // diffusers' 8-bit frames: exactly from its own floats, within a level from ours.
    const want8 = (await u8("frames_uint8")).data;
    const [F, , H, W] = wantFrames.shape as [number, number, number, number];
    assert.deepEqual(framesToRgb(wantFrames.data, F, H, W).data, want8);
    const ours8 = framesToRgb(decoded.frames, F, H, W).data;
    let levels = 0;
    for (let k = 0; k < want8.length; k++) {
      levels = Math.max(levels, Math.abs(ours8[k]! - want8[k]!));
    }
    assert.ok(levels <= 1, `${caseName}: 8-bit frames differ by ${levels} levels`);
    console.log(
      `${caseName} relative errors:`,
      Object.entries(errors[caseName]!).map(([k, v]) => `${k} ${v.toExponential(2)}`).join(", "),
      `; 8-bit frames max diff ${levels}`,
    );
  });
}

Deno.test("SVD seeded draws follow diffusers' order: noise augmentation first, then latents", async () => {
  const image = decodeImage(Deno.readFileSync(`${TINY}/reference/case1/image.png`), "image.png");
  const request = checkRequest(model, { image, seed: 5, noiseAugStrength: 0.5 });
  const [, F, C, h, w] = request.latentDims;
  const pixels = 3 * request.height * request.width;
  // One stream, split in that order.
  const values = new GaussianStream(5).fill(new Float32Array(pixels + F * C * h * w));
  const latents = prepareLatents(request);
  for (let k = 0; k < latents.length; k++) {
    assert.equal(latents[k], Math.fround(values[pixels + k]! * request.initNoiseSigma));
  }
  using env = Env.create();
  const { intermediates } = await encodeImage(env, model, request, {
    session: { intraOpThreads: 1 },
  });
  const f = Math.fround;
  for (let k = 0; k < pixels; k++) {
    const want = f(intermediates.vaeImage[k]! + f(f(0.5) * values[k]!));
    assert.equal(intermediates.vaeEncoderImage[k], want);
  }
});

Deno.test("SVD without guidance (max guidance <= 1): batch 1 with the image, guide is the identity", () => {
  const image = decodeImage(Deno.readFileSync(`${TINY}/reference/case1/image.png`), "image.png");
  const request = checkRequest(model, { image, minGuidance: 1, maxGuidance: 1 });
  const [, F, C, h, w] = request.latentDims;
  const n = F * C * h * w;
  const conditioning = {
    cfg: false,
    guidance: new Float32Array(F).fill(1),
    imageEmbeds: new Float32Array(32).fill(0.5),
    imageLatent: Float32Array.from({ length: C * h * w }, (_, k) => k),
    addedTimeIds: new Float32Array([6, 127, 0.02]),
  };
  const table = euler(model.manifest.scheduler, request.steps);
  const x = new Float32Array(n).fill(2);
  const { sample, timestep } = unetInputs(table, conditioning, request.latentDims, [x], [3]);
  assert.equal(sample.length, 2 * n); // [1, F, 2C, h, w]
  assert.deepEqual(Array.from(timestep), [table.timesteps[3]]);
  const plane = C * h * w;
  for (let f = 0; f < F; f++) {
    assert.deepEqual(
      sample.subarray((2 * f + 1) * plane, (2 * f + 2) * plane),
      conditioning.imageLatent,
    );
    assert.equal(sample[2 * f * plane], table.scaleModelInput(x, 3)[0]);
  }
});
