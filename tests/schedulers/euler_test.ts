import assert from "node:assert/strict";
import { euler, parseEulerConfig } from "../../src/schedulers/mod.ts";
import { assertAllClose, fixturePath, loadJson, loadNpy } from "../fixtures/mod.ts";

/**
 * Tolerance of scaleModelInput() and step() against diffusers' float32 outputs. The
 * implementation follows torch's float32 operation order; the tolerance leaves room for a 1-ulp
 * difference in a libm call (pow, log, sqrt of the table) that could shift a coefficient.
 */
const STEP_TOL = { rtol: 1e-6, atol: 1e-6 } as const;

interface Case {
  readonly name: string;
  readonly config: Record<string, unknown>;
  readonly T: number;
  readonly indices: readonly number[];
  readonly initNoiseSigma: number;
}

async function loadCases(): Promise<Case[]> {
  const cases: Case[] = [];
  for await (const entry of Deno.readDir(fixturePath("euler"))) {
    if (!entry.isDirectory) continue;
    const meta = (await loadJson("euler", entry.name, "case.json")) as {
      T: number;
      indices: number[];
      init_noise_sigma: number;
    };
    cases.push({
      name: entry.name,
      config: (await loadJson("euler", entry.name, "config.json")) as Record<string, unknown>,
      T: meta.T,
      indices: meta.indices,
      initNoiseSigma: meta.init_noise_sigma,
    });
  }
  cases.sort((a, b) => a.name.localeCompare(b.name));
  assert.ok(cases.length >= 5, `expected the Euler fixture grid, found ${cases.length} cases`);
  return cases;
}

const CASES = await loadCases();
const SVD = CASES.find((c) => c.name === "svd_T25")!.config;

/** The distance between two float32 values in units in the last place. */
function ulps(a: number, b: number): number {
  const bits = new Int32Array(new Float32Array([a, b]).buffer);
  const key = (i: number) => (i < 0 ? -(i & 0x7fffffff) : i);
  return Math.abs(key(bits[0]!) - key(bits[1]!));
}

Deno.test("euler sigmas and init_noise_sigma equal diffusers' bit for bit", async () => {
  for (const c of CASES) {
    const table = euler(c.config, c.T);
    const sigmas = (await loadNpy("float32", "euler", c.name, "sigmas.npy")).data;
    assert.deepEqual(Array.from(table.sigmas), Array.from(sigmas), `${c.name}: sigmas`);
    assert.equal(table.initNoiseSigma, c.initNoiseSigma, `${c.name}: init_noise_sigma`);
  }
});

/**
 * torch computes `sigma.log()` with its vectorised float32 log (SLEEF, 1-ulp bound), which is not
 * correctly rounded; ours is (`Math.log` in double, then rounded to float32). They differ by one
 * ulp on some sigmas (relative 6e-8), which moves the UNet's output far less than the 1e-4
 * parity tolerance.
 */
Deno.test("euler timesteps (0.25 ln sigma) are within one float32 ulp of diffusers'", async () => {
  let exact = 0;
  let total = 0;
  for (const c of CASES) {
    const table = euler(c.config, c.T);
    const timesteps = (await loadNpy("float32", "euler", c.name, "timesteps.npy")).data;
    assert.equal(table.timesteps.length, timesteps.length, `${c.name}: number of timesteps`);
    for (let i = 0; i < timesteps.length; i++) {
      const d = ulps(table.timesteps[i]!, timesteps[i]!);
      assert.ok(
        d <= 1,
        `${c.name}: timestep ${i} is ${table.timesteps[i]}, diffusers ${timesteps[i]}`,
      );
      if (d === 0) exact++;
      total++;
    }
  }
  console.log(`euler timesteps: ${exact}/${total} bit-exact, the rest within 1 ulp`);
});

Deno.test("euler scaleModelInput() and step() match diffusers at every recorded index", async () => {
  let worst = 0;
  let exact = 0;
  let total = 0;
  for (const c of CASES) {
    const table = euler(c.config, c.T);
    for (const i of c.indices) {
      const load = async (what: string) =>
        (await loadNpy("float32", "euler", c.name, `step_${i}_${what}.npy`)).data;
      const x = await load("x");
      const v = await load("v");
      const scaled = assertAllClose(
        table.scaleModelInput(x, i),
        await load("scaled"),
        STEP_TOL,
        `${c.name}: scaleModelInput(x, ${i})`,
      );
      const stepped = assertAllClose(
        table.step(v, i, x),
        await load("prev"),
        STEP_TOL,
        `${c.name}: step(v, ${i}, x)`,
      );
      for (const d of [scaled, stepped]) {
        worst = Math.max(worst, d.maxRel);
        total++;
        if (d.maxAbs === 0) exact++;
      }
    }
  }
  console.log(`euler vs diffusers: ${exact}/${total} arrays bit-exact, max rel diff ${worst}`);
});

