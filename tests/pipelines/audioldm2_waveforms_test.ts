import assert from "node:assert/strict";
import { Env } from "../../ffi/mod.ts";
import { expectDtype, readNpy } from "../../src/io/npy.ts";
import { resolveModel } from "../../src/models/model.ts";
import { runInProcess } from "../../src/parastep/rounds.ts";
import {
  checkRequest,
  ClapScorer,
  decodeRanked,
  Denoiser,
  encodePrompt,
  openUnet,
  prepareLatents,
} from "../../src/pipelines/audioldm2/mod.ts";
import {
  clapFeatures,
  clapFeatureSettings,
  clapFrames,
  resampleFir,
} from "../../src/pipelines/audioldm2/clap_scoring.ts";
import { rankedPath } from "../../src/pipelines/audioldm2/mod.ts";
import { ddim } from "../../src/schedulers/ddim.ts";
import { relativeError } from "../support/compare.ts";

/**
 * Parity with diffusers' `AudioLDM2Pipeline(num_waveforms_per_prompt=3)` on the tiny model
 * (reference/waveforms3, written by the exporter from diffusers' own run, librosa installed).
 */

/** Largest relative error (max |a - b| / max |b|) accepted against diffusers in float32. */
const PARITY_TOLERANCE = 1e-4;
/** Scores (logits_per_text) agree to this, absolutely. */
const SCORE_TOLERANCE = 1e-4;
/** librosa's float32 soxr output against the measured FIR, absolutely. */
const RESAMPLE_TOLERANCE = 1e-5;
/** Log-mel features in dB, absolutely (FFT summation order, complex64 rounding). */
const FEATURE_TOLERANCE = 1e-3;

const TINY = new URL("../../models/audioldm2-tiny", import.meta.url).pathname;
const model = resolveModel(TINY);
const DIR = `${TINY}/reference/waveforms3`;
const info = JSON.parse(await Deno.readTextFile(`${DIR}/case.json`)) as {
  prompt: string;
  negativePrompt: string;
  steps: number;
  guidance: number;
  waveforms: number;
  ranking: number[];
};
const f32 = async (file: string) => expectDtype(await readNpy(`${DIR}/${file}.npy`), "float32");
const i64 = async (file: string) => expectDtype(await readNpy(`${DIR}/${file}.npy`), "int64");

function rows(a: { data: Float32Array; shape: readonly number[] }): Float32Array[] {
  const n = a.data.length / a.shape[0]!;
  return Array.from({ length: a.shape[0]! }, (_, k) => a.data.subarray(k * n, (k + 1) * n));
}

function close(label: string, got: ArrayLike<number>, want: ArrayLike<number>, tol: number) {
  const { rel, maxAbs, index } = relativeError(got, want);
  assert.ok(
    rel <= tol,
    `${label}: relative error ${rel.toExponential(2)} (max |diff| ${maxAbs} at ${index})`,
  );
  return rel;
}

function maxAbsDiff(got: ArrayLike<number>, want: ArrayLike<number>): number {
  assert.equal(got.length, want.length);
  let m = 0;
  for (let k = 0; k < got.length; k++) m = Math.max(m, Math.abs(got[k]! - want[k]!));
  return m;
}

Deno.test("resampleFir reproduces librosa.resample (soxr_hq) on diffusers' waveforms", async () => {
  const settings = clapFeatureSettings(model);
  const taps = expectDtype(
    await readNpy(`${TINY}/${settings.resampler.file}`),
    "float32",
  ).data;
  const waves = rows(await f32("waveforms_unranked"));
  const want = rows(await f32("clap_resampled"));
  for (let k = 0; k < waves.length; k++) {
    const got = resampleFir(waves[k]!, taps, settings.resampler.delay, settings.resampler.up);
    const err = maxAbsDiff(got, want[k]!);
    assert.ok(err <= RESAMPLE_TOLERANCE, `waveform ${k}: max |diff| ${err}`);
    console.log(`resampled waveform ${k}: max |diff| ${err.toExponential(2)}`);
  }
});

Deno.test("clapFeatures equals ClapFeatureExtractor's input_features", async () => {
  const settings = clapFeatureSettings(model);
  const resampled = rows(await f32("clap_resampled"));
  const want = await f32("clap_input_features");
  assert.deepEqual(want.shape, [3, 1, clapFrames(settings), settings.featureSize]);
  const expected = rows(want);
  for (let k = 0; k < resampled.length; k++) {
    const err = maxAbsDiff(clapFeatures(resampled[k]!, settings), expected[k]!);
    assert.ok(err <= FEATURE_TOLERANCE, `waveform ${k}: max |diff| ${err} dB`);
    console.log(`features of waveform ${k}: max |diff| ${err.toExponential(2)} dB`);
  }
});

