/**
 * The contract every model family implements (AudioLDM2, Stable Video Diffusion, ...), so that
 * `gen`, `bench`, `gpu-check` and the ParaStep engine know no family.
 *
 * A family is one folder under `src/pipelines/` whose `mod.ts` exports a {@linkcode PipelineFamily}
 * and whose sampler module (`sampler.ts`) is what each ParaStep Worker imports. The stages are
 * diffusers' `__call__` blocks: check the request, encode the conditioning (once, in the main
 * thread), denoise (the engine, with the family's sampler: denoiser + guidance + pure scheduler
 * step), decode, and write the output files.
 *
 * @module
 */

import type { Env } from "../../ffi/mod.ts";
import type { OutputContent, OutputTarget } from "../io/output_set.ts";
import type { ModelFolder, OpenComponentOptions } from "../models/model.ts";
import type { DenoiserOpen } from "./_denoiser.ts";

export type { DenoiserOpen, OutputContent, OutputTarget };

/** A flag a family adds to `gen` (and `bench`, unless it is an output flag). */
export interface FlagSpec {
  /** The flag without dashes, e.g. `"duration"`. */
  readonly name: string;
  /** How its value is read; bad values are usage errors before any work. */
  readonly type: "string" | "number" | "integer" | "boolean";
  /** The values a string flag accepts. */
  readonly choices?: readonly string[];
  /** The least value an integer flag accepts. */
  readonly min?: number;
  /** The value's name in the help, e.g. `"SECONDS"`. */
  readonly value?: string;
  /** One line of help, ending with its default. */
  readonly help: string;
  /** A one-letter alias. */
  readonly short?: string;
  /** Only `gen` takes it: it names or shapes an output file. */
  readonly output?: boolean;
}

/** A parsed flag value. */
export type FlagValue = string | number | boolean;

/** The family flags given on the command line, by name (absent when not given). */
export type FlagValues = Readonly<Record<string, FlagValue>>;

/** What the command line asks of every family, besides the family's own flags. */
export interface RequestInput {
  /** Denoising steps T; absent: the manifest's default. */
  readonly steps?: number;
  /** Seed of the initial noise. */
  readonly seed: number;
  /** The family's flags that were given (see {@linkcode PipelineFamily.flags}). */
  readonly flags: FlagValues;
}

/** What every family's checked request holds: what the engine needs. */
export interface RequestBase {
  /** Denoising steps T. */
  readonly steps: number;
  /** Seed of the initial noise. */
  readonly seed: number;
  /** The latents' dims (batch 1), e.g. `[1, 8, 32, 4]`. */
  readonly latentDims: readonly number[];
}

/** Session options for a stage's graphs (provider, threads, graph cache). */
export interface StageOptions {
  /** Session options for the stage's graphs (passed to `openComponent`). */
  readonly session?: OpenComponentOptions;
}

/** A decoder opened once per run (so a broken graph fails before the denoising loop). */
export interface MediaDecoder<R, M> extends Disposable {
  /** Latents to the family's media (audio, frames). */
  decode(request: R, latents: Float32Array): M | Promise<M>;
}

/** One quality number of an output against a reference output (bench, gpu-check). */
export interface QualityMetric {
  /** Column name, e.g. "SNR dB". */
  readonly name: string;
  /** The value; `Infinity` when the outputs are identical. */
  readonly value: number;
}

/** Options for {@linkcode PipelineFamily.render}. */
export interface RenderOptions {
  /** Aborting it stops a long encode (video) and rejects with its reason. */
  readonly signal?: AbortSignal;
}

/**
 * One model family: its flags and its stages. Methods are typed with the family's request `R`,
 * conditioning `C` and media `M`; the registry holds them as `PipelineFamily` (method parameters
 * are checked bivariantly, so a family's own types fit).
 */
export interface PipelineFamily<R extends RequestBase = RequestBase, C = unknown, M = unknown> {
  /** The manifest's `family` value, e.g. `"audioldm2"`. */
  readonly name: string;
  /** What it generates, for help and messages, e.g. "text to audio (AudioLDM2)". */
  readonly title: string;
  /** The family's own `gen` flags (shown under its name in `gen --help`). */
  readonly flags: readonly FlagSpec[];
  /** Flags `bench` and `gpu-check` use when not given (e.g. a prompt to measure with). */
  readonly benchFlags: FlagValues;
  /** The components every model folder of this family must hold (checked before any work). */
  readonly components: readonly string[];
  /** The module each Worker imports; it exports `openDenoiser` (see `SamplerModule`). */
  readonly samplerModule: URL;

  /**
   * Check the manifest's family-specific fields (config numbers and ranges, defaults,
   * scheduler), naming the field that is wrong.
   *
   * @throws {ManifestError}
   */
  checkManifest(model: ModelFolder): void;

  /**
   * 1. Check the request: flags to a checked request, defaults from the manifest, every value
   * in range, before any session opens.
   *
   * @throws {RangeError} naming the value and its limits
   */
  checkRequest(model: ModelFolder, input: RequestInput): R;

  /** 3. Encode the conditioning, once, in the main thread ({@linkcode generationInit} ships it). */
  encode(env: Env, model: ModelFolder, request: R, options: StageOptions): Promise<C>;

  /**
   * What each device's `openDenoiser` gets: the model folder and the denoiser graph the request
   * needs (its size also bounds how many devices fit in memory). Requests with equal payloads share
   * the open denoisers.
   */
  denoiserInit(model: ModelFolder, request: R): DenoiserOpen;

  /** The payload `bind` gets for one generation (structured-cloneable): conditioning, steps. */
  generationInit(model: ModelFolder, request: R, conditioning: C): unknown;

  /** 5. The initial latents (seeded noise, or injected ones). */
  prepareLatents(request: R): Float32Array<ArrayBuffer>;

  /** Open the decoder (before the loop, so a broken graph fails early). */
  openDecoder(env: Env, model: ModelFolder, options: StageOptions): MediaDecoder<R, M>;

  /**
   * The files `gen` will write for `out` and the given flags, with a label for messages ("the
   * output", "the spectrogram"); `gen` checks them all before any work and commits them as one
   * set (see `OutputSet`).
   */
  outputs(request: R, out: string, flags: FlagValues): OutputTarget[];

  /**
   * 8. The content of each planned output, in the order of `targets` (bytes, or a function the
   * commit calls when it reaches that file, so large outputs are encoded one at a time).
   */
  render(
    request: R,
    media: M,
    targets: readonly OutputTarget[],
    flags: FlagValues,
    options: RenderOptions,
  ): Promise<OutputContent[]>;

  /** The default output path (in the working folder) for a request. */
  defaultOutput(request: R): string;

  /** What was generated, for the summary line: "1.28 s at 16 kHz". */
  describe(request: R): string;

  /** Quality of `output` against `reference` (same request), for bench and gpu-check. */
  quality(reference: M, output: M): QualityMetric[];

  /** The media as one float array, for relative-error comparisons (gpu-check). */
  samples(media: M): Float32Array;
}
