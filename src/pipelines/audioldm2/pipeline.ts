/**
 * AudioLDM2 text-to-audio, stage by stage as diffusers' `AudioLDM2Pipeline.__call__`
 * (`pipelines/audioldm2/pipeline_audioldm2.py`): check the request, encode the
 * prompt (CLAP + T5 -> projection -> GPT2 generation), prepare latents, denoise
 * (DDIM, classifier-free guidance; the loop itself belongs to the ParaStep
 * engine), decode (VAE -> vocoder) and crop.
 *
 * Numerics follow diffusers on the CPU: float32 everywhere, and the few host
 * operations (guidance, the VAE's `1 / scaling_factor`) round each step to
 * float32 as torch does. Graphs exported in float16 (manifest `dtype: "fp16"`)
 * get float16 inputs and give float16 outputs; the host side stays float32 and
 * converts at each graph's boundary (../precision.ts). diffusers in float16
 * keeps the latents, guidance and DDIM step in float16 too; keeping them in
 * float32 here is more precise than that, which the fp16 parity test measures.
 *
 * Shapes: B = 2 with guidance (`[negative; prompt]`), else 1; C latent channels;
 * F latent frames; Wl = mel bins / vae scale factor; L the T5 length.
 *
 * @module
 */

import {
  allocate,
  type DataType,
  type Env,
  type Session,
  type SessionOptions,
  Tensor,
  Value,
} from "../../../ffi/mod.ts";
import { checkNumbers, ManifestError } from "../../models/manifest.ts";
import {
  checkComponentFiles,
  checkTokenizerFiles,
  type ModelFolder,
  openComponent,
} from "../../models/model.ts";
import type { BatchSampler } from "../../parastep/batchstep.ts";
import type { Sampler } from "../../parastep/rounds.ts";
import { randn } from "../../random.ts";
import { ddim, type DdimTable } from "../../schedulers/ddim.ts";
import {
  concatBatch,
  concatSequence,
  repeatBatch,
  sliceBatch,
  sliceSequence,
} from "../../tensor.ts";
import type { StageOptions } from "../family.ts";
import { asInput, runFloat32, runFloat32Async } from "../precision.ts";
import { TextTokenizer } from "../tokenize.ts";
import { ClapScorer, hasClapScoring } from "./clap_scoring.ts";

/** The longest prompt accepted, in characters (tokenizers truncate far earlier). */
export const MAX_PROMPT_CHARS = 4096;
/** The longest audio accepted, in seconds: memory grows with length and 60 s is well past training. */
export const MAX_DURATION_S = 60;
/** The most waveforms one generation may make (`num_waveforms_per_prompt`): each is one more UNet batch row. */
export const MAX_WAVEFORMS = 16;
/** Fewest latent frames generated: shorter audio is padded up to this by rounding. */
const MIN_LATENT_FRAMES = 8;

/** What to generate. */
export interface AudioRequest {
  /** The text describing the audio; must not be empty. */
  readonly prompt: string;
  /** What to steer away from. @default "" (diffusers' default) */
  readonly negativePrompt?: string;
  /** DDIM steps T. @default manifest defaults.steps */
  readonly steps?: number;
  /** Guidance scale; at most 1 turns classifier-free guidance off, as in diffusers. @default manifest */
  readonly guidance?: number;
  /** Seconds of audio. @default manifest defaults.duration */
  readonly duration?: number;
  /** Seed of the initial noise ({@linkcode randn}). @default 0 */
  readonly seed?: number;
  /**
   * Waveforms K generated together (diffusers' `num_waveforms_per_prompt`): batch K in the
   * denoiser, then ranked by CLAP text-audio similarity, best first (./clap_scoring.ts).
   * @default 1
   */
  readonly waveforms?: number;
  /** Initial latents [K, C, F, Wl] to use instead of seeded noise (for parity with diffusers). */
  readonly latents?: Float32Array<ArrayBuffer>;
}

