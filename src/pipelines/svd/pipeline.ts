/**
 * Stable Video Diffusion image-to-video, stage by stage as diffusers'
 * `StableVideoDiffusionPipeline.__call__` (`pipelines/stable_video_diffusion/
 * pipeline_stable_video_diffusion.py`, 0.42.1): check the request, encode the image (CLIP image
 * embeddings of the original image; VAE latent of the noise-augmented W x H image), prepare
 * latents, denoise (Euler-Karras-v, per-frame classifier-free guidance; the loop belongs to the
 * ParaStep engine), decode in chunks.
 *
 * Numerics follow diffusers on the CPU: float32 everywhere, the host operations (noise
 * augmentation, `c_in`, guidance, the Euler step, `1 / scaling_factor`) rounded to float32 in
 * torch's order. Graph inputs and outputs are float32 or float16 as the manifest declares each.
 *
 * Shapes: B = 2 with guidance (`[uncond; cond]`, the uncond row with zero image embeddings and
 * zero image latents), else 1; F frames; C latent channels; h = H / s, w = W / s with s the VAE
 * scale factor; D the image embedding size.
 *
 * Random draws, in diffusers' order from one seeded stream ({@linkcode GaussianStream}): the noise
 * augmentation [1, 3, H, W] first, then the initial latents [1, F, C, h, w]. The stream is not
 * torch's, so a seed gives other noise than in diffusers; parity tests inject both draws.
 *
 * @module
 */

import { type Env, type Session, type SessionOptions, Tensor, Value } from "../../../ffi/mod.ts";
import { readImage, type RgbImage } from "../../io/image.ts";
import { checkNumbers, configList, ManifestError } from "../../models/manifest.ts";
import { checkComponentFiles, type ModelFolder, openComponent } from "../../models/model.ts";
import type { BatchSampler } from "../../parastep/batchstep.ts";
import type { Sampler } from "../../parastep/rounds.ts";
import { GaussianStream } from "../../random.ts";
import { torchLinspaceF32 } from "../../schedulers/_f32.ts";
import { euler, type EulerTable } from "../../schedulers/euler.ts";
import type { StageOptions } from "../family.ts";
import { clipPixelValues, vaeImage } from "./preprocess.ts";

/** The most frames a request may ask for (SVD was trained on 14 and 25). */
export const MAX_FRAMES = 1024;
/** The longest side accepted, in pixels (memory is checked as well, see {@linkcode estimateBytes}). */
export const MAX_SIDE = 16384;
/** The most steps a request may ask for. */
export const MAX_STEPS = 1000;
/** Width and height must be multiples of this (diffusers' `check_inputs`). */
export const SIZE_MULTIPLE = 8;

/** The graphs an SVD folder holds. */
export const COMPONENTS = ["image_encoder", "vae_encoder", "unet", "vae_decoder"] as const;

/** What to generate. */
export interface VideoRequest {
  /** The input image: a PNG or JPEG path, or decoded RGB. */
  readonly image: string | RgbImage;
  /** Euler steps T. @default manifest defaults.steps */
  readonly steps?: number;
  /** Frames F. @default manifest defaults.frames */
  readonly frames?: number;
  /** Video width in pixels, a multiple of 8. @default manifest defaults.width */
  readonly width?: number;
  /** Video height in pixels, a multiple of 8. @default manifest defaults.height */
  readonly height?: number;
  /** Frames per second of the video; the UNet is conditioned on `fps − 1`. @default manifest */
  readonly fps?: number;
  /** Motion conditioning (higher: more motion). @default manifest defaults.motionBucketId */
  readonly motionBucketId?: number;
  /** Strength of the noise added to the conditioning image. @default manifest */
  readonly noiseAugStrength?: number;
  /** Guidance of the first frame. @default manifest defaults.minGuidance */
  readonly minGuidance?: number;
  /** Guidance of the last frame; classifier-free guidance runs when it is above 1. @default manifest */
  readonly maxGuidance?: number;
  /** Frames per VAE decoder call (changes the pixels at chunk borders). @default manifest */
  readonly decodeChunk?: number;
  /** Seed of the random draws. @default 0 */
  readonly seed?: number;
  /** Initial noise [1, F, C, h, w] (diffusers' `latents=`, before `init_noise_sigma`), for parity. */
  readonly latents?: Float32Array<ArrayBuffer>;
  /** Noise-augmentation noise [1, 3, H, W] instead of the first seeded draw, for parity. */
  readonly augNoise?: Float32Array<ArrayBuffer>;
}

