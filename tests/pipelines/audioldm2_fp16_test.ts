/**
 * AudioLDM2 exported in float16 (`python -m models.export audioldm2 --tiny --dtype fp16`) against
 * diffusers' own `AudioLDM2Pipeline` run in float16 (the exporter's reference/, written by the
 * fp16 pipeline), stage by stage, on the CPU and on WebGPU.
 *
 * The graphs take and give float16; parastep's host side (guidance, the DDIM step, the VAE
 * scaling) stays float32, where diffusers in float16 computes those in float16 as well. So the
 * latents drift apart by float16 rounding over the steps: the tolerances below are measured, and
 * of the size that separates diffusers' own float16 and float32 pipelines on this model (final
 * latents 3.2e-3 to 3.6e-3, waveform 3.2e-3 to 7.3e-3 relative).
 *
 * The model folders are not committed (3.8 MB with its reference): the tests run where
 * `.cache/models/audioldm2-tiny-fp16` exists (CI exports it) or `$PARASTEP_FP16_MODEL` names one,
 * and print why they skip otherwise. The same tests run on the fp16 variant of a folder exported
 * with both types (`--dtype fp32,fp16`, `.cache/models/audioldm2-tiny-dual`, reference under
 * `fp16/reference/`), chosen with `--dtype fp16`, where that folder exists.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Env, type ExecutionProvider, probeProvider } from "../../ffi/mod.ts";
import { expectDtype, readNpy } from "../../src/io/npy.ts";
import { type ModelFolder, resolveModel, resolveModelFor } from "../../src/models/model.ts";
import { runInProcess } from "../../src/parastep/rounds.ts";
import {
  audioldm2,
  checkRequest,
  decode,
  Denoiser,
  encodePrompt,
  openUnet,
  prepareLatents,
} from "../../src/pipelines/audioldm2/mod.ts";
import { denoiseInProcess, denoiseOnce, denoiseWithWorkers } from "../../src/pipelines/mod.ts";
import { ddim } from "../../src/schedulers/ddim.ts";
import { parastep } from "../support/cli.ts";
import { relativeError } from "../support/compare.ts";

/**
 * Largest relative error (max |a - b| / max |b|) accepted against diffusers in float16, at every
 * stage. Measured, worst of the two cases, on the CPU / on WebGPU (Mesa 25.0.7 lavapipe; the
 * float16 vocoder runs on the CPU there, see `openVocoder`): encoders and GPT2 1.6e-3 / 2.9e-3,
 * UNet step 0 1.7e-3 / 6.4e-3, final latents 3.7e-3 / 5.2e-3, mel 2.6e-3 / 7.4e-3, waveform
 * 6.5e-3 / 9.0e-3. (The float16 vocoder on WebGPU gave 1.25: that is what this catches.)
 */
const TOLERANCE = 2e-2;

/** An fp16 model to test: the folder, how it is opened in fp16, and where its reference is. */
interface Fp16Folder {
  readonly label: string;
  readonly dir: string;
  /** The folder in fp16. */
  open(): ModelFolder;
  /** Its reference/, relative to the folder. */
  readonly reference: string;
  readonly export: string;
}

const cacheDir = (name: string) =>
  decodeURIComponent(new URL(`../../.cache/models/${name}`, import.meta.url).pathname);
const FP16_DIR = Deno.env.get("PARASTEP_FP16_MODEL") ?? cacheDir("audioldm2-tiny-fp16");
const DUAL_DIR = cacheDir("audioldm2-tiny-dual");
const FOLDERS: readonly Fp16Folder[] = [{
  label: "fp16",
  dir: FP16_DIR,
  open: () => resolveModel(FP16_DIR),
  reference: "reference",
  export: "python -m models.export audioldm2 --tiny --dtype fp16 " +
    "--out .cache/models/audioldm2-tiny-fp16",
}, {
  label: "fp16 variant",
  dir: DUAL_DIR,
  open: () => resolveModelFor(DUAL_DIR, { dtype: "fp16", ep: "cpu" }),
  reference: "fp16/reference",
  export: "python -m models.export audioldm2 --tiny --dtype fp32,fp16 " +
    "--out .cache/models/audioldm2-tiny-dual",
}];

