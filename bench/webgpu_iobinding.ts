/**
 * Measurement behind the README's "device-resident conditioning" lines: the AudioLDM2 UNet's
 * Denoiser on a GPU provider, per call, with `keepValuesOnDevice` (the default: the conditioning
 * is bound once through ORT's IoBinding and stays on the device) against without it (every input
 * copied on every call, as `Run` does). Calls interleaved in blocks of 5, 8 blocks each; prints
 * the median time per call, the inputs and bytes handed to ORT per call, and whether the outputs
 * are identical.
 *
 * Usage: deno run -A bench/webgpu_iobinding.ts [--ep webgpu|cuda] [--model NAME|PATH]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Env, type InputTransfers } from "../ffi/mod.ts";
import { resolveModel } from "../src/models/model.ts";
import {
  checkRequest,
  Denoiser,
  encodePrompt,
  openUnet,
  prepareLatents,
} from "../src/pipelines/audioldm2/mod.ts";
import { ddim } from "../src/schedulers/ddim.ts";
import { median } from "../src/metrics/stats.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { ep: { type: "string", default: "webgpu" }, model: { type: "string" } },
});
const ep = values.ep as "webgpu" | "cuda";
const model = resolveModel(
  values.model ?? new URL("../models/audioldm2-tiny", import.meta.url).pathname,
);
const request = checkRequest(model, { prompt: "rain on a tin roof", seed: 1, steps: 50 });
using env = Env.create();
const { conditioning } = await encodePrompt(env, model, request, {});
const table = ddim(model.manifest.scheduler, request.steps);
const x0 = prepareLatents(request);

const open = (keepValuesOnDevice: boolean) => {
  const unet = openUnet(env, model, {
    executionProvider: ep,
    intraOpThreads: 1,
    keepValuesOnDevice,
  });
  return { unet, denoiser: new Denoiser(unet, conditioning, table, request.latentDims) };
};
const kept = open(true);
const fed = open(false);
try {
  const first = { kept: await kept.denoiser.model(x0, 0), fed: await fed.denoiser.model(x0, 0) };
  const same = first.kept.every((v, k) => v === first.fed[k]);
  const times = { kept: [] as number[], fed: [] as number[] };
  for (let block = 0; block < 16; block++) {
    const which = block % 4 === 0 || block % 4 === 3 ? "kept" : "fed";
    const { denoiser } = which === "kept" ? kept : fed;
    for (let k = 0; k < 5; k++) {
      const t0 = performance.now();
      await denoiser.model(x0, 1 + k);
      times[which].push(performance.now() - t0);
    }
  }
  const perCall = (t: InputTransfers) =>
    `${(t.inputs / t.runs).toFixed(2)} inputs, ${(t.bytes / t.runs / 1024).toFixed(1)} KiB`;
  console.log(
    `${ep}, ${model.manifest.name}: per UNet call, conditioning kept on the device ` +
      `${median(times.kept).toFixed(2)} ms (${perCall(kept.unet.inputTransfers)} handed over), ` +
      `every input copied ${median(times.fed).toFixed(2)} ms ` +
      `(${perCall(fed.unet.inputTransfers)}); medians of ${times.kept.length} calls each, ` +
      `after one warm-up call each; outputs ${same ? "identical" : "differ"}`,
  );
} finally {
  for (const { unet, denoiser } of [kept, fed]) {
    denoiser[Symbol.dispose]();
    unet.close();
  }
}
