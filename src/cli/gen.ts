/**
 * `parastep gen`: one request in, the model family's output files out.
 *
 * @module
 */

import { OutputPathError, OutputSet, type OutputTarget } from "../io/output_set.ts";
import { isAbsolute, joinPath } from "../io/paths.ts";
import { type ModelFolder, resolveModelFor } from "../models/model.ts";
import {
  checkRunPlan,
  type DenoiseEngine,
  denoiseInProcess,
  denoiseWithWorkers,
  familyOf,
  type FlagValue,
  type FlagValues,
  type Generation,
  Generator,
  type GeneratorOptions,
  type PipelineFamily,
  type RequestBase,
} from "../pipelines/mod.ts";
import type { GenCommand } from "./args.ts";
import type { RankLoss } from "../parastep/rounds.ts";
import { describeError } from "./errors.ts";
import { ProgressBar } from "./progress.ts";

/** What `gen` did, for the summary line and for tests. */
export interface GenSummary {
  /** The output (with `--prompts`, the folder). */
  readonly out: string;
  /** The summary line. */
  readonly line: string;
  /** 0, or 1 when a `--prompts` line was skipped. */
  readonly exitCode: number;
}

/** Picks the engine: Workers for ParaStep on several devices unless told otherwise. */
export type EngineChooser = (command: GenCommand) => DenoiseEngine;

/**
 * The default chooser: Workers, unless `--in-process` asks for everything in this process, or
 * `--nats` for ranks on serving hosts.
 */
export const chooseEngine: EngineChooser = (command) => {
  const hosts = command.multihost;
  if (hosts !== undefined) {
    // Loaded only for --nats, so that runs on one host never load the NATS client.
    return async (spec) => {
      const [{ natsEngine }, { credsOf }] = await Promise.all([
        import("../pipelines/multihost/engine.ts"),
        import("./serve.ts"),
      ]);
      return await natsEngine({
        url: hosts.url,
        ...credsOf(hosts),
        ...(hosts.hosts === undefined ? {} : { hosts: hosts.hosts }),
        localRanks: hosts.localRanks,
        rankTimeoutMs: hosts.rankTimeout * 1000,
        onRankLoss: hosts.onRankLoss,
      })(spec);
    };
  }
  const replay = command.replayLoss;
  if (replay !== undefined) {
    return async (spec) => {
      const { replayLossEngine } = await import("../pipelines/multihost/replay.ts");
      return await replayLossEngine([replay])(spec);
    };
  }
  return command.inProcess ? denoiseInProcess : denoiseWithWorkers;
};

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

/** The generation options `gen` takes from its command line. */
function generatorOptions(command: GenCommand, engine: DenoiseEngine): GeneratorOptions {
  return {
    ep: command.ep,
    mode: command.mode,
    devices: command.gpus,
    ...(command.warmup !== undefined ? { warmup: command.warmup } : {}),
    ...(command.stride !== undefined ? { stride: command.stride } : {}),
    ...(command.exchange !== undefined ? { exchange: command.exchange } : {}),
    ...(command.threads !== undefined
      ? { threads: command.threads, denoiserThreads: command.threads }
      : {}),
    graphCache: command.graphCache,
    // parastep reports every error itself, in one line; ORT's own log adds lines of its own.
    logLevel: command.verbose ? "warning" : "fatal",
    ...(command.stallTimeout !== undefined ? { stallTimeoutMs: command.stallTimeout * 1000 } : {}),
    denoiseWith: engine,
  };
}

/**
 * Generates `request` with `generator`, shows progress, and commits the outputs as one set:
 * all or none. Ctrl-C before the last rename leaves nothing and rethrows its reason.
 */
async function generateAndWrite<R extends RequestBase, C, M>(
  generator: Generator<R, C, M>,
  family: PipelineFamily<R, C, M>,
  request: R,
  outputs: OutputSet,
  targets: readonly OutputTarget[],
  flags: FlagValues,
  signal: AbortSignal | undefined,
  report?: (result: Generation<R, M>) => Uint8Array,
): Promise<Generation<R, M>> {
  const progress = new ProgressBar("denoise", request.steps);
  let result: Generation<R, M>;
  try {
    result = await generator.generate(request, {
      onStep: (i) => progress.update(i + 1),
      ...(signal ? { signal } : {}),
    });
  } finally {
    progress.finish();
  }
  signal?.throwIfAborted(); // Ctrl-C during decoding: still nothing written
  const contents = await family.render(request, result.media, targets, flags, {
    ...(signal ? { signal } : {}),
  });
  const done = result;
  await outputs.commit(
    report === undefined ? contents : [...contents, () => report(done)],
    signal ? { signal } : {},
  );
  return result;
}

