import assert from "node:assert/strict";
import {
  logSpectralDistance,
  nextPowerOfTwo,
  powerSpectrogram,
  psnr,
  RealFft,
  rfft,
  snr,
} from "../../src/metrics/mod.ts";
import { assertAllClose, loadJson, loadNpy } from "../fixtures/mod.ts";

interface Expected {
  readonly snr: number;
  readonly snr_prefix_1000: number;
  readonly lsd: { nFft: number; hop: number; length: number; value: number }[];
  readonly stft: { nFft: number; hop: number; length: number };
  readonly psnr: number;
}

const EXPECTED = (await loadJson("metrics", "expected.json")) as Expected;
const f64 = async (name: string) => (await loadNpy("float64", "metrics", name)).data;
const f32 = async (name: string) => (await loadNpy("float32", "metrics", name)).data;

/** FFT against numpy's pocketfft: both double precision, different operation order. */
const FFT_TOL = { rtol: 1e-9, atol: 1e-11 } as const;
/** Power spectra: squares of FFT outputs. */
const STFT_TOL = { rtol: 1e-9, atol: 1e-12 } as const;
/** Relative tolerance of the scalar metrics against numpy (all double-precision sums). */
const METRIC_RTOL = 1e-9;

function assertRelClose(actual: number, expected: number, what: string): void {
  const rel = Math.abs(actual - expected) / Math.abs(expected);
  assert.ok(rel <= METRIC_RTOL, `${what}: ${actual} vs numpy ${expected} (rel diff ${rel})`);
}

Deno.test("metrics rfft matches np.fft.rfft(x, n) with zero-padding to a power of two", async () => {
  const x = await f64("fft_input.npy");
  const s = rfft(x); // 1000 -> 1024
  assert.equal(s.re.length, 513);
  const d = assertAllClose(s.re, await f64("fft_1024_re.npy"), FFT_TOL, "rfft re");
  assertAllClose(s.im, await f64("fft_1024_im.npy"), FFT_TOL, "rfft im");
  const s8 = rfft(x, 8); // truncates like numpy
  assertAllClose(s8.re, await f64("fft_8_re.npy"), FFT_TOL, "rfft n=8 re");
  assertAllClose(s8.im, await f64("fft_8_im.npy"), FFT_TOL, "rfft n=8 im");
  console.log(`rfft vs numpy: max abs diff ${d.maxAbs}`);
});

Deno.test("metrics RealFft reuses its plan and reads at an offset", async () => {
  const x = await f64("fft_input.npy");
  const fft = new RealFft(8);
  const first = fft.forward(x);
  const second = fft.forward(x.subarray(8), undefined, 0);
  const viaOffset = fft.forward(x, undefined, 8);
  assert.deepEqual(second, viaOffset);
  assert.deepEqual(first, rfft(x, 8));
  assert.equal(nextPowerOfTwo(1), 1);
  assert.equal(nextPowerOfTwo(1025), 2048);
  assert.throws(
    () => new RealFft(12),
    /'size' must be a power of two in 1..1073741824: current value is 12$/,
  );
  assert.throws(() => rfft(x, 1000), RangeError);
});

Deno.test("metrics powerSpectrogram matches numpy (periodic Hann, no centring)", async () => {
  const ref = await f32("audio_ref.npy");
  const { nFft, hop, length } = EXPECTED.stft;
  const s = powerSpectrogram(ref.subarray(0, length), { nFft, hop });
  const expected = await loadNpy("float64", "metrics", "stft_256_100.npy");
  assert.deepEqual([s.frames, s.bins], expected.shape);
  const d = assertAllClose(s.data, expected.data, STFT_TOL, "power spectrogram");
  console.log(`power spectrogram vs numpy: max abs diff ${d.maxAbs}, max rel ${d.maxRel}`);
});

Deno.test("metrics snr, lsd and psnr match numpy's evaluation of the same formulas", async () => {
  const ref = await f32("audio_ref.npy");
  const est = await f32("audio_est.npy");
  assertRelClose(snr(ref, est), EXPECTED.snr, "snr");
  assertRelClose(
    snr(ref.subarray(0, 1000), est.subarray(0, 1000)),
    EXPECTED.snr_prefix_1000,
    "snr prefix",
  );
  for (const c of EXPECTED.lsd) {
    const value = logSpectralDistance(ref.subarray(0, c.length), est.subarray(0, c.length), {
      nFft: c.nFft,
      hop: c.hop,
    });
    assertRelClose(value, c.value, `lsd nFft ${c.nFft} hop ${c.hop} length ${c.length}`);
  }
  const mel = await loadNpy("float32", "metrics", "mel_ref.npy");
  const melEst = await loadNpy("float32", "metrics", "mel_est.npy");
  const shape = mel.shape as [number, number];
  assertRelClose(
    psnr({ data: mel.data, shape }, { data: melEst.data, shape }),
    EXPECTED.psnr,
    "psnr",
  );
});