/** A request with every default filled in and every value checked. */
export interface CheckedRequest {
  readonly prompt: string;
  readonly negativePrompt: string;
  readonly steps: number;
  readonly guidance: number;
  readonly duration: number;
  readonly seed: number;
  readonly latents: Float32Array<ArrayBuffer> | undefined;
  /** Waveforms K (batch K in the denoiser). */
  readonly waveforms: number;
  /** [K, C, F, Wl]. */
  readonly latentDims: readonly [number, number, number, number];
  /** Mel frames the VAE gives (F * vae scale factor). */
  readonly melFrames: number;
  /** Samples kept: `int(duration * sample_rate)`. */
  readonly waveformLength: number;
  readonly sampleRate: number;
}

/**
 * The numbers AudioLDM2 reads from the manifest's `config`, with the ranges a real or tiny
 * model can have (a corrupt value is refused at load, naming the field, instead of failing late
 * or allocating gigabytes).
 */
const CONFIG_RULES = {
  sampleRate: { integer: true, min: 1, max: 384_000 },
  vaeScaleFactor: { integer: true, powerOfTwo: true, min: 1, max: 64 },
  vaeScalingFactor: { min: 0, minExclusive: true, max: 1e6 },
  latentChannels: { integer: true, min: 1, max: 4096 },
  melBins: { integer: true, min: 1, max: 4096 },
  vocoderUpsampleFactor: { min: 0, minExclusive: true, max: 1 },
  maxNewTokens: { integer: true, min: 1, max: 4096 },
} as const;

/** The family's `defaults` besides steps and warm-up. */
const DEFAULTS_RULES = {
  guidance: { min: 0, max: 100 },
  duration: { min: 0, minExclusive: true, max: 60 },
} as const;

/** The numbers AudioLDM2 needs from the manifest. */
type AudioConfig = Record<keyof typeof CONFIG_RULES, number>;

function audioConfig(model: ModelFolder): AudioConfig {
  return checkNumbers(model.manifest, model.manifestFile, "config", CONFIG_RULES);
}

/** The manifest's AudioLDM2 defaults, checked. */
export function audioDefaults(model: ModelFolder): Record<keyof typeof DEFAULTS_RULES, number> {
  return checkNumbers(model.manifest, model.manifestFile, "defaults", DEFAULTS_RULES);
}

/**
 * Checks everything AudioLDM2 reads from a manifest (config, defaults, scheduler) and that
 * every component and tokenizer file is there.
 *
 * @throws {ManifestError} naming the field or file
 */
export function checkManifest(model: ModelFolder): void {
  audioConfig(model);
  audioDefaults(model);
  checkComponentFiles(model, COMPONENTS);
  checkTokenizerFiles(model, ["clap", "t5"]);
  try {
    ddim(model.manifest.scheduler, model.manifest.defaults.steps);
  } catch (e) {
    if (!(e instanceof TypeError || e instanceof RangeError)) throw e;
    throw new ManifestError(model.manifestFile, `'scheduler': ${e.message}`);
  }
}

function numberIn(name: string, v: number, lo: number, hi: number, integer: boolean): number {
  if (typeof v !== "number" || !Number.isFinite(v) || (integer && !Number.isInteger(v))) {
    throw new RangeError(
      `Cannot generate as '${name}' must be ${
        integer ? "an integer" : "a number"
      }: current value is ${v}`,
    );
  }
  if (v < lo || v > hi) {
    throw new RangeError(
      `Cannot generate as '${name}' must be between ${lo} and ${hi}: current value is ${v}`,
    );
  }
  return v;
}

/**
 * Refuses a step count the model's DDIM schedule cannot space (e.g. 1000 leading steps with
 * `steps_offset` 1 put a timestep at 1000, past the 1000 training timesteps), naming the
 * nearest counts that work.
 */
function checkSchedule(model: ModelFolder, steps: number): void {
  const valid = (T: number) => {
    try {
      ddim(model.manifest.scheduler, T);
      return true;
    } catch (e) {
      if (e instanceof RangeError) return false;
      throw e;
    }
  };
  if (valid(steps)) return;
  const config = model.manifest.scheduler;
  let below = steps - 1;
  while (below >= 1 && !valid(below)) below--;
  throw new RangeError(
    `Cannot generate with ${steps} steps: this model's DDIM schedule (timestep_spacing ${
      config.timestep_spacing ?? "leading"
    }, steps_offset ${config.steps_offset ?? 0}, ${
      config.num_train_timesteps ?? 1000
    } training timesteps) cannot space that many` + (below >= 1 ? `; ${below} steps work` : ""),
  );
}

