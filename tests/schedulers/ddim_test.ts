import assert from "node:assert/strict";
import { ddim, type DdimTable, parseDdimConfig } from "../../src/schedulers/mod.ts";
import { assertAllClose, fixturePath, loadJson, loadNpy, maxDiff } from "../fixtures/mod.ts";

/**
 * Tolerance of step() against diffusers' float32 output: relative to each element, plus an absolute
 * floor for elements near zero. The implementation mirrors torch's float32 operation order, so the
 * observed difference is 0; the tolerance leaves room for a 1-ulp difference in a libm call.
 */
const STEP_TOL = { rtol: 1e-6, atol: 1e-6 } as const;
/**
 * Tolerance of alphas_cumprod (float32 values) against diffusers'. All cases are bit-exact except
 * rescale_betas_zero_snr, where torch's vectorised float32 sqrt (used for arrays of ~1000) is not
 * correctly rounded (up to 1 ulp low on ~0.6% of inputs) and ours is: up to 2 ulp there.
 */
const ALPHA_TOL = { rtol: 1e-6, atol: 0 } as const;

interface Case {
  readonly name: string;
  readonly config: unknown;
  readonly T: number;
  readonly indices: readonly number[];
  readonly finalAlphaCumprod: number;
}

async function loadCases(): Promise<Case[]> {
  const cases: Case[] = [];
  for await (const entry of Deno.readDir(fixturePath("ddim"))) {
    if (!entry.isDirectory) continue;
    const meta = (await loadJson("ddim", entry.name, "case.json")) as {
      T: number;
      indices: number[];
      final_alpha_cumprod: number;
    };
    cases.push({
      name: entry.name,
      config: await loadJson("ddim", entry.name, "config.json"),
      T: meta.T,
      indices: meta.indices,
      finalAlphaCumprod: meta.final_alpha_cumprod,
    });
  }
  cases.sort((a, b) => a.name.localeCompare(b.name));
  assert.ok(cases.length >= 10, `expected the DDIM fixture grid, found ${cases.length} cases`);
  return cases;
}

const CASES = await loadCases();

Deno.test("ddim timesteps match diffusers set_timesteps exactly", async () => {
  for (const c of CASES) {
    const table = ddim(c.config, c.T);
    const expected = (await loadNpy("int64", "ddim", c.name, "timesteps.npy")).data;
    assert.equal(table.timesteps.length, expected.length, `${c.name}: number of timesteps`);
    assert.deepEqual(
      Array.from(table.timesteps),
      Array.from(expected, Number),
      `${c.name}: timesteps`,
    );
  }
});

Deno.test("ddim alphas_cumprod match diffusers (float32, torch linspace/cumprod)", async () => {
  let worst = 0;
  let exactCases = 0;
  for (const c of CASES) {
    const table = ddim(c.config, c.T);
    const expected = (await loadNpy("float32", "ddim", c.name, "alphas_cumprod.npy")).data;
    const d = assertAllClose(table.alphasCumprod, expected, ALPHA_TOL, `${c.name}: alphas_cumprod`);
    worst = Math.max(worst, d.maxRel);
    if (d.maxAbs === 0) exactCases++;
    assert.equal(table.finalAlphaCumprod, c.finalAlphaCumprod, `${c.name}: final_alpha_cumprod`);
    for (let i = 0; i < c.T; i++) {
      const t = table.timesteps[i]!;
      assert.equal(table.alphaBar[i], table.alphasCumprod[t], `${c.name}: alphaBar[${i}]`);
      const prev = table.prevTimesteps[i]!;
      const aPrev = prev >= 0 ? table.alphasCumprod[prev] : table.finalAlphaCumprod;
      assert.equal(table.alphaBarPrev[i], aPrev, `${c.name}: alphaBarPrev[${i}]`);
    }
  }
  console.log(
    `alphas_cumprod: ${exactCases}/${CASES.length} cases bit-exact, max rel diff ${worst}`,
  );
});