Deno.test("metrics defaults: lsd uses nFft 2048 and hop 512", async () => {
  const ref = await f32("audio_ref.npy");
  const est = await f32("audio_est.npy");
  const c = EXPECTED.lsd.find((k) => k.nFft === 2048 && k.length === 4000)!;
  assertRelClose(logSpectralDistance(ref, est), c.value, "lsd with defaults");
});

Deno.test("metrics identical inputs: snr and psnr are Infinity, lsd is 0", async () => {
  const ref = await f32("audio_ref.npy");
  assert.equal(snr(ref, ref.slice()), Infinity);
  assert.equal(logSpectralDistance(ref, ref.slice()), 0);
  const mel = await loadNpy("float32", "metrics", "mel_ref.npy");
  const a = { data: mel.data, shape: mel.shape as [number, number] };
  assert.equal(psnr(a, { data: mel.data.slice(), shape: a.shape }), Infinity);
  // Silence against silence is identical too; silence against sound has no signal at all.
  const zeros = new Float32Array(16);
  assert.equal(snr(zeros, zeros), Infinity);
  assert.equal(snr(zeros, zeros.map(() => 0.1)), -Infinity);
  // A constant reference has no range: any difference gives -Infinity.
  const flat = { data: new Float32Array(4).fill(2), shape: [2, 2] as const };
  assert.equal(psnr(flat, { data: new Float32Array([2, 2, 2, 3]), shape: [2, 2] }), -Infinity);
});

Deno.test("metrics behave: scaling the error by 10 costs 20 dB of SNR and PSNR; lsd is symmetric", async () => {
  const ref = await f32("audio_ref.npy");
  const est = await f32("audio_est.npy");
  const closer = new Float64Array(ref.length).map((_, k) => ref[k]! + (est[k]! - ref[k]!) / 10);
  assert.ok(Math.abs(snr(ref, closer) - snr(ref, est) - 20) < 1e-6);
  assert.ok(Math.abs(logSpectralDistance(ref, est) - logSpectralDistance(est, ref)) < 1e-9);
  const a = { data: new Float64Array([0, 1, 2, 3, 4, 5]), shape: [2, 3] as const };
  const b = { data: new Float64Array([0, 1, 2, 3, 4, 6]), shape: [2, 3] as const };
  const c = { data: new Float64Array([0, 1, 2, 3, 4, 5.1]), shape: [2, 3] as const };
  assert.ok(Math.abs(psnr(a, c) - psnr(a, b) - 20) < 1e-9);
});

Deno.test("metrics refuse mismatched lengths and shapes, empty and non-finite input", () => {
  const a = new Float32Array(8);
  assert.throws(
    () => snr(a, new Float32Array(7)),
    /'estimate' must have the length of 'reference' \(8\): current value is 7$/,
  );
  assert.throws(() => snr(new Float32Array(0), new Float32Array(0)), /'reference' is empty$/);
  assert.throws(
    () => snr(a, new Float32Array(8).fill(NaN)),
    /'estimate' value 0 must be finite: current value is NaN$/,
  );
  assert.throws(
    () => logSpectralDistance(a, a, { nFft: 1000 }),
    /'nFft' must be a power of two >= 2: current value is 1000$/,
  );
  assert.throws(
    () => logSpectralDistance(a, a, { hop: 0 }),
    /'hop' must be a positive integer: current value is 0$/,
  );
  assert.throws(
    () => logSpectralDistance(a, a, { epsilon: 0 }),
    /'epsilon' must be a finite number > 0: current value is 0$/,
  );
  const m = { data: new Float32Array(6), shape: [2, 3] as const };
  assert.throws(
    () => psnr(m, { data: new Float32Array(6), shape: [3, 2] }),
    /'estimate' must have the shape of 'reference' \[2, 3\]: current value is \[3, 2\]$/,
  );
  assert.throws(
    () => psnr({ data: new Float32Array(5), shape: [2, 3] }, m),
    /'reference' of shape \[2, 3\] must hold 6 values: current length is 5$/,
  );
});
