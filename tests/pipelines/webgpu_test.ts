/**
 * The denoiser on WebGPU (Dawn over Vulkan): sequentially, and ParaStep with two Workers sharing
 * the one device, against the CPU provider's output of the same configuration.
 *
 * Skipped, with the reason printed, where no Vulkan adapter can run Dawn. CI installs Mesa's
 * lavapipe (a software Vulkan driver) from bookworm-backports to run them (see .ci/run).
 *
 * @module
 */

import assert from "node:assert/strict";
import { Env, probeProvider } from "../../ffi/mod.ts";
import { resolveModel } from "../../src/models/model.ts";
import {
  audioldm2,
  checkRequest,
  Denoiser,
  encodePrompt,
  openUnet,
  prepareLatents,
} from "../../src/pipelines/audioldm2/mod.ts";
import { ddim } from "../../src/schedulers/ddim.ts";
import {
  type DenoiseEngine,
  denoiseInProcess,
  type DenoiseJob,
  type DenoiseMode,
  denoiseOnce,
  denoiseWithWorkers,
} from "../../src/pipelines/mod.ts";
import { parastep } from "../support/cli.ts";
import { relativeError } from "../support/compare.ts";

/**
 * WebGPU's final latents against the CPU's, relative to the largest magnitude. Measured on
 * Mesa 25.0.7's lavapipe (T = 8, W = 2): 1.0e-5 sequential and with ParaStep on two Workers.
 */
const TOLERANCE = 1e-4;

const webgpu = (() => {
  using _env = Env.create();
  return probeProvider("webgpu");
})();
const ignore = !webgpu.ok;
if (ignore) console.log(`WebGPU tests skipped: ${webgpu.reason}`);

// CI installs a Vulkan driver and sets this, so a broken install fails instead of skipping.
Deno.test({
  name: "WebGPU is usable where PARASTEP_REQUIRE_WEBGPU=1 says it must be",
  ignore: Deno.env.get("PARASTEP_REQUIRE_WEBGPU") !== "1",
  fn() {
    assert.ok(webgpu.ok, `WebGPU cannot run here: ${webgpu.reason}`);
  },
});

const model = resolveModel(new URL("../../models/audioldm2-tiny", import.meta.url).pathname);
const request = checkRequest(model, {
  prompt: "A hammer hitting a wooden surface",
  seed: 3,
  steps: 8,
});
const W = 2;

/** The conditioning, encoded once on the CPU: only the denoiser runs on WebGPU here. */
let jobBase: DenoiseJob | undefined;
/** Opens `engine` on `ep` for `mode` on `devices`, runs the request once, closes it. */
async function denoise(
  engine: DenoiseEngine,
  ep: "cpu" | "webgpu",
  mode: DenoiseMode,
  devices: number,
) {
  if (jobBase === undefined) {
    using env = Env.create();
    const conditioning = await audioldm2.encode(env, model, request, {});
    jobBase = {
      generation: audioldm2.generationInit(model, request, conditioning),
      x0: audioldm2.prepareLatents(request),
      steps: request.steps,
      warmup: W,
      stride: 2,
    };
  }
  const spec = {
    module: audioldm2.samplerModule,
    open: audioldm2.denoiserInit(model, request),
    mode,
    devices,
    ep,
  };
  return await denoiseOnce(engine, spec, jobBase);
}

Deno.test({
  name: "WebGPU: the sequential sampler agrees with the CPU",
  ignore,
  async fn() {
    const cpu = await denoise(denoiseInProcess, "cpu", "sequential", 1);
    const gpu = await denoise(denoiseInProcess, "webgpu", "sequential", 1);
    assert.equal(gpu.ep, "webgpu");
    const { rel } = relativeError(gpu.output, cpu.output);
    assert.ok(rel < TOLERANCE, `relative error ${rel}`);
  },
});

