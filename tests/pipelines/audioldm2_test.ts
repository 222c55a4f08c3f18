import assert from "node:assert/strict";
import { Env } from "../../ffi/mod.ts";
import { expectDtype, readNpy } from "../../src/io/npy.ts";
import { resolveModel } from "../../src/models/model.ts";
import { runInProcess } from "../../src/parastep/rounds.ts";
import {
  checkRequest,
  decode,
  Denoiser,
  encodePrompt,
  openUnet,
  prepareLatents,
} from "../../src/pipelines/audioldm2/mod.ts";
import { ddim } from "../../src/schedulers/ddim.ts";
import { relativeError } from "../support/compare.ts";

/** Largest relative error (max |a - b| / max |b|) accepted against diffusers in float32. */
const PARITY_TOLERANCE = 1e-4;

const TINY = new URL("../../models/audioldm2-tiny", import.meta.url).pathname;
const model = resolveModel(TINY);

interface CaseInfo {
  prompt: string;
  negativePrompt: string;
  steps: number;
  guidance: number;
  duration: number;
  melFrames: number;
  latentFrames: number;
  originalWaveformLength: number;
}

async function loadCase(name: string) {
  const dir = `${TINY}/reference/${name}`;
  const info: CaseInfo = JSON.parse(await Deno.readTextFile(`${dir}/case.json`));
  const f32 = async (file: string) => expectDtype(await readNpy(`${dir}/${file}.npy`), "float32");
  const i64 = async (file: string) => expectDtype(await readNpy(`${dir}/${file}.npy`), "int64");
  return { dir, info, f32, i64 };
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
  Deno.test(`AudioLDM2 ${caseName} matches diffusers stage by stage`, async () => {
    const { info, f32, i64 } = await loadCase(caseName);
    const initial = await f32("latents_initial");
    const request = checkRequest(model, {
      prompt: info.prompt,
      negativePrompt: info.negativePrompt,
      steps: info.steps,
      guidance: info.guidance,
      duration: info.duration,
      latents: initial.data as Float32Array<ArrayBuffer>,
    });
    assert.deepEqual(request.latentDims, initial.shape);
    assert.equal(request.melFrames, info.melFrames);
    assert.equal(request.waveformLength, info.originalWaveformLength);

    using env = Env.create();
    const { conditioning, intermediates } = await encodePrompt(env, model, request, {
      session: { intraOpThreads: 1 },
    });
    const asNumbers = (a: BigInt64Array) => Array.from(a, Number);
    assert.deepEqual(
      asNumbers(intermediates.clapIds.data),
      asNumbers((await i64("clap_input_ids")).data),
    );
    assert.deepEqual(
      asNumbers(intermediates.clapMask.data),
      asNumbers((await i64("clap_attention_mask")).data),
    );
    assert.deepEqual(
      asNumbers(intermediates.t5Ids.data),
      asNumbers((await i64("t5_input_ids")).data),
    );
    assert.deepEqual(
      asNumbers(conditioning.t5Mask.data),
      asNumbers((await i64("t5_attention_mask")).data),
    );
    close(caseName, "clap", intermediates.clap.data, (await f32("clap_text_embeds")).data);
    close(caseName, "t5", conditioning.t5.data, (await f32("t5_last_hidden_state")).data);
    close(
      caseName,
      "projection",
      intermediates.projection.data,
      (await f32("projection_hidden_states")).data,
    );
    assert.deepEqual(
      asNumbers(intermediates.projectionMask.data),
      asNumbers((await i64("projection_attention_mask")).data),
    );
    close(caseName, "gpt2", conditioning.generated.data, (await f32("gpt2_generated")).data);

    const table = ddim(model.manifest.scheduler, request.steps);
    assert.deepEqual(Array.from(table.timesteps), asNumbers((await i64("timesteps")).data));

    using unet = openUnet(env, model, { intraOpThreads: 1 });
    using denoiser = new Denoiser(unet, conditioning, table, request.latentDims);
    const x0 = prepareLatents(request);
    close(caseName, "unet step 0", await denoiser.model(x0, 0), (await f32("unet_out_step0")).data);

    const result = await runInProcess(
      { steps: request.steps, warmup: Math.min(5, request.steps), devices: 1 },
      () => denoiser,
      x0,
    );
    close(caseName, "final latents", result.output, (await f32("latents_final")).data);

    const decoded = decode(env, model, request, result.output, { session: { intraOpThreads: 1 } });
    close(caseName, "mel", decoded.mel.data, (await f32("mel")).data);
    close(caseName, "waveform", decoded.waveform, (await f32("waveform")).data);
    console.log(
      `${caseName} relative errors:`,
      Object.entries(errors[caseName]!).map(([k, v]) => `${k} ${v.toExponential(2)}`).join(", "),
    );
  });
}