/**
 * 1. Check inputs: fills defaults from the manifest and refuses any value out
 * of range before a session opens; computes the lengths as diffusers does.
 *
 * @throws {RangeError} naming the value and its limits
 */
export function checkRequest(model: ModelFolder, request: AudioRequest): CheckedRequest {
  const { manifest } = model;
  checkManifest(model);
  const c = audioConfig(model);
  const defaults = audioDefaults(model);
  const prompt = request.prompt;
  if (typeof prompt !== "string" || prompt.trim() === "") {
    throw new RangeError("Cannot generate as 'prompt' is empty: describe the audio to generate");
  }
  for (
    const [name, text] of [["prompt", prompt], ["negative prompt", request.negativePrompt ?? ""]]
  ) {
    if (text!.length > MAX_PROMPT_CHARS) {
      throw new RangeError(
        `Cannot generate as the ${name} is ${
          text!.length
        } characters long: the limit is ${MAX_PROMPT_CHARS}`,
      );
    }
  }
  const trainSteps = Number(manifest.scheduler.num_train_timesteps ?? 1000);
  const steps = numberIn("steps", request.steps ?? manifest.defaults.steps, 1, trainSteps, true);
  checkSchedule(model, steps);
  const guidance = numberIn("guidance", request.guidance ?? defaults.guidance, 0, 100, false);
  // diffusers: height = int(duration / upsample factor) mel frames, rounded up to the VAE factor.
  const frameSeconds = c.vocoderUpsampleFactor;
  const minDuration = MIN_LATENT_FRAMES * c.vaeScaleFactor * frameSeconds;
  const duration = numberIn(
    "duration",
    request.duration ?? defaults.duration,
    Number(minDuration.toFixed(6)),
    MAX_DURATION_S,
    false,
  );
  const seed = numberIn("seed", request.seed ?? 0, 0, Number.MAX_SAFE_INTEGER, true);
  let melFrames = Math.trunc(duration / frameSeconds);
  if (melFrames % c.vaeScaleFactor !== 0) {
    melFrames = Math.ceil(melFrames / c.vaeScaleFactor) * c.vaeScaleFactor;
  }
  const waveforms = numberIn("waveforms", request.waveforms ?? 1, 1, MAX_WAVEFORMS, true);
  if (waveforms > 1 && !hasClapScoring(model)) {
    throw new RangeError(
      `Cannot generate ${waveforms} waveforms: ${model.dir} has no clap_audio component and clapFeatures ` +
        "to rank them by CLAP score; re-export it with this version's exporter, or use --waveforms 1",
    );
  }
  const latentDims = [
    waveforms,
    c.latentChannels,
    melFrames / c.vaeScaleFactor,
    Math.trunc(c.melBins / c.vaeScaleFactor),
  ] as const;
  const size = latentDims.reduce((a, b) => a * b, 1);
  if (request.latents !== undefined && request.latents.length !== size) {
    throw new RangeError(
      `Cannot generate as the given latents hold ${request.latents.length} values: [${latentDims}] needs ${size}`,
    );
  }
  return {
    prompt,
    negativePrompt: request.negativePrompt ?? "",
    steps,
    guidance,
    duration,
    seed,
    latents: request.latents,
    waveforms,
    latentDims,
    melFrames,
    waveformLength: Math.trunc(duration * c.sampleRate),
    sampleRate: c.sampleRate,
  };
}

/** The graphs an AudioLDM2 folder holds. */
export const COMPONENTS = [
  "clap_text",
  "t5_encoder",
  "projection",
  "gpt2",
  "unet",
  "vae_decoder",
  "vocoder",
] as const;

/** Whether classifier-free guidance runs: diffusers' `guidance_scale > 1`. */
export function usesGuidance(guidance: number): boolean {
  return guidance > 1;
}

/**
 * The conditioning the UNet needs, computed once and sent to every worker.
 * Plain data (structured-cloneable).
 */
