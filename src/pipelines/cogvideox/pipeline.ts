/**
 * CogVideoX text-to-video (CogVideoX-2b and -5b), stage by stage as diffusers'
 * `CogVideoXPipeline.__call__` (`pipelines/cogvideo/pipeline_cogvideox.py`, 0.42.1;
 * docs/reference/video-pipelines.md §2.2): check the request (the video shape must be one the
 * folder exports), encode the prompt (T5 without attention mask, `[negative; prompt]`), prepare
 * latents `[1, F', C, h, w]` (frames before channels), the rotary tables (5b), denoise
 * (CogVideoXDDIMScheduler with v-prediction and classifier-free guidance, optionally diffusers'
 * dynamic guidance; the loop belongs to the ParaStep engine), decode (permute to
 * `[1, C, F', h, w]`, times `1 / scaling_factor`, the shape's frame-batched VAE decoder graph, or
 * with `decodeTiles` diffusers' tiled decode: ./tiles.ts).
 *
 * Numerics follow diffusers on the CPU: the transformer's output is upcast to float32, guidance is
 * float32 (`u + g·(c − u)`, each operation rounded), the step is the pure table of
 * src/schedulers/cogvideox_ddim.ts, and with a float16 transformer the latents are rounded to
 * float16 after every step as diffusers' `latents.to(prompt_embeds.dtype)` does.
 *
 * Shapes: B = 2 with guidance (`[negative; prompt]`), else 1; L = `maxTextSeqLength` tokens; D the
 * text embedding width; F' latent frames; C latent channels; h, w = H / 8, W / 8.
 *
 * @module
 */

import {
  autoCandidate,
  type Env,
  type ExecutionProvider,
  type Session,
  type SessionOptions,
  Tensor,
  Value,
} from "../../../ffi/mod.ts";
import { checkNumbers, ManifestError } from "../../models/manifest.ts";
import {
  checkComponentFiles,
  checkComponentGraphs,
  checkTokenizerFiles,
  type ModelFolder,
  openComponent,
  type OpenComponentOptions,
} from "../../models/model.ts";
import type { BatchSampler } from "../../parastep/batchstep.ts";
import type { Sampler } from "../../parastep/rounds.ts";
import { randn } from "../../random.ts";
import {
  cogvideoxDdim,
  type CogVideoXDdimTable,
  rounder,
  type SampleType,
} from "../../schedulers/cogvideox_ddim.ts";
import type { VideoFrames } from "../_video.ts";
import type { StageOptions } from "../family.ts";
import { TextTokenizer } from "../tokenize.ts";
import { type RotaryTables, rotaryTables } from "./rope.ts";
import {
  blendTiles,
  cropLatents,
  type DecodedTile,
  type TilePlan,
  tilePlan,
  type VaeTiling,
  vaeTiling,
} from "./tiles.ts";

/** The longest prompt accepted, in characters (the tokenizer truncates far earlier). */
export const MAX_PROMPT_CHARS = 4096;
/** The most frames a request may ask for. */
export const MAX_FRAMES = 4096;
/** The longest side accepted, in pixels (memory is checked as well). */
export const MAX_SIDE = 16384;

/** The graphs every CogVideoX folder holds; the transformer and VAE decoder graphs are per shape. */
export const COMPONENTS = ["text_encoder"] as const;

/** What to generate. */
export interface VideoRequest {
  /** The text describing the video; must not be empty. */
  readonly prompt: string;
  /** What to steer away from. @default "" (diffusers' default) */
  readonly negativePrompt?: string;
  /** Denoising steps T. @default manifest defaults.steps */
  readonly steps?: number;
  /** Guidance scale; at most 1 turns classifier-free guidance off, as in diffusers. @default manifest */
  readonly guidance?: number;
  /** diffusers' `use_dynamic_cfg`: the guidance varies with the raw timestep. @default false */
  readonly dynamicCfg?: boolean;
  /** diffusers' `num_frames`: gives `(frames − 1) // 4 + 1` latent frames. @default manifest */
  readonly frames?: number;
  /** Video width in pixels, a multiple of 16. @default manifest defaults.width */
  readonly width?: number;
  /** Video height in pixels, a multiple of 16. @default manifest defaults.height */
  readonly height?: number;
  /** Frames per second of the video file (the model is not conditioned on it). @default manifest */
  readonly fps?: number;
  /** Seed of the initial noise ({@linkcode randn}). @default 0 */
  readonly seed?: number;
  /** Initial latents [1, F', C, h, w] instead of seeded noise (diffusers' `latents=`), for parity. */
  readonly latents?: Float32Array<ArrayBuffer>;
  /**
   * Decode in overlapping tiles, as diffusers' `vae.enable_tiling()` (less decoder memory; the
   * blending changes the pixels). Needs a folder with tile decoders (manifest `vaeTiling`).
   * @default false (diffusers' default)
   */
  readonly decodeTiles?: boolean;
}

/** One entry of the manifest's `shapes`: a video shape the folder has graphs for. */
export interface VideoShape {
  /** Frames the VAE decodes for this latent shape (4F' − 3 for odd F', 4F' for even). */
  readonly frames: number;
  readonly height: number;
  readonly width: number;
  readonly latentFrames: number;
  readonly latentHeight: number;
  readonly latentWidth: number;
  /** F'·(h/p)·(w/p): the rotary tables' rows. */
  readonly videoTokens: number;
  /** The transformer component for this shape (`transformer` for the 5b layout). */
  readonly transformer: string;
  /** The VAE decoder component for this shape. */
  readonly vaeDecoder: string;
  /** The tile decoder for this shape's latent frame count (folders with `vaeTiling`). */
  readonly vaeTileDecoder?: string;
}

/** A request with every default filled in and every value checked. */
export interface CheckedRequest {
  readonly prompt: string;
  readonly negativePrompt: string;
  readonly steps: number;
  readonly guidance: number;
  readonly dynamicCfg: boolean;
  /** Whether classifier-free guidance runs (guidance > 1). */
  readonly cfg: boolean;
  /** The `num_frames` asked for. */
  readonly frames: number;
  readonly width: number;
  readonly height: number;
  readonly fps: number;
  readonly seed: number;
  readonly latents: Float32Array<ArrayBuffer> | undefined;
  /** [1, F', C, h, w]. */
  readonly latentDims: readonly [number, number, number, number, number];
  /** The exported shape that makes this video (its `frames` is the video's frame count). */
  readonly shape: VideoShape;
  /** Whether the VAE decodes in tiles (diffusers' `vae.enable_tiling()`). */
  readonly decodeTiles: boolean;
  /** The transformer's float type: the latents are kept in it. */
  readonly sampleType: SampleType;
  /** [B, L] the text encoder's input ids: `[negative; prompt]` with guidance, else the prompt. */
  readonly inputIds: BigInt64Array<ArrayBuffer>;
  /**
   * What the user should know about how the request was read (a prompt truncated to the model's
   * token limit, a frame count rounded to a latent frame), for the CLI's summary line.
   */
  readonly notices: readonly string[];
}