/** A request with every default filled in and every value checked. */
export interface CheckedRequest {
  /** Where the image came from ("" for a decoded image), for the default output name. */
  readonly imagePath: string;
  readonly image: RgbImage;
  readonly steps: number;
  readonly frames: number;
  readonly width: number;
  readonly height: number;
  readonly fps: number;
  readonly motionBucketId: number;
  readonly noiseAugStrength: number;
  readonly minGuidance: number;
  readonly maxGuidance: number;
  /** Frames per decoder call, at most F. */
  readonly decodeChunk: number;
  readonly seed: number;
  readonly latents: Float32Array<ArrayBuffer> | undefined;
  readonly augNoise: Float32Array<ArrayBuffer> | undefined;
  /** [1, F, C, h, w]. */
  readonly latentDims: readonly [number, number, number, number, number];
  /** The scheduler's `init_noise_sigma` for these steps (float32). */
  readonly initNoiseSigma: number;
}

/** The numbers SVD reads from the manifest's `config`, with the ranges a real or tiny model has. */
const CONFIG_RULES = {
  vaeScaleFactor: { integer: true, powerOfTwo: true, min: 1, max: 64 },
  vaeScalingFactor: { min: 0, minExclusive: true, max: 1e6 },
  latentChannels: { integer: true, min: 1, max: 4096 },
  unetInChannels: { integer: true, min: 2, max: 8192 },
  unetNumFrames: { integer: true, min: 1, max: MAX_FRAMES },
  imageEmbedDim: { integer: true, min: 1, max: 65536 },
  clipImageSize: { integer: true, min: 2, max: 4096 },
} as const;

/** The family's `defaults` besides steps and warm-up. */
const DEFAULTS_RULES = {
  frames: { integer: true, min: 1, max: MAX_FRAMES },
  width: { integer: true, min: SIZE_MULTIPLE, max: MAX_SIDE },
  height: { integer: true, min: SIZE_MULTIPLE, max: MAX_SIDE },
  fps: { integer: true, min: 1, max: 240 },
  motionBucketId: { integer: true, min: 0, max: 1023 },
  noiseAugStrength: { min: 0, max: 10 },
  minGuidance: { min: 0, max: 100 },
  maxGuidance: { min: 0, max: 100 },
  decodeChunk: { integer: true, min: 1, max: MAX_FRAMES },
} as const;

/** The numbers SVD needs from the manifest. */
export interface SvdConfig extends Record<keyof typeof CONFIG_RULES, number> {
  readonly clipImageMean: readonly number[];
  readonly clipImageStd: readonly number[];
}

/** The manifest's SVD config, checked. */
export function svdConfig(model: ModelFolder): SvdConfig {
  const { manifest, manifestFile } = model;
  const numbers = checkNumbers(manifest, manifestFile, "config", CONFIG_RULES);
  if (numbers.unetInChannels !== 2 * numbers.latentChannels) {
    throw new ManifestError(
      manifestFile,
      `'config.unetInChannels' must be twice 'config.latentChannels' (${numbers.latentChannels}): found ${numbers.unetInChannels}`,
    );
  }
  return {
    ...numbers,
    clipImageMean: configList(manifest, manifestFile, "clipImageMean", 3, { min: 0, max: 1 }),
    clipImageStd: configList(manifest, manifestFile, "clipImageStd", 3, {
      min: 0,
      minExclusive: true,
      max: 10,
    }),
  };
}