export interface Conditioning {
  /** Guidance scale g; classifier-free guidance runs when g > 1. */
  readonly guidance: number;
  /** GPT2's generated embeddings [B, max_new_tokens, lm_dim] (`encoder_hidden_states`). */
  readonly generated: Tensor<"float32">;
  /** T5's last hidden state [B, L, t5_dim] (`encoder_hidden_states_1`). */
  readonly t5: Tensor<"float32">;
  /** T5's attention mask [B, L] (`encoder_attention_mask_1`). */
  readonly t5Mask: Tensor<"int64">;
}

/** Every tensor `encodePrompt` computed, for parity checks against diffusers. */
export interface EncodeIntermediates {
  readonly clapIds: Tensor<"int64">;
  readonly clapMask: Tensor<"int64">;
  readonly clap: Tensor<"float32">;
  readonly t5Ids: Tensor<"int64">;
  readonly projection: Tensor<"float32">;
  readonly projectionMask: Tensor<"int64">;
}

export type { StageOptions };

const int64 = (data: BigInt64Array<ArrayBuffer>, dims: number[]) => new Tensor("int64", data, dims);

/**
 * 3. Encode the prompt: CLAP text features and T5 hidden states of
 * `[negative; prompt]` (or the prompt alone without guidance), projected and
 * extended by GPT2's `max_new_tokens` generated embeddings.
 */
export async function encodePrompt(
  env: Env,
  model: ModelFolder,
  request: CheckedRequest,
  options: StageOptions = {},
): Promise<{ conditioning: Conditioning; intermediates: EncodeIntermediates }> {
  const { dir } = model;
  const c = audioConfig(model);
  const cfg = usesGuidance(request.guidance);
  const clapTokenizer = await TextTokenizer.load(dir, tokenizerSpec(model, "clap"));
  const t5Tokenizer = await TextTokenizer.load(dir, tokenizerSpec(model, "t5"));

  // Tokenize as encode_prompt does: CLAP padded to its max length; T5 padded to the
  // prompt's own length, and the negative prompt padded to that same length.
  const promptT5 = t5Tokenizer.encode(request.prompt, "longest");
  const L = promptT5.ids.length;
  const texts = cfg ? [request.negativePrompt, request.prompt] : [request.prompt];
  const B = texts.length;
  const clapEnc = texts.map((t) => clapTokenizer.encode(t, { length: clapTokenizer.maxLength }));
  const t5Enc = cfg
    ? [t5Tokenizer.encode(request.negativePrompt, { length: L }), promptT5]
    : [promptT5];
  const S = clapTokenizer.maxLength;
  const stack = (parts: BigInt64Array[], width: number) => {
    const out = new BigInt64Array(parts.length * width);
    parts.forEach((p, b) => out.set(p, b * width));
    return out;
  };
  const clapIds = int64(stack(clapEnc.map((e) => e.ids), S), [B, S]);
  const clapMask = int64(stack(clapEnc.map((e) => e.mask), S), [B, S]);
  const t5Ids = int64(stack(t5Enc.map((e) => e.ids), L), [B, L]);
  const t5Mask = int64(stack(t5Enc.map((e) => e.mask), L), [B, L]);

  const open = (name: string) => openComponent(env, model, name, options.session);
  let clap: Tensor<"float32">;
  let t5: Tensor<"float32">;
  let projection: Tensor<"float32">;
  let projectionMask: Tensor<"int64">;
  {
    using clapSession = open("clap_text");
    // get_text_features: [B, clap_dim], used as one token [B, 1, clap_dim] with mask 1.
    clap = output(
      runFloat32(clapSession, { input_ids: clapIds, attention_mask: clapMask }),
      "text_embeds",
    );
  }
  {
    using t5Session = open("t5_encoder");
    t5 = output(
      runFloat32(t5Session, { input_ids: t5Ids, attention_mask: t5Mask }),
      "last_hidden_state",
    );
  }
  {
    using projectionSession = open("projection");
    const out = runFloat32(projectionSession, {
      clap: new Tensor("float32", clap.data, [B, 1, clap.dims[1]!]),
      clap_mask: int64(new BigInt64Array(B).fill(1n), [B, 1]),
      t5,
      t5_mask: t5Mask,
    });
    projection = output(out, "hidden_states");
    projectionMask = output(out, "attention_mask") as Tensor<"int64">;
  }
  const generated = await generateLanguageModel(
    env,
    model,
    projection,
    projectionMask,
    c.maxNewTokens,
    options,
  );
  return {
    conditioning: { guidance: request.guidance, generated, t5, t5Mask },
    intermediates: { clapIds, clapMask, clap, t5Ids, projection, projectionMask },
  };
}

