import assert from "node:assert/strict";
import { decodeWav } from "../../src/io/wav.ts";

import { MAIN, parastep, PERMISSIONS, processesWith } from "../support/cli.ts";
import { copyModel, TINY_AUDIOLDM2 } from "../support/model_folders.ts";
import { buildModel } from "../support/onnx_builder.ts";

const TINY = new URL("../../models/audioldm2-tiny", import.meta.url).pathname;

Deno.test("gen writes a 16 kHz WAV of the requested length, byte-identical for the same seed", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const args = ["gen", "--prompt", "rain on a tin roof", "--ep", "cpu", "--seed", "7"];
    const first = await parastep([
      ...args,
      "--out",
      `${dir}/a.wav`,
      "--spectrogram",
      `${dir}/a.png`,
    ]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /^wrote .*a\.wav \(1\.28 s at 16 kHz\): encode .* denoise .*\n$/);
    const second = await parastep([...args, "--out", `${dir}/b.wav`]);
    assert.equal(second.code, 0, second.stderr);
    const a = await Deno.readFile(`${dir}/a.wav`);
    assert.deepEqual(a, await Deno.readFile(`${dir}/b.wav`));
    const wav = decodeWav(a);
    assert.equal(wav.sampleRate, 16000);
    assert.equal(wav.channels, 1);
    assert.equal(wav.samples.length, Math.trunc(1.28 * 16000));
    assert.ok(wav.samples.some((v) => v !== 0), "the audio is not silent");
    const other = await parastep([
      "gen",
      "--prompt",
      "rain on a tin roof",
      "--ep",
      "cpu",
      "--seed",
      "8",
      "--out",
      `${dir}/c.wav`,
    ]);
    assert.equal(other.code, 0, other.stderr);
    assert.notDeepEqual(a, await Deno.readFile(`${dir}/c.wav`));
    const png = await Deno.readFile(`${dir}/a.png`);
    assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]);
    // Default name, in the working directory.
    const named = await parastep([
      "gen",
      "--prompt",
      "Café au lait!",
      "--ep",
      "cpu",
      "--steps",
      "2",
    ], { cwd: dir });
    assert.equal(named.code, 0, named.stderr);
    assert.ok((await Deno.stat(`${dir}/cafe-au-lait_s0.wav`)).isFile);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bad input gets one exact line, exit code 2 and no file", async (t) => {
  const dir = await Deno.makeTempDir();
  try {
    const broken = `${dir}/broken-model`;
    await Deno.mkdir(broken);
    for (const entry of Deno.readDirSync(TINY)) {
      if (entry.isFile) await Deno.copyFile(`${TINY}/${entry.name}`, `${broken}/${entry.name}`);
    }
    for (const sub of ["tokenizer", "tokenizer_2"]) {
      await Deno.mkdir(`${broken}/${sub}`);
      for (const f of Deno.readDirSync(`${TINY}/${sub}`)) {
        await Deno.copyFile(`${TINY}/${sub}/${f.name}`, `${broken}/${sub}/${f.name}`);
      }
    }
    const out = `${dir}/out.wav`;
    const genBroken = () =>
      parastep(["gen", "--ep", "cpu", "--out", out, "--prompt", "x", "--model", broken]);
    const cases: [string, string[], RegExp][] = [
      ["empty prompt", ["--prompt", "  "], /^parastep: Cannot generate as 'prompt' is empty/],
      [
        "enormous prompt",
        ["--prompt", "x".repeat(5000)],
        /^parastep: Cannot generate as the prompt is 5000 characters long: the limit is 4096$/,
      ],
      [
        "duration out of range",
        ["--prompt", "x", "--duration", "0.01"],
        /^parastep: Cannot generate as 'duration' must be between 0\.32 and 60: current value is 0\.01$/,
      ],
      [
        "steps below 1",
        ["--prompt", "x", "--steps", "0"],
        /^parastep: Invalid value for --steps: '0' is below 1: give an integer >= 1 \(see 'parastep help gen'\)$/,
      ],
      [
        "more steps than the scheduler can space",
        ["--prompt", "x", "--steps", "1000"],
        /^parastep: Cannot generate with 1000 steps: this model's DDIM schedule \(timestep_spacing leading, steps_offset 1, 1000 training timesteps\) cannot space that many; 999 steps work$/,
      ],
      ["no prompt", [], /^parastep: Missing --prompt: describe the audio to generate$/],
      [
        "non-numeric guidance",
        ["--prompt", "x", "--guidance", "loud"],
        /^parastep: Invalid value for --guidance: 'loud' is not a number \(see 'parastep help gen'\)$/,
      ],
      [
        "unwritable output path",
        ["--prompt", "x", "--out", `${dir}/missing/out.wav`],
        /^parastep: Cannot write the output '.*missing\/out\.wav': the folder '.*missing' does not exist$/,
      ],
      [
        "more devices than parallel steps",
        ["--prompt", "x", "--steps", "6", "--gpus", "4"],
        /^parastep: Cannot run ParaStep on 4 devices with 6 steps and 5 warm-up steps: only 1 steps run in parallel, so use at most 1 devices$/,
      ],
      [
        "a model that is not there",
        ["--prompt", "x", "--model", "audioldm2"],
        /^parastep: Cannot find model 'audioldm2': .* python -m models\.export audioldm2 --from cvssp\/audioldm2 --out models\/audioldm2/,
      ],
    ];
    for (const [name, args, message] of cases) {
      await t.step(name, async () => {
        // Each flag once: a case that names its own output replaces the default one.
        const output = args.includes("--out") ? [] : ["--out", out];
        const r = await parastep(["gen", "--ep", "cpu", ...output, ...args]);
        assert.equal(r.code, 2, r.stderr);
        assert.equal(r.stdout, "");
        assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
        assert.match(r.stderr.trimEnd(), message);
        await assert.rejects(Deno.stat(out), Deno.errors.NotFound);
      });
    }
    await t.step("a model folder with a missing tokenizer", async () => {
      await Deno.rename(`${broken}/tokenizer_2`, `${broken}/tokenizer_2.moved`);
      const r = await genBroken();
      assert.equal(r.code, 2, r.stderr);
      assert.match(
        r.stderr.trimEnd(),
        /^parastep: .*manifest\.json: tokenizer 't5' file .*tokenizer_2\/tokenizer\.json is missing; re-export the model$/,
      );
      await Deno.rename(`${broken}/tokenizer_2.moved`, `${broken}/tokenizer_2`);
    });
    await t.step("a model folder with a missing component file", async () => {
      await Deno.rename(`${broken}/vocoder.onnx`, `${broken}/vocoder.moved`);
      const r = await genBroken();
      assert.equal(r.code, 2, r.stderr);
      assert.match(
        r.stderr.trimEnd(),
        /component 'vocoder' file .*vocoder\.onnx is missing; re-export the model$/,
      );
      await assert.rejects(Deno.stat(out), Deno.errors.NotFound);
    });
    await t.step("a model folder with a mismatched component", async () => {
      await Deno.copyFile(`${broken}/projection.onnx`, `${broken}/vocoder.onnx`);
      const r = await genBroken();
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
      assert.match(
        r.stderr,
        /component 'vocoder' \(vocoder\.onnx\) has inputs \[.*\] but the manifest declares \[mel\]/,
      );
      await assert.rejects(Deno.stat(out), Deno.errors.NotFound);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

for (const gpus of ["2", "1"]) {
  Deno.test(`Ctrl-C during gen --gpus ${gpus} stops cleanly: exit 130, no file`, async () => {
    const dir = await Deno.makeTempDir();
    try {
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          ...PERMISSIONS,
          MAIN,
          "gen",
          "--prompt",
          "wind",
          "--ep",
          "cpu",
          "--gpus",
          gpus,
          "--steps",
          "900",
          "--out",
          `${dir}/x.wav`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      // 900 steps take several seconds after loading; interrupt well before the end.
      await new Promise((r) => setTimeout(r, 2500));
      child.kill("SIGINT");
      const { code, stderr } = await child.output();
      const message = new TextDecoder().decode(stderr).trim();
      assert.equal(code, 130, message);
      assert.equal(message, "parastep: Interrupted (Ctrl-C): stopped cleanly, nothing was written");
      assert.deepEqual([...Deno.readDirSync(dir)], []);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("a broken model is refused before any work, the same way for every engine", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const folder = `${dir}/broken`;
    await copyModel(TINY_AUDIOLDM2, folder);
    // The UNet replaced by the VAE decoder's graph: found from the files, before encoding.
    await Deno.copyFile(`${folder}/vae_decoder.onnx`, `${folder}/unet.onnx`);
    const runs = [];
    for (const gpus of ["1", "2"]) {
      const started = performance.now();
      const r = await parastep([
        "gen",
        "--ep",
        "cpu",
        "--prompt",
        "x",
        "--gpus",
        gpus,
        "--model",
        folder,
        "--out",
        `${dir}/x.wav`,
      ]);
      runs.push({ ...r, ms: performance.now() - started });
    }
    for (const r of runs) {
      assert.equal(r.code, 2, r.stderr);
      assert.match(
        r.stderr,
        /^parastep: .*manifest\.json: component 'unet' \(unet\.onnx\) has inputs \[latent\] but the manifest declares \[.*\]; re-export the model\n$/,
      );
    }
    assert.equal(runs[0]!.stderr, runs[1]!.stderr);
    await assert.rejects(Deno.stat(`${dir}/x.wav`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runs the machine cannot hold are refused up front with the reason", async () => {
  const cores = navigator.hardwareConcurrency;
  const cases: [string[], RegExp][] = [
    [
      ["--threads", "1000000000"],
      new RegExp(
        `^parastep: Cannot use 1000000000 threads per session: this machine has ${cores} cores and more threads than cores only contend; use --threads 1\\.\\.${cores}$`,
      ),
    ],
    [
      ["--gpus", "200", "--steps", "999"],
      new RegExp(
        `^parastep: Cannot run 200 CPU devices: this machine has ${cores} cores, and more than ${
          4 * cores
        } devices would only take turns on them; use --gpus ${4 * cores} or fewer$`,
      ),
    ],
  ];
  for (const [args, message] of cases) {
    const r = await parastep(["gen", "--ep", "cpu", "--prompt", "x", "--out", "/tmp/x", ...args]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr.trimEnd(), message);
  }
});

Deno.test("an ONNX Runtime failure while running is one line on stderr, exit 1, no file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const folder = `${dir}/model`;
    await copyModel(TINY_AUDIOLDM2, folder);
    // A vocoder with the manifest's inputs and outputs that fails inside ORT: 1 x 128 x 16 mel
    // values cannot be reshaped to rows of 7 (ORT's own log would add two lines of its own).
    await Deno.writeFile(
      `${folder}/vocoder.onnx`,
      buildModel({
        inputs: [{ name: "mel", type: "float32", dims: ["batch", "mel_frames", 16] }],
        outputs: [{ name: "waveform", type: "float32", dims: ["batch", "samples"] }],
        initializers: [{
          name: "rows",
          type: "int64",
          dims: [2],
          data: new BigInt64Array([-1n, 7n]),
        }],
        nodes: [{ op: "Reshape", inputs: ["mel", "rows"], outputs: ["waveform"] }],
      }),
    );
    const args = ["gen", "--ep", "cpu", "-p", "x", "--steps", "2", "--model", folder];
    const r = await parastep([...args, "--out", `${dir}/x.wav`]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      /^parastep: Run failed \[ORT FAIL\]: Non-zero status code returned while running Reshape node\..*\n$/,
    );
    await assert.rejects(Deno.stat(`${dir}/x.wav`), Deno.errors.NotFound);
    // --verbose lets ORT log it too.
    const verbose = await parastep([...args, "--verbose", "--out", `${dir}/y.wav`]);
    assert.equal(verbose.code, 1);
    assert.ok(verbose.stderr.trimEnd().split("\n").length > 1, verbose.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * A copy of the tiny model whose UNet takes seconds to open (a chain of 200 000 elementwise
 * nodes: ORT's graph passes are linear in the nodes, about 6 s on a 2-core machine here), so a
 * signal lands while sessions open on any machine, however fast.
 */
async function slowToOpenModel(dir: string): Promise<string> {
  const folder = `${dir}/slow`;
  await copyModel(TINY_AUDIOLDM2, folder);
  const manifest = JSON.parse(await Deno.readTextFile(`${folder}/manifest.json`));
  const unet = manifest.components.unet;
  const nodes = [];
  let x = "sample";
  const K = 200_000;
  for (let k = 0; k < K; k++) {
    const y = k === K - 1 ? "out_sample" : `x${k}`;
    nodes.push({ op: k % 2 ? "Sin" : "Cos", inputs: [x], outputs: [y] });
    x = y;
  }
  // deno-lint-ignore no-explicit-any
  const io = (t: any) => ({ name: t.name, type: t.dtype, dims: t.dims });
  await Deno.writeFile(
    `${folder}/unet.onnx`,
    buildModel({ inputs: unet.inputs.map(io), outputs: unet.outputs.map(io), nodes }),
  );
  return folder;
}

for (
  const [what, devices] of [
    ["8 Workers share one session", ["--gpus", "8"]],
    ["2 Workers open their own", ["--gpus", "2", "--threads", "2"]],
  ] as const
) {
  Deno.test(`Ctrl-C while sessions open (${what}): exit 130 within seconds, one line, no file, nothing left running`, async () => {
    // The report of issue 9: this crashed (SIGSEGV, exit 139) in 7 of 16 tries, and otherwise took
    // the 10 s close timeout, with ONNX Runtime's errors from its destroyed globals on stderr.
    const dir = await Deno.makeTempDir({ prefix: "parastep-interrupt-" });
    try {
      const model = await slowToOpenModel(dir);
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          ...PERMISSIONS,
          MAIN,
          "gen",
          "--model",
          model,
          "--prompt",
          "x",
          "--ep",
          "cpu",
          ...devices,
          "--no-graph-cache",
          "--out",
          `${dir}/x.wav`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      // Deno starts, the encoders run and the UNet sessions start opening within this.
      await new Promise((r) => setTimeout(r, 1500));
      const interrupted = performance.now();
      child.kill("SIGINT");
      const { code, signal, stderr } = await child.output();
      const ms = performance.now() - interrupted;
      const message = new TextDecoder().decode(stderr).trim();
      assert.equal(signal, null, message);
      assert.equal(code, 130, message);
      assert.equal(message, "parastep: Interrupted (Ctrl-C): stopped cleanly, nothing was written");
      // The grace after Ctrl-C is 3 s; then the process leaves through _exit.
      assert.ok(ms < 6000, `exited ${ms.toFixed(0)} ms after Ctrl-C`);
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["slow"]);
      assert.deepEqual(await processesWith(dir), []);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("gen --report writes the run's stage timings beside the output; --no-graph-cache gives the same bytes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const args = ["gen", "--prompt", "rain on a tin roof", "--ep", "cpu", "--steps", "6"];
    const cached = await parastep([...args, "--out", `${dir}/a.wav`, "--report", `${dir}/a.json`]);
    assert.equal(cached.code, 0, cached.stderr);
    const report = JSON.parse(await Deno.readTextFile(`${dir}/a.json`));
    assert.equal(report.out, `${dir}/a.wav`);
    assert.equal(report.steps, 6);
    assert.equal(report.graphCache, true);
    assert.equal(report.devices, 1);
    assert.equal(report.dtype, "fp32");
    const t = report.timings;
    for (const stage of ["encodeMs", "loadMs", "denoiseMs", "decodeMs", "totalMs"]) {
      assert.ok(t[stage] > 0, `${stage} = ${t[stage]}`);
    }
    // Loading overlaps encoding; the rest follow one another.
    assert.ok(t.totalMs >= t.encodeMs + t.loadWaitMs + t.denoiseMs + t.decodeMs);
    // The summary line prints the same numbers.
    assert.match(cached.stdout, new RegExp(`total ${(t.totalMs / 1000).toFixed(2)} s`));
    const uncached = await parastep([
      ...args,
      "--no-graph-cache",
      "--out",
      `${dir}/b.wav`,
      "--report",
      `${dir}/b.json`,
    ]);
    assert.equal(uncached.code, 0, uncached.stderr);
    assert.equal(JSON.parse(await Deno.readTextFile(`${dir}/b.json`)).graphCache, false);
    assert.deepEqual(await Deno.readFile(`${dir}/a.wav`), await Deno.readFile(`${dir}/b.wav`));
    // A report path that cannot be written is refused before any work: no WAV either.
    const refused = await parastep([
      ...args,
      "--out",
      `${dir}/c.wav`,
      "--report",
      `${dir}/no/c.json`,
    ]);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /report/);
    await assert.rejects(Deno.stat(`${dir}/c.wav`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