/** The manifest's SVD defaults, checked. */
export function svdDefaults(model: ModelFolder): Record<keyof typeof DEFAULTS_RULES, number> {
  const { manifest, manifestFile } = model;
  const d = checkNumbers(manifest, manifestFile, "defaults", DEFAULTS_RULES);
  for (const side of ["width", "height"] as const) {
    if (d[side] % SIZE_MULTIPLE !== 0) {
      throw new ManifestError(
        manifestFile,
        `'defaults.${side}' must be a multiple of ${SIZE_MULTIPLE}: found ${d[side]}`,
      );
    }
  }
  if (d.minGuidance > d.maxGuidance) {
    throw new ManifestError(
      manifestFile,
      `'defaults.minGuidance' must not exceed 'defaults.maxGuidance' (${d.maxGuidance}): found ${d.minGuidance}`,
    );
  }
  return d;
}

/**
 * Checks everything SVD reads from a manifest (config, defaults, the Euler scheduler) and that
 * every component file is there.
 *
 * @throws {ManifestError} naming the field or file
 */
export function checkManifest(model: ModelFolder): void {
  svdConfig(model);
  svdDefaults(model);
  checkComponentFiles(model, COMPONENTS);
  try {
    euler(model.manifest.scheduler, model.manifest.defaults.steps);
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
 * The memory a request needs at least, in bytes, and its largest part: what parastep itself
 * holds (image copies, latents and the UNet's inputs and outputs on each of a few live copies, the
 * decoded frames in float and 8-bit), one UNet call's spatial self-attention scores (SVD's first
 * block attends over the whole latent grid: B·F·(h·w)² floats, assuming one head and no fused
 * attention, as ONNX Runtime's CPU kernels materialise them), and the VAE decoder's activations
 * for one chunk, scaled from the real decoder's (fp32 ≈ 2.8 GiB per 576 x 1024 frame, measured in
 * video-pipelines.md §4.1) by the square root of the graph's bytes (activations grow with the
 * channel widths, weights with their square). A lower bound for the attention, an estimate for the
 * rest.
 */
export function estimateBytes(
  model: ModelFolder,
  r: { frames: number; width: number; height: number; decodeChunk: number; maxGuidance: number },
): { total: number; attention: number } {
  const c = svdConfig(model);
  const F = r.frames;
  const h = r.height / c.vaeScaleFactor;
  const w = r.width / c.vaeScaleFactor;
  const B = r.maxGuidance > 1 ? 2 : 1;
  const latents = F * c.latentChannels * h * w * 4;
  const pixels = r.width * r.height;
  const host = 6 * 3 * pixels * 4 + // VAE image, noise, augmented image and their copies
    8 * latents + // x, eps and guided eps per live round, the initial latents
    B * 3 * latents + // UNet sample (2C channels) and output
    F * 3 * pixels * (4 + 1 + 1); // decoded frames (float, 8-bit, encoded)
  const attention = B * F * (h * w) ** 2 * 4;
  let decoderBytes = 0;
  const spec = model.manifest.components.vae_decoder;
  if (spec !== undefined) {
    for (const file of [spec.file, `${spec.file}.data`]) {
      try {
        decoderBytes += Deno.statSync(`${model.dir}/${file}`).size;
      } catch {
        // no external data
      }
    }
  }
  const REAL_DECODER_BYTES = 254e6;
  const REAL_BYTES_PER_PIXEL = 2.8 * 2 ** 30 / (576 * 1024);
  const perPixel = REAL_BYTES_PER_PIXEL * Math.sqrt(decoderBytes / REAL_DECODER_BYTES);
  const decode = Math.min(r.decodeChunk, F) * pixels * perPixel;
  return { total: host + attention + decode, attention };
}

/**
 * 1. Check inputs: reads and decodes the image, fills defaults from the manifest and refuses any
 * value out of range, or a size this machine's memory cannot hold, before a session opens.
 *
 * @param availableBytes the memory to fit in @default Deno.systemMemoryInfo().available
 * @throws {RangeError} naming the value and its limits (an `ImageError` for the image)
 */
