/**
 * Video output for every video family: decoded frames to 8-bit RGB exactly as diffusers'
 * `VideoProcessor.postprocess_video` makes them, and the files `gen` writes:
 *
 * - **MP4** (H.264, yuv420p, the requested frame rate, `+faststart` so players start before the
 *   whole file is read): through `ffmpeg` (libx264, CRF 18) when it is on `PATH` and the process
 *   may run it (`--allow-run=ffmpeg`); otherwise in-process through the WebAssembly encoder of the
 *   npm package `h264-mp4-encoder` (H.264 Baseline, fixed quantiser 20). Both need even width and
 *   height.
 * - **GIF** through the npm package `gifenc` (a 256-colour palette per frame; frame delays are
 *   whole hundredths of a second, so 7 fps plays at 100/14 = 7.14 fps).
 * - **PNG frames**, one file per frame.
 *
 * @module
 */

import { encodeRgbPng } from "./png.ts";

/** The part of `gifenc`'s API used here (the package ships no types). */
interface Gifenc {
  GIFEncoder(): {
    writeFrame(
      index: Uint8Array,
      width: number,
      height: number,
      options: { palette: number[][]; delay: number; repeat: number },
    ): void;
    finish(): void;
    bytes(): Uint8Array;
  };
  quantize(rgba: Uint8Array, maxColors: number): number[][];
  applyPalette(rgba: Uint8Array, palette: number[][]): Uint8Array;
}

/** The encoders load on first use: every command would otherwise parse their megabyte of code. */
async function loadGifenc(): Promise<Gifenc> {
  return (await import("gifenc")).default as unknown as Gifenc;
}

/** Frames as 8-bit RGB: `frames` images of `height` rows of `width` pixels `r, g, b`. */
export interface RgbFrames {
  readonly frames: number;
  readonly height: number;
  readonly width: number;
  /** `frames * height * width * 3` bytes, frame after frame. */
  readonly data: Uint8Array;
}

/** How an MP4 was encoded. */
export type Mp4Encoder = "ffmpeg" | "wasm";

const F = Math.fround;

/** numpy's `round` (half to even) of a non-negative float. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  return d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1;
}

/**
 * diffusers' postprocessing of decoded frames: `x * 0.5 + 0.5` clamped to [0, 1] (torch, float32),
 * then `(x * 255).round().astype(uint8)` (numpy, float32, round half to even), from planes
 * [F, 3, H, W] to interleaved RGB.
 *
 * @throws {RangeError} when `frames` does not hold `F * 3 * H * W` values
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { framesToRgb } from "./video.ts";
 * const rgb = framesToRgb(new Float32Array([-1, 0, 1]), 1, 1, 1);
 * assert.deepEqual(Array.from(rgb.data), [0, 128, 255]);
 * ```
 */
export function framesToRgb(
  frames: Float32Array,
  count: number,
  height: number,
  width: number,
): RgbFrames {
  const n = height * width;
  if (frames.length !== count * 3 * n) {
    throw new RangeError(
      `Cannot convert the frames as [${count}, 3, ${height}, ${width}] holds ${
        count * 3 * n
      } values: current length is ${frames.length}`,
    );
  }
  const data = new Uint8Array(count * n * 3);
  for (let f = 0; f < count; f++) {
    for (let c = 0; c < 3; c++) {
      const plane = (f * 3 + c) * n;
      for (let k = 0; k < n; k++) {
        let v = F(F(frames[plane + k]! * 0.5) + 0.5);
        v = v < 0 ? 0 : v > 1 ? 1 : v; // NaN stays NaN and becomes 0 below, as numpy's cast
        data[(f * n + k) * 3 + c] = roundHalfEven(F(v * 255)) || 0;
      }
    }
  }
  return { frames: count, height, width, data };
}

/** One frame's RGB bytes. */
export function frameRgb(video: RgbFrames, f: number): Uint8Array {
  const size = video.height * video.width * 3;
  return video.data.subarray(f * size, (f + 1) * size);
}

