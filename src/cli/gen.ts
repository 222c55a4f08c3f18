/**
 * `parastep gen`: one prompt in, one WAV out.
 *
 * @module
 */

import { encodeHeatmapPng } from "../io/png.ts";
import { encodeWav } from "../io/wav.ts";
import { type OutputContent, OutputSet, type OutputTarget } from "../io/output_set.ts";
import { resolveModel } from "../models/model.ts";
import { type DenoiseEngine, denoiseInProcess, generate } from "../pipelines/audioldm2.ts";
import { denoiseWithWorkers } from "../pipelines/audioldm2_workers.ts";
import type { GenCommand } from "./args.ts";
import { defaultOutputName } from "./output.ts";
import { ProgressBar } from "./progress.ts";

/** The families `gen` can run. */
const FAMILIES = ["audioldm2"];

/** What `gen` did, for the summary line and for tests. */
export interface GenSummary {
  readonly out: string;
  readonly line: string;
}

/** Picks the engine: Workers for ParaStep on several devices unless told otherwise. */
export type EngineChooser = (command: GenCommand) => DenoiseEngine;

/** The default chooser: Workers, unless `--in-process` asks for everything in this process. */
export const chooseEngine: EngineChooser = (command) =>
  command.inProcess ? denoiseInProcess : denoiseWithWorkers;

/**
 * Runs `gen`: checks the model and output paths first, then generates, then
 * writes the WAV (and spectrogram) as one output set: all or none.
 *
 * @param signal aborting it (Ctrl-C) before the last file is renamed into place
 *   stops the run cleanly; nothing is written
 */
export async function runGen(
  command: GenCommand,
  options: { signal?: AbortSignal; chooseEngine?: EngineChooser } = {},
): Promise<GenSummary> {
  const model = resolveModel(command.model);
  if (!FAMILIES.includes(model.manifest.family)) {
    throw new RangeError(
      `Cannot generate with '${command.model}': its family '${model.manifest.family}' is not supported yet (supported: ${
        FAMILIES.join(", ")
      })`,
    );
  }
  const out = command.out ?? defaultOutputName(command.prompt, command.seed);
  const targets: OutputTarget[] = [{ path: out, label: "the output" }];
  if (command.spectrogram !== undefined) {
    targets.push({ path: command.spectrogram, label: "the spectrogram" });
  }
  const outputs = OutputSet.plan(targets);

  const progress = new ProgressBar("denoise", command.steps ?? model.manifest.defaults.steps);
  const engine = (options.chooseEngine ?? chooseEngine)(command);
  let result;
  try {
    result = await generate(model, {
      prompt: command.prompt,
      ...(command.negativePrompt !== undefined ? { negativePrompt: command.negativePrompt } : {}),
      ...(command.steps !== undefined ? { steps: command.steps } : {}),
      ...(command.guidance !== undefined ? { guidance: command.guidance } : {}),
      ...(command.duration !== undefined ? { duration: command.duration } : {}),
      seed: command.seed,
    }, {
      ep: command.ep,
      mode: command.mode,
      devices: command.gpus,
      ...(command.warmup !== undefined ? { warmup: command.warmup } : {}),
      ...(command.stride !== undefined ? { stride: command.stride } : {}),
      ...(command.exchange !== undefined ? { exchange: command.exchange } : {}),
      ...(command.threads !== undefined ? { threads: command.threads } : {}),
      logLevel: command.verbose ? "warning" : "error",
      onStep: (i) => progress.update(i + 1),
      denoiseWith: engine,
      ...(options.signal ? { signal: options.signal } : {}),
    });
  } finally {
    progress.finish();
  }
  const { request, denoise, timings } = result;
  const contents: OutputContent[] = [
    () => encodeWav(result.waveform, request.sampleRate, { format: command.wavFormat }),
  ];
  if (command.spectrogram !== undefined) {
    const [, , frames, bins] = result.mel.dims;
    contents.push(() => encodeHeatmapPng(result.mel.data, [frames!, bins!]));
  }
  // All files or none; Ctrl-C before the last rename leaves nothing and rethrows its reason.
  await outputs.commit(contents, options.signal ? { signal: options.signal } : {});
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const devices = denoise.mode === "parastep" && denoise.devices > 1
    ? `ParaStep on ${denoise.devices} devices (W=${denoise.warmup}` +
      (denoise.exchange === "allgather" ? ", all-gather" : "") + ")"
    : denoise.mode === "batchstep"
    ? "BatchStep on 1 device"
    : "sequential on 1 device";
  const line = `wrote ${out} (${request.duration} s at ${request.sampleRate / 1000} kHz): ` +
    `encode ${s(timings.encodeMs)}, load ${s(timings.loadMs)}, denoise ${s(timings.denoiseMs)} ` +
    `(${request.steps} steps, ${devices}, ${denoise.ep}, ${denoise.criticalPathCalls} network calls on the critical path` +
    (denoise.bytesExchanged > 0
      ? `, ${(denoise.bytesExchanged / 1024).toFixed(0)} KiB exchanged`
      : "") +
    `), decode ${s(timings.decodeMs)}, total ${
      s(timings.encodeMs + timings.engineMs + timings.decodeMs)
    }`;
  return { out, line };
}