/** The numbers CogVideoX reads from the manifest's `config`, with the ranges a real or tiny model has. */
const CONFIG_RULES = {
  vaeScaleFactorSpatial: { integer: true, powerOfTwo: true, min: 1, max: 64 },
  vaeScaleFactorTemporal: { integer: true, min: 1, max: 64 },
  vaeScalingFactor: { min: 0, minExclusive: true, max: 1e6 },
  latentChannels: { integer: true, min: 1, max: 4096 },
  patchSize: { integer: true, min: 1, max: 64 },
  maxTextSeqLength: { integer: true, min: 1, max: 65_536 },
  textEmbedDim: { integer: true, min: 1, max: 65_536 },
  useRotaryPositionalEmbeddings: { integer: true, min: 0, max: 1 },
  attentionHeadDim: { integer: true, min: 1, max: 4096 },
  numAttentionHeads: { integer: true, min: 1, max: 4096 },
  sampleFrames: { integer: true, min: 1, max: MAX_FRAMES },
  sampleHeight: { integer: true, min: 1, max: MAX_SIDE },
  sampleWidth: { integer: true, min: 1, max: MAX_SIDE },
} as const;

/** The family's `defaults` besides steps and warm-up. */
const DEFAULTS_RULES = {
  guidance: { min: 0, max: 100 },
  fps: { integer: true, min: 1, max: 240 },
  frames: { integer: true, min: 1, max: MAX_FRAMES },
  height: { integer: true, min: 1, max: MAX_SIDE },
  width: { integer: true, min: 1, max: MAX_SIDE },
} as const;

/** The numbers CogVideoX needs from the manifest. */
export type CogVideoXConfig = Record<keyof typeof CONFIG_RULES, number>;

/** The manifest's CogVideoX config, checked. */
export function cogvideoxConfig(model: ModelFolder): CogVideoXConfig {
  return checkNumbers(model.manifest, model.manifestFile, "config", CONFIG_RULES);
}

/** The manifest's CogVideoX defaults, checked. */
export function cogvideoxDefaults(model: ModelFolder): Record<keyof typeof DEFAULTS_RULES, number> {
  return checkNumbers(model.manifest, model.manifestFile, "defaults", DEFAULTS_RULES);
}

/** Width and height must be multiples of this: the VAE's factor times the patch size (16). */
export function sizeMultiple(c: CogVideoXConfig): number {
  return c.vaeScaleFactorSpatial * c.patchSize;
}

/** diffusers' latent frame count for `num_frames`: `(frames − 1) // temporal + 1`. */
export function latentFramesFor(frames: number, temporal: number): number {
  return Math.floor((frames - 1) / temporal) + 1;
}

/**
 * The manifest's `shapes`, each checked against the config and the components.
 *
 * @throws {ManifestError} naming the entry and field that is wrong
 */
export function videoShapes(model: ModelFolder): VideoShape[] {
  const { manifest, manifestFile } = model;
  const c = cogvideoxConfig(model);
  const raw = manifest.raw.shapes;
  const fail = (path: string, what: string): never => {
    throw new ManifestError(manifestFile, `'${path}' ${what}; re-export the model`);
  };
  if (!Array.isArray(raw) || raw.length === 0) {
    fail("shapes", "must list the exported video shapes (a CogVideoX folder needs at least one)");
  }
  const s = sizeMultiple(c);
  return (raw as unknown[]).map((entry, k) => {
    const path = `shapes[${k}]`;
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
      fail(path, "must be an object");
    }
    const o = entry as Record<string, unknown>;
    const int = (name: string, min: number, max: number): number => {
      const v = o[name];
      if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
        fail(
          `${path}.${name}`,
          `must be an integer in ${min}..${max}: found ${v === undefined ? "missing" : v}`,
        );
      }
      return v as number;
    };
    const name = (field: string): string => {
      const v = o[field];
      if (typeof v !== "string" || manifest.components[v] === undefined) {
        fail(`${path}.${field}`, `must name a component: found ${JSON.stringify(v)}`);
      }
      return v as string;
    };
    const shape: VideoShape = {
      frames: int("frames", 1, 4 * MAX_FRAMES),
      height: int("height", s, MAX_SIDE),
      width: int("width", s, MAX_SIDE),
      latentFrames: int("latentFrames", 1, MAX_FRAMES),
      latentHeight: int("latentHeight", 1, MAX_SIDE),
      latentWidth: int("latentWidth", 1, MAX_SIDE),
      videoTokens: int("videoTokens", 1, 2 ** 31 - 1),
      transformer: name("transformer"),
      vaeDecoder: name("vaeDecoder"),
      ...(o.vaeTileDecoder !== undefined ? { vaeTileDecoder: name("vaeTileDecoder") } : {}),
    };
    const f = c.vaeScaleFactorSpatial;
    const p = c.patchSize;
    const expected: [string, number, number][] = [
      ["height", shape.height % s, 0],
      ["width", shape.width % s, 0],
      ["latentHeight", shape.latentHeight, shape.height / f],
      ["latentWidth", shape.latentWidth, shape.width / f],
      [
        "videoTokens",
        shape.videoTokens,
        shape.latentFrames * (shape.latentHeight / p) * (shape.latentWidth / p),
      ],
    ];
    for (const [field, got, want] of expected) {
      if (got !== want) {
        fail(
          `${path}.${field}`,
          field === "height" || field === "width"
            ? `must be a multiple of ${s}: found ${shape[field]}`
            : `must be ${want} for this shape: found ${got}`,
        );
      }
    }
    return shape;
  });
}

function checkSchedule(model: ModelFolder, steps: number, what: string): void {
  try {
    cogvideoxDdim(model.manifest.scheduler, steps);
  } catch (e) {
    if (!(e instanceof TypeError || e instanceof RangeError)) throw e;
    throw new ManifestError(model.manifestFile, `'scheduler' (${what}): ${e.message}`);
  }
}

