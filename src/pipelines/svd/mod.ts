/**
 * Stable Video Diffusion image-to-video as a {@linkcode PipelineFamily}: its flags, and diffusers'
 * `StableVideoDiffusionPipeline.__call__` stages from ./pipeline.ts (check, encode, decode) around
 * the ParaStep engine, which runs ./sampler.ts on each device. Writes an MP4 and, optionally, a
 * GIF and the frames as PNGs.
 *
 * @module
 */

import { basename, slugFileName } from "../../io/paths.ts";
import { encodeRgbPng } from "../../io/png.ts";
import { encodeGif, encodeMp4, frameFileName, frameRgb, framesToRgb } from "../../io/video.ts";
import { framePsnr, frameSsim, meanFinite } from "../../metrics/video.ts";
import type { FlagValues, OutputContent, OutputTarget, PipelineFamily } from "../family.ts";
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

const GIF = "the GIF";
const VIDEO = "the video";

/** Frames in [−1, 1] as displayed, x/2 + 1/2 clamped to [0, 1] (before 8-bit rounding). */
function displayed(frames: Float32Array): Float32Array {
  const out = new Float32Array(frames.length);
  for (let k = 0; k < frames.length; k++) out[k] = Math.min(1, Math.max(0, frames[k]! * 0.5 + 0.5));
  return out;
}

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
    {
      name: "gif",
      type: "string",
      value: "PATH",
      help: "Also write the video as an animated GIF",
      output: true,
    },
    {
      name: "frames-dir",
      type: "string",
      value: "DIR",
      help: "Also write each frame as DIR/frame_0000.png, ... (DIR must exist)",
      output: true,
    },
  ],
  benchFlags: { image: BENCH_IMAGE },
  components: COMPONENTS,
  denoiser: "unet",
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
    return { modelDir: model.dir, component: "unet" };
  },

  generationInit(_model, request, conditioning) {
    return generationInit(request.steps, request.latentDims, conditioning);
  },

  prepareLatents,

  openDecoder(env, model, options) {
    return Decoder.open(env, model, options);
  },

  outputs(request, out, flags) {
    if (!out.toLowerCase().endsWith(".mp4")) {
      throw new RangeError(
        `Cannot write the video '${out}': it is written as MP4, so name it .mp4 ` +
          "(--gif PATH adds a GIF, --frames-dir DIR the frames as PNGs)",
      );
    }
    const targets: OutputTarget[] = [{ path: out, label: VIDEO }];
    const gif = text(flags, "gif");
    if (gif !== undefined) targets.push({ path: gif, label: GIF });
    const dir = text(flags, "frames-dir");
    if (dir !== undefined) {
      for (let f = 0; f < request.frames; f++) {
        targets.push({
          path: `${dir.replace(/\/+$/, "") || "/"}/${frameFileName(f, request.frames)}`,
          label: `frame ${f} of ${request.frames}`,
          createFolders: true,
        });
      }
    }
    return targets;
  },

  render(request, media, targets, _flags, options) {
    const video = framesToRgb(media.frames, media.count, media.height, media.width);
    let frame = 0;
    // Each file is encoded when the output set reaches it, one at a time.
    return Promise.resolve(targets.map((target): OutputContent => {
      if (target.label === VIDEO) {
        return async () =>
          (await encodeMp4(video, request.fps, {
            ...(options.signal ? { signal: options.signal } : {}),
          })).bytes;
      }
      if (target.label === GIF) return () => encodeGif(video, request.fps);
      const f = frame++;
      return () => encodeRgbPng(frameRgb(video, f), video.width, video.height);
    }));
  },

  defaultOutput(request) {
    const name = basename(request.imagePath).replace(/\.[^.]*$/, "");
    return slugFileName(name, request.seed, "mp4", "video");
  },

  describe(request) {
    return `${request.frames} frames ${request.width}x${request.height} at ${request.fps} fps`;
  },

  quality(reference, output) {
    const shape = {
      frames: reference.count,
      channels: 3,
      height: reference.height,
      width: reference.width,
    };
    const ref = displayed(reference.frames);
    const out = displayed(output.frames);
    const ssim = frameSsim(ref, out, shape);
    return [
      { name: "PSNR dB", value: meanFinite(framePsnr(ref, out, shape)) },
      { name: "SSIM", value: ssim.reduce((a, b) => a + b, 0) / ssim.length },
    ];
  },

  samples(media) {
    return media.frames;
  },
};
