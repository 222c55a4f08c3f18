import assert from "node:assert/strict";
import { fmaF64, torchLinspaceF64 } from "../../src/schedulers/_f64.ts";
import { cogvideoxDdim, parseCogVideoXDdimConfig } from "../../src/schedulers/mod.ts";
import { roundBf16 } from "../../src/schedulers/cogvideox_ddim.ts";
import { fixturePath, loadJson, loadNpy, maxDiff } from "../fixtures/mod.ts";

/**
 * alphas_cumprod against diffusers (float64): torch's float64 sqrt on arrays of 1000 (MKL's
 * vectorised one on this AVX-512 host) is not correctly rounded and ours is, so a few values
 * differ in their last bits. Everything downstream (float32 coefficients, steps) is bit-exact.
 */
const ALPHA_REL = 1e-14;

interface Case {
  readonly name: string;
  readonly config: Record<string, unknown>;
  readonly T: number;
  readonly indices: readonly number[];
  readonly prevTimesteps: readonly number[];
  readonly finalAlphaCumprod: number;
  readonly initNoiseSigma: number;
}

async function loadCases(): Promise<Case[]> {
  const cases: Case[] = [];
  for await (const entry of Deno.readDir(fixturePath("cogvideox_ddim"))) {
    if (!entry.isDirectory) continue;
    const meta = (await loadJson("cogvideox_ddim", entry.name, "case.json")) as {
      T: number;
      indices: number[];
      prevTimesteps: number[];
      final_alpha_cumprod: number;
      init_noise_sigma: number;
    };
    cases.push({
      name: entry.name,
      config: (await loadJson("cogvideox_ddim", entry.name, "config.json")) as Record<
        string,
        unknown
      >,
      T: meta.T,
      indices: meta.indices,
      prevTimesteps: meta.prevTimesteps,
      finalAlphaCumprod: meta.final_alpha_cumprod,
      initNoiseSigma: meta.init_noise_sigma,
    });
  }
  cases.sort((a, b) => a.name.localeCompare(b.name));
  // 2b (shift 3) and 5b (shift 1), each at T = 50, 30 and 7.
  assert.deepEqual(cases.map((c) => c.name), [
    "2b_T30",
    "2b_T50",
    "2b_T7",
    "5b_T30",
    "5b_T50",
    "5b_T7",
  ]);
  return cases;
}

const CASES = await loadCases();

Deno.test("CogVideoX DDIM timesteps and t - 1000 // T match diffusers exactly", async () => {
  for (const c of CASES) {
    const table = cogvideoxDdim(c.config, c.T);
    const expected = (await loadNpy("int64", "cogvideox_ddim", c.name, "timesteps.npy")).data;
    assert.deepEqual(Array.from(table.timesteps), Array.from(expected, Number), c.name);
    assert.deepEqual(
      c.indices.map((i) => table.prevTimesteps[i]),
      c.prevTimesteps,
      `${c.name}: previous timesteps`,
    );
    assert.equal(table.finalAlphaCumprod, c.finalAlphaCumprod);
    assert.equal(table.initNoiseSigma, c.initNoiseSigma);
  }
  // The quirk is kept: with T = 30 step 1 goes to 933 (966 - 33) while step 2 runs at 932.
  const t30 = cogvideoxDdim(CASES.find((c) => c.name === "2b_T30")!.config, 30);
  assert.deepEqual([t30.timesteps[1], t30.prevTimesteps[1], t30.timesteps[2]], [966, 933, 932]);
});

Deno.test("CogVideoX DDIM alphas_cumprod (SNR shift, zero terminal SNR) match diffusers' float64", async () => {
  const summary: string[] = [];
  for (const name of ["2b_T50", "5b_T50"]) {
    const c = CASES.find((k) => k.name === name)!;
    const table = cogvideoxDdim(c.config, c.T);
    const want = (await loadNpy("float64", "cogvideox_ddim", name, "alphas_cumprod.npy")).data;
    const d = maxDiff(table.alphasCumprod, want);
    assert.ok(d.maxRel <= ALPHA_REL, `${name}: alphas_cumprod differ by ${d.maxRel} at ${d.index}`);
    let exact = 0;
    for (let k = 0; k < want.length; k++) if (table.alphasCumprod[k] === want[k]) exact++;
    assert.ok(exact >= 980, `${name}: only ${exact} of 1000 bit-exact`);
    // Zero terminal SNR: the last is exactly 0 (x0 = -v at t = 999).
    assert.equal(table.alphasCumprod[999], 0);
    assert.equal(want[999], 0);
    summary.push(`${name} ${exact}/1000 bit-exact, max rel ${d.maxRel.toExponential(2)}`);
  }
  // The values docs/reference/video-pipelines.md §3.2 quotes.
  const a2b = cogvideoxDdim(CASES.find((c) => c.name === "2b_T50")!.config, 50).alphasCumprod;
  const a5b = cogvideoxDdim(CASES.find((c) => c.name === "5b_T50")!.config, 50).alphasCumprod;
  for (
    const [a, t, v] of [
      [a2b, 979, 2.719436e-5],
      [a2b, 499, 0.095970],
      [a2b, 0, 0.997454],
      [a5b, 979, 8.578784e-5],
      [a5b, 499, 0.242359],
      [a5b, 0, 0.999150],
    ] as const
  ) {
    assert.ok(Math.abs(a[t]! - v) <= 1e-5 * v, `ᾱ[${t}] is ${a[t]}, the spec says ${v}`);
  }
  console.log(`alphas_cumprod: ${summary.join("; ")}`);
});