function missing(folder: Fp16Folder): string | undefined {
  try {
    Deno.statSync(`${folder.dir}/${folder.reference}/case1/case.json`);
    return undefined;
  } catch {
    return `no ${folder.label} model with a reference at ${folder.dir} (make it with: ${folder.export})`;
  }
}

const absentFolders = FOLDERS.map(missing);
for (const why of absentFolders) if (why !== undefined) console.log(`fp16 tests skipped: ${why}`);
const absent = absentFolders[0];
const webgpu = (() => {
  using _env = Env.create();
  return probeProvider("webgpu");
})();
if (absent === undefined && !webgpu.ok) {
  console.log(`fp16 WebGPU tests skipped: ${webgpu.reason}`);
}

// CI exports the model and sets this, so a broken export fails instead of skipping.
Deno.test({
  name: "the fp16 model is there where PARASTEP_REQUIRE_FP16=1 says it must be",
  ignore: Deno.env.get("PARASTEP_REQUIRE_FP16") !== "1",
  fn() {
    assert.deepEqual(absentFolders, FOLDERS.map(() => undefined));
  },
});

interface CaseInfo {
  prompt: string;
  negativePrompt: string;
  steps: number;
  guidance: number;
  duration: number;
}

FOLDERS.forEach((folder, k) => {
  for (const ep of ["cpu", "webgpu"] as const satisfies readonly ExecutionProvider[]) {
    for (const caseName of ["case1", "case2"]) {
      Deno.test({
        name: `AudioLDM2 ${folder.label} ${caseName} on ${ep} matches diffusers in float16 ` +
          `stage by stage`,
        ignore: absentFolders[k] !== undefined || (ep === "webgpu" && !webgpu.ok),
        fn: () => parity(folder, ep, caseName),
      });
    }
  }
});

async function parity(folder: Fp16Folder, ep: ExecutionProvider, caseName: string): Promise<void> {
  const model = folder.open();
  assert.equal(model.manifest.dtype, "fp16");
  const dir = `${folder.dir}/${folder.reference}/${caseName}`;
  const info: CaseInfo = JSON.parse(await Deno.readTextFile(`${dir}/case.json`));
  const f32 = async (file: string) => expectDtype(await readNpy(`${dir}/${file}.npy`), "float32");
  const errors: string[] = [];
  const close = (
    label: string,
    tolerance: number,
    got: ArrayLike<number>,
    want: ArrayLike<number>,
  ) => {
    const { rel, maxAbs, index } = relativeError(got, want);
    errors.push(`${label} ${rel.toExponential(2)}`);
    assert.ok(
      rel <= tolerance,
      `${caseName} on ${ep}, ${label}: relative error ${rel.toExponential(2)} ` +
        `(max |diff| ${maxAbs} at ${index})`,
    );
  };

  const initial = await f32("latents_initial");
  const request = checkRequest(model, {
    prompt: info.prompt,
    negativePrompt: info.negativePrompt,
    steps: info.steps,
    guidance: info.guidance,
    duration: info.duration,
    latents: initial.data as Float32Array<ArrayBuffer>,
  });
  const session = { intraOpThreads: 1, executionProvider: ep };
  using env = Env.create();
  const { conditioning, intermediates } = await encodePrompt(env, model, request, { session });
  close("clap", TOLERANCE, intermediates.clap.data, (await f32("clap_text_embeds")).data);
  close("t5", TOLERANCE, conditioning.t5.data, (await f32("t5_last_hidden_state")).data);
  close(
    "projection",
    TOLERANCE,
    intermediates.projection.data,
    (await f32("projection_hidden_states")).data,
  );
  close("gpt2", TOLERANCE, conditioning.generated.data, (await f32("gpt2_generated")).data);

  using unet = openUnet(env, model, session);
  assert.equal(unet.executionProvider, ep);
  assert.equal(unet.inputs.find((i) => i.name === "sample")?.type, "float16");
  const table = ddim(model.manifest.scheduler, request.steps);
  using denoiser = new Denoiser(unet, conditioning, table, request.latentDims);
  const x0 = prepareLatents(request);
  const eps0 = await denoiser.model(x0, 0);
  assert.ok(eps0 instanceof Float32Array);
  close("unet step 0", TOLERANCE, eps0, (await f32("unet_out_step0")).data);
  const result = await runInProcess(
    { steps: request.steps, warmup: Math.min(5, request.steps), devices: 1 },
    () => denoiser,
    x0,
  );
  close("final latents", TOLERANCE, result.output, (await f32("latents_final")).data);
  const decoded = decode(env, model, request, result.output, { session });
  close("mel", TOLERANCE, decoded.mel.data, (await f32("mel")).data);
  close("waveform", TOLERANCE, decoded.waveform, (await f32("waveform")).data);
  console.log(`${folder.label} ${caseName} on ${ep} relative errors: ${errors.join(", ")}`);
}