/** What `gen --report` writes: one generation's stages and devices. */
export interface GenReport {
  readonly model: string;
  readonly family: string;
  /** The family's one-line description of the request. */
  readonly request: string;
  readonly out: string;
  readonly seed: number;
  readonly steps: number;
  readonly mode: string;
  readonly devices: number;
  readonly warmup: number;
  readonly exchange: string | null;
  /** The provider the denoiser ran on. */
  readonly ep: string;
  /** The float type of the graphs that ran (`--dtype`, resolved). */
  readonly dtype: string;
  readonly graphCache: boolean;
  readonly criticalPathCalls: number;
  readonly bytesExchanged: number;
  /** Milliseconds per stage (see `Generation.timings`). */
  readonly timings: Generation<RequestBase, unknown>["timings"];
}

function reportJson<R extends RequestBase, M>(
  command: GenCommand,
  model: ModelFolder,
  out: string,
  family: PipelineFamily<R, unknown, M>,
  result: Generation<R, M>,
): Uint8Array {
  const { request, denoise } = result;
  const report: GenReport = {
    model: command.model,
    family: family.name,
    request: family.describe(request),
    out,
    seed: request.seed,
    steps: request.steps,
    mode: denoise.mode,
    devices: denoise.devices,
    warmup: denoise.warmup,
    exchange: denoise.exchange,
    ep: denoise.ep,
    dtype: model.manifest.dtype,
    graphCache: command.graphCache,
    criticalPathCalls: denoise.criticalPathCalls,
    bytesExchanged: denoise.bytesExchanged,
    timings: result.timings,
  };
  return new TextEncoder().encode(JSON.stringify(report, null, 2) + "\n");
}

/** The summary line of one generation: what was written, and where the time went. */
function summaryLine<R extends RequestBase, M>(
  family: PipelineFamily<R, unknown, M>,
  out: string,
  result: Generation<R, M>,
): string {
  const { request, denoise, timings } = result;
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const devices = denoise.mode === "parastep" && denoise.devices > 1
    ? `ParaStep on ${denoise.devices} devices (W=${denoise.warmup}` +
      (denoise.exchange === "allgather" ? ", all-gather" : "") + ")"
    : denoise.mode === "batchstep"
    ? "BatchStep on 1 device"
    : "sequential on 1 device";
  return `wrote ${out} (${family.describe(request)}): ` +
    `encode ${s(timings.encodeMs)}, load ${s(timings.loadMs)} (beside encoding), ` +
    `denoise ${s(timings.denoiseMs)} ` +
    `(${request.steps} steps, ${devices}, ${denoise.ep}, ${denoise.criticalPathCalls} network calls on the critical path` +
    (denoise.bytesExchanged > 0
      ? `, ${(denoise.bytesExchanged / 1024).toFixed(0)} KiB exchanged`
      : "") +
    `)` + lossesText(denoise.losses) +
    `, decode ${s(timings.decodeMs)}, total ${s(timings.totalMs)}`;
}

/** `--on-rank-loss continue`: which rank was lost at which step, and the N the rest ran at. */
function lossesText(losses: Generation<RequestBase, unknown>["denoise"]["losses"]): string {
  if (losses === undefined || losses.length === 0) return "";
  const one = (l: RankLoss) =>
    `${l.rank < 0 ? "a rank" : `rank ${l.rank}`} lost at step ${l.step}, ` +
    `the rest ran at N=${l.devices}`;
  return ` (${losses.map(one).join("; ")})`;
}

/** Options for {@linkcode runGen}. */
export interface RunGenOptions {
  /** Aborting it (Ctrl-C) stops the run cleanly; nothing is written that was not finished. */
  signal?: AbortSignal;
  /** Picks the engine. @default {chooseEngine} */
  chooseEngine?: EngineChooser;
  /** With `--prompts`: each line's result (or why it was skipped) as it happens. */
  onLine?: (line: string) => void;
}

/**
 * Runs `gen`: checks the model, the request and every output path first, then generates, then
 * writes the outputs as one output set: all or none. With `--prompts FILE`, one generation per
 * line of the file ({@linkcode runPromptsFile}).
 *
 * @param signal aborting it (Ctrl-C) before the last file is renamed into place stops the run
 *   cleanly; nothing is written
 */
