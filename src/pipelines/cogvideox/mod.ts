/**
 * CogVideoX text-to-video (2b and 5b) as a {@linkcode PipelineFamily}: its flags, and diffusers'
 * `CogVideoXPipeline.__call__` stages from ./pipeline.ts (check, encode, decode) around the
 * ParaStep engine, which runs ./sampler.ts on each device. Writes an MP4 and, optionally, a GIF
 * and the frames as PNGs (the output flags and files are shared with SVD: ../_video.ts).
 *
 * @module
 */

import { slugFileName } from "../../io/paths.ts";
import { FRAMES_DIR_FLAG, GIF_FLAG, renderVideo, videoOutputs, videoQuality } from "../_video.ts";
import type { FlagValues, PipelineFamily } from "../family.ts";
import {
  type CheckedRequest,
  checkManifest,
  checkRequest,
  COMPONENTS,
  type Conditioning,
  type Decoded,
  Decoder,
  encodePrompt,
  prepareLatents,
} from "./pipeline.ts";
import { generationInit } from "./sampler.ts";

export * from "./pipeline.ts";
export { resizeCropRegion, type RotaryConfig, type RotaryTables, rotaryTables } from "./rope.ts";
export { type CogVideoXGeneration, generationInit, openDenoiser } from "./sampler.ts";
export {
  blendH,
  blendTiles,
  blendV,
  cropLatents,
  type DecodedTile,
  type TilePlan,
  tilePlan,
  type TileSpan,
  type VaeTiling,
  vaeTiling,
} from "./tiles.ts";

function text(flags: FlagValues, name: string): string | undefined {
  const v = flags[name];
  return typeof v === "string" ? v : undefined;
}

function number(flags: FlagValues, name: string): number | undefined {
  const v = flags[name];
  return typeof v === "number" ? v : undefined;
}

/** CogVideoX: text to video. */
export const cogvideox: PipelineFamily<CheckedRequest, Conditioning, Decoded> = {
  name: "cogvideox",
  title: "text to video (CogVideoX)",
  flags: [
    { name: "prompt", short: "p", type: "string", value: "TEXT", help: "What to generate" },
    {
      name: "negative-prompt",
      type: "string",
      value: "TEXT",
      help: "What to steer away from (default: none)",
    },
    {
      name: "guidance",
      type: "number",
      value: "G",
      help: "Classifier-free guidance scale; <= 1 turns it off (default: the model's, 6)",
    },
    {
      name: "dynamic-cfg",
      type: "boolean",
      help: "Vary the guidance with the timestep, as diffusers' use_dynamic_cfg (default: off)",
    },
    {
      name: "frames",
      type: "integer",
      min: 1,
      value: "N",
      help: "Frames: (N - 1) / 4 + 1 latent frames, an exported shape (default: the model's)",
    },
    {
      name: "width",
      type: "integer",
      min: 8,
      value: "W",
      help: "Video width, a multiple of 16, an exported shape (default: the model's)",
    },
    {
      name: "height",
      type: "integer",
      min: 8,
      value: "H",
      help: "Video height, a multiple of 16, an exported shape (default: the model's)",
    },
    {
      name: "fps",
      type: "integer",
      min: 1,
      value: "N",
      help: "Frames per second of the video file (default: the model's, 8)",
    },
    {
      name: "decode-tiles",
      type: "boolean",
      help:
        "Decode the video in overlapping tiles, as diffusers' vae.enable_tiling() (less memory; blending changes the pixels; default: off)",
    },
    GIF_FLAG,
    FRAMES_DIR_FLAG,
  ],
  benchFlags: { prompt: "A panda playing a small guitar in a bamboo forest" },
  components: COMPONENTS,
  // The 5b layout's one transformer; a 2b folder has one per shape (transformer_f<F'>_h<h>_w<w>),
  // chosen by the request, and the request check reads that one's graph.
  samplerModule: new URL("./sampler.ts", import.meta.url),

  checkManifest,

  checkRequest(model, input) {
    const prompt = text(input.flags, "prompt");
    if (prompt === undefined) {
      throw new RangeError("Missing --prompt: describe the video to generate");
    }
    const negativePrompt = text(input.flags, "negative-prompt");
    const optional = {
      guidance: number(input.flags, "guidance"),
      frames: number(input.flags, "frames"),
      width: number(input.flags, "width"),
      height: number(input.flags, "height"),
      fps: number(input.flags, "fps"),
      steps: input.steps,
    };
    return checkRequest(model, {
      prompt,
      ...(negativePrompt !== undefined ? { negativePrompt } : {}),
      dynamicCfg: input.flags["dynamic-cfg"] === true,
      decodeTiles: input.flags["decode-tiles"] === true,
      seed: input.seed,
      ...Object.fromEntries(Object.entries(optional).filter(([, v]) => v !== undefined)),
    });
  },

  encode(env, model, request, options) {
    return encodePrompt(env, model, request, options);
  },

  denoiserInit(model, request) {
    return {
      modelDir: model.dir,
      component: request.shape.transformer,
      dtype: model.manifest.dtype,
    };
  },

  generationInit(_model, request, conditioning) {
    return generationInit(request, conditioning);
  },

  prepareLatents,

  openDecoder(env, model, options) {
    return Decoder.open(env, model, options);
  },

  outputs(request, out, flags) {
    return videoOutputs(request.shape.frames, out, flags);
  },

  render(request, media, targets, _flags, options) {
    return renderVideo(media, request.fps, targets, options);
  },

  defaultOutput(request) {
    return slugFileName(request.prompt, request.seed, "mp4", "video");
  },

  describe(request) {
    const video =
      `${request.shape.frames} frames ${request.width}x${request.height} at ${request.fps} fps`;
    return request.notices.length === 0 ? video : `${video}; ${request.notices.join("; ")}`;
  },

  quality: videoQuality,

  samples(media) {
    return media.frames;
  },
};
