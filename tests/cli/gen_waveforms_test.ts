import assert from "node:assert/strict";
import { decodeWav } from "../../src/io/wav.ts";

import { parastep } from "../support/cli.ts";

Deno.test("gen --waveforms 3 --keep-all writes the best as --out and all three, best first, on 2 devices", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const r = await parastep([
      "gen",
      "--prompt",
      "rain on a tin roof",
      "--ep",
      "cpu",
      "--gpus",
      "2",
      "--steps",
      "8",
      "--waveforms",
      "3",
      "--keep-all",
      "--out",
      `${dir}/x.wav`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^wrote .*x\.wav \(1\.28 s at 16 kHz, best of 3 by CLAP score\)/);
    const best = await Deno.readFile(`${dir}/x.wav`);
    assert.deepEqual(best, await Deno.readFile(`${dir}/x-1.wav`));
    const all = await Promise.all([1, 2, 3].map((k) => Deno.readFile(`${dir}/x-${k}.wav`)));
    assert.notDeepEqual(all[0], all[1]);
    assert.notDeepEqual(all[1], all[2]);
    for (const bytes of all) {
      assert.equal(decodeWav(bytes).samples.length, Math.trunc(1.28 * 16000));
    }
    assert.deepEqual((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort(), [
      "x-1.wav",
      "x-2.wav",
      "x-3.wav",
      "x.wav",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("gen --keep-all without --waveforms is a usage error that writes nothing", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const r = await parastep(["gen", "--prompt", "x", "--keep-all", "--out", `${dir}/x.wav`]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^parastep: Cannot use --keep-all without --waveforms K \(K > 1\)/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
    assert.deepEqual(await Array.fromAsync(Deno.readDir(dir)), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("gen --help lists --waveforms and --keep-all", async () => {
  const r = await parastep(["gen", "--help"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /--waveforms K/);
  assert.match(r.stdout, /--keep-all/);
});