Deno.test("ddim step() matches diffusers at i = 0, 1, T-1", async () => {
  let worstAbs = 0;
  let worstRel = 0;
  for (const c of CASES) {
    const table = ddim(c.config, c.T);
    for (const i of c.indices) {
      const eps = (await loadNpy("float32", "ddim", c.name, `step_${i}_eps.npy`)).data;
      const x = (await loadNpy("float32", "ddim", c.name, `step_${i}_x.npy`)).data;
      const prev = (await loadNpy("float32", "ddim", c.name, `step_${i}_prev.npy`)).data;
      const got = table.step(eps, i, x);
      const d = assertAllClose(got, prev, STEP_TOL, `${c.name}: step(eps, ${i}, x)`);
      worstAbs = Math.max(worstAbs, d.maxAbs);
      worstRel = Math.max(worstRel, d.maxRel);
    }
  }
  console.log(`step vs diffusers: max abs diff ${worstAbs}, max rel diff ${worstRel}`);
});

Deno.test("ddim step() is pure: same inputs give the same output, in any order, into out", async () => {
  const c = CASES.find((k) => k.name === "audioldm2_T50")!;
  const table = ddim(c.config, c.T);
  const eps = (await loadNpy("float32", "ddim", c.name, "step_1_eps.npy")).data;
  const x = (await loadNpy("float32", "ddim", c.name, "step_1_x.npy")).data;
  const first = table.step(eps, 1, x);
  table.step(eps, 0, x);
  table.step(eps, c.T - 1, x);
  const out = new Float32Array(x.length);
  const again = table.step(eps, 1, x, out);
  assert.equal(again, out);
  assert.deepEqual(again, first);
  // Writing into x itself (in place) gives the same values.
  const xCopy = x.slice();
  table.step(eps, 1, xCopy, xCopy);
  assert.deepEqual(xCopy, first);
  assert.ok(Object.isFrozen(table));
});

Deno.test("ddim AudioLDM2 table: 200 steps are 996, 991, ..., 1 and alpha-bar is float32", async () => {
  const config = await loadJson("ddim", "audioldm2_T200", "config.json");
  const table: DdimTable = ddim(config, 200);
  assert.equal(table.timesteps[0], 996);
  assert.equal(table.timesteps[199], 1);
  assert.equal(table.prevTimesteps[199], -4);
  assert.equal(table.alphaBarPrev[199], table.alphasCumprod[0]); // set_alpha_to_one false
  for (let i = 0; i < 199; i++) {
    assert.equal(table.timesteps[i]! - table.timesteps[i + 1]!, 5);
    assert.equal(table.alphaBarPrev[i], table.alphaBar[i + 1]);
  }
  for (const a of table.alphasCumprod) assert.equal(a, Math.fround(a));
  assert.equal(table.initNoiseSigma, 1);
});