export function checkRequest(
  model: ModelFolder,
  request: VideoRequest,
  availableBytes?: number,
): CheckedRequest {
  checkManifest(model);
  const c = svdConfig(model);
  const d = svdDefaults(model);
  const steps = numberIn(
    "steps",
    request.steps ?? model.manifest.defaults.steps,
    1,
    MAX_STEPS,
    true,
  );
  const initNoiseSigma = euler(model.manifest.scheduler, steps).initNoiseSigma;
  const frames = numberIn("frames", request.frames ?? d.frames, 1, MAX_FRAMES, true);
  const width = numberIn("width", request.width ?? d.width, SIZE_MULTIPLE, MAX_SIDE, true);
  const height = numberIn("height", request.height ?? d.height, SIZE_MULTIPLE, MAX_SIDE, true);
  for (const [name, v] of [["width", width], ["height", height]] as const) {
    if (v % SIZE_MULTIPLE !== 0) {
      const lower = v - (v % SIZE_MULTIPLE);
      throw new RangeError(
        `Cannot generate as '${name}' must be a multiple of ${SIZE_MULTIPLE}: current value is ${v} (try ${lower} or ${
          lower + SIZE_MULTIPLE
        })`,
      );
    }
  }
  const fps = numberIn("fps", request.fps ?? d.fps, 1, 240, true);
  const motionBucketId = numberIn(
    "motion bucket",
    request.motionBucketId ?? d.motionBucketId,
    0,
    1023,
    true,
  );
  const noiseAugStrength = numberIn(
    "noise augmentation",
    request.noiseAugStrength ?? d.noiseAugStrength,
    0,
    10,
    false,
  );
  const minGuidance = numberIn("min guidance", request.minGuidance ?? d.minGuidance, 0, 100, false);
  const maxGuidance = numberIn("max guidance", request.maxGuidance ?? d.maxGuidance, 0, 100, false);
  if (minGuidance > maxGuidance) {
    throw new RangeError(
      `Cannot generate as 'min guidance' (${minGuidance}) must not exceed 'max guidance' (${maxGuidance})`,
    );
  }
  const decodeChunk = Math.min(
    numberIn("decode chunk", request.decodeChunk ?? d.decodeChunk, 1, MAX_FRAMES, true),
    frames,
  );
  const seed = numberIn("seed", request.seed ?? 0, 0, Number.MAX_SAFE_INTEGER, true);
  const latentDims = [
    1,
    frames,
    c.latentChannels,
    height / c.vaeScaleFactor,
    width / c.vaeScaleFactor,
  ] as const;
  const given = [
    ["latents", request.latents, latentDims],
    ["noise augmentation noise", request.augNoise, [1, 3, height, width]],
  ] as const;
  for (const [name, data, dims] of given) {
    const size = dims.reduce((a: number, b: number) => a * b, 1);
    if (data !== undefined && data.length !== size) {
      throw new RangeError(
        `Cannot generate as the given ${name} hold ${data.length} values: [${dims}] needs ${size}`,
      );
    }
  }
  const need = estimateBytes(model, { frames, width, height, decodeChunk, maxGuidance });
  const available = availableBytes ?? Deno.systemMemoryInfo().available;
  if (need.total > available) {
    const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
    throw new RangeError(
      `Cannot generate ${frames} frames of ${width}x${height}: that needs at least ${
        gib(need.total)
      } of memory (the UNet's attention over the ${latentDims[4]}x${
        latentDims[3]
      } latent grid alone ${gib(need.attention)}) and ${
        gib(available)
      } is available; use a smaller --width/--height, fewer --frames or a smaller --decode-chunk`,
    );
  }
  // The image last: everything cheap to check is checked before reading it.
  const image = typeof request.image === "string" ? readImage(request.image) : request.image;
  return {
    imagePath: typeof request.image === "string" ? request.image : "",
    image,
    steps,
    frames,
    width,
    height,
    fps,
    motionBucketId,
    noiseAugStrength,
    minGuidance,
    maxGuidance,
    decodeChunk,
    seed,
    latents: request.latents,
    augNoise: request.augNoise,
    latentDims,
    initNoiseSigma,
  };
}

/** Whether classifier-free guidance runs: diffusers' `max_guidance_scale > 1`. */
export function usesGuidance(maxGuidance: number): boolean {
  return maxGuidance > 1;
}

/** The per-frame guidance scales: `torch.linspace(min, max, F)` in float32. */
export function frameGuidance(minGuidance: number, maxGuidance: number, frames: number) {
  return Float32Array.from(torchLinspaceF32(minGuidance, maxGuidance, frames));
}

