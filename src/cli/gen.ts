/**
 * `parastep gen`: one request in, the model family's output files out.
 *
 * @module
 */

import { OutputSet } from "../io/output_set.ts";
import { resolveModel } from "../models/model.ts";
import {
  type DenoiseEngine,
  denoiseInProcess,
  denoiseWithWorkers,
  familyOf,
  type FlagValues,
  generate,
  type PipelineFamily,
} from "../pipelines/mod.ts";
import type { GenCommand } from "./args.ts";
import { ProgressBar } from "./progress.ts";

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

/** A flag of another family than the model's: exit 2 before any work. */
export class FlagNotApplicableError extends RangeError {
  override name = "FlagNotApplicableError";
}

/**
 * Refuses family flags the model's family does not take, naming the flag, the model's family and
 * the families it belongs to.
 *
 * @throws {FlagNotApplicableError}
 */
export function checkFamilyFlags(family: PipelineFamily, model: string, flags: FlagValues): void {
  const own = new Set(family.flags.map((f) => f.name));
  const foreign = Object.keys(flags).find((name) => !own.has(name));
  if (foreign !== undefined) {
    throw new FlagNotApplicableError(
      `--${foreign} does not apply to '${model}': its family, ${family.name} (${family.title}), ` +
        `does not take it; see 'parastep help gen' for its flags`,
    );
  }
}

/**
 * Runs `gen`: checks the model, the request and every output path first, then generates, then
 * writes the outputs as one output set: all or none.
 *
 * @param signal aborting it (Ctrl-C) before the last file is renamed into place stops the run
 *   cleanly; nothing is written
 */
export async function runGen(
  command: GenCommand,
  options: { signal?: AbortSignal; chooseEngine?: EngineChooser } = {},
): Promise<GenSummary> {
  const model = resolveModel(command.model);
  const family = familyOf(model);
  checkFamilyFlags(family, command.model, command.flags);
  const request = family.checkRequest(model, {
    ...(command.steps !== undefined ? { steps: command.steps } : {}),
    seed: command.seed,
    flags: command.flags,
  });
  const out = command.out ?? family.defaultOutput(request);
  const targets = family.outputs(request, out, command.flags);
  const outputs = OutputSet.plan(targets);

  const progress = new ProgressBar("denoise", request.steps);
  const engine = (options.chooseEngine ?? chooseEngine)(command);
  let result;
  try {
    result = await generate(family, model, request, {
      ep: command.ep,
      mode: command.mode,
      devices: command.gpus,
      ...(command.warmup !== undefined ? { warmup: command.warmup } : {}),
      ...(command.stride !== undefined ? { stride: command.stride } : {}),
      ...(command.exchange !== undefined ? { exchange: command.exchange } : {}),
      ...(command.threads !== undefined
        ? { threads: command.threads, denoiserThreads: command.threads }
        : {}),
      // parastep reports every error itself, in one line; ORT's own log adds lines of its own.
      logLevel: command.verbose ? "warning" : "fatal",
      ...(command.stallTimeout !== undefined
        ? { stallTimeoutMs: command.stallTimeout * 1000 }
        : {}),
      onStep: (i) => progress.update(i + 1),
      denoiseWith: engine,
      ...(options.signal ? { signal: options.signal } : {}),
    });
  } finally {
    progress.finish();
  }
  const { denoise, timings } = result;
  options.signal?.throwIfAborted(); // Ctrl-C during decoding: still nothing written
  const contents = await family.render(request, result.media, targets, command.flags, {
    ...(options.signal ? { signal: options.signal } : {}),
  });
  // All files or none; Ctrl-C before the last rename leaves nothing and rethrows its reason.
  await outputs.commit(contents, options.signal ? { signal: options.signal } : {});
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const devices = denoise.mode === "parastep" && denoise.devices > 1
    ? `ParaStep on ${denoise.devices} devices (W=${denoise.warmup}` +
      (denoise.exchange === "allgather" ? ", all-gather" : "") + ")"
    : denoise.mode === "batchstep"
    ? "BatchStep on 1 device"
    : "sequential on 1 device";
  const line = `wrote ${out} (${family.describe(request)}): ` +
    `encode ${s(timings.encodeMs)}, load ${s(timings.loadMs)} (beside encoding), ` +
    `denoise ${s(timings.denoiseMs)} ` +
    `(${request.steps} steps, ${devices}, ${denoise.ep}, ${denoise.criticalPathCalls} network calls on the critical path` +
    (denoise.bytesExchanged > 0
      ? `, ${(denoise.bytesExchanged / 1024).toFixed(0)} KiB exchanged`
      : "") +
    `), decode ${s(timings.decodeMs)}, total ${s(timings.totalMs)}`;
  return { out, line };
}