function tokenizerSpec(model: ModelFolder, name: string) {
  const spec = model.manifest.tokenizers[name];
  if (spec === undefined) {
    throw new RangeError(
      `${model.manifestFile}: 'tokenizers.${name}' is missing: an AudioLDM2 model needs it; re-export the model`,
    );
  }
  return spec;
}

function output<T extends "float32" | "int64" = "float32">(
  outputs: Record<string, Tensor>,
  name: string,
): Tensor<T> {
  const t = outputs[name];
  if (t === undefined) throw new Error(`the graph returned no '${name}'`);
  return t as Tensor<T>;
}

/**
 * GPT2 generation as `generate_language_model`: `max_new_tokens` times, run
 * GPT2 on the embeddings so far and append its last hidden state at the last
 * position (mask grows by a 1); return the appended embeddings. Without a KV
 * cache this recomputes every position, which gives the same values because
 * positions are `arange` and attention is causal.
 */
async function generateLanguageModel(
  env: Env,
  model: ModelFolder,
  embeds: Tensor<"float32">,
  mask: Tensor<"int64">,
  maxNewTokens: number,
  options: StageOptions,
): Promise<Tensor<"float32">> {
  using gpt2 = openComponent(env, model, "gpt2", options.session);
  const B = embeds.dims[0]!;
  let inputs = embeds;
  let attention = mask;
  const one = int64(new BigInt64Array(B).fill(1n), [B, 1]);
  for (let k = 0; k < maxNewTokens; k++) {
    const hidden = output(
      await runFloat32Async(gpt2, { inputs_embeds: inputs, attention_mask: attention }),
      "last_hidden_state",
    );
    inputs = concatSequence(inputs, sliceSequence(hidden, hidden.dims[1]! - 1, 1));
    attention = concatSequence(attention, one);
  }
  return sliceSequence(inputs, inputs.dims[1]! - maxNewTokens, maxNewTokens);
}

/** 5. Prepare latents: the injected ones, or seeded standard normal noise (DDIM's sigma is 1). */
export function prepareLatents(request: CheckedRequest): Float32Array<ArrayBuffer> {
  if (request.latents !== undefined) return request.latents.slice();
  const n = request.latentDims.reduce((a, b) => a * b, 1);
  return randn(request.seed, n) as Float32Array<ArrayBuffer>;
}

/**
 * The UNet as ParaStep's model function, with guidance and the DDIM step: the
 * denoiser one rank (or the single device) runs. Conditioning values are made
 * once; each call makes fresh sample, timestep and output arrays, so calls from
 * several ranks may overlap on one session.
 */