/**
 * The `ffmpeg` this process may run, or undefined: found on `PATH` and allowed by Deno's run
 * permission (`--allow-run=ffmpeg`). Never prompts.
 */
export function findFfmpeg(): string | undefined {
  let allowed: boolean;
  try {
    allowed = Deno.permissions.querySync({ name: "run", command: "ffmpeg" }).state === "granted";
  } catch {
    allowed = false;
  }
  if (!allowed) return undefined;
  let path: string | undefined;
  try {
    path = Deno.env.get("PATH");
  } catch {
    return undefined; // no env permission: cannot look
  }
  for (const dir of (path ?? "").split(":")) {
    if (dir === "") continue;
    try {
      const stat = Deno.statSync(`${dir}/ffmpeg`);
      if (stat.isFile && ((stat.mode ?? 0o111) & 0o111) !== 0) return "ffmpeg";
    } catch {
      // not there
    }
  }
  return undefined;
}

function checkMp4Size(video: RgbFrames): void {
  if (video.width % 2 !== 0 || video.height % 2 !== 0) {
    throw new RangeError(
      `Cannot encode an MP4 of ${video.width}x${video.height}: H.264 in yuv420p needs an even width and height`,
    );
  }
  if (video.frames < 1) throw new RangeError("Cannot encode an MP4 without frames");
}

/** Options for {@linkcode encodeMp4}. */
export interface Mp4Options {
  /** Which encoder: ffmpeg when available (`auto`), or one of them. @default "auto" */
  readonly encoder?: Mp4Encoder | "auto";
  /** Aborting it stops the encoder and rejects with its reason. */
  readonly signal?: AbortSignal;
}

/**
 * Encodes RGB frames as an MP4 (H.264, yuv420p, `fps` frames per second, `+faststart`).
 *
 * @throws {RangeError} for an odd width or height, no frames or an fps below 1
 * @throws {Error} when ffmpeg fails (its message included)
 */
export async function encodeMp4(
  video: RgbFrames,
  fps: number,
  options: Mp4Options = {},
): Promise<{ bytes: Uint8Array; encoder: Mp4Encoder }> {
  checkMp4Size(video);
  if (!Number.isInteger(fps) || fps < 1) {
    throw new RangeError(`Cannot encode an MP4 at ${fps} fps: give a whole number >= 1`);
  }
  options.signal?.throwIfAborted();
  const asked = options.encoder ?? "auto";
  const ffmpeg = asked === "wasm" ? undefined : findFfmpeg();
  if (asked === "ffmpeg" && ffmpeg === undefined) {
    throw new Error(
      "Cannot encode with ffmpeg: it is not on PATH or not allowed (--allow-run=ffmpeg)",
    );
  }
  if (ffmpeg !== undefined) {
    return { bytes: await encodeWithFfmpeg(ffmpeg, video, fps, options.signal), encoder: "ffmpeg" };
  }
  return { bytes: await encodeWithWasm(video, fps, options.signal), encoder: "wasm" };
}

