/**
 * `deno task gpu-check`: the GPU path on one GPU host (see the README, "GPU check").
 *
 * For each execution provider that can run here (WebGPU through Dawn/Vulkan; CUDA
 * where its provider libraries sit beside libonnxruntime), and the CPU for
 * reference: the denoiser's per-step latency, sequential against ParaStep with
 * N Workers sharing the one GPU, and how closely each output agrees with the
 * CPU's output of the same configuration. Prints a table and, when `$OUT` is set, writes
 * `gpu-check.json` and `gpu-check.log` there.
 *
 * Usage: deno task gpu-check [--model NAME|PATH] [--steps T] [--workers N] [--runs K]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { AUTO_ORDER, Env, ortLibrary, probeProvider } from "../ffi/mod.ts";
import { median } from "../src/metrics/stats.ts";
import { resolveModel } from "../src/models/model.ts";
import {
  defaultWarmup,
  type DenoiseEngine,
  denoiseInProcess,
  type DenoiseMode,
  denoiseWithWorkers,
  familyOf,
} from "../src/pipelines/mod.ts";
import type { Exchange } from "../src/parastep/rounds.ts";
import { relativeError } from "../tests/support/compare.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: "audioldm2-tiny" },
    steps: { type: "string" },
    workers: { type: "string", default: "2" },
    runs: { type: "string", default: "3" },
  },
});
const N = Number(values.workers);
const runs = Number(values.runs);
const out = Deno.env.get("OUT");
const log: string[] = [];
const say = (line: string) => {
  console.log(line);
  log.push(line);
};

const lib = ortLibrary();
say(`ONNX Runtime ${lib.version} from ${lib.path}; ${navigator.hardwareConcurrency} CPU cores`);
using env = Env.create();
const providers = AUTO_ORDER.map((ep) => probeProvider(ep));
for (const p of providers) {
  say(`  ${p.ep.padEnd(7)} ${p.ok ? "usable" : `unavailable: ${p.reason}`}`);
}

const model = resolveModel(values.model!);
const family = familyOf(model);
const request = family.checkRequest(model, {
  ...(values.steps ? { steps: Number(values.steps) } : {}),
  seed: 0,
  flags: family.benchFlags,
});
const T = request.steps;
const W = defaultWarmup(model, T);
const conditioning = await family.encode(env, model, request, {});
using decoder = family.openDecoder(env, model, {});
const x0 = family.prepareLatents(request);
const open = family.denoiserInit(model, request);
const generation = family.generationInit(model, request, conditioning);

interface Result {
  ep: string;
  config: string;
  medianMs: number;
  stepMs: number;
  loadMs: number;
  calls: number;
  /** Rank 0's median send + wait per round (see `DenoiseReport.exchangeMsPerRound`). */
  exchangeMsPerRound: number;
  /** The family's first quality measure against the CPU's output (e.g. SNR dB for audio). */
  qualityVsCpu: { name: string; value: number };
  relErrorVsCpu: number;
}
const results: Result[] = [];
/** The CPU's output of each configuration: what every other EP's output is compared with. */
const cpuOutput = new Map<string, unknown>();

async function measure(
  ep: "cpu" | "cuda" | "webgpu",
  config: string,
  engine: DenoiseEngine,
  mode: DenoiseMode,
  devices: number,
  exchange: Exchange = "gather",
): Promise<void> {
  const times: number[] = [];
  let report;
  await using opened = await engine({
    module: family.samplerModule,
    open,
    mode,
    devices,
    ep,
    // Every worker on the one GPU.
    deviceIds: Array.from({ length: devices }, () => 0),
  });
  for (let k = 0; k < runs; k++) {
    report = await opened.run({ generation, x0, steps: T, warmup: W, stride: 2, exchange });
    times.push(report.loopMs);
  }
  const medianMs = median(times);
  const media = await decoder.decode(request, report!.output);
  if (ep === "cpu") cpuOutput.set(config, media);
  const reference = cpuOutput.get(config) ?? media;
  results.push({
    ep: report!.ep,
    config,
    medianMs,
    stepMs: medianMs / report!.criticalPathCalls,
    loadMs: opened.loadMs,
    calls: report!.criticalPathCalls,
    exchangeMsPerRound: report!.exchangeMsPerRound,
    qualityVsCpu: family.quality(reference, media)[0] ?? { name: "-", value: NaN },
    relErrorVsCpu: relativeError(family.samples(media), family.samples(reference)).rel,
  });
}

for (const ep of ["cpu", "webgpu", "cuda"] as const) {
  if (!providers.find((p) => p.ep === ep)?.ok) continue;
  try {
    await measure(ep, "sequential", denoiseInProcess, "sequential", 1);
    await measure(ep, `ParaStep N=${N}, one device`, denoiseWithWorkers, "parastep", N);
    await measure(
      ep,
      `ParaStep N=${N}, one device, all-gather`,
      denoiseWithWorkers,
      "parastep",
      N,
      "allgather",
    );
  } catch (e) {
    say(`  ${ep}: failed: ${(e as Error).message}`);
  }
}

say("");
say(
  `${model.manifest.name}: T=${T}, W=${W}, latents [${request.latentDims}], median of ${runs} runs`,
);
say(
  `| EP | config | loop ms | ms per call | calls | load ms | exchange ms/round | ${
    results[0]?.qualityVsCpu.name ?? "quality"
  } vs CPU | rel. error vs CPU |`,
);
say("|---|---|---|---|---|---|---|---|---|");
for (const r of results) {
  say(
    `| ${r.ep} | ${r.config} | ${r.medianMs.toFixed(1)} | ${r.stepMs.toFixed(2)} | ${r.calls} | ${
      r.loadMs.toFixed(0)
    } | ${r.exchangeMsPerRound.toFixed(2)} | ${
      Number.isFinite(r.qualityVsCpu.value) ? r.qualityVsCpu.value.toFixed(1) : "inf"
    } | ${r.relErrorVsCpu.toExponential(2)} |`,
  );
}
if (out) {
  await Deno.writeTextFile(
    `${out}/gpu-check.json`,
    JSON.stringify({ providers, results }, null, 2),
  );
  await Deno.writeTextFile(`${out}/gpu-check.log`, log.join("\n") + "\n");
}