/** The UNet's `added_time_ids` row: `[fps − 1, motion bucket, noise augmentation]`, float32. */
export function addedTimeIds(request: CheckedRequest): Float32Array {
  return Float32Array.from([request.fps - 1, request.motionBucketId, request.noiseAugStrength]);
}

/**
 * The conditioning the UNet needs, computed once and sent to every worker. Plain data
 * (structured-cloneable).
 */
export interface Conditioning {
  /** Whether classifier-free guidance runs (batch 2, `[uncond; cond]`). */
  readonly cfg: boolean;
  /** [F] guidance scale of each frame. */
  readonly guidance: Float32Array<ArrayBuffer>;
  /** [D] the image's CLIP embedding (the uncond row is zeros). */
  readonly imageEmbeds: Float32Array<ArrayBuffer>;
  /** [C, h, w] the VAE latent of the augmented image, unscaled (the uncond row is zeros). */
  readonly imageLatent: Float32Array<ArrayBuffer>;
  /** [3] `[fps − 1, motion bucket, noise augmentation]`. */
  readonly addedTimeIds: Float32Array<ArrayBuffer>;
}

/** Every tensor {@linkcode encodeImage} computed, for parity checks against diffusers. */
export interface EncodeIntermediates {
  /** [1, 3, S, S] CLIP input. */
  readonly pixelValues: Float32Array;
  /** [1, 3, H, W] the resized image in [−1, 1]. */
  readonly vaeImage: Float32Array;
  /** [1, 3, H, W] after noise augmentation: the VAE encoder's input. */
  readonly vaeEncoderImage: Float32Array;
}

export type { StageOptions };

/** The declared element type of a component's input or output. */
function declared(model: ModelFolder, component: string, name: string): "float32" | "float16" {
  const spec = model.manifest.components[component]!;
  const io = [...spec.inputs, ...spec.outputs].find((t) => t.name === name);
  if (io?.dtype !== "float32" && io?.dtype !== "float16") {
    throw new ManifestError(
      model.manifestFile,
      `'${component}' tensor '${name}' must be float32 or float16: found ${io?.dtype ?? "missing"}`,
    );
  }
  return io.dtype;
}

/** A float tensor in the type `dtype` names (float16 rounds to nearest even). */
function floatTensor(dtype: "float32" | "float16", data: Float32Array, dims: readonly number[]) {
  return dtype === "float16"
    ? new Tensor("float16", Float16Array.from(data), dims)
    : new Tensor("float32", data as Float32Array<ArrayBuffer>, dims);
}

/** An output's values as float32. */
function floats(outputs: Record<string, Tensor>, name: string): Float32Array<ArrayBuffer> {
  const t = outputs[name];
  if (t === undefined) throw new Error(`the graph returned no '${name}'`);
  if (t.type === "float32") return t.data as Float32Array<ArrayBuffer>;
  if (t.type === "float16") return Float32Array.from(t.data as Float16Array);
  throw new Error(`'${name}' is ${t.type}, not a float tensor`);
}

/** The first draw of the seeded stream: the noise augmentation [1, 3, H, W]. */
function seededDraws(request: CheckedRequest): { aug: Float32Array; latents: Float32Array } {
  const stream = new GaussianStream(request.seed);
  const aug = stream.fill(new Float32Array(3 * request.height * request.width));
  const latents = stream.fill(new Float32Array(request.latentDims.reduce((a, b) => a * b, 1)));
  return { aug, latents };
}

/**
 * 3. Encode the image: CLIP image embeddings of the original image; VAE latent (the posterior
 * mean, unscaled) of the W x H image plus `noiseAugStrength` times the first random draw.
 */