async function encodeWithFfmpeg(
  ffmpeg: string,
  video: RgbFrames,
  fps: number,
  signal: AbortSignal | undefined,
): Promise<Uint8Array> {
  // +faststart moves the index to the front after encoding, which needs a seekable file.
  const dir = await Deno.makeTempDir({ prefix: "parastep-mp4-" });
  try {
    const out = `${dir}/video.mp4`;
    const child = new Deno.Command(ffmpeg, {
      args: [
        ...["-hide_banner", "-loglevel", "error", "-nostdin", "-y"],
        ...["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", `${video.width}x${video.height}`],
        ...["-r", String(fps), "-i", "pipe:0"],
        ...["-c:v", "libx264", "-preset", "medium", "-crf", "18", "-pix_fmt", "yuv420p"],
        ...["-movflags", "+faststart", "-r", String(fps), out],
      ],
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
      ...(signal ? { signal } : {}),
    }).spawn();
    const writer = child.stdin.getWriter();
    const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let message = "";
    const reading = (async () => {
      for (let r = await stderr.read(); !r.done; r = await stderr.read()) message += r.value;
    })();
    try {
      await writer.write(video.data);
    } catch {
      // ffmpeg exited early: its status and message say why
    }
    await writer.close().catch(() => {});
    const status = await child.status;
    await reading;
    signal?.throwIfAborted();
    if (!status.success) {
      const why = message.trim().split("\n").pop() ?? `exit code ${status.code}`;
      throw new Error(`ffmpeg could not encode the MP4: ${why}`);
    }
    return await Deno.readFile(out);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

let wasmCount = 0;

async function encodeWithWasm(
  video: RgbFrames,
  fps: number,
  signal: AbortSignal | undefined,
): Promise<Uint8Array> {
  const HME = (await import("h264-mp4-encoder")).default;
  const encoder = await HME.createH264MP4Encoder();
  // The encoders share one in-memory file system: each writes its own file.
  const name = `parastep-${Date.now()}-${wasmCount++}.mp4`;
  try {
    encoder.outputFilename = name;
    encoder.width = video.width;
    encoder.height = video.height;
    encoder.frameRate = fps;
    encoder.quantizationParameter = 20;
    encoder.initialize();
    const n = video.width * video.height;
    const rgba = new Uint8Array(n * 4);
    for (let f = 0; f < video.frames; f++) {
      signal?.throwIfAborted();
      const rgb = frameRgb(video, f);
      for (let k = 0; k < n; k++) {
        rgba[4 * k] = rgb[3 * k]!;
        rgba[4 * k + 1] = rgb[3 * k + 1]!;
        rgba[4 * k + 2] = rgb[3 * k + 2]!;
        rgba[4 * k + 3] = 255;
      }
      encoder.addFrameRgba(rgba);
      // Let an abort (Ctrl-C) be seen between frames.
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    encoder.finalize();
    return encoder.FS.readFile(name).slice();
  } finally {
    try {
      encoder.FS.unlink(name);
    } catch {
      // never written
    }
    encoder.delete();
  }
}

/**
 * Encodes RGB frames as a looping GIF at (about) `fps` frames per second, each frame with its own
 * 256-colour palette.
 */
export async function encodeGif(video: RgbFrames, fps: number): Promise<Uint8Array> {
  const { GIFEncoder, quantize, applyPalette } = await loadGifenc();
  const gif = GIFEncoder();
  const n = video.width * video.height;
  const rgba = new Uint8Array(n * 4);
  const delay = 1000 / fps;
  for (let f = 0; f < video.frames; f++) {
    const rgb = frameRgb(video, f);
    for (let k = 0; k < n; k++) {
      rgba[4 * k] = rgb[3 * k]!;
      rgba[4 * k + 1] = rgb[3 * k + 1]!;
      rgba[4 * k + 2] = rgb[3 * k + 2]!;
      rgba[4 * k + 3] = 255;
    }
    const palette = quantize(rgba, 256);
    const index = applyPalette(rgba, palette);
    gif.writeFrame(index, video.width, video.height, { palette, delay, repeat: 0 });
  }
  gif.finish();
  return gif.bytes();
}

/** The file name of frame `f` (0-based) of `count` in a frames folder: `frame_0000.png`, ... */
export function frameFileName(f: number, count: number): string {
  const digits = Math.max(4, String(count - 1).length);
  return `frame_${String(f).padStart(digits, "0")}.png`;
}

/** Each frame as a PNG file's bytes. */
export async function encodeFramePngs(video: RgbFrames): Promise<Uint8Array[]> {
  const files: Uint8Array[] = [];
  for (let f = 0; f < video.frames; f++) {
    files.push(await encodeRgbPng(frameRgb(video, f), video.width, video.height));
  }
  return files;
}