Deno.test("euler scaleIn(i) is 1/sqrt(sigma^2 + 1) and the last step lands on x0", () => {
  const table = euler(SVD, 25);
  for (let i = 0; i < 25; i++) {
    const s = table.sigmas[i]!;
    assert.ok(Math.abs(table.scaleIn(i) - 1 / Math.sqrt(s * s + 1)) <= 1e-7 / Math.sqrt(s * s + 1));
  }
  // σ_T = 0: the last step returns the denoised estimate x0 = c_out v + c_skip x.
  const x = new Float32Array([0.5, -1, 2]);
  const v = new Float32Array([0.25, 0.5, -0.75]);
  const s = table.sigmas[24]!;
  const got = table.step(v, 24, x);
  for (let k = 0; k < 3; k++) {
    const x0 = -s / Math.sqrt(s * s + 1) * v[k]! + x[k]! / (s * s + 1);
    assert.ok(Math.abs(got[k]! - x0) < 1e-6, `x0[${k}]: ${got[k]} vs ${x0}`);
  }
});

Deno.test("euler step() is pure: any order, into out, in place", () => {
  const table = euler(SVD, 50);
  const x = Float32Array.from({ length: 64 }, (_, k) => Math.sin(k) * 10);
  const v = Float32Array.from({ length: 64 }, (_, k) => Math.cos(k));
  const first = table.step(v, 7, x);
  table.step(v, 49, x);
  table.step(v, 0, x);
  assert.deepEqual(table.step(v, 7, x), first);
  const out = new Float32Array(64);
  assert.equal(table.step(v, 7, x, out), out);
  assert.deepEqual(out, first);
  const inPlace = x.slice();
  table.step(v, 7, inPlace, inPlace);
  assert.deepEqual(inPlace, first);
  assert.ok(Object.isFrozen(table));
});

Deno.test("euler refuses configs it does not implement, naming the field", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { prediction_type: "epsilon" },
      /^Cannot build Euler tables as 'prediction_type' must be v_prediction \(the only one implemented\): current value is epsilon$/,
    ],
    [{ prediction_type: "flow" }, /'prediction_type' must be one of epsilon, v_prediction/],
    [
      { use_karras_sigmas: false },
      /'use_karras_sigmas' must be true \(only Karras sigmas are implemented\): current value is false$/,
    ],
    [
      { use_karras_sigmas: false, use_exponential_sigmas: true },
      /'use_karras_sigmas' must be true/,
    ],
    [
      { interpolation_type: "log_linear" },
      /'interpolation_type' must be "linear" \(the only one implemented\): current value is log_linear$/,
    ],
    [{ interpolation_type: "cubic" }, /'interpolation_type' must be one of linear, log_linear/],
    [
      { timestep_type: "discrete" },
      /'timestep_type' must be "continuous" \(discrete timesteps are not implemented\)/,
    ],
    [{ final_sigmas_type: "sigma_min" }, /'final_sigmas_type' must be "zero"/],
    [
      { sigma_min: null },
      /'sigma_min' must be a number .*not implemented\): current value is null$/,
    ],
    [{ sigma_max: undefined }, /'sigma_max' must be a number .*current value is missing$/],
    [{ sigma_max: -1 }, /'sigma_max' must be a finite number > 0: current value is -1$/],
    [{ sigma_min: 800 }, /'sigma_min' must be below 'sigma_max' \(700\): current value is 800$/],
    [
      { timestep_spacing: "random" },
      /'timestep_spacing' must be one of leading, trailing, linspace/,
    ],
  ];
  for (const [over, pattern] of cases) {
    const config = { ...SVD, ...over };
    for (const key of Object.keys(over)) if (over[key] === undefined) delete config[key];
    assert.throws(() => parseEulerConfig(config), (e: unknown) => {
      assert.ok(e instanceof RangeError || e instanceof TypeError, String(e));
      assert.match((e as Error).message, pattern, JSON.stringify(over));
      return true;
    });
  }
  assert.throws(() => parseEulerConfig([]), /the config must be an object/);
  assert.throws(() => euler(SVD, 0), /'T' must be an integer in 1\.\.100000: current value is 0$/);
  assert.throws(() => euler(SVD, 2.5), RangeError);
  const table = euler(SVD, 4);
  const x = new Float32Array(3);
  assert.throws(() => table.step(x, 4, x), /'i' must be an integer in 0\.\.3: current value is 4$/);
  assert.throws(
    () => table.step(new Float32Array(2), 0, x),
    /'x' must have the length of 'v' \(2\): current value is 3$/,
  );
  assert.throws(() => table.scaleIn(-1), RangeError);
});