export async function encodeImage(
  env: Env,
  model: ModelFolder,
  request: CheckedRequest,
  options: StageOptions = {},
): Promise<{ conditioning: Conditioning; intermediates: EncodeIntermediates }> {
  const c = svdConfig(model);
  const f = Math.fround;
  const S = c.clipImageSize;
  const pixelValues = clipPixelValues(request.image, S, c.clipImageMean, c.clipImageStd);
  let imageEmbeds: Float32Array<ArrayBuffer>;
  {
    using session = openComponent(env, model, "image_encoder", options.session);
    const out = await session.runAsync({
      pixel_values: floatTensor(declared(model, "image_encoder", "pixel_values"), pixelValues, [
        1,
        3,
        S,
        S,
      ]),
    });
    imageEmbeds = floats(out, "image_embeds").slice();
  }
  const { height: H, width: W } = request;
  const resized = vaeImage(request.image, W, H);
  const noise = request.augNoise ?? seededDraws(request).aug;
  const strength = f(request.noiseAugStrength);
  const augmented = new Float32Array(resized.length);
  for (let k = 0; k < resized.length; k++) augmented[k] = f(resized[k]! + f(strength * noise[k]!));
  let imageLatent: Float32Array<ArrayBuffer>;
  {
    using session = openComponent(env, model, "vae_encoder", options.session);
    const out = await session.runAsync({
      image: floatTensor(declared(model, "vae_encoder", "image"), augmented, [1, 3, H, W]),
    });
    imageLatent = floats(out, "latent").slice();
  }
  const [, , C, h, w] = request.latentDims;
  if (imageLatent.length !== C * h * w) {
    throw new Error(
      `the VAE encoder gave ${imageLatent.length} values for a [1, ${C}, ${h}, ${w}] latent`,
    );
  }
  return {
    conditioning: {
      cfg: usesGuidance(request.maxGuidance),
      guidance: frameGuidance(request.minGuidance, request.maxGuidance, request.frames),
      imageEmbeds,
      imageLatent,
      addedTimeIds: addedTimeIds(request) as Float32Array<ArrayBuffer>,
    },
    intermediates: { pixelValues, vaeImage: resized, vaeEncoderImage: augmented },
  };
}

/**
 * 5. Prepare latents: the injected noise, or the second seeded draw, times the scheduler's
 * `init_noise_sigma` (float32, as torch).
 */
export function prepareLatents(request: CheckedRequest): Float32Array<ArrayBuffer> {
  const sigma = request.initNoiseSigma;
  const noise = request.latents ?? seededDraws(request).latents;
  const out = new Float32Array(noise.length);
  for (let k = 0; k < noise.length; k++) out[k] = Math.fround(noise[k]! * sigma);
  return out;
}

/**
 * The UNet's `sample` [B, F, 2C, h, w] and `timestep` [B] for latents `xs` at steps `is`: rows
 * `[uncond x k; cond x k]`; each holds `scale_model_input` of its latents, frame by frame
 * concatenated on the channel axis with the image latent (zeros in the uncond rows), and
 * `c_noise` of its step.
 */
export function unetInputs(
  table: EulerTable,
  conditioning: Conditioning,
  latentDims: readonly number[],
  xs: readonly Float32Array[],
  is: readonly number[],
): { sample: Float32Array; timestep: Float32Array } {
  const [, F, C, h, w] = latentDims as [number, number, number, number, number];
  const { cfg, imageLatent } = conditioning;
  const k = xs.length;
  const copies = cfg ? 2 : 1;
  const B = copies * k;
  const plane = C * h * w; // one frame's latents
  const sample = new Float32Array(B * F * 2 * plane);
  const timestep = new Float32Array(B);
  const scaled = new Float32Array(F * plane);
  for (let j = 0; j < k; j++) {
    table.scaleModelInput(xs[j]!, is[j]!, scaled);
    for (let copy = 0; copy < copies; copy++) {
      const b = copy * k + j;
      const withLatent = !cfg || copy === 1;
      for (let fr = 0; fr < F; fr++) {
        const at = (b * F + fr) * 2 * plane;
        sample.set(scaled.subarray(fr * plane, (fr + 1) * plane), at);
        if (withLatent) sample.set(imageLatent, at + plane);
      }
      timestep[b] = table.timesteps[is[j]!]!;
    }
  }
  return { sample, timestep };
}

/**
 * The UNet as ParaStep's model function, with per-frame guidance and the Euler step: what one rank
 * (or the single device) runs. Conditioning values are made once per batch size; each call makes
 * fresh sample, timestep and output arrays, so calls from several ranks may overlap on one
 * session.
 */