Deno.test({
  name: "WebGPU: ParaStep on 2 Workers sharing the device agrees with the CPU and with one realm",
  ignore,
  async fn() {
    const cpu = await denoise(denoiseWithWorkers, "cpu", "parastep", 2);
    // Before the process-wide WebGPU lock this crashed on every try (ORT shares one WebGPU
    // context among the Workers' sessions).
    const gpu = await denoise(denoiseWithWorkers, "webgpu", "parastep", 2);
    assert.equal(gpu.ep, "webgpu");
    assert.deepEqual(gpu.modelCalls, cpu.modelCalls);
    const { rel } = relativeError(gpu.output, cpu.output);
    assert.ok(rel < TOLERANCE, `relative error ${rel}`);
    // Both ranks in this realm, their calls interleaving on one session: the same lock
    // serialises them, and the same device computes the same numbers.
    const inProcess = await denoise(denoiseInProcess, "webgpu", "parastep", 2);
    assert.deepEqual(inProcess.output, gpu.output);
  },
});

Deno.test({
  name: "WebGPU: gen --ep webgpu --gpus 2 prints one line and nothing on stderr",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const out = `${dir}/a.wav`;
      const { code, stdout, stderr } = await parastep([
        "gen",
        "--prompt",
        "dog barking",
        "--ep",
        "webgpu",
        "--gpus",
        "2",
        "--steps",
        "8",
        "--out",
        out,
      ]);
      assert.equal(code, 0, stderr);
      assert.equal(stderr, "");
      assert.equal(stdout.split("\n").filter((l) => l !== "").length, 1, stdout);
      assert.match(stdout, /ParaStep on 2 devices .*webgpu/);
      assert.ok(Deno.statSync(out).size > 44);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("gen --gpus 2 with --ep auto prints one line and no native warnings", async () => {
  // With a Vulkan driver installed, Dawn warns on stderr when asked for an adapter; with only a
  // software renderer, auto does not ask it at all.
  const dir = await Deno.makeTempDir();
  try {
    const { code, stdout, stderr } = await parastep([
      "gen",
      "--prompt",
      "dog barking",
      "--gpus",
      "2",
      "--steps",
      "8",
      "--out",
      `${dir}/a.wav`,
    ]);
    assert.equal(code, 0, stderr);
    assert.equal(stderr, "");
    assert.equal(stdout.split("\n").filter((l) => l !== "").length, 1, stdout);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "WebGPU: the conditioning goes to the device once per generation, with the same output",
  ignore,
  async fn() {
    using env = Env.create();
    const { conditioning } = await encodePrompt(env, model, request, {});
    const table = ddim(model.manifest.scheduler, request.steps);
    const x0 = prepareLatents(request);
    const calls = async (keepValuesOnDevice: boolean) => {
      using unet = openUnet(env, model, {
        executionProvider: "webgpu",
        intraOpThreads: 1,
        keepValuesOnDevice,
      });
      using denoiser = new Denoiser(unet, conditioning, table, request.latentDims);
      const eps: Float32Array[] = [];
      for (let i = 0; i < 3; i++) eps.push(await denoiser.model(x0, i));
      // A batch of two latents (BatchStep) binds conditioning of another size, once.
      eps.push(...await denoiser.modelBatch([x0, x0], [3, 4]));
      eps.push(await denoiser.model(x0, 5));
      return { eps, transfers: unet.inputTransfers };
    };
    const bound = await calls(true);
    const fed = await calls(false);
    assert.deepEqual(bound.eps, fed.eps);
    // Per UNet call: sample and timestep; the three conditioning inputs once per batch size
    // (1 latent, then 2), and again when the batch size returns to 1 (one binding per name).
    assert.deepEqual(fed.transfers.runs, 5);
    assert.deepEqual(fed.transfers.inputs, 5 * 5);
    assert.deepEqual(bound.transfers.runs, 5);
    assert.deepEqual(bound.transfers.inputs, 5 * 2 + 3 * 3);
    assert.ok(bound.transfers.bytes < fed.transfers.bytes);
  },
});
