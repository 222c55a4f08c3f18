/**
 * What the video families (Stable Video Diffusion, CogVideoX) share: their output flags
 * (`--gif`, `--frames-dir`), the files they write (an MP4, optionally a GIF and one PNG per frame,
 * through the shared video writer), and their quality measures.
 *
 * @module
 */

import { encodeRgbPng } from "../io/png.ts";
import { encodeGif, encodeMp4, frameFileName, frameRgb, framesToRgb } from "../io/video.ts";
import { framePsnr, frameSsim, meanFinite } from "../metrics/video.ts";
import type {
  FlagSpec,
  FlagValues,
  OutputContent,
  OutputTarget,
  QualityMetric,
  RenderOptions,
} from "./family.ts";

/** Decoded video frames [count, 3, height, width], about [−1, 1]. */
export interface VideoFrames {
  readonly frames: Float32Array<ArrayBuffer>;
  readonly count: number;
  readonly height: number;
  readonly width: number;
}

/** `--gif PATH`: the video as an animated GIF too. */
export const GIF_FLAG: FlagSpec = {
  name: "gif",
  type: "string",
  value: "PATH",
  help: "Also write the video as an animated GIF",
  output: true,
};

/** `--frames-dir DIR`: each frame as a PNG too. */
export const FRAMES_DIR_FLAG: FlagSpec = {
  name: "frames-dir",
  type: "string",
  value: "DIR",
  help: "Also write each frame as DIR/frame_0000.png, ... (DIR must exist)",
  output: true,
};

const GIF = "the GIF";
const VIDEO = "the video";

function text(flags: FlagValues, name: string): string | undefined {
  const v = flags[name];
  return typeof v === "string" ? v : undefined;
}

/**
 * The files a video family writes for `out` (an MP4) and the output flags: the MP4, the GIF of
 * `--gif`, and with `--frames-dir` one PNG per frame.
 *
 * @throws {RangeError} when `out` is not named .mp4
 */
export function videoOutputs(frames: number, out: string, flags: FlagValues): OutputTarget[] {
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
    for (let f = 0; f < frames; f++) {
      targets.push({
        path: `${dir.replace(/\/+$/, "") || "/"}/${frameFileName(f, frames)}`,
        label: `frame ${f} of ${frames}`,
        createFolders: true,
      });
    }
  }
  return targets;
}

/**
 * The content of each target of {@linkcode videoOutputs}, in order: each file is encoded when the
 * output set reaches it, one at a time (8-bit frames as diffusers' PIL output).
 */
export function renderVideo(
  media: VideoFrames,
  fps: number,
  targets: readonly OutputTarget[],
  options: RenderOptions,
): Promise<OutputContent[]> {
  const video = framesToRgb(media.frames, media.count, media.height, media.width);
  let frame = 0;
  return Promise.resolve(targets.map((target): OutputContent => {
    if (target.label === VIDEO) {
      return async () =>
        (await encodeMp4(video, fps, {
          ...(options.signal ? { signal: options.signal } : {}),
        })).bytes;
    }
    if (target.label === GIF) return () => encodeGif(video, fps);
    const f = frame++;
    return () => encodeRgbPng(frameRgb(video, f), video.width, video.height);
  }));
}

/** Frames in [−1, 1] as displayed, x/2 + 1/2 clamped to [0, 1] (before 8-bit rounding). */
function displayed(frames: Float32Array): Float32Array {
  const out = new Float32Array(frames.length);
  for (let k = 0; k < frames.length; k++) out[k] = Math.min(1, Math.max(0, frames[k]! * 0.5 + 0.5));
  return out;
}

/** Mean per-frame PSNR and SSIM of `output` against `reference`, as displayed. */
export function videoQuality(reference: VideoFrames, output: VideoFrames): QualityMetric[] {
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
}