export class Denoiser
  implements
    Sampler<Float32Array, Float32Array>,
    BatchSampler<Float32Array, Float32Array>,
    Disposable {
  readonly #session: Session;
  readonly #model: ModelFolder;
  readonly #table: EulerTable;
  readonly #dims: readonly number[];
  readonly #conditioning: Conditioning;
  readonly #values = new Map<number, Record<string, Value>>();
  readonly #signal: AbortSignal | undefined;

  /**
   * @param session the UNet
   * @param model the folder (for the tensors' declared types)
   * @param conditioning from {@linkcode encodeImage}
   * @param table the Euler tables for this many steps
   * @param latentDims [1, F, C, h, w]
   * @param signal aborting it cancels the UNet run in flight
   */
  constructor(
    session: Session,
    model: ModelFolder,
    conditioning: Conditioning,
    table: EulerTable,
    latentDims: readonly number[],
    signal?: AbortSignal,
  ) {
    this.#session = session;
    this.#model = model;
    this.#conditioning = conditioning;
    this.#table = table;
    this.#dims = latentDims;
    this.#signal = signal;
  }

  #dtype(name: string) {
    return declared(this.#model, "unet", name);
  }

  /** encoder_hidden_states [B, 1, D] and added_time_ids [B, 3] for k latents per call. */
  #conditioningFor(k: number): Record<string, Value> {
    let values = this.#values.get(k);
    if (values === undefined) {
      const { cfg, imageEmbeds, addedTimeIds } = this.#conditioning;
      const D = imageEmbeds.length;
      const B = (cfg ? 2 : 1) * k;
      const embeds = new Float32Array(B * D);
      const ids = new Float32Array(B * 3);
      for (let b = 0; b < B; b++) {
        // Rows [uncond x k; cond x k]: uncond rows keep zero embeddings.
        if (!cfg || b >= k) embeds.set(imageEmbeds, b * D);
        ids.set(addedTimeIds, b * 3);
      }
      const env = this.#session.env;
      values = {
        encoder_hidden_states: Value.fromTensor(
          env,
          floatTensor(this.#dtype("encoder_hidden_states"), embeds, [B, 1, D]),
        ),
        added_time_ids: Value.fromTensor(
          env,
          floatTensor(this.#dtype("added_time_ids"), ids, [B, 3]),
        ),
      };
      this.#values.set(k, values);
    }
    return values;
  }

  /** The raw v-predictions of several latents at their own steps: per latent [uncond; cond]. */
  async #unet(xs: Float32Array[], is: number[]): Promise<Float32Array[]> {
    const [, F, C, h, w] = this.#dims as [number, number, number, number, number];
    const copies = this.#conditioning.cfg ? 2 : 1;
    const k = xs.length;
    const B = copies * k;
    const n = F * C * h * w;
    const { sample, timestep } = unetInputs(this.#table, this.#conditioning, this.#dims, xs, is);
    const outDims = [B, F, C, h, w];
    const outType = this.#dtype("out_sample");
    const out = outType === "float16"
      ? new Tensor("float16", new Float16Array(B * n), outDims)
      : new Tensor("float32", new Float32Array(B * n), outDims);
    await this.#session.runAsync(
      {
        sample: floatTensor(this.#dtype("sample"), sample, [B, F, 2 * C, h, w]),
        timestep: floatTensor(this.#dtype("timestep"), timestep, [B]),
        ...this.#conditioningFor(k),
      },
      { outputs: { out_sample: out }, ...(this.#signal ? { signal: this.#signal } : {}) },
    );
    const v = out.type === "float32"
      ? out.data as Float32Array
      : Float32Array.from(out.data as Float16Array);
    return xs.map((_, j) => {
      const eps = new Float32Array(copies * n);
      for (let copy = 0; copy < copies; copy++) {
        const b = copy * k + j;
        eps.set(v.subarray(b * n, (b + 1) * n), copy * n);
      }
      return eps;
    });
  }

  /** v(x, σ_i) before guidance: [uncond; cond] with guidance, else cond. */
  async model(x: Float32Array, i: number): Promise<Float32Array> {
    return (await this.#unet([x], [i]))[0]!;
  }

  /** The same for several latents in one UNet call (BatchStep). */
  modelBatch(xs: Float32Array[], is: number[]): Promise<Float32Array[]> {
    return this.#unet(xs, is);
  }

  /** G(v) = u + g_f (c − u) with frame f's guidance, in float32 as torch computes it. */
  guide(eps: Float32Array): Float32Array {
    if (!this.#conditioning.cfg) return eps;
    const n = eps.length / 2;
    const F = this.#dims[1]!;
    const perFrame = n / F;
    const out = new Float32Array(n);
    const f = Math.fround;
    const g = this.#conditioning.guidance;
    for (let fr = 0; fr < F; fr++) {
      const gf = g[fr]!;
      for (let k = fr * perFrame; k < (fr + 1) * perFrame; k++) {
        const u = eps[k]!;
        out[k] = f(u + f(gf * f(eps[n + k]! - u)));
      }
    }
    return out;
  }

  /** One Euler step x_i -> x_{i+1}. */
  step(guided: Float32Array, i: number, x: Float32Array): Float32Array {
    return this.#table.step(guided, i, x);
  }

  /** Releases the conditioning values (not the session, which the caller owns). */
  [Symbol.dispose](): void {
    for (const values of this.#values.values()) for (const v of Object.values(values)) v.close();
    this.#values.clear();
  }
}

/** What decoding gives: the frames [F, 3, H, W], about [−1, 1]. */
export interface Decoded {
  readonly frames: Float32Array<ArrayBuffer>;
  readonly count: number;
  readonly height: number;
  readonly width: number;
}

/**
 * 8. Post-processing: the VAE decoder on `latents / scaling_factor`, `decodeChunk` frames per call.
 * The session opens up front, so a broken model folder fails before the denoising loop.
 */
export class Decoder implements Disposable {
  readonly #vae: Session;
  readonly #model: ModelFolder;
  readonly #scale: number;

  private constructor(vae: Session, model: ModelFolder, scalingFactor: number) {
    this.#vae = vae;
    this.#model = model;
    // torch: (1 / scaling_factor) * latents, the scalar rounded to float32 first.
    this.#scale = Math.fround(1 / scalingFactor);
  }

  /** Opens the VAE decoder. */
  static open(env: Env, model: ModelFolder, options: StageOptions = {}): Decoder {
    const c = svdConfig(model);
    return new Decoder(
      openComponent(env, model, "vae_decoder", options.session),
      model,
      c.vaeScalingFactor,
    );
  }

  /** Latents [1, F, C, h, w] to frames [F, 3, H, W]. */
  async decode(request: CheckedRequest, latents: Float32Array): Promise<Decoded> {
    const [, F, C, h, w] = request.latentDims;
    const { height: H, width: W } = request;
    const plane = C * h * w;
    const framePixels = 3 * H * W;
    const frames = new Float32Array(F * framePixels);
    const inType = declared(this.#model, "vae_decoder", "latents");
    for (let start = 0; start < F; start += request.decodeChunk) {
      const count = Math.min(request.decodeChunk, F - start);
      const chunk = new Float32Array(count * plane);
      for (let k = 0; k < chunk.length; k++) {
        chunk[k] = Math.fround(this.#scale * latents[start * plane + k]!);
      }
      const out = floats(
        await this.#vae.runAsync({ latents: floatTensor(inType, chunk, [1, count, C, h, w]) }),
        "frames",
      );
      if (out.length !== count * framePixels) {
        throw new Error(
          `the VAE decoder gave ${out.length} values for ${count} frames of 3x${H}x${W}`,
        );
      }
      frames.set(out, start * framePixels);
    }
    return { frames, count: F, height: H, width: W };
  }

  /** Closes the session. */
  [Symbol.dispose](): void {
    this.#vae.close();
  }
}

/** Opens the UNet for denoising on one device. */
export function openUnet(env: Env, model: ModelFolder, options: SessionOptions = {}): Session {
  return openComponent(env, model, "unet", options);
}
