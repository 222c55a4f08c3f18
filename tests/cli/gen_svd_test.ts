import assert from "node:assert/strict";
import { decodeImage } from "../../src/io/image.ts";
import { parastep } from "../support/cli.ts";

const TINY = new URL("../../models/svd-tiny", import.meta.url).pathname;
const IMAGE = `${TINY}/reference/case1/image.png`;
const BAD = new URL("../fixtures/image/bad", import.meta.url).pathname;

/** Whether Debian's ffmpeg is installed (the MP4 is checked with ffprobe). */
function hasFfprobe(): boolean {
  try {
    return new Deno.Command("ffprobe", { args: ["-version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

async function probe(path: string): Promise<Record<string, string | number>> {
  const out = await new Deno.Command("ffprobe", {
    args: [
      ...["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries"],
      "stream=codec_name,pix_fmt,width,height,r_frame_rate,nb_read_frames",
      ...["-of", "json", path],
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout)).streams[0];
}

Deno.test({
  name:
    "gen on svd-tiny with --gpus 2 writes an MP4 (ffprobe: frames, size, fps), a GIF and PNG frames",
  ignore: !hasFfprobe(),
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      await Deno.copyFile(IMAGE, `${dir}/My Photo.PNG`);
      await Deno.mkdir(`${dir}/frames`);
      const r = await parastep([
        ...["gen", "--model", TINY, "--image", "My Photo.PNG", "--gpus", "2", "--ep", "cpu"],
        ...["--frames", "4", "--fps", "9", "--seed", "2", "--steps", "6"],
        ...["--gif", "clip.gif", "--frames-dir", "frames"],
      ], { cwd: dir });
      assert.equal(r.code, 0, r.stderr);
      // The default name comes from the image's name and the seed, in the working folder.
      assert.match(
        r.stdout,
        /^wrote my-photo_s2\.mp4 \(4 frames 48x32 at 9 fps\): .*ParaStep on 2 devices \(W=3\)/,
      );
      const mp4 = await probe(`${dir}/my-photo_s2.mp4`);
      assert.equal(mp4.codec_name, "h264");
      assert.equal(mp4.pix_fmt, "yuv420p");
      assert.deepEqual([mp4.width, mp4.height], [48, 32]);
      assert.equal(mp4.r_frame_rate, "9/1");
      assert.equal(Number(mp4.nb_read_frames), 4);
      const gif = await probe(`${dir}/clip.gif`);
      assert.equal(gif.codec_name, "gif");
      assert.equal(Number(gif.nb_read_frames), 4);
      const names = [...Deno.readDirSync(`${dir}/frames`)].map((e) => e.name).sort();
      assert.deepEqual(names, [
        "frame_0000.png",
        "frame_0001.png",
        "frame_0002.png",
        "frame_0003.png",
      ]);
      const first = decodeImage(await Deno.readFile(`${dir}/frames/frame_0000.png`), "frame");
      assert.deepEqual([first.width, first.height], [48, 32]);

      // The in-process engine writes the same frames bit for bit.
      await Deno.mkdir(`${dir}/frames2`);
      const again = await parastep([
        ...["gen", "--model", TINY, "--image", "My Photo.PNG", "--gpus", "2", "--ep", "cpu"],
        ...["--frames", "4", "--fps", "9", "--seed", "2", "--steps", "6", "--in-process"],
        ...["--frames-dir", "frames2", "--out", "again.mp4"],
      ], { cwd: dir });
      assert.equal(again.code, 0, again.stderr);
      for (const name of names) {
        assert.deepEqual(
          await Deno.readFile(`${dir}/frames2/${name}`),
          await Deno.readFile(`${dir}/frames/${name}`),
          name,
        );
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("svd bad input gets one exact line, exit code 2 and no file", async (t) => {
  const dir = await Deno.makeTempDir();
  try {
    const out = `${dir}/out.mp4`;
    const gif = `${dir}/out.gif`;
    const svd = ["gen", "--model", TINY, "--ep", "cpu", "--out", out, "--gif", gif];
    const cases: [string, string[], RegExp][] = [
      ["no image", svd, /^parastep: Missing --image: give the PNG or JPEG image to animate$/],
      [
        "a missing image",
        [...svd, "--image", `${dir}/nope.png`],
        /^parastep: Cannot read the image '.*nope\.png': no such file$/,
      ],
      [
        "a JPEG that is text",
        [...svd, "--image", `${BAD}/text.jpg`],
        /^parastep: Cannot read the image '.*text\.jpg': it is not a PNG or JPEG image \(it holds text\)$/,
      ],
      [
        "a GIF as input",
        [...svd, "--image", `${BAD}/image.gif`],
        /^parastep: Cannot read the image '.*image\.gif': GIF is not supported: convert it to PNG or JPEG$/,
      ],
      [
        "a width not divisible by 8",
        [...svd, "--image", IMAGE, "--width", "50"],
        /^parastep: Cannot generate as 'width' must be a multiple of 8: current value is 50 \(try 48 or 56\)$/,
      ],
      [
        "zero frames",
        [...svd, "--image", IMAGE, "--frames", "0"],
        /^parastep: Invalid value for --frames: '0' is below 1: give an integer >= 1 \(see 'parastep help gen'\)$/,
      ],
      [
        "zero fps",
        [...svd, "--image", IMAGE, "--fps", "0"],
        /^parastep: Invalid value for --fps: '0' is below 1: give an integer >= 1 \(see 'parastep help gen'\)$/,
      ],
      [
        "a size that does not fit in memory",
        [...svd, "--image", IMAGE, "--width", "8192", "--height", "8192", "--frames", "14"],
        /^parastep: Cannot generate 14 frames of 8192x8192: that needs at least .* GiB of memory \(the UNet's attention over the 4096x4096 latent grid alone .* GiB\) and .* GiB is available; use a smaller --width\/--height, fewer --frames or a smaller --decode-chunk$/,
      ],
      [
        "min guidance above max",
        [...svd, "--image", IMAGE, "--min-guidance", "3", "--max-guidance", "2"],
        /^parastep: Cannot generate as 'min guidance' \(3\) must not exceed 'max guidance' \(2\)$/,
      ],
      [
        "an output that is not .mp4",
        ["gen", "--model", TINY, "--ep", "cpu", "--image", IMAGE, "--out", gif],
        /^parastep: Cannot write the video '.*out\.gif': it is written as MP4, so name it \.mp4 \(--gif PATH adds a GIF, --frames-dir DIR the frames as PNGs\)$/,
      ],
      [
        "a frames folder that is a file",
        [...svd, "--image", IMAGE, "--frames-dir", IMAGE],
        /^parastep: Cannot write frame 0 of 3 '.*frame_0000\.png': '.*' is not a folder$/,
      ],
      [
        "an AudioLDM2 flag on an svd model",
        [...svd, "--image", IMAGE, "--duration", "2"],
        /^parastep: --duration does not apply to '.*svd-tiny': its family, svd \(image to video \(Stable Video Diffusion\)\), does not take it; see 'parastep help gen' for its flags$/,
      ],
      [
        "an svd flag on an AudioLDM2 model",
        ["gen", "--ep", "cpu", "--out", out, "--prompt", "rain", "--image", IMAGE],
        /^parastep: --image does not apply to 'audioldm2-tiny': its family, audioldm2 \(text to audio \(AudioLDM2\)\), does not take it; see 'parastep help gen' for its flags$/,
      ],
    ];
    for (const [name, args, message] of cases) {
      await t.step(name, async () => {
        const r = await parastep(args);
        assert.equal(r.code, 2, r.stderr);
        assert.equal(r.stdout, "");
        assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
        assert.match(r.stderr.trimEnd(), message);
        await assert.rejects(Deno.stat(out), Deno.errors.NotFound);
        await assert.rejects(Deno.stat(gif), Deno.errors.NotFound);
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