/**
 * Checks everything CogVideoX reads from a manifest (config, defaults, shapes, the scheduler, the
 * tokenizer) and that the text encoder and every shape's graph files are there.
 *
 * @throws {ManifestError} naming the field or file
 */
export function checkManifest(model: ModelFolder): void {
  const { manifest, manifestFile } = model;
  const c = cogvideoxConfig(model);
  const d = cogvideoxDefaults(model);
  const shapes = videoShapes(model);
  const first = shapes[0]!;
  const defaultLatentFrames = latentFramesFor(d.frames, c.vaeScaleFactorTemporal);
  if (
    first.latentFrames !== defaultLatentFrames || first.height !== d.height ||
    first.width !== d.width
  ) {
    throw new ManifestError(
      manifestFile,
      `'shapes[0]' (${first.frames} frames of ${first.width}x${first.height}) must be the default video ` +
        `(defaults: ${d.frames} frames of ${d.width}x${d.height}); re-export the model`,
    );
  }
  const tiling = vaeTiling(model, c.vaeScaleFactorSpatial);
  shapes.forEach((s, k) => {
    if ((s.vaeTileDecoder !== undefined) !== (tiling !== null)) {
      throw new ManifestError(
        manifestFile,
        tiling === null
          ? `'shapes[${k}].vaeTileDecoder' needs 'vaeTiling' (the tile sizes); re-export the model`
          : `'shapes[${k}].vaeTileDecoder' is missing (the folder has 'vaeTiling'); re-export the model`,
      );
    }
  });
  checkComponentFiles(model, [
    ...COMPONENTS,
    ...shapes.flatMap((
      s,
    ) => [s.transformer, s.vaeDecoder, ...(s.vaeTileDecoder ? [s.vaeTileDecoder] : [])]),
  ]);
  checkTokenizerFiles(model, ["t5"]);
  const t5 = manifest.tokenizers.t5!;
  if (t5.modelMaxLength < c.maxTextSeqLength) {
    throw new ManifestError(
      manifestFile,
      `'tokenizers.t5.modelMaxLength' (${t5.modelMaxLength}) must be at least 'config.maxTextSeqLength' ` +
        `(${c.maxTextSeqLength}), the token count the text encoder takes; re-export the model`,
    );
  }
  checkSchedule(model, manifest.defaults.steps, `at the default ${manifest.defaults.steps} steps`);
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

/** Refuses a step count the schedule cannot space, naming the nearest that works. */
function checkSteps(model: ModelFolder, steps: number): void {
  const valid = (T: number) => {
    try {
      cogvideoxDdim(model.manifest.scheduler, T);
      return true;
    } catch (e) {
      if (e instanceof RangeError) return false;
      throw e;
    }
  };
  if (valid(steps)) return;
  let below = steps - 1;
  while (below >= 1 && !valid(below)) below--;
  throw new RangeError(
    `Cannot generate with ${steps} steps: this model's CogVideoX DDIM schedule (timestep_spacing ${
      model.manifest.scheduler.timestep_spacing ?? "leading"
    }) cannot space that many (diffusers would run ${steps + 1})` +
      (below >= 1 ? `; ${below} steps work` : ""),
  );
}

/** The frames asked for that give `latentFrames`: `4(F' − 1) + 1` to `4F'`. */
function framesRange(latentFrames: number, temporal: number): [number, number] {
  return [temporal * (latentFrames - 1) + 1, temporal * latentFrames];
}

/** The exporter command that adds a shape to this folder (keeping the ones it has). */
function exportCommand(model: ModelFolder, frames: number, width: number, height: number) {
  const shapes = videoShapes(model);
  const list = (values: number[]) => [...new Set(values)].join(",");
  const source = model.manifest.raw.source as Record<string, unknown> | undefined;
  const from = typeof source?.from === "string"
    ? `--from ${source.from}`
    : `--size ${typeof source?.size === "string" ? source.size : "<size>"}` +
      (typeof source?.seed === "number" ? ` --seed ${source.seed}` : "");
  const dtype = model.manifest.dtype === "fp32" ? "" : ` --dtype ${model.manifest.dtype}`;
  return `python -m models.export cogvideox ${from} --out ${model.dir}${dtype} ` +
    `--frames ${list([...shapes.map((s) => s.frames), frames])} ` +
    `--height ${list([...shapes.map((s) => s.height), height])} ` +
    `--width ${list([...shapes.map((s) => s.width), width])}`;
}

/** The exported shape for (F', H, W), or a RangeError listing the exported ones. */
function findShape(
  model: ModelFolder,
  frames: number,
  latentFrames: number,
  width: number,
  height: number,
): VideoShape {
  const c = cogvideoxConfig(model);
  const shapes = videoShapes(model);
  const shape = shapes.find((s) =>
    s.latentFrames === latentFrames && s.width === width && s.height === height
  );
  if (shape !== undefined) return shape;
  const exported = shapes.map((s) => {
    const [lo, hi] = framesRange(s.latentFrames, c.vaeScaleFactorTemporal);
    return `${s.width}x${s.height} with --frames ${lo === hi ? lo : `${lo} to ${hi}`}`;
  }).join(", ");
  throw new RangeError(
    `Cannot generate ${frames} frames of ${width}x${height}: '${model.manifest.name}' has no graphs for ` +
      `${latentFrames} latent frames at that size; it exports ${exported}; add the shape with ` +
      `'${exportCommand(model, frames, width, height)}'`,
  );
}

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

function fileBytes(model: ModelFolder, component: string): number {
  const spec = model.manifest.components[component];
  let bytes = 0;
  if (spec === undefined) return 0;
  for (const file of [spec.file, `${spec.file}.data`]) {
    try {
      bytes += Deno.statSync(`${model.dir}/${file}`).size;
    } catch {
      // no external data
    }
  }
  return bytes;
}

/** What a request needs in memory, in bytes, by part (see {@linkcode estimateMemory}). */
export interface MemoryEstimate {
  /** Arrays parastep itself holds: latents, embeddings, rotary tables, decoded and 8-bit frames. */
  readonly host: number;
  /** The graphs' weights in memory: the text encoder's (while encoding), the transformer's and the VAE's. */
  readonly weights: { readonly textEncoder: number; readonly denoising: number };
  /** One transformer call's attention scores over all tokens (the largest activation). */
  readonly attention: number;
  /** One transformer call's activations, attention included. */
  readonly denoiser: number;
  /** The VAE decoder's activations (with `decodeTiles`, the largest tile's). */
  readonly decoder: number;
  /**
   * The VAE decoder's activations with `--decode-tiles` (the largest tile's), whether or not the
   * request asks for it; null when the folder has no tile decoders.
   */
  readonly tiledDecoder: number | null;
  /** Tokens one transformer call attends over: L + F'·(h/p)·(w/p). */
  readonly tokens: number;
}

/**
 * ONNX Runtime's CPU session holds a graph's weights and a prepacked copy of the large ones.
 * Measured on the AudioLDM2 graphs (src/pipelines/generate.ts): 1 to 3 times the file; 2 here.
 */
const SESSION_BYTES_PER_GRAPH_BYTE = 2;
/**
 * The real CogVideoX VAE decoder (123,368,451 parameters) needs 32.1 GiB of float32 activations for
 * diffusers' untiled, frame-batched decode at 480 x 720 (video-pipelines.md §4.2: an eager
 * liveness estimate; nearly the same for F' = 12 and 13, since the latent frames go 2 or 3 at a
 * time): what the estimate scales from.
 */
const REAL_DECODE_BYTES = 32.1 * 2 ** 30;
const REAL_DECODE_PIXELS = 480 * 720;
const REAL_DECODER_PARAMETERS = 123_368_451;

/**
 * The memory a request needs, from the manifest and the request: one transformer call's
 * activations (its attention scores over all tokens, B·heads·S² floats, as ONNX Runtime's kernels
 * without fused attention materialise them, twice for the scores and their softmax, plus the
 * hidden states), the VAE decoder's activations (scaled from the real decoder's by the pixels and
 * by the square root of the graph's parameters: activations grow with the channel widths, weights
 * with their square), the weights, and parastep's own arrays. An estimate: real runs may need
 * more.
 */
export function estimateMemory(model: ModelFolder, r: CheckedRequest): MemoryEstimate {
  const c = cogvideoxConfig(model);
  const { shape } = r;
  const tiles = tiledDecodeFor(model, shape);
  const useTiles = r.decodeTiles && tiles !== null;
  const B = r.cfg ? 2 : 1;
  const e = r.sampleType === "float32" ? 4 : 2;
  const [, F, C, h, w] = r.latentDims;
  const latents = F * C * h * w * 4;
  const tokens = c.maxTextSeqLength + shape.videoTokens;
  const inner = c.numAttentionHeads * c.attentionHeadDim;
  const attention = B * c.numAttentionHeads * tokens * tokens * e;
  const denoiser = 2 * attention + 16 * B * tokens * inner * e;
  const pixels = r.width * r.height;
  const untiled = decoderEstimate(model, shape.vaeDecoder, pixels);
  const tiled = tiles === null ? null : decoderEstimate(
    model,
    tiles.component,
    largestTilePixels(tiles.plan, c.vaeScaleFactorSpatial),
  );
  const vaeBytes = useTiles ? tiled!.bytes : untiled.bytes;
  const frames = shape.frames * 3 * pixels;
  // With tiles, every decoded tile is held until the blend, as in diffusers' tiled_decode.
  const tileOutputs = useTiles
    ? shape.frames * 3 * tilePixelsSum(tiles!.plan, c.vaeScaleFactorSpatial) * 4
    : 0;
  const host = 12 * latents + // x, v and guided v per live round, the initial latents
    2 * B * latents + // the transformer's input and output
    2 * B * c.maxTextSeqLength * c.textEmbedDim * 4 + // prompt embeddings, and a cast copy
    2 * shape.videoTokens * c.attentionHeadDim * 4 + // rotary tables
    frames * (4 + 4 + 1 + 1) + // the VAE's output, reordered frames, 8-bit frames, encoded
    tileOutputs;
  return {
    host,
    weights: {
      textEncoder: SESSION_BYTES_PER_GRAPH_BYTE * fileBytes(model, "text_encoder"),
      denoising: SESSION_BYTES_PER_GRAPH_BYTE * (fileBytes(model, shape.transformer) + vaeBytes),
    },
    attention,
    denoiser,
    decoder: useTiles ? tiled!.activations : untiled.activations,
    tiledDecoder: tiled === null ? null : tiled.activations,
    tokens,
  };
}

/** A decoder graph's file bytes and its activations at `pixels` per frame (scaled from the real decoder's). */
function decoderEstimate(model: ModelFolder, component: string, pixels: number) {
  const bytes = fileBytes(model, component);
  const element = declared(model, component, "z") === "float32" ? 4 : 2;
  const activations = REAL_DECODE_BYTES * (pixels / REAL_DECODE_PIXELS) *
    Math.sqrt(bytes / element / REAL_DECODER_PARAMETERS) * (element / 4);
  return { bytes, activations };
}

function largestTilePixels(plan: TilePlan, spatial: number): number {
  const most = (spans: TilePlan["rows"]) => Math.max(...spans.map((t) => t.size)) * spatial;
  return most(plan.rows) * most(plan.cols);
}

function tilePixelsSum(plan: TilePlan, spatial: number): number {
  const sum = (spans: TilePlan["rows"]) => spans.reduce((a, t) => a + t.size * spatial, 0);
  return sum(plan.rows) * sum(plan.cols);
}

/** Diffusers' tiled decode of a shape: the tile decoder, the tile sizes, and how the latents are cut. */
export interface TiledDecode {
  /** The tile decoder component (`vae_decoder_tiles_f<F'>`). */
  readonly component: string;
  readonly tiling: VaeTiling;
  readonly plan: TilePlan;
}

/** The tiled decode of `shape`, or null when the folder has no tile decoders (no `vaeTiling`). */
export function tiledDecodeFor(model: ModelFolder, shape: VideoShape): TiledDecode | null {
  const c = cogvideoxConfig(model);
  const tiling = vaeTiling(model, c.vaeScaleFactorSpatial);
  if (tiling === null || shape.vaeTileDecoder === undefined) return null;
  return {
    component: shape.vaeTileDecoder,
    tiling,
    plan: tilePlan(tiling, shape.latentHeight, shape.latentWidth, c.vaeScaleFactorSpatial),
  };
}

const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;

/**
 * Refuses a request whose estimate ({@linkcode estimateMemory}) cannot fit before any session
 * opens: on the CPU everything counts against the available host memory; on a GPU provider only
 * parastep's own arrays do (the graphs' weights and activations live on the device, whose free
 * memory ONNX Runtime does not report through this binding).
 *
 * @param ep the provider the sessions ask for (`auto`: the one it would pick)
 * @param availableBytes @default Deno.systemMemoryInfo().available
 * @throws {RangeError} with the estimate, its largest part and what to lower
 */
export function checkMemory(
  model: ModelFolder,
  request: CheckedRequest,
  ep: ExecutionProvider | "auto",
  availableBytes?: number,
): void {
  const m = estimateMemory(model, request);
  const device = ep === "auto" ? autoCandidate() : ep;
  const onCpu = device === "cpu";
  const need = onCpu
    ? m.host +
      Math.max(m.weights.textEncoder, m.weights.denoising + Math.max(m.denoiser, m.decoder))
    : m.host;
  const available = availableBytes ?? Deno.systemMemoryInfo().available;
  if (need <= available) return;
  const { shape } = request;
  const parts = onCpu
    ? ` (one transformer call's attention over ${m.tokens} tokens alone ${gib(m.attention)}, ` +
      `the VAE decode${request.decodeTiles ? " in tiles" : ""} ${gib(m.decoder)})`
    : "";
  // Tiles help when the decode is what does not fit (on a GPU provider only parastep's arrays count).
  const tiles = onCpu && !request.decodeTiles && m.tiledDecoder !== null &&
      m.tiledDecoder < m.decoder && m.decoder > m.denoiser
    ? `--decode-tiles (the VAE decode in tiles needs about ${gib(m.tiledDecoder)}), `
    : "";
  throw new RangeError(
    `Cannot generate ${shape.frames} frames of ${request.width}x${request.height}` +
      `${onCpu ? " on the CPU" : ""}: that needs about ${gib(need)} of memory${parts} and ${
        gib(available)
      } is available; use ${tiles}fewer --frames or a smaller --width/--height` +
      (onCpu ? " (an exported shape), or a GPU (--ep cuda)" : " (an exported shape)"),
  );
}

/**
 * 1. Check inputs: fills defaults from the manifest, refuses any value out of range or a video
 * shape the folder has no graphs for, tokenizes the prompts (the token ids are part of the
 * request; a truncation becomes a {@linkcode CheckedRequest.notices} entry), and checks the
 * shape's graphs against the manifest, before a session opens.
 *
 * @param availableBytes the memory parastep's own arrays must fit in @default Deno.systemMemoryInfo().available
 * @throws {RangeError} naming the value and its limits
 */
export function checkRequest(
  model: ModelFolder,
  request: VideoRequest,
  availableBytes?: number,
): CheckedRequest {
  checkManifest(model);
  const { manifest } = model;
  const c = cogvideoxConfig(model);
  const d = cogvideoxDefaults(model);
  const prompt = request.prompt;
  if (typeof prompt !== "string" || prompt.trim() === "") {
    throw new RangeError("Cannot generate as 'prompt' is empty: describe the video to generate");
  }
  const negativePrompt = request.negativePrompt ?? "";
  for (const [name, text] of [["prompt", prompt], ["negative prompt", negativePrompt]] as const) {
    if (typeof text !== "string" || text.length > MAX_PROMPT_CHARS) {
      throw new RangeError(
        `Cannot generate as the ${name} is ${
          typeof text === "string" ? `${text.length} characters long` : "not text"
        }: the limit is ${MAX_PROMPT_CHARS}`,
      );
    }
  }
  const trainSteps = Number(manifest.scheduler.num_train_timesteps ?? 1000);
  const steps = numberIn("steps", request.steps ?? manifest.defaults.steps, 1, trainSteps, true);
  checkSteps(model, steps);
  const guidance = numberIn("guidance", request.guidance ?? d.guidance, 0, 100, false);
  const dynamicCfg = request.dynamicCfg ?? false;
  if (typeof dynamicCfg !== "boolean") {
    throw new RangeError(
      `Cannot generate as 'dynamic cfg' must be true or false: current value is ${dynamicCfg}`,
    );
  }
  const frames = request.frames ?? d.frames;
  if (typeof frames === "number" && Number.isInteger(frames) && frames < 1) {
    throw new RangeError(
      `Cannot generate ${frames} frames: CogVideoX makes (frames - 1) // ${c.vaeScaleFactorTemporal} + 1 ` +
        `latent frames, which is ${
          latentFramesFor(frames, c.vaeScaleFactorTemporal)
        }; ask for at least 1 frame`,
    );
  }
  numberIn("frames", frames, 1, MAX_FRAMES, true);
  const s = sizeMultiple(c);
  const side = (name: "width" | "height", v: number) => {
    numberIn(name, v, 1, MAX_SIDE, true);
    if (v % s !== 0) {
      const lower = v - (v % s);
      throw new RangeError(
        `Cannot generate as '${name}' must be a multiple of ${s} (the VAE's factor ${c.vaeScaleFactorSpatial} ` +
          `times the patch size ${c.patchSize}): current value is ${v} (try ${
            lower > 0 ? `${lower} or ` : ""
          }${lower + s})`,
      );
    }
    return v;
  };
  const width = side("width", request.width ?? d.width);
  const height = side("height", request.height ?? d.height);
  const fps = numberIn("fps", request.fps ?? d.fps, 1, 240, true);
  const seed = numberIn("seed", request.seed ?? 0, 0, Number.MAX_SAFE_INTEGER, true);
  const latentFrames = latentFramesFor(frames, c.vaeScaleFactorTemporal);
  const shape = findShape(model, frames, latentFrames, width, height);
  const decodeTiles = request.decodeTiles ?? false;
  if (typeof decodeTiles !== "boolean") {
    throw new RangeError(
      `Cannot generate as 'decode tiles' must be true or false: current value is ${decodeTiles}`,
    );
  }
  const tiles = decodeTiles ? checkTiles(model, shape) : null;
  checkComponentGraphs(model, [shape.transformer, tiles?.component ?? shape.vaeDecoder]);
  const sampleType = declared(model, shape.transformer, "hidden_states");
  const latentDims = [
    1,
    latentFrames,
    c.latentChannels,
    shape.latentHeight,
    shape.latentWidth,
  ] as const;
  const size = latentDims.reduce((a, b) => a * b, 1);
  if (request.latents !== undefined && request.latents.length !== size) {
    throw new RangeError(
      `Cannot generate as the given latents hold ${request.latents.length} values: [${latentDims}] needs ${size}`,
    );
  }
  const cfg = guidance > 1;
  const notices: string[] = [];
  if (shape.frames !== frames) {
    notices.push(
      `--frames ${frames} gives ${latentFrames} latent frames, which decode to ${shape.frames}`,
    );
  }
  if (tiles !== null && !tiles.plan.tiled) {
    const { tileSampleMinWidth: tw, tileSampleMinHeight: th } = tiles.tiling;
    notices.push(
      `--decode-tiles: ${width}x${height} is no larger than one ${tw}x${th} tile, so it decodes whole, as diffusers`,
    );
  }
  const L = c.maxTextSeqLength;
  const tokenizer = TextTokenizer.loadSync(model.dir, manifest.tokenizers.t5!);
  const texts = cfg ? [negativePrompt, prompt] : [prompt];
  const inputIds = new BigInt64Array(texts.length * L);
  texts.forEach((text, b) => {
    const encoding = tokenizer.encode(text, { length: L });
    inputIds.set(encoding.ids, b * L);
    if (encoding.dropped > 0) {
      const which = b === texts.length - 1 ? "prompt" : "negative prompt";
      notices.push(
        `the ${which} was truncated to the model's ${L} tokens (${encoding.dropped} dropped, as diffusers does)`,
      );
    }
  });
  const checked: CheckedRequest = {
    prompt,
    negativePrompt,
    steps,
    guidance,
    dynamicCfg,
    cfg,
    frames,
    width,
    height,
    fps,
    seed,
    latents: request.latents,
    latentDims,
    shape,
    decodeTiles,
    sampleType,
    inputIds,
    notices,
  };
  const host = estimateMemory(model, checked).host;
  const available = availableBytes ?? Deno.systemMemoryInfo().available;
  if (host > available) {
    throw new RangeError(
      `Cannot generate ${shape.frames} frames of ${width}x${height}: parastep's own arrays alone need ` +
        `${gib(host)} and ${
          gib(available)
        } of memory is available; use fewer --frames or a smaller --width/--height`,
    );
  }
  return checked;
}

/** The tiled decode a `--decode-tiles` request uses, or a RangeError saying why there is none. */
function checkTiles(model: ModelFolder, shape: VideoShape): TiledDecode {
  const tiles = tiledDecodeFor(model, shape);
  if (tiles === null) {
    throw new RangeError(
      `Cannot decode in tiles (--decode-tiles): '${model.manifest.name}' has no tile decoder graphs ` +
        `(manifest 'vaeTiling'); the exporter adds them to a folder made from a checkpoint ` +
        `('python -m models.export cogvideox --from <checkpoint>'), or decode without --decode-tiles`,
    );
  }
  const { plan, tiling } = tiles;
  if (plan.height !== shape.height || plan.width !== shape.width) {
    throw new RangeError(
      `Cannot decode ${shape.width}x${shape.height} in tiles (--decode-tiles): this model's ` +
        `${tiling.tileSampleMinWidth}x${tiling.tileSampleMinHeight} tiles would give a ` +
        `${plan.width}x${plan.height} video (as diffusers' tiled_decode would); decode without --decode-tiles`,
    );
  }
  return tiles;
}

/**
 * The guidance scale of each step: `guidance`, or with `dynamicCfg` diffusers' formula as it is,
 * `1 + g·(1 − cos(π·((T − t)/T)^5))/2` with t the raw timestep (so it oscillates; diffusers issue
 * #9641). Float64, as Python computes it; torch rounds it to float32 where it multiplies.
 */
export function guidanceScales(
  guidance: number,
  dynamicCfg: boolean,
  timesteps: ArrayLike<number>,
): Float64Array<ArrayBuffer> {
  const T = timesteps.length;
  const scales = new Float64Array(T);
  for (let i = 0; i < T; i++) {
    scales[i] = dynamicCfg
      ? 1 + guidance * ((1 - Math.cos(Math.PI * ((T - timesteps[i]!) / T) ** 5)) / 2)
      : guidance;
  }
  return scales;
}

/**
 * The conditioning the transformer needs, computed once and sent to every worker. Plain data
 * (structured-cloneable).
 */
export interface Conditioning {
  /** Whether classifier-free guidance runs (batch 2, `[negative; prompt]`). */
  readonly cfg: boolean;
  /** [T] the guidance scale of each step. */
  readonly guidance: Float64Array<ArrayBuffer>;
  /** [B, L, D] the text encoder's output (float32). */
  readonly promptEmbeds: Float32Array<ArrayBuffer>;
  /** [B, L, D]. */
  readonly embedsDims: readonly [number, number, number];
  /** The rotary tables (5b layout), or null. */
  readonly rotary: RotaryTables | null;
}

export type { StageOptions };

/** The rotary tables for a request, or null when the transformer takes none (2b layout). */
export function rotaryFor(
  model: ModelFolder,
  latentFrames: number,
  height: number,
  width: number,
): RotaryTables | null {
  const c = cogvideoxConfig(model);
  return c.useRotaryPositionalEmbeddings === 1
    ? rotaryTables(c, latentFrames, height, width)
    : null;
}

/**
 * The text encoder on token ids [B, L]: its `last_hidden_state` [B, L, D], float32 (T5 without an
 * attention mask, as diffusers calls it).
 */
export async function encodeText(
  env: Env,
  model: ModelFolder,
  inputIds: BigInt64Array<ArrayBuffer>,
  options: StageOptions = {},
): Promise<{ embeds: Float32Array<ArrayBuffer>; dims: [number, number, number] }> {
  const c = cogvideoxConfig(model);
  const L = c.maxTextSeqLength;
  const B = inputIds.length / L;
  using session = openComponent(env, model, "text_encoder", options.session);
  const out = await session.runAsync({ input_ids: new Tensor("int64", inputIds, [B, L]) });
  const embeds = floats(out, "last_hidden_state").slice();
  const D = embeds.length / (B * L);
  if (D !== c.textEmbedDim) {
    throw new Error(
      `the text encoder gave ${embeds.length} values for [${B}, ${L}, ${c.textEmbedDim}]`,
    );
  }
  return { embeds, dims: [B, L, D] };
}

/**
 * 3. Encode the prompt (and the negative prompt with guidance) with the text encoder; compute the
 * rotary tables (5b) and the guidance of each step. Refuses a request that cannot fit in memory
 * ({@linkcode checkMemory}) before opening any session.
 */
export async function encodePrompt(
  env: Env,
  model: ModelFolder,
  request: CheckedRequest,
  options: StageOptions = {},
): Promise<Conditioning> {
  checkMemory(model, request, options.session?.executionProvider ?? "cpu");
  const table = cogvideoxDdim(model.manifest.scheduler, request.steps);
  const { embeds, dims } = await encodeText(env, model, request.inputIds, options);
  const [, F] = request.latentDims;
  return {
    cfg: request.cfg,
    guidance: guidanceScales(request.guidance, request.dynamicCfg, table.timesteps),
    promptEmbeds: embeds,
    embedsDims: dims,
    rotary: rotaryFor(model, F, request.height, request.width),
  };
}

/**
 * 5. Prepare latents: the injected ones, or seeded standard normal noise, times `init_noise_sigma`
 * (1), in the transformer's float type.
 */
export function prepareLatents(request: CheckedRequest): Float32Array<ArrayBuffer> {
  const n = request.latentDims.reduce((a, b) => a * b, 1);
  const noise = request.latents ?? randn(request.seed, n);
  const round = rounder(request.sampleType);
  const out = new Float32Array(n);
  for (let k = 0; k < n; k++) out[k] = round(noise[k]!);
  return out;
}

/** The scheduler table a request's denoiser uses. */
export function scheduleFor(
  model: ModelFolder,
  steps: number,
  sampleType: SampleType,
): CogVideoXDdimTable {
  return cogvideoxDdim(model.manifest.scheduler, steps, { sample: sampleType });
}

/**
 * The transformer as ParaStep's model function, with guidance and the CogVideoX DDIM step: what
 * one rank (or the single device) runs. Conditioning values are made once per batch size; each
 * call makes fresh input and output arrays, so calls from several ranks may overlap on one session.
 */
export class Denoiser
  implements
    Sampler<Float32Array, Float32Array>,
    BatchSampler<Float32Array, Float32Array>,
    Disposable {
  readonly #session: Session;
  readonly #model: ModelFolder;
  readonly #component: string;
  readonly #table: CogVideoXDdimTable;
  readonly #dims: readonly number[];
  readonly #conditioning: Conditioning;
  readonly #values = new Map<number, Record<string, Value>>();
  /**
   * The step each raw output was predicted at: dynamic guidance depends on it, and the engine
   * always guides an output it just got from `model` (the same array).
   */
  readonly #stepOf = new WeakMap<Float32Array, number>();
  readonly #signal: AbortSignal | undefined;

  /**
   * @param session the transformer for the request's shape
   * @param model the folder (for the tensors' declared types)
   * @param component the transformer's component name (its manifest entry)
   * @param conditioning from {@linkcode encodePrompt}
   * @param table the scheduler tables for this many steps ({@linkcode scheduleFor})
   * @param latentDims [1, F', C, h, w]
   * @param signal aborting it cancels the transformer run in flight
   */
  constructor(
    session: Session,
    model: ModelFolder,
    component: string,
    conditioning: Conditioning,
    table: CogVideoXDdimTable,
    latentDims: readonly number[],
    signal?: AbortSignal,
  ) {
    this.#session = session;
    this.#model = model;
    this.#component = component;
    this.#conditioning = conditioning;
    this.#table = table;
    this.#dims = latentDims;
    this.#signal = signal;
  }

  #dtype(name: string) {
    return declared(this.#model, this.#component, name);
  }

  /** encoder_hidden_states [B·k, L, D] (rows [negative x k; prompt x k]) and the rotary tables. */
  #conditioningFor(k: number): Record<string, Value> {
    let values = this.#values.get(k);
    if (values === undefined) {
      const { cfg, promptEmbeds, embedsDims, rotary } = this.#conditioning;
      const [, L, D] = embedsDims;
      const row = L * D;
      const copies = cfg ? 2 : 1;
      const embeds = new Float32Array(copies * k * row);
      for (let copy = 0; copy < copies; copy++) {
        for (let j = 0; j < k; j++) {
          embeds.set(promptEmbeds.subarray(copy * row, (copy + 1) * row), (copy * k + j) * row);
        }
      }
      const env = this.#session.env;
      values = {
        encoder_hidden_states: Value.fromTensor(
          env,
          floatTensor(this.#dtype("encoder_hidden_states"), embeds, [copies * k, L, D]),
        ),
      };
      if (rotary !== null) {
        values.freqs_cos = Value.fromTensor(
          env,
          floatTensor(this.#dtype("freqs_cos"), rotary.cos, rotary.dims),
        );
        values.freqs_sin = Value.fromTensor(
          env,
          floatTensor(this.#dtype("freqs_sin"), rotary.sin, rotary.dims),
        );
      }
      this.#values.set(k, values);
    }
    return values;
  }

  /** The raw v-predictions of several latents at their own steps: per latent [negative; prompt]. */
  async #transformer(xs: Float32Array[], is: number[]): Promise<Float32Array[]> {
    const [, F, C, h, w] = this.#dims as [number, number, number, number, number];
    const copies = this.#conditioning.cfg ? 2 : 1;
    const k = xs.length;
    const B = copies * k;
    const n = F * C * h * w;
    const hidden = new Float32Array(B * n);
    const timestep = new BigInt64Array(B);
    for (let copy = 0; copy < copies; copy++) {
      for (let j = 0; j < k; j++) {
        hidden.set(xs[j]!, (copy * k + j) * n);
        timestep[copy * k + j] = BigInt(this.#table.timesteps[is[j]!]!);
      }
    }
    const dims = [B, F, C, h, w];
    const outType = this.#dtype("sample");
    const out = outType === "float16"
      ? new Tensor("float16", new Float16Array(B * n), dims)
      : new Tensor("float32", new Float32Array(B * n), dims);
    await this.#session.runAsync(
      {
        hidden_states: floatTensor(this.#dtype("hidden_states"), hidden, dims),
        timestep: new Tensor("int64", timestep, [B]),
        ...this.#conditioningFor(k),
      },
      { outputs: { sample: out }, ...(this.#signal ? { signal: this.#signal } : {}) },
    );
    // noise_pred.float()
    const v = out.type === "float32"
      ? out.data as Float32Array
      : Float32Array.from(out.data as Float16Array);
    return xs.map((_, j) => {
      const raw = new Float32Array(copies * n);
      for (let copy = 0; copy < copies; copy++) {
        const b = copy * k + j;
        raw.set(v.subarray(b * n, (b + 1) * n), copy * n);
      }
      this.#stepOf.set(raw, is[j]!);
      return raw;
    });
  }

  /** v(x, t_i) before guidance: [negative; prompt] with guidance, else the prompt's. */
  async model(x: Float32Array, i: number): Promise<Float32Array> {
    return (await this.#transformer([x], [i]))[0]!;
  }

  /** The same for several latents in one transformer call (BatchStep). */
  modelBatch(xs: Float32Array[], is: number[]): Promise<Float32Array[]> {
    return this.#transformer(xs, is);
  }

  /** G(v) = u + g_i (c − u) with the guidance of the step v was predicted at, in float32. */
  guide(v: Float32Array): Float32Array {
    if (!this.#conditioning.cfg) return v;
    const i = this.#stepOf.get(v);
    if (i === undefined) {
      throw new Error("guide() got a prediction this denoiser did not make (it needs its step)");
    }
    const n = v.length / 2;
    const out = new Float32Array(n);
    const f = Math.fround;
    const g = f(this.#conditioning.guidance[i]!);
    for (let k = 0; k < n; k++) {
      const u = v[k]!;
      out[k] = f(u + f(g * f(v[n + k]! - u)));
    }
    return out;
  }

  /** One CogVideoX DDIM step x_i -> x_{i+1}, the result in the transformer's float type. */
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
export type Decoded = VideoFrames;

/**
 * The VAE decoder's input for final latents [1, F', C, h, w]: permuted to [1, C, F', h, w] and
 * multiplied by `1 / scaling_factor` (the scalar rounded to float32 first, as torch applies a
 * Python float), in the latents' float type.
 */
export function vaeInput(
  latents: Float32Array,
  latentDims: readonly number[],
  scalingFactor: number,
  sampleType: SampleType,
): Float32Array<ArrayBuffer> {
  const [, F, C, h, w] = latentDims as [number, number, number, number, number];
  const plane = h * w;
  const scale = Math.fround(1 / scalingFactor);
  const round = rounder(sampleType);
  const z = new Float32Array(latents.length);
  for (let f = 0; f < F; f++) {
    for (let c = 0; c < C; c++) {
      const from = (f * C + c) * plane;
      const to = (c * F + f) * plane;
      for (let k = 0; k < plane; k++) z[to + k] = round(Math.fround(scale * latents[from + k]!));
    }
  }
  return z;
}

/**
 * 8. Post-processing: the VAE decoder graph of the request's shape on {@linkcode vaeInput} (with
 * `decodeTiles`, the tile decoder on each tile and diffusers' blending, in float32: ./tiles.ts), its
 * [1, 3, F, H, W] output reordered to frames [F, 3, H, W]. The graph is per shape and the decoder
 * opens before the request is known, so each shape's session opens at its first decode (its
 * inputs and outputs were checked against the manifest with the request, before any work) and
 * stays open until disposal.
 */
export class Decoder implements Disposable {
  readonly #env: Env;
  readonly #model: ModelFolder;
  readonly #options: OpenComponentOptions | undefined;
  readonly #sessions = new Map<string, Session>();

  private constructor(env: Env, model: ModelFolder, options: OpenComponentOptions | undefined) {
    this.#env = env;
    this.#model = model;
    this.#options = options;
  }

  /** A decoder for `model`'s shapes. */
  static open(env: Env, model: ModelFolder, options: StageOptions = {}): Decoder {
    return new Decoder(env, model, options.session);
  }

  /** Final latents [1, F', C, h, w] to frames [F, 3, H, W]. */
  async decode(request: CheckedRequest, latents: Float32Array): Promise<Decoded> {
    const c = cogvideoxConfig(this.#model);
    const { shape } = request;
    const tiles = request.decodeTiles ? checkTiles(this.#model, shape) : null;
    const name = tiles?.component ?? shape.vaeDecoder;
    let session = this.#sessions.get(name);
    if (session === undefined) {
      session = openComponent(this.#env, this.#model, name, this.#options);
      this.#sessions.set(name, session);
    }
    const [, F, C, h, w] = request.latentDims;
    const z = vaeInput(latents, request.latentDims, c.vaeScalingFactor, request.sampleType);
    const dtype = declared(this.#model, name, "z");
    const { frames: count, height: H, width: W } = shape;
    let out: Float32Array;
    if (tiles === null || !tiles.plan.tiled) {
      out = floats(
        await session.runAsync({ z: floatTensor(dtype, z, [1, C, F, h, w]) }),
        "frames",
      );
    } else {
      // tiled_decode: each tile of z decoded whole ([1, 3, F, 8·th, 8·tw]), then blended and cropped.
      const planes = 3 * count;
      const s = c.vaeScaleFactorSpatial;
      const decoded: DecodedTile[][] = [];
      for (const row of tiles.plan.rows) {
        const line: DecodedTile[] = [];
        for (const col of tiles.plan.cols) {
          const tile = cropLatents(z, [1, C, F, h, w], row, col);
          const data = floats(
            await session.runAsync({
              z: floatTensor(dtype, tile, [1, C, F, row.size, col.size]),
            }),
            "frames",
          );
          if (data.length !== planes * row.size * s * col.size * s) {
            throw new Error(
              `the VAE tile decoder gave ${data.length} values for [1, 3, ${count}, ${
                row.size * s
              }, ${col.size * s}]`,
            );
          }
          line.push({ data, height: row.size * s, width: col.size * s });
        }
        decoded.push(line);
      }
      out = blendTiles(decoded, planes, tiles.plan);
    }
    const plane = H * W;
    if (out.length !== 3 * count * plane) {
      throw new Error(
        `the VAE decoder gave ${out.length} values for [1, 3, ${count}, ${H}, ${W}]`,
      );
    }
    // [1, 3, F, H, W] -> [F, 3, H, W], as postprocess_video permutes each video.
    const frames = new Float32Array(out.length);
    for (let ch = 0; ch < 3; ch++) {
      for (let f = 0; f < count; f++) {
        frames.set(
          out.subarray((ch * count + f) * plane, (ch * count + f + 1) * plane),
          (f * 3 + ch) * plane,
        );
      }
    }
    return { frames, count, height: H, width: W };
  }

  /** Closes every session it opened. */
  [Symbol.dispose](): void {
    for (const session of this.#sessions.values()) session.close();
    this.#sessions.clear();
  }
}

/** Opens a shape's transformer (`request.shape.transformer`) for denoising on one device. */
export function openTransformer(
  env: Env,
  model: ModelFolder,
  transformer: string,
  options: SessionOptions = {},
): Session {
  return openComponent(env, model, transformer, options);
}