Deno.test("CogVideoX DDIM step() is bit-exact against diffusers (first, second, middle, last two)", async () => {
  let steps = 0;
  for (const c of CASES) {
    const table = cogvideoxDdim(c.config, c.T);
    for (const i of c.indices) {
      const v = (await loadNpy("float32", "cogvideox_ddim", c.name, `step_${i}_v.npy`)).data;
      const x = (await loadNpy("float32", "cogvideox_ddim", c.name, `step_${i}_x.npy`)).data;
      const want = (await loadNpy("float32", "cogvideox_ddim", c.name, `step_${i}_prev.npy`)).data;
      assert.deepEqual(table.step(v, i, x), want, `${c.name} step ${i}`);
      steps++;
    }
  }
  assert.equal(steps, 30);
});

Deno.test("CogVideoX DDIM step() is pure: any order, into out, in place", async () => {
  const c = CASES.find((k) => k.name === "2b_T7")!;
  const table = cogvideoxDdim(c.config, c.T);
  const v = (await loadNpy("float32", "cogvideox_ddim", c.name, "step_3_v.npy")).data;
  const x = (await loadNpy("float32", "cogvideox_ddim", c.name, "step_3_x.npy")).data;
  const first = table.step(v, 3, x);
  table.step(v, 0, x);
  table.step(v, 6, x);
  const out = new Float32Array(x.length);
  assert.equal(table.step(v, 3, x, out), out);
  assert.deepEqual(out, first);
  const inPlace = x.slice();
  table.step(v, 3, inPlace, inPlace);
  assert.deepEqual(inPlace, first);
  assert.ok(Object.isFrozen(table));
});

Deno.test("CogVideoX DDIM in half precision rounds the latents' products and the result to the type", async () => {
  const c = CASES.find((k) => k.name === "2b_T50")!;
  const v = (await loadNpy("float32", "cogvideox_ddim", c.name, "step_1_v.npy")).data;
  const x32 = (await loadNpy("float32", "cogvideox_ddim", c.name, "step_1_x.npy")).data;
  for (const [type, round] of [["float16", Math.f16round], ["bfloat16", roundBf16]] as const) {
    const x = x32.map(round);
    const half = cogvideoxDdim(c.config, c.T, { sample: type });
    const full = cogvideoxDdim(c.config, c.T);
    const got = half.step(v, 1, x);
    for (const value of got) assert.equal(value, round(value), `${type}: result in the type`);
    // Within the type's precision of the float32 step on the same latents.
    const ref = full.step(v, 1, x);
    const eps = type === "float16" ? 2 ** -10 : 2 ** -7;
    for (let k = 0; k < got.length; k++) {
      assert.ok(
        Math.abs(got[k]! - ref[k]!) <= 2 * eps * Math.abs(ref[k]!) + 1e-6,
        `${type}[${k}] ${got[k]} vs ${ref[k]}`,
      );
    }
  }
  assert.equal(roundBf16(1 + 2 ** -8), 1); // tie to even
  assert.equal(roundBf16(1 + 3 * 2 ** -8), 1 + 2 ** -6);
  assert.equal(roundBf16(-2.5), -2.5);
});

Deno.test("torch's float64 linspace (fused multiply-add) and an exact fma", () => {
  assert.equal(fmaF64(0.1, 3, 0.2), 0.5); // 0.1 * 3 + 0.2 = 0.5000000000000000277 rounds to 0.5
  assert.equal(fmaF64(2 ** 60, 2 ** 60, 1), 2 ** 120);
  assert.equal(fmaF64(1 + 2 ** -52, 1 - 2 ** -53, -1), 2 ** -53 - 2 ** -105);
  assert.equal(fmaF64(-3, 2, 6), 0);
  const lin = torchLinspaceF64(0, 1, 5);
  assert.deepEqual(Array.from(lin), [0, 0.25, 0.5, 0.75, 1]);
});

Deno.test("CogVideoX DDIM refuses configs and step counts it cannot run, naming the field", () => {
  const base = CASES[0]!.config;
  const cases: [unknown, number, RegExp][] = [
    [
      { ...base, prediction_type: "epsilon" },
      50,
      /'prediction_type' must be one of v_prediction: current value is epsilon$/,
    ],
    [
      { ...base, beta_schedule: "linear" },
      50,
      /'beta_schedule' must be one of scaled_linear: current value is linear$/,
    ],
    [{ ...base, snr_shift_scale: 0 }, 50, /'snr_shift_scale' must be a finite number > 0/],
    [
      { ...base, _class_name: "CogVideoXDPMScheduler" },
      50,
      /'_class_name' must be CogVideoXDDIMScheduler: current value is CogVideoXDPMScheduler/,
    ],
    [{ ...base, trained_betas: [0.1] }, 50, /'trained_betas' must be null/],
    [base, 0, /'T' must be an integer in 1\.\.1000/],
    [base, 1001, /'T' must be an integer in 1\.\.1000/],
    // numpy's arange(1000, 0, -1000 / 61) has 62 entries: diffusers would run 62 steps.
    [base, 61, /trailing spacing with T = 61 and num_train_timesteps = 1000 gives 62 timesteps/],
  ];
  for (const [config, T, message] of cases) {
    assert.throws(() => cogvideoxDdim(config, T), message);
  }
  assert.throws(() => parseCogVideoXDdimConfig("x"), TypeError);
});
