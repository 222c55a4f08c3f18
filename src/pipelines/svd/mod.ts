/**
 * Stable Video Diffusion image-to-video as a {@linkcode PipelineFamily}: its flags, and diffusers'
 * `StableVideoDiffusionPipeline.__call__` stages from ./pipeline.ts (check, encode, decode) around
 * the ParaStep engine, which runs ./sampler.ts on each device. Writes an MP4 and, optionally, a
 * GIF and the frames as PNGs.
 *
 * @module
 */

import { basename, slugFileName } from "../../io/paths.ts";
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
  encodeImage,
  prepareLatents,
} from "./pipeline.ts";
import { generationInit } from "./sampler.ts";

export * from "./pipeline.ts";
export { clipPixelValues, vaeImage } from "./preprocess.ts";
export { generationInit, openDenoiser, type SvdGeneration } from "./sampler.ts";

function text(flags: FlagValues, name: string): string | undefined {
  const v = flags[name];
  return typeof v === "string" ? v : undefined;
}

function number(flags: FlagValues, name: string): number | undefined {
  const v = flags[name];
  return typeof v === "number" ? v : undefined;
}

/** The image `bench` and `gpu-check` animate when no `--image` is given (committed). */
const BENCH_IMAGE = decodeURIComponent(
  new URL("../../../models/svd-tiny/reference/case1/image.png", import.meta.url).pathname,
);

/** Stable Video Diffusion: image to video. */
export const svd: PipelineFamily<CheckedRequest, Conditioning, Decoded> = {
  name: "svd",
  title: "image to video (Stable Video Diffusion)",
  flags: [
    {
      name: "image",
      type: "string",
      value: "PATH",
      help: "The PNG or JPEG image to animate (required)",
    },
    {
      name: "frames",
      type: "integer",
      min: 1,
      value: "N",
      help: "Frames to generate (default: the model's)",
    },
    {
      name: "width",
      type: "integer",
      min: 8,
      value: "W",
      help: "Video width, a multiple of 8 (default: the model's)",
    },
    {
      name: "height",
      type: "integer",
      min: 8,
      value: "H",
      help: "Video height, a multiple of 8 (default: the model's)",
    },
    {
      name: "fps",
      type: "integer",
      min: 1,
      value: "N",
      help: "Frames per second; the model is conditioned on it (default: 7)",
    },
    {
      name: "motion-bucket",
      type: "integer",
      min: 0,
      value: "N",
      help: "Motion, 0..1023: higher moves more (default: the model's, 127)",
    },
    {
      name: "noise-aug",
      type: "number",
      value: "X",
      help: "Noise added to the input image, 0..10 (default: 0.02)",
    },
    {
      name: "decode-chunk",
      type: "integer",
      min: 1,
      value: "N",
      help: "Frames per VAE decoder call (default: the model's, 8 for SVD)",
    },
    {
      name: "min-guidance",
      type: "number",
      value: "G",
      help: "Guidance of the first frame (default: 1)",
    },
    {
      name: "max-guidance",
      type: "number",
      value: "G",
      help: "Guidance of the last frame, linear in between (default: 3)",
    },
    GIF_FLAG,
    FRAMES_DIR_FLAG,
  ],
  benchFlags: { image: BENCH_IMAGE },
  components: COMPONENTS,
  samplerModule: new URL("./sampler.ts", import.meta.url),

  checkManifest,

  checkRequest(model, input) {
    const image = text(input.flags, "image");
    if (image === undefined) {
      throw new RangeError("Missing --image: give the PNG or JPEG image to animate");
    }
    const optional = {
      frames: number(input.flags, "frames"),
      width: number(input.flags, "width"),
      height: number(input.flags, "height"),
      fps: number(input.flags, "fps"),
      motionBucketId: number(input.flags, "motion-bucket"),
      noiseAugStrength: number(input.flags, "noise-aug"),
      decodeChunk: number(input.flags, "decode-chunk"),
      minGuidance: number(input.flags, "min-guidance"),
      maxGuidance: number(input.flags, "max-guidance"),
      steps: input.steps,
    };
    return checkRequest(model, {
      image,
      seed: input.seed,
      ...Object.fromEntries(Object.entries(optional).filter(([, v]) => v !== undefined)),
    });
  },

  async encode(env, model, request, options) {
    return (await encodeImage(env, model, request, options)).conditioning;
  },

  denoiserInit(model) {
    return { modelDir: model.dir, component: "unet", dtype: model.manifest.dtype };
  },

  generationInit(_model, request, conditioning) {
    return generationInit(request.steps, request.latentDims, conditioning);
  },

  prepareLatents,

  openDecoder(env, model, options) {
    return Decoder.open(env, model, options);
  },

  outputs(request, out, flags) {
    return videoOutputs(request.frames, out, flags);
  },

  render(request, media, targets, _flags, options) {
    return renderVideo(media, request.fps, targets, options);
  },

  defaultOutput(request) {
    const name = basename(request.imagePath).replace(/\.[^.]*$/, "");
    return slugFileName(name, request.seed, "mp4", "video");
  },

  describe(request) {
    return `${request.frames} frames ${request.width}x${request.height} at ${request.fps} fps`;
  },

  quality: videoQuality,

  samples(media) {
    return media.frames;
  },
};