export class Denoiser
  implements
    Sampler<Float32Array, Float32Array>,
    BatchSampler<Float32Array, Float32Array>,
    Disposable {
  readonly #session: Session;
  readonly #table: DdimTable;
  readonly #latentDims: readonly number[];
  readonly #cfg: boolean;
  readonly #g: number;
  readonly #conditioning: Conditioning;
  /** Conditioning values per batch size (1 for ParaStep; 1..L for BatchStep). */
  readonly #values = new Map<number, Record<string, Value>>();
  readonly #signal: AbortSignal | undefined;
  /** The UNet's sample and output precision (float16 for an fp16 export). */
  readonly #sampleType: "float32" | "float16";
  readonly #outType: "float32" | "float16";

  /**
   * @param session the UNet
   * @param conditioning from {@linkcode encodePrompt}
   * @param table the DDIM tables for this many steps
   * @param latentDims [K, C, F, Wl]: K waveforms form one latent (diffusers' batch K)
   * @param signal aborting it cancels the UNet run in flight (ORT's terminate flag)
   */
  constructor(
    session: Session,
    conditioning: Conditioning,
    table: DdimTable,
    latentDims: readonly number[],
    signal?: AbortSignal,
  ) {
    this.#signal = signal;
    this.#session = session;
    this.#table = table;
    this.#latentDims = latentDims;
    this.#cfg = usesGuidance(conditioning.guidance);
    this.#g = Math.fround(conditioning.guidance);
    this.#conditioning = conditioning;
    const floatType = (t: DataType | null | undefined) => t === "float16" ? "float16" : "float32";
    this.#sampleType = floatType(session.inputs.find((i) => i.name === "sample")?.type);
    this.#outType = floatType(session.outputs.find((o) => o.name === "out_sample")?.type);
  }

  /** The conditioning values for `k` latents per call, made on first use. */
  #conditioningFor(k: number): Record<string, Value> {
    let values = this.#values.get(k);
    if (values === undefined) {
      const { generated, t5, t5Mask } = this.#conditioning;
      // CFG batch order is [uncond x kK; cond x kK] (K waveforms per latent), matching the
      // sample layout below and diffusers' repeat of the embeddings per waveform.
      const rows = k * this.#latentDims[0]!;
      const expand = <T extends "float32" | "int64">(t: Tensor<T>) =>
        this.#cfg
          ? concatBatch([
            repeatBatch(sliceBatch(t, 0, 1), rows),
            repeatBatch(sliceBatch(t, 1, 1), rows),
          ])
          : repeatBatch(t, rows);
      const session = this.#session;
      // In the graph's precision (float16 for an fp16 export), converted once.
      const value = (name: string, t: Tensor) =>
        Value.fromTensor(session.env, asInput(session, name, t));
      values = {
        encoder_hidden_states: value("encoder_hidden_states", expand(generated)),
        encoder_hidden_states_1: value("encoder_hidden_states_1", expand(t5)),
        encoder_attention_mask_1: value("encoder_attention_mask_1", expand(t5Mask)),
      };
      this.#values.set(k, values);
    }
    return values;
  }

  /** eps for a batch of latents at their own steps: [uncond(x_0..x_k); cond(x_0..x_k)]. */
  async #unet(xs: Float32Array[], is: number[]): Promise<Float32Array[]> {
    const k = xs.length;
    const n = xs[0]!.length; // K waveforms' latents: K * C * F * Wl
    const K = this.#latentDims[0]!;
    const copies = this.#cfg ? 2 : 1;
    const B = copies * k * K;
    // [B, C, F, Wl]; a Float16Array rounds the float32 latents as it is filled.
    const sample = allocate(this.#sampleType, copies * k * n);
    const timestep = new BigInt64Array(B); // [B]: each latent its own t (BatchStep)
    for (let c = 0; c < copies; c++) {
      for (let j = 0; j < k; j++) {
        sample.set(xs[j]!, (c * k + j) * n);
        timestep.fill(BigInt(this.#table.timesteps[is[j]!]!), (c * k + j) * K, (c * k + j + 1) * K);
      }
    }
    const dims = [B, ...this.#latentDims.slice(1)];
    const out = new Tensor(this.#outType, allocate(this.#outType, copies * k * n), dims);
    await this.#session.runAsync(
      {
        sample: new Tensor(this.#sampleType, sample, dims),
        timestep: new Tensor("int64", timestep, [B]),
        ...this.#conditioningFor(k),
      },
      { outputs: { out_sample: out }, ...(this.#signal ? { signal: this.#signal } : {}) },
    );
    // Per latent j: its eps as [uncond; cond] (2n values), or cond alone (n), in float32.
    return xs.map((_, j) => {
      const eps = new Float32Array(copies * n);
      for (let c = 0; c < copies; c++) {
        eps.set(out.data.subarray((c * k + j) * n, (c * k + j + 1) * n), c * n);
      }
      return eps;
    });
  }

  /** eps(x, t_i) before guidance: [uncond; cond] with guidance, else cond. */
  async model(x: Float32Array, i: number): Promise<Float32Array> {
    return (await this.#unet([x], [i]))[0]!;
  }

  /** The same for several latents in one UNet call (BatchStep). */
  modelBatch(xs: Float32Array[], is: number[]): Promise<Float32Array[]> {
    return this.#unet(xs, is);
  }

  /** G(eps) = u + g (c - u), in float32 as torch computes it. */
  guide(eps: Float32Array): Float32Array {
    if (!this.#cfg) return eps;
    const n = eps.length / 2;
    const out = new Float32Array(n);
    const g = this.#g;
    for (let k = 0; k < n; k++) {
      const u = eps[k]!;
      out[k] = Math.fround(u + Math.fround(g * Math.fround(eps[n + k]! - u)));
    }
    return out;
  }

  /** One DDIM step x_i -> x_{i+1}. */
  step(guided: Float32Array, i: number, x: Float32Array): Float32Array {
    return this.#table.step(guided, i, x);
  }

  /** Releases the conditioning values (not the session, which the caller owns). */
  [Symbol.dispose](): void {
    for (const values of this.#values.values()) for (const v of Object.values(values)) v.close();
    this.#values.clear();
  }
}

/** What decoding gives. */
export interface Decoded {
  /** The VAE's mel spectrogram [1, 1, mel_frames, mel_bins] of the best waveform. */
  readonly mel: Tensor<"float32">;
  /** The best waveform (the only one when K = 1), cropped to the requested duration. */
  readonly waveform: Float32Array<ArrayBuffer>;
  /** All K waveforms, best first (ranked by CLAP score when K > 1), cropped. */
  readonly waveforms: readonly Float32Array<ArrayBuffer>[];
  /** CLAP scores (`logits_per_text`) in the order of `waveforms`; empty when K = 1 (not scored). */
  readonly scores: readonly number[];
  /** The generated batch index of each entry of `waveforms`. */
  readonly order: readonly number[];
}

/**
 * 8. Post-processing: VAE decode of `latents / scaling_factor`, vocoder, crop.
 * The sessions open up front, so a broken model folder fails before the
 * denoising loop rather than after it.
 */
export class Decoder implements Disposable {
  readonly #vae: Session;
  readonly #vocoder: Session;
  readonly #scale: number;
  readonly #env: Env;
  readonly #model: ModelFolder;
  readonly #options: StageOptions;
  /** Opening on the first request for K > 1 waveforms; then `#scorerReady`. */
  #scorer: Promise<ClapScorer> | null = null;
  #scorerReady: ClapScorer | null = null;

  private constructor(
    vae: Session,
    vocoder: Session,
    scalingFactor: number,
    env: Env,
    model: ModelFolder,
    options: StageOptions,
  ) {
    this.#vae = vae;
    this.#vocoder = vocoder;
    this.#env = env;
    this.#model = model;
    this.#options = options;
    // torch: (1 / scaling_factor) * latents, the scalar rounded to float32 first.
    this.#scale = Math.fround(1 / scalingFactor);
  }

  /** Opens the VAE decoder and the vocoder. */
  static open(env: Env, model: ModelFolder, options: StageOptions = {}): Decoder {
    const c = audioConfig(model);
    const vae = openComponent(env, model, "vae_decoder", options.session);
    try {
      return new Decoder(
        vae,
        openVocoder(env, model, options),
        c.vaeScalingFactor,
        env,
        model,
        options,
      );
    } catch (e) {
      vae.close();
      throw e;
    }
  }

  /**
   * Latents [K, C, F, Wl] to mel spectrograms and cropped waveforms, as diffusers: the VAE and
   * the vocoder at batch K, then (K > 1) `score_waveforms`' CLAP ranking, best first.
   */
  decode(request: CheckedRequest, latents: Float32Array): Decoded | Promise<Decoded> {
    const scaled = new Float32Array(latents.length);
    for (let k = 0; k < latents.length; k++) scaled[k] = Math.fround(this.#scale * latents[k]!);
    const mel = output(
      runFloat32(this.#vae, { latent: new Tensor("float32", scaled, [...request.latentDims]) }),
      "mel",
    );
    const [K, , frames, bins] = mel.dims; // [K, 1, mel_frames, mel_bins] -> squeeze(1)
    const wave = output(
      runFloat32(this.#vocoder, { mel: new Tensor("float32", mel.data, [K!, frames!, bins!]) }),
      "waveform",
    );
    const samples = wave.dims[1]!;
    const waves = Array.from(
      { length: K! },
      (_, k) => wave.data.slice(k * samples, k * samples + request.waveformLength),
    );
    const melOf = (k: number) =>
      new Tensor(
        "float32",
        mel.data.slice(k * frames! * bins!, (k + 1) * frames! * bins!),
        [1, 1, frames!, bins!],
      );
    if (K === 1) return { mel, waveform: waves[0]!, waveforms: waves, scores: [], order: [0] };
    return this.#rank(request, waves, melOf);
  }

  async #rank(
    request: CheckedRequest,
    waves: Float32Array<ArrayBuffer>[],
    melOf: (k: number) => Tensor<"float32">,
  ): Promise<Decoded> {
    if (this.#scorerReady === null) {
      this.#scorer ??= ClapScorer.open(this.#env, this.#model, this.#options.session);
      this.#scorerReady = await this.#scorer;
    }
    const { scores, order } = this.#scorerReady.score(request.prompt, waves);
    return {
      mel: melOf(order[0]!),
      waveform: waves[order[0]!]!,
      waveforms: order.map((k) => waves[k]!),
      scores: order.map((k) => scores[k]!),
      order,
    };
  }

  /** Closes the sessions (the CLAP scorer's once it has opened). */
  [Symbol.dispose](): void {
    this.#vae.close();
    this.#vocoder.close();
    if (this.#scorerReady) this.#scorerReady[Symbol.dispose]();
    else void this.#scorer?.then((s) => s[Symbol.dispose](), () => {});
    this.#scorerReady = null;
    this.#scorer = null;
  }
}

/**
 * The vocoder, on the stage's provider except in one case: a float16 vocoder that landed on
 * WebGPU opens on the CPU instead. ORT 1.30's WebGPU ConvTranspose in float16 computes wrong
 * values once a 1-D output passes about 2100 samples (measured on lavapipe with the tiny model's
 * upsampler, 8 -> 4 channels, kernel 10, stride 5: correct at 409 input frames, relative error
 * 1.3 at 420; float32 is correct at every length), which every vocoder output is. The vocoder
 * runs once per generation, so the CPU costs little.
 */
function openVocoder(env: Env, model: ModelFolder, options: StageOptions): Session {
  const vocoder = openComponent(env, model, "vocoder", options.session);
  const float16 = vocoder.inputs.some((i) => i.type === "float16");
  if (vocoder.executionProvider !== "webgpu" || !float16) return vocoder;
  vocoder.close();
  return openComponent(env, model, "vocoder", { ...options.session, executionProvider: "cpu" });
}

/** Opens the decoder, decodes once, closes it. */
export function decode(
  env: Env,
  model: ModelFolder,
  request: CheckedRequest,
  latents: Float32Array,
  options: StageOptions = {},
): Decoded {
  if (request.waveforms !== 1) {
    throw new RangeError(
      `Cannot decode ${request.waveforms} waveforms with decode(): ranking them is asynchronous; use Decoder.decode`,
    );
  }
  using decoder = Decoder.open(env, model, options);
  const decoded = decoder.decode(request, latents);
  if (decoded instanceof Promise) throw new Error("decode(): one waveform decoded asynchronously");
  return decoded;
}

/** Opens the decoder, decodes (and ranks, for K > 1) once, closes it. */
export async function decodeRanked(
  env: Env,
  model: ModelFolder,
  request: CheckedRequest,
  latents: Float32Array,
  options: StageOptions = {},
): Promise<Decoded> {
  using decoder = Decoder.open(env, model, options);
  return await decoder.decode(request, latents);
}

/** Opens the UNet for denoising on one device. */
export function openUnet(
  env: Env,
  model: ModelFolder,
  options: SessionOptions = {},
): Session {
  return openComponent(env, model, "unet", options);
}