Deno.test("ddim refuses invalid configs with the field, allowed values and received value", () => {
  const cases: [unknown, typeof TypeError | typeof RangeError, RegExp][] = [
    [
      { beta_schedule: "cosine" },
      RangeError,
      /^Cannot build DDIM tables as 'beta_schedule' must be one of linear, scaled_linear, squaredcos_cap_v2: current value is cosine$/,
    ],
    [
      { prediction_type: "flow" },
      RangeError,
      /'prediction_type' must be one of epsilon, v_prediction, sample: current value is flow$/,
    ],
    [
      { timestep_spacing: 3 },
      TypeError,
      /'timestep_spacing' must be one of leading, trailing, linspace: current value is 3$/,
    ],
    [
      { thresholding: true },
      RangeError,
      /'thresholding' must be false .*not supported.*: current value is true$/,
    ],
    [
      { clip_sample: "yes" },
      TypeError,
      /'clip_sample' must be true or false: current value is yes$/,
    ],
    [
      { steps_offset: -1 },
      RangeError,
      /'steps_offset' must be an integer in 0\.\.100000: current value is -1$/,
    ],
    [
      { steps_offset: 0.5 },
      RangeError,
      /'steps_offset' must be an integer in 0\.\.100000: current value is 0.5$/,
    ],
    [
      // A corrupt manifest must not make the tables allocate gigabytes.
      { num_train_timesteps: 1e9 },
      RangeError,
      /'num_train_timesteps' must be an integer in 1\.\.100000: current value is 1000000000$/,
    ],
    [{ num_train_timesteps: "1000" }, TypeError, /'num_train_timesteps' must be an integer/],
    [
      { beta_end: 1.5 },
      RangeError,
      /'beta_end' must be a finite number >= 0 and < 1: current value is 1.5$/,
    ],
    [{ clip_sample_range: 0 }, RangeError, /'clip_sample_range' must be a finite number > 0/],
    [{ trained_betas: "x" }, TypeError, /'trained_betas' must be an array of numbers or null/],
    [
      { num_train_timesteps: 3, trained_betas: [0.1, 0.2] },
      RangeError,
      /'trained_betas' must have num_train_timesteps \(3\) entries: current length is 2$/,
    ],
    [
      { num_train_timesteps: 2, trained_betas: [0.1, 1] },
      RangeError,
      /'trained_betas' must hold finite numbers in \[0, 1\): entry 1 is 1$/,
    ],
    [null, TypeError, /the config must be an object: current value is null$/],
  ];
  for (const [config, Ctor, pattern] of cases) {
    assert.throws(() => parseDdimConfig(config), (err: unknown) => {
      assert.ok(err instanceof Ctor, `${JSON.stringify(config)} threw ${String(err)}`);
      assert.match((err as Error).message, pattern);
      return true;
    });
  }
});

Deno.test("ddim refuses T out of range and schedules diffusers would get wrong", () => {
  assert.throws(
    () => ddim({}, 0),
    /'T' must be an integer in 1..1000 \(num_train_timesteps\): current value is 0$/,
  );
  assert.throws(() => ddim({}, 1001), RangeError);
  assert.throws(() => ddim({}, 2.5), RangeError);
  // leading + steps_offset 1 + T = N puts timestep 1000 outside 0..999.
  assert.throws(
    () => ddim({ steps_offset: 1 }, 1000),
    /timestep 0 must lie in 0..999: current value is 1000/,
  );
  // numpy's arange(1000, 0, -1000/61) has 62 elements: diffusers would run 62 steps ending at t = -1.
  assert.throws(
    () => ddim({ timestep_spacing: "trailing" }, 61),
    /trailing spacing with T = 61 and num_train_timesteps = 1000 gives 62 timesteps/,
  );
});

Deno.test("ddim step() refuses mismatched lengths, bad i and wrong array types", () => {
  const table = ddim({}, 10);
  const x = new Float32Array(8);
  assert.throws(
    () => table.step(new Float32Array(7), 0, x),
    /'x' must have the length of 'eps' \(7\): current value is 8$/,
  );
  assert.throws(() => table.step(x, 10, x), /'i' must be an integer in 0..9: current value is 10$/);
  assert.throws(() => table.step(x, -1, x), RangeError);
  assert.throws(
    () => table.step(x, 0, x, new Float32Array(3)),
    /'out' must have the length of 'x' \(8\): current value is 3$/,
  );
  assert.throws(
    () => table.step(new Float64Array(8) as unknown as Float32Array, 0, x),
    (err: unknown) =>
      err instanceof TypeError &&
      /'eps' must be a Float32Array: current value is a Float64Array/.test(err.message),
  );
});

Deno.test("ddim timesteps are a pure function of (config, T): rebuilding gives equal tables", () => {
  const a = ddim({ timestep_spacing: "trailing" }, 16);
  const b = ddim({ timestep_spacing: "trailing" }, 16);
  assert.deepEqual(a.timesteps, b.timesteps);
  assert.equal(maxDiff(a.alphaBar, b.alphaBar).maxAbs, 0);
});