Deno.test({
  name: "AudioLDM2 fp16: ParaStep on 2 Workers gives the in-process engine's output bit for bit",
  ignore: absent !== undefined,
  async fn() {
    const model = resolveModel(FP16_DIR);
    const request = checkRequest(model, { prompt: "dog barking", seed: 3, steps: 8 });
    using env = Env.create();
    const conditioning = await audioldm2.encode(env, model, request, {});
    const spec = {
      module: audioldm2.samplerModule,
      open: audioldm2.denoiserInit(model, request),
      mode: "parastep",
      devices: 2,
      ep: "cpu",
      threads: 1,
    } as const;
    const job = {
      generation: audioldm2.generationInit(model, request, conditioning),
      x0: audioldm2.prepareLatents(request),
      steps: request.steps,
      warmup: 2,
      stride: 2,
    } as const;
    const workers = await denoiseOnce(denoiseWithWorkers, spec, job);
    const inProcess = await denoiseOnce(denoiseInProcess, spec, job);
    assert.deepEqual(workers.output, inProcess.output);
    assert.ok(workers.output.every(Number.isFinite));
  },
});

Deno.test({
  name: "gen on a folder of both types: --dtype fp16 is the fp16 folder's output, auto on the " +
    "CPU is --dtype fp32's",
  ignore: absentFolders.some((why) => why !== undefined),
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const gen = async (model: string, name: string, ...flags: string[]) => {
        const out = `${dir}/${name}.wav`;
        const args = ["gen", "--model", model, "--prompt", "dog barking", "--steps", "8"];
        const run = await parastep([...args, "--gpus", "2", "--ep", "cpu", ...flags, "--out", out]);
        assert.equal(run.code, 0, run.stderr);
        return await Deno.readFile(out);
      };
      const fp16 = await gen(FP16_DIR, "fp16");
      const report = `${dir}/variant.json`;
      assert.deepEqual(await gen(DUAL_DIR, "variant", "--dtype", "fp16", "--report", report), fp16);
      assert.equal(JSON.parse(await Deno.readTextFile(report)).dtype, "fp16");
      const fp32 = await gen(DUAL_DIR, "fp32", "--dtype", "fp32");
      assert.deepEqual(await gen(DUAL_DIR, "auto"), fp32);
      assert.notDeepEqual(fp32, fp16);
      const refused = await parastep(["gen", "--model", FP16_DIR, "--dtype", "fp32", "-p", "x"]);
      assert.equal(refused.code, 2);
      assert.match(refused.stderr, /the model has no fp32 graphs \(it holds fp16\)/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