export async function runGen(
  command: GenCommand,
  options: RunGenOptions = {},
): Promise<GenSummary> {
  const model = resolveModelFor(command.model, command);
  const family = familyOf(model);
  checkFamilyFlags(family, command.model, command.flags);
  const engine = (options.chooseEngine ?? chooseEngine)(command);
  if (command.prompts !== undefined) {
    return await runPromptsFile(family, model, command, engine, options);
  }
  const request = family.checkRequest(model, {
    ...(command.steps !== undefined ? { steps: command.steps } : {}),
    seed: command.seed,
    flags: command.flags,
  });
  const out = command.out ?? family.defaultOutput(request);
  const targets = family.outputs(request, out, command.flags);
  const report = command.report;
  const outputs = OutputSet.plan(
    report === undefined ? targets : [...targets, { path: report, label: "the report" }],
  );
  // 1. Check inputs: the plan first (before any graph is read), then the generator checks graphs.
  checkRunPlan(model, request.steps, generatorOptions(command, engine));
  options.signal?.throwIfAborted();
  await using generator = new Generator(family, model, generatorOptions(command, engine));
  const result = await generateAndWrite(
    generator,
    family,
    request,
    outputs,
    targets,
    command.flags,
    options.signal,
    report === undefined ? undefined : (r) => reportJson(command, model, out, family, r),
  );
  return { out, line: summaryLine(family, out, result), exitCode: 0 };
}

/** The most lines a `--prompts` file may hold. */
const MAX_PROMPT_LINES = 100_000;

/** One usable line of a `--prompts` file. */
interface PromptLine {
  readonly number: number;
  readonly flags: FlagValues;
  readonly seed: number | undefined;
  readonly steps: number | undefined;
  /** The line's own output path (relative ones inside `--out`). */
  readonly out: string | undefined;
}

/**
 * Reads a `--prompts` file: one prompt per line, or a JSON object per line whose keys are the
 * family's flags (`"prompt"`, `"duration"`, ...) plus `"seed"`, `"steps"` and `"out"` (the line's
 * own output path). Blank lines and lines starting with `#` are skipped; a line that cannot be
 * used is returned as a problem.
 */
