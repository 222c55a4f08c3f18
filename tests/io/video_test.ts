import assert from "node:assert/strict";
import { decodeImage } from "../../src/io/image.ts";
import {
  encodeFramePngs,
  encodeGif,
  encodeMp4,
  findFfmpeg,
  frameFileName,
  frameRgb,
  framesToRgb,
  type RgbFrames,
} from "../../src/io/video.ts";

/** Whether Debian's ffmpeg (ffmpeg + ffprobe) is installed: the MP4 checks decode with it. */
function hasTool(name: string): boolean {
  try {
    return new Deno.Command(name, { args: ["-version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}
const FFPROBE = hasTool("ffprobe") && hasTool("ffmpeg");
if (!FFPROBE) {
  console.log("ffmpeg/ffprobe not installed: the MP4 and GIF decoding tests are skipped");
}

/** A moving gradient with a sharp square: [F, 3, H, W] floats in [-1, 1]. */
function clip(frames: number, height: number, width: number): Float32Array {
  const out = new Float32Array(frames * 3 * height * width);
  for (let f = 0; f < frames; f++) {
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const square = x >= 4 + 2 * f && x < 14 + 2 * f && y >= 6 && y < 16;
          const v = square
            ? (c === 0 ? 0.9 : -0.8)
            : ((x + y + 3 * f) / (width + height)) * 1.6 - 0.8 + 0.2 * c;
          out[((f * 3 + c) * height + y) * width + x] = v;
        }
      }
    }
  }
  return out;
}

async function ffprobe(path: string): Promise<Record<string, string | number>> {
  const out = await new Deno.Command("ffprobe", {
    args: [
      ...["-v", "error", "-count_frames", "-select_streams", "v:0"],
      ...[
        "-show_entries",
        "stream=codec_name,profile,pix_fmt,width,height,r_frame_rate,avg_frame_rate,nb_read_frames",
      ],
      ...["-of", "json", path],
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout)).streams[0];
}

/** Decodes a video file back to RGB frames with ffmpeg. */
async function decodeWithFfmpeg(path: string, width: number, height: number): Promise<Uint8Array> {
  const out = await new Deno.Command("ffmpeg", {
    args: ["-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  assert.equal(out.stdout.length % (width * height * 3), 0);
  return out.stdout;
}

function psnr8(a: Uint8Array, b: Uint8Array): number {
  let se = 0;
  for (let k = 0; k < a.length; k++) se += (a[k]! - b[k]!) ** 2;
  return 10 * Math.log10((255 * 255) / (se / a.length));
}

/** The top-level MP4 boxes in order: `+faststart` puts `moov` before `mdat`. */
function topLevelBoxes(bytes: Uint8Array): string[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const boxes: string[] = [];
  for (let p = 0; p + 8 <= bytes.length;) {
    let size = view.getUint32(p);
    if (size === 1) size = Number(view.getBigUint64(p + 8));
    boxes.push(String.fromCharCode(...bytes.subarray(p + 4, p + 8)));
    if (size < 8) break;
    p += size;
  }
  return boxes;
}

const FRAMES = 6;
const H = 24;
const W = 32;
const video: RgbFrames = framesToRgb(clip(FRAMES, H, W), FRAMES, H, W);

Deno.test("framesToRgb is diffusers' postprocess: x/2 + 1/2 clamped, * 255, rounded half to even", () => {
  // Planes [1, 3, 1, 2] (R of both pixels, then G, then B) to interleaved RGB.
  // 0 -> 127.5 -> 128 (ties to even); -1 and below -> 0; 1 and above -> 255; NaN -> 0.
  const x = new Float32Array([0, -1, -3, 1, 7, NaN]);
  const rgb = framesToRgb(x, 1, 1, 2);
  assert.deepEqual(Array.from(rgb.data), [128, 0, 255, 0, 255, 0]);
  // 0.5 -> 0.75 * 255 = 191.25 -> 191; -0.5 -> 63.75 -> 64
  assert.deepEqual(Array.from(framesToRgb(new Float32Array([0.5, 0.5, -0.5]), 1, 1, 1).data), [
    191,
    191,
    64,
  ]);
  assert.throws(
    () => framesToRgb(new Float32Array(5), 1, 1, 2),
    /\[1, 3, 1, 2\] holds 6 values: current length is 5/,
  );
});

Deno.test({
  name:
    "MP4 through ffmpeg: H.264 yuv420p, the frame count, size and fps, moov first, content kept",
  ignore: !FFPROBE,
  async fn() {
    assert.equal(findFfmpeg(), "ffmpeg");
    const { bytes, encoder } = await encodeMp4(video, 7);
    assert.equal(encoder, "ffmpeg");
    const path = await Deno.makeTempFile({ suffix: ".mp4" });
    try {
      await Deno.writeFile(path, bytes);
      const s = await ffprobe(path);
      assert.equal(s.codec_name, "h264");
      assert.equal(s.pix_fmt, "yuv420p");
      assert.equal(s.width, W);
      assert.equal(s.height, H);
      assert.equal(s.r_frame_rate, "7/1");
      assert.equal(Number(s.nb_read_frames), FRAMES);
      const boxes = topLevelBoxes(bytes);
      assert.ok(boxes.indexOf("moov") < boxes.indexOf("mdat"), `boxes ${boxes}`);
      const decoded = await decodeWithFfmpeg(path, W, H);
      assert.equal(decoded.length, video.data.length);
      const p = psnr8(decoded, video.data);
      assert.ok(p > 30, `decoded MP4 PSNR ${p.toFixed(1)} dB`);
    } finally {
      await Deno.remove(path);
    }
  },
});

Deno.test({
  name: "MP4 through the WebAssembly encoder: decodes to the same frames at the same fps",
  ignore: !FFPROBE,
  async fn() {
    const { bytes, encoder } = await encodeMp4(video, 8, { encoder: "wasm" });
    assert.equal(encoder, "wasm");
    const path = await Deno.makeTempFile({ suffix: ".mp4" });
    try {
      await Deno.writeFile(path, bytes);
      const s = await ffprobe(path);
      assert.equal(s.codec_name, "h264");
      assert.equal(s.pix_fmt, "yuv420p");
      assert.deepEqual([s.width, s.height], [W, H]);
      assert.equal(Number(s.nb_read_frames), FRAMES);
      const [num, den] = String(s.avg_frame_rate).split("/").map(Number);
      assert.ok(Math.abs(num! / den! - 8) < 0.01, `fps ${s.avg_frame_rate}`);
      const p = psnr8(await decodeWithFfmpeg(path, W, H), video.data);
      assert.ok(p > 30, `decoded MP4 PSNR ${p.toFixed(1)} dB`);
    } finally {
      await Deno.remove(path);
    }
  },
});

Deno.test("MP4 without ffmpeg encodes in process; odd sizes and bad fps are refused", async () => {
  // The in-process path runs whatever is installed; its output starts with an ftyp box.
  const { bytes } = await encodeMp4(video, 7, { encoder: "wasm" });
  assert.equal(topLevelBoxes(bytes)[0], "ftyp");
  const odd = framesToRgb(new Float32Array(3 * 3 * 4), 1, 3, 4);
  await assert.rejects(
    () => encodeMp4(odd, 7),
    /MP4 of 4x3: H.264 in yuv420p needs an even width and height/,
  );
  await assert.rejects(() => encodeMp4(video, 0), /at 0 fps: give a whole number >= 1/);
  const controller = new AbortController();
  controller.abort(new Error("stop"));
  await assert.rejects(() => encodeMp4(video, 7, { signal: controller.signal }), /stop/);
});

Deno.test({
  name: "GIF: every frame, the size, and the first frame's colours",
  ignore: !FFPROBE,
  async fn() {
    const bytes = await encodeGif(video, 7);
    assert.equal(new TextDecoder().decode(bytes.subarray(0, 6)), "GIF89a");
    const path = await Deno.makeTempFile({ suffix: ".gif" });
    try {
      await Deno.writeFile(path, bytes);
      const s = await ffprobe(path);
      assert.equal(s.codec_name, "gif");
      assert.deepEqual([s.width, s.height], [W, H]);
      assert.equal(Number(s.nb_read_frames), FRAMES);
      const decoded = await decodeWithFfmpeg(path, W, H);
      const first = decoded.subarray(0, W * H * 3);
      const p = psnr8(first, frameRgb(video, 0));
      assert.ok(p > 30, `GIF frame 0 PSNR ${p.toFixed(1)} dB`);
    } finally {
      await Deno.remove(path);
    }
  },
});

Deno.test("PNG frames decode back to exactly the RGB frames", async () => {
  const files = await encodeFramePngs(video);
  assert.equal(files.length, FRAMES);
  files.forEach((png, f) => {
    const image = decodeImage(png, frameFileName(f, FRAMES));
    assert.deepEqual([image.width, image.height], [W, H]);
    assert.deepEqual(image.data, frameRgb(video, f));
  });
  assert.equal(frameFileName(0, 14), "frame_0000.png");
  assert.equal(frameFileName(12345, 20000), "frame_12345.png");
});
