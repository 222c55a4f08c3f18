import assert from "node:assert/strict";
import { decodeImage } from "../../src/io/image.ts";
import { framesToRgb } from "../../src/io/video.ts";
import { resolveModel } from "../../src/models/model.ts";
import { generate } from "../../src/pipelines/mod.ts";
import { checkRequest, cogvideox } from "../../src/pipelines/cogvideox/mod.ts";
import { parastep } from "../support/cli.ts";

const TINY = new URL("../../models/cogvideox-tiny", import.meta.url).pathname;
const TINY_5B = new URL("../../models/cogvideox-tiny-5b", import.meta.url).pathname;

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
    "gen on cogvideox-tiny with --gpus 2 writes an MP4 (ffprobe: 16 frames, size, fps), a GIF and PNG frames; --in-process writes the same frames",
  ignore: !hasFfprobe(),
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      await Deno.mkdir(`${dir}/frames`);
      const run = ["gen", "--model", TINY, "--prompt", "A café at dawn, 4k!", "--ep", "cpu"];
      // --frames 14 gives F' = 4 (even), which decodes to 4F' = 16 frames.
      const args = ["--frames", "14", "--fps", "12", "--seed", "2", "--steps", "7"];
      const r = await parastep([
        ...run,
        ...args,
        ...["--gpus", "2", "--dynamic-cfg", "--gif", "clip.gif", "--frames-dir", "frames"],
      ], { cwd: dir });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, "");
      // The default name comes from the prompt and the seed, in the working folder.
      assert.match(
        r.stdout,
        /^wrote a-cafe-at-dawn-4k_s2\.mp4 \(16 frames 48x32 at 12 fps; --frames 14 gives 4 latent frames, which decode to 16\): .*ParaStep on 2 devices \(W=5\)/,
      );
      const mp4 = await probe(`${dir}/a-cafe-at-dawn-4k_s2.mp4`);
      assert.equal(mp4.codec_name, "h264");
      assert.equal(mp4.pix_fmt, "yuv420p");
      assert.deepEqual([mp4.width, mp4.height], [48, 32]);
      assert.equal(mp4.r_frame_rate, "12/1");
      assert.equal(Number(mp4.nb_read_frames), 16);
      const gif = await probe(`${dir}/clip.gif`);
      assert.equal(gif.codec_name, "gif");
      assert.equal(Number(gif.nb_read_frames), 16);
      const names = [...Deno.readDirSync(`${dir}/frames`)].map((e) => e.name).sort();
      assert.deepEqual(
        names,
        Array.from({ length: 16 }, (_, f) => `frame_${String(f).padStart(4, "0")}.png`),
      );
      const first = decodeImage(await Deno.readFile(`${dir}/frames/frame_0000.png`), "frame");
      assert.deepEqual([first.width, first.height], [48, 32]);

      // The in-process engine writes the same frames bit for bit.
      await Deno.mkdir(`${dir}/frames2`);
      const again = await parastep([
        ...run,
        ...args,
        ...[
          "--gpus",
          "2",
          "--dynamic-cfg",
          "--in-process",
          "--frames-dir",
          "frames2",
          "--out",
          "again.mp4",
        ],
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

Deno.test({
  name: "gen on cogvideox-tiny-5b writes 4F' - 3 = 9 frames and says when the prompt was truncated",
  ignore: !hasFfprobe(),
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const long = Array(20).fill("a slow drone shot over misty mountains").join(", ");
      const r = await parastep([
        ...["gen", "--model", TINY_5B, "--prompt", long, "--ep", "cpu", "--steps", "4"],
        ...["--out", `${dir}/v.mp4`],
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, "");
      assert.match(
        r.stdout,
        /^wrote .*v\.mp4 \(9 frames 48x32 at 8 fps; the prompt was truncated to the model's 32 tokens \(\d+ dropped, as diffusers does\)\): .*sequential on 1 device/,
      );
      const mp4 = await probe(`${dir}/v.mp4`);
      assert.deepEqual([mp4.width, mp4.height, mp4.r_frame_rate], [48, 32, "8/1"]);
      assert.equal(Number(mp4.nb_read_frames), 9);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "gen --decode-tiles writes the tiled decode's frames (the library's, bit for bit as PNG), another video than the untiled one",
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const prompt = "Waves crashing against black rocks during a storm";
      const asked = { prompt, frames: 16, steps: 4, seed: 5 };
      const args = [
        ...["gen", "--model", TINY, "--ep", "cpu", "--prompt", prompt, "--frames", "16"],
        ...["--steps", "4", "--seed", "5"],
      ];
      const frames = async (sub: string, extra: string[]) => {
        await Deno.mkdir(`${dir}/${sub}`);
        const r = await parastep(
          [...args, ...extra, "--out", `${dir}/${sub}.mp4`, "--frames-dir", `${dir}/${sub}`],
        );
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stderr, "");
        const out = new Uint8Array(16 * 32 * 48 * 3);
        for (let f = 0; f < 16; f++) {
          const name = `${dir}/${sub}/frame_${String(f).padStart(4, "0")}.png`;
          const image = decodeImage(await Deno.readFile(name), "frame");
          assert.deepEqual([image.width, image.height], [48, 32]);
          out.set(image.data, f * 32 * 48 * 3);
        }
        return out;
      };
      const tiled = await frames("tiled", ["--decode-tiles"]);
      const whole = await frames("whole", []);
      assert.ok((await Deno.stat(`${dir}/tiled.mp4`)).size > 0);
      // The same generation through the library (whose tiled decode matches diffusers' enable_tiling()
      // reference: tests/pipelines/cogvideox/pipeline_test.ts, case5).
      const model = resolveModel(TINY);
      const ours = await generate(
        cogvideox,
        model,
        checkRequest(model, { ...asked, decodeTiles: true }),
        { ep: "cpu", devices: 1 },
      );
      assert.deepEqual(framesToRgb(ours.media.frames, 16, 32, 48).data, tiled);
      let levels = 0;
      for (let k = 0; k < tiled.length; k++) {
        levels = Math.max(levels, Math.abs(tiled[k]! - whole[k]!));
      }
      assert.ok(levels > 32, `tiled and untiled frames differ by at most ${levels} levels`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("cogvideox bad input gets one exact line, exit code 2 and no file", async (t) => {
  const dir = await Deno.makeTempDir();
  try {
    const out = `${dir}/out.mp4`;
    const gif = `${dir}/out.gif`;
    const cog = ["gen", "--model", TINY, "--ep", "cpu", "--out", out, "--gif", gif];
    const withPrompt = [...cog, "--prompt", "a dog"];
    const exporter =
      "python -m models\\.export cogvideox --size tiny --seed 0 --out .*cogvideox-tiny";
    const cases: [string, string[], RegExp][] = [
      ["no prompt", cog, /^parastep: Missing --prompt: describe the video to generate$/],
      [
        "an empty prompt",
        [...cog, "--prompt", " "],
        /^parastep: Cannot generate as 'prompt' is empty: describe the video to generate$/,
      ],
      [
        "a width not divisible by 16",
        [...withPrompt, "--width", "40"],
        /^parastep: Cannot generate as 'width' must be a multiple of 16 \(the VAE's factor 8 times the patch size 2\): current value is 40 \(try 32 or 48\)$/,
      ],
      [
        "a height below 16",
        [...withPrompt, "--height", "8"],
        /^parastep: Cannot generate as 'height' must be a multiple of 16 .*: current value is 8 \(try 16\)$/,
      ],
      [
        "frames that give no latent frame",
        [...withPrompt, "--frames", "0"],
        /^parastep: Invalid value for --frames: '0' is below 1: give an integer >= 1 \(see 'parastep help gen'\)$/,
      ],
      [
        "frames of a latent shape that was not exported",
        [...withPrompt, "--frames", "17"],
        new RegExp(
          "^parastep: Cannot generate 17 frames of 48x32: 'cogvideox-tiny' has no graphs for 5 latent frames " +
            "at that size; it exports 48x32 with --frames 9 to 12, 48x32 with --frames 13 to 16; add the shape " +
            `with '${exporter} --frames 9,16,17 --height 32 --width 48'$`,
        ),
      ],
      [
        "a size that was not exported",
        [...withPrompt, "--width", "64"],
        new RegExp(
          "^parastep: Cannot generate 9 frames of 64x32: 'cogvideox-tiny' has no graphs for 3 latent frames at " +
            `that size; .* '${exporter} --frames 9,16 --height 32 --width 48,64'$`,
        ),
      ],
      [
        "a shape the 5b folder's transformer takes but has no VAE graph for",
        [
          "gen",
          "--model",
          TINY_5B,
          "--ep",
          "cpu",
          "--out",
          out,
          "--prompt",
          "a dog",
          "--frames",
          "13",
        ],
        /^parastep: Cannot generate 13 frames of 48x32: 'cogvideox-tiny-5b' has no graphs for 4 latent frames at that size; it exports 48x32 with --frames 9 to 12; add the shape with 'python -m models\.export cogvideox --size tiny-5b --seed 0 --out .*cogvideox-tiny-5b --frames 9,13 --height 32 --width 48'$/,
      ],
      [
        "--decode-tiles on a folder without tile decoders",
        [
          "gen",
          "--model",
          TINY_5B,
          "--ep",
          "cpu",
          "--out",
          out,
          "--prompt",
          "a dog",
          "--decode-tiles",
        ],
        /^parastep: Cannot decode in tiles \(--decode-tiles\): 'cogvideox-tiny-5b' has no tile decoder graphs \(manifest 'vaeTiling'\); the exporter adds them to a folder made from a checkpoint \('python -m models\.export cogvideox --from <checkpoint>'\), or decode without --decode-tiles$/,
      ],
      [
        "steps the trailing schedule cannot space",
        [...withPrompt, "--steps", "61"],
        /^parastep: Cannot generate with 61 steps: this model's CogVideoX DDIM schedule \(timestep_spacing trailing\) cannot space that many \(diffusers would run 62\); 60 steps work$/,
      ],
      [
        "a guidance out of range",
        [...withPrompt, "--guidance", "101"],
        /^parastep: Cannot generate as 'guidance' must be between 0 and 100: current value is 101$/,
      ],
      [
        "an output that is not .mp4",
        ["gen", "--model", TINY, "--ep", "cpu", "--prompt", "a dog", "--out", gif],
        /^parastep: Cannot write the video '.*out\.gif': it is written as MP4, so name it \.mp4 \(--gif PATH adds a GIF, --frames-dir DIR the frames as PNGs\)$/,
      ],
      [
        "an svd flag on a cogvideox model",
        [...withPrompt, "--image", "x.png"],
        /^parastep: --image does not apply to '.*cogvideox-tiny': its family, cogvideox \(text to video \(CogVideoX\)\), does not take it; see 'parastep help gen' for its flags$/,
      ],
      [
        "an svd flag on a cogvideox model (motion)",
        [...withPrompt, "--motion-bucket", "3"],
        /^parastep: --motion-bucket does not apply to '.*cogvideox-tiny': its family, cogvideox/,
      ],
      [
        "an AudioLDM2 flag on a cogvideox model",
        [...withPrompt, "--duration", "2"],
        /^parastep: --duration does not apply to '.*cogvideox-tiny': its family, cogvideox/,
      ],
      [
        "a cogvideox flag on an AudioLDM2 model",
        ["gen", "--ep", "cpu", "--out", out, "--prompt", "rain", "--dynamic-cfg"],
        /^parastep: --dynamic-cfg does not apply to 'audioldm2-tiny': its family, audioldm2 \(text to audio \(AudioLDM2\)\), does not take it; see 'parastep help gen' for its flags$/,
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

Deno.test("help gen lists the cogvideox flags under the family", async () => {
  const r = await parastep(["help", "gen"]);
  assert.equal(r.code, 0, r.stderr);
  const section = r.stdout.slice(
    r.stdout.indexOf("Flags of cogvideox models, text to video (CogVideoX):"),
  );
  assert.ok(section.length > 0, r.stdout);
  for (
    const flag of [
      "--prompt",
      "--dynamic-cfg",
      "--frames N",
      "--fps N",
      "--gif PATH",
      "--frames-dir DIR",
      "--decode-tiles",
    ]
  ) {
    assert.ok(section.includes(flag), `${flag} in\n${section}`);
  }
});