export function readPromptsFile(
  text: string,
  family: PipelineFamily,
): { lines: PromptLine[]; problems: { number: number; reason: string }[] } {
  const specs = new Map(family.flags.filter((f) => !f.output).map((f) => [f.name, f]));
  const lines: PromptLine[] = [];
  const problems: { number: number; reason: string }[] = [];
  text.split(/\r?\n/).forEach((raw, k) => {
    const number = k + 1;
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    if (!line.startsWith("{")) {
      lines.push({
        number,
        flags: { prompt: line },
        seed: undefined,
        steps: undefined,
        out: undefined,
      });
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (e) {
      problems.push({ number, reason: `not JSON: ${(e as Error).message}` });
      return;
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      problems.push({ number, reason: "a JSON line must be an object of flags" });
      return;
    }
    const flags: Record<string, FlagValue> = {};
    let seed: number | undefined;
    let steps: number | undefined;
    let out: string | undefined;
    for (const [key, value] of Object.entries(parsed)) {
      if (key === "out") {
        if (typeof value !== "string" || value === "") {
          problems.push({ number, reason: `'out' must be a path: found ${JSON.stringify(value)}` });
          return;
        }
        out = value;
        continue;
      }
      if (key === "seed" || key === "steps") {
        const min = key === "seed" ? 0 : 1;
        if (!Number.isSafeInteger(value) || (value as number) < min) {
          problems.push({
            number,
            reason: `'${key}' must be an integer >= ${min}: found ${JSON.stringify(value)}`,
          });
          return;
        }
        if (key === "seed") seed = value as number;
        else steps = value as number;
        continue;
      }
      const spec = specs.get(key);
      if (spec === undefined) {
        problems.push({
          number,
          reason: `'${key}' is not a flag of ${family.name} (${
            ["seed", "steps", "out", ...specs.keys()].join(", ")
          })`,
        });
        return;
      }
      const ok = spec.type === "boolean"
        ? typeof value === "boolean"
        : spec.type === "string"
        ? typeof value === "string" && (spec.choices === undefined || spec.choices.includes(value))
        : typeof value === "number" && Number.isFinite(value) &&
          (spec.type !== "integer" || (Number.isInteger(value) && value >= (spec.min ?? 0)));
      if (!ok) {
        problems.push({
          number,
          reason: `'${key}' must be ${
            spec.choices ? `one of ${spec.choices.join(", ")}` : `a ${spec.type}`
          }: found ${JSON.stringify(value)}`,
        });
        return;
      }
      flags[key] = value as FlagValue;
    }
    lines.push({ number, flags, seed, steps, out });
  });
  return { lines, problems };
}

/**
 * `gen --prompts FILE`: every line of the file generated in turn with one {@linkcode Generator}
 * (the denoisers, Workers and decoder open once), each written as `<out>/<N>-<default name>` (N: the line number, zero-padded to the widest)
 * (the line number, then the name `gen` would give it). A line that cannot be used or written, or
 * whose generation fails, is reported with its number and skipped; the rest still run. Ctrl-C
 * keeps the finished outputs and leaves no partial file. The summary says what was written and
 * what was skipped; the exit code is 1 when a line was skipped.
 */
async function runPromptsFile<R extends RequestBase, C, M>(
  family: PipelineFamily<R, C, M>,
  model: ModelFolder,
  command: GenCommand,
  engine: DenoiseEngine,
  options: RunGenOptions,
): Promise<GenSummary> {
  const file = command.prompts!;
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    throw new OutputPathError(`Cannot read --prompts '${file}': ${(e as Error).message}`);
  }
  const { lines, problems } = readPromptsFile(text, family);
  if (lines.length + problems.length > MAX_PROMPT_LINES) {
    throw new RangeError(
      `Cannot run --prompts '${file}': it holds ${
        lines.length + problems.length
      } lines; the limit is ${MAX_PROMPT_LINES}`,
    );
  }
  const dir = command.out ?? ".";
  const width = String(Math.max(1, ...lines.map((l) => l.number))).length;
  const skipped: string[] = [];
  const report = (number: number, reason: string) => {
    const line = `line ${number} skipped: ${reason}`;
    skipped.push(line);
    options.onLine?.(line);
  };
  for (const p of problems) report(p.number, p.reason);
  const started = performance.now();
  const perPrompt: number[] = [];
  let written = 0;
  let generator: Generator<R, C, M> | null = null;
  const closeGenerator = async () => {
    await generator?.close();
    generator = null;
  };
  try {
    for (const line of lines.toSorted((a, b) => a.number - b.number)) {
      options.signal?.throwIfAborted();
      const flags = { ...command.flags, ...line.flags };
      let request: R;
      let outputs: OutputSet;
      let targets: OutputTarget[];
      let out: string;
      try {
        request = family.checkRequest(model, {
          ...(line.steps ?? command.steps) !== undefined
            ? { steps: (line.steps ?? command.steps)! }
            : {},
          seed: line.seed ?? command.seed,
          flags,
        });
        const name = line.out ??
          `${String(line.number).padStart(width, "0")}-${family.defaultOutput(request)}`;
        out = isAbsolute(name) ? name : joinPath(dir, name);
        // The --out folder is made when the first output goes in (and only then); a line's own
        // absolute path must name a folder that exists.
        const inside = !isAbsolute(name);
        targets = family.outputs(request, out, flags).map((t) =>
          inside ? { ...t, createFolders: true } : t
        );
        outputs = OutputSet.plan(targets);
        checkRunPlan(model, request.steps, generatorOptions(command, engine));
      } catch (e) {
        if (!(e instanceof RangeError || e instanceof OutputPathError)) throw e;
        report(line.number, e.message);
        continue;
      }
      generator ??= new Generator(family, model, generatorOptions(command, engine));
      const t0 = performance.now();
      try {
        const result = await generateAndWrite(
          generator,
          family,
          request,
          outputs,
          targets,
          flags,
          options.signal,
        );
        written += 1;
        perPrompt.push(performance.now() - t0);
        options.onLine?.(summaryLine(family, out, result));
      } catch (e) {
        if (options.signal?.aborted) throw options.signal.reason;
        report(line.number, describeError(e).message);
        // A failed generation may have broken the denoisers: the next line opens fresh ones.
        await closeGenerator();
      }
    }
  } finally {
    await closeGenerator();
  }
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const later = perPrompt.slice(1);
  const summary =
    `--prompts ${file}: ${written} of ${lines.length + problems.length} lines written in ${
      s(performance.now() - started)
    }` +
    (perPrompt.length > 0 ? `, first ${s(perPrompt[0]!)}` : "") +
    (later.length > 0
      ? `, then ${s(later.reduce((a, b) => a + b, 0) / later.length)} per line`
      : "") +
    (skipped.length > 0 ? `; ${skipped.length} skipped (see above)` : "");
  return { out: dir, line: summary, exitCode: skipped.length > 0 ? 1 : 0 };
}