Deno.test("ClapScorer gives diffusers' score_waveforms scores and ranking", async () => {
  using env = Env.create({ logLevel: "error" });
  using scorer = await ClapScorer.open(env, model, { intraOpThreads: 1 });
  const waves = rows(await f32("waveforms_unranked"));
  const { scores, order } = scorer.score(info.prompt, waves);
  const want = (await f32("logits_per_text")).data;
  const err = maxAbsDiff(scores, want);
  assert.ok(err <= SCORE_TOLERANCE, `scores ${scores} vs ${Array.from(want)}: ${err}`);
  console.log(`scores ${scores.map((v) => v.toFixed(6))}: max |diff| ${err.toExponential(2)}`);
  assert.deepEqual(order, info.ranking);
  assert.deepEqual(order, Array.from((await i64("ranking")).data, Number));
});

Deno.test("AudioLDM2 --waveforms 3 equals diffusers' pipeline: batch 3, ranked by CLAP", async () => {
  using env = Env.create({ logLevel: "error" });
  const initial = await f32("latents_initial");
  const request = checkRequest(model, {
    prompt: info.prompt,
    negativePrompt: info.negativePrompt,
    steps: info.steps,
    guidance: info.guidance,
    waveforms: info.waveforms,
    latents: initial.data as Float32Array<ArrayBuffer>,
  });
  assert.deepEqual(request.latentDims, initial.shape);
  const session = { intraOpThreads: 1 };
  const { conditioning } = await encodePrompt(env, model, request, { session });
  using unet = openUnet(env, model, session);
  using denoiser = new Denoiser(
    unet,
    conditioning,
    ddim(model.manifest.scheduler, request.steps),
    request.latentDims,
  );
  const x0 = prepareLatents(request);
  const sequential = await runInProcess(
    { steps: request.steps, warmup: 5, devices: 1 },
    () => denoiser,
    x0,
  );
  close("final latents", sequential.output, (await f32("latents_final")).data, PARITY_TOLERANCE);
  const decoded = await decodeRanked(env, model, request, sequential.output, { session });
  assert.deepEqual(decoded.order, info.ranking);
  const want = rows(await f32("waveform"));
  decoded.waveforms.forEach((w, r) => {
    const rel = close(`waveform rank ${r}`, w, want[r]!, PARITY_TOLERANCE);
    console.log(`waveform rank ${r}: relative error ${rel.toExponential(2)}`);
  });
  assert.equal(decoded.waveform, decoded.waveforms[0]);
  const scores = (await f32("logits_per_text")).data;
  const err = maxAbsDiff(decoded.scores, info.ranking.map((k) => scores[k]!));
  assert.ok(err <= SCORE_TOLERANCE, `scores: max |diff| ${err}`);
  console.log(`end to end: scores max |diff| ${err.toExponential(2)}, order ${decoded.order}`);

  // ParaStep with K > 1: N = 2 runs on latents 3 times larger and stays close to sequential.
  const parallel = await runInProcess(
    { steps: request.steps, warmup: 5, devices: 2 },
    () => denoiser,
    x0,
  );
  assert.equal(parallel.output.length, x0.length);
  const rel = relativeError(parallel.output, sequential.output).rel;
  assert.ok(rel > 0 && rel < 0.5, `ParaStep N=2 vs sequential: relative error ${rel}`);
});

Deno.test("--keep-all names are OUT-rank before the extension", () => {
  assert.equal(rankedPath("out/x.wav", 1), "out/x-1.wav");
  assert.equal(rankedPath("x", 3), "x-3");
  assert.equal(rankedPath("a.b/x", 2), "a.b/x-2");
  assert.equal(rankedPath(".wav", 2), ".wav-2");
});

Deno.test("--waveforms is refused out of range, before any session opens", () => {
  assert.throws(
    () => checkRequest(model, { prompt: "x", waveforms: 0 }),
    /'waveforms' must be between 1 and 16: current value is 0/,
  );
  assert.throws(
    () => checkRequest(model, { prompt: "x", waveforms: 2.5 }),
    /'waveforms' must be an integer/,
  );
});
