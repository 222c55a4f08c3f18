import assert from "node:assert/strict";
import { decodeWav, encodeWav } from "../../src/io/wav.ts";
import { fixturePath, loadJson, loadNpy } from "../fixtures/mod.ts";

interface Meta {
  readonly sampleRate: number;
  readonly channels: number;
  readonly format: "pcm16" | "float32";
}

const META = (await loadJson("wav", "expected.json")) as Record<string, Meta>;
const readWav = (name: string) => Deno.readFile(fixturePath("wav", name));

Deno.test("wav decodes PCM16 (mono, stereo) written by Python's wave module", async () => {
  for (const name of ["pcm16_mono.wav", "pcm16_stereo_22050.wav"]) {
    const audio = decodeWav(await readWav(name));
    const meta = META[name]!;
    assert.equal(audio.sampleRate, meta.sampleRate);
    assert.equal(audio.channels, meta.channels);
    assert.equal(audio.format, "pcm16");
    const expected = (await loadNpy("float32", "wav", name.replace(".wav", "_decoded.npy"))).data;
    assert.deepEqual(audio.samples, expected, `${name}: samples`);
  }
});

Deno.test("wav decodes 32-bit float (format 3 with fact chunk) written with struct", async () => {
  const audio = decodeWav(await readWav("float32_mono.wav"));
  assert.equal(audio.format, "float32");
  assert.equal(audio.sampleRate, META["float32_mono.wav"]!.sampleRate);
  assert.equal(audio.channels, 1);
  const expected = (await loadNpy("float32", "wav", "float32_mono_decoded.npy")).data;
  assert.deepEqual(audio.samples, expected);
});

Deno.test("wav encode is byte-identical to the Python-written files (pcm16 and float32)", async () => {
  const pcm = await readWav("pcm16_mono.wav");
  assert.deepEqual(encodeWav(decodeWav(pcm).samples, 16000), pcm);
  const flt = await readWav("float32_mono.wav");
  assert.deepEqual(encodeWav(decodeWav(flt).samples, 16000, { format: "float32" }), flt);
});

Deno.test("wav PCM16 clips to [-1, 1] and rounds half to even like numpy", async () => {
  const x = (await loadNpy("float32", "wav", "pcm16_rounding_input.npy")).data;
  const expected = (await loadNpy("int32", "wav", "pcm16_rounding_expected.npy")).data;
  const bytes = encodeWav(x, 16000);
  const view = new DataView(bytes.buffer, 44);
  const got = Array.from({ length: x.length }, (_, k) => view.getInt16(2 * k, true));
  assert.deepEqual(got, Array.from(expected));
});

Deno.test("wav round trip: float32 is exact, pcm16 within half a step", () => {
  const x = new Float32Array(1000).map((_, k) => 0.9 * Math.sin(k * 0.05) * Math.cos(k * 0.0031));
  const f = decodeWav(encodeWav(x, 44100, { format: "float32" }));
  assert.deepEqual(f.samples, x);
  assert.equal(f.sampleRate, 44100);
  const p = decodeWav(encodeWav(x, 44100)).samples;
  let worst = 0;
  for (let k = 0; k < x.length; k++) worst = Math.max(worst, Math.abs(p[k]! - x[k]!));
  assert.ok(worst <= 0.5 / 32768, `max error ${worst}`);
  assert.ok(worst > 0, "pcm16 quantises, so some error is expected");
});

Deno.test("wav decoder skips unknown chunks and handles odd-size padding", async () => {
  const pcm = await readWav("pcm16_mono.wav");
  // Insert a 3-byte LIST chunk (padded to 4) between fmt (ends at 36) and data.
  const extra = new Uint8Array([0x4c, 0x49, 0x53, 0x54, 3, 0, 0, 0, 1, 2, 3, 0]);
  const bytes = new Uint8Array(pcm.length + extra.length);
  bytes.set(pcm.subarray(0, 36), 0);
  bytes.set(extra, 36);
  bytes.set(pcm.subarray(36), 36 + extra.length);
  new DataView(bytes.buffer).setUint32(4, bytes.length - 8, true);
  assert.deepEqual(decodeWav(bytes).samples, decodeWav(pcm).samples);
});

Deno.test("wav refuses NaN samples, bad rates, other encodings and truncated files", async () => {
  assert.throws(
    () => encodeWav(new Float32Array([0, NaN]), 16000),
    /Cannot encode WAV as sample 1 must be a number: current value is NaN$/,
  );
  const nan = decodeWav(encodeWav(new Float32Array([NaN]), 16000, { format: "float32" }));
  assert.ok(Number.isNaN(nan.samples[0]), "float32 keeps NaN");
  assert.throws(
    () => encodeWav(new Float32Array(1), 0),
    /'sampleRate' must be an integer in 1..2147483647: current value is 0$/,
  );
  assert.throws(
    () => encodeWav(new Float32Array(1), 16000, { format: "pcm24" as "pcm16" }),
    (err: unknown) =>
      err instanceof TypeError &&
      /'format' must be one of pcm16, float32: current value is pcm24$/.test(err.message),
  );
  const pcm = await readWav("pcm16_mono.wav");
  assert.throws(
    () => decodeWav(pcm.subarray(0, pcm.length - 10)),
    (err: unknown) =>
      err instanceof RangeError &&
      /chunk 'data' at byte 36 needs 800 bytes: 790 remain/.test(err.message),
  );
  const pcm8 = pcm.slice();
  new DataView(pcm8.buffer).setUint16(34, 8, true); // bits per sample
  assert.throws(
    () => decodeWav(pcm8),
    /must be 16-bit PCM or 32-bit float: current value is format 1 with 8 bits/,
  );
  assert.throws(
    () => decodeWav(new TextEncoder().encode("RIFX0000WAVE")),
    /does not start with RIFF....WAVE/,
  );
});
