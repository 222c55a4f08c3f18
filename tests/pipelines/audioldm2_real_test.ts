import assert from "node:assert/strict";
import { decodeWav } from "../../src/io/wav.ts";
import { parastep } from "../support/cli.ts";

/**
 * Real-size AudioLDM2 folders (random weights from the published configurations, exported with
 * `python -m models.export audioldm2 --size base|large|music --out .cache/models/audioldm2-<size>`):
 * `gen` runs each at its default 10.24 s, two waveforms ranked by the real-size CLAP. Gigabytes
 * each, so never committed: a test whose folder is missing is skipped and says why.
 */
const ROOT = new URL("../../.cache/models/", import.meta.url).pathname;

function exists(path: string): boolean {
  try {
    return Deno.statSync(`${path}/manifest.json`).isFile;
  } catch {
    return false;
  }
}

for (const size of ["base", "large", "music"]) {
  const dir = `${ROOT}audioldm2-${size}`;
  const present = exists(dir);
  if (!present) {
    console.log(
      `skipping the real-size ${size} test: ${dir} does not exist ` +
        `(python -m models.export audioldm2 --size ${size} --out ${dir})`,
    );
  }
  Deno.test({
    name: `gen runs the real-size AudioLDM2 ${size} folder: 10.24 s, best of 2 by CLAP`,
    ignore: !present,
    fn: async () => {
      const out = await Deno.makeTempDir();
      try {
        const r = await parastep([
          "gen",
          "--model",
          dir,
          "--prompt",
          "A hammer hitting a wooden surface",
          "--steps",
          "2",
          "--waveforms",
          "2",
          "--threads",
          "2",
          "--out",
          `${out}/x.wav`,
        ]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /10\.24 s at 16 kHz, best of 2 by CLAP score/);
        const wav = decodeWav(await Deno.readFile(`${out}/x.wav`));
        assert.equal(wav.samples.length, Math.trunc(10.24 * 16000));
        assert.ok(wav.samples.some((v) => v !== 0), "the audio is not silent");
      } finally {
        await Deno.remove(out, { recursive: true });
      }
    },
  });
}
