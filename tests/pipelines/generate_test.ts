import assert from "node:assert/strict";
import { resolveModel } from "../../src/models/model.ts";
import { checkCapacity, checkRunPlan } from "../../src/pipelines/mod.ts";
import { TINY_AUDIOLDM2 } from "../support/model_folders.ts";

const model = resolveModel(TINY_AUDIOLDM2);

Deno.test("checkCapacity bounds devices by the memory their denoiser sessions need", () => {
  const unetBytes = Deno.statSync(`${TINY_AUDIOLDM2}/unet.onnx`).size;
  // Room for exactly three sessions (3 x the graph + 64 MiB of Worker each).
  const perDevice = 3 * unetBytes + 64 * 2 ** 20;
  const capacity = { cores: 64, availableBytes: 3 * perDevice };
  checkCapacity(model, "unet", { ep: "cpu", devices: 3 }, capacity);
  assert.throws(
    () => checkCapacity(model, "unet", { ep: "cpu", devices: 4 }, capacity),
    /^RangeError: Cannot run 4 devices: each holds its own unet session \(about [\d.]+ GiB here\), [\d.]+ GiB in all, and [\d.]+ GiB of memory is available; use --gpus 3 or fewer$/,
  );
  // Cores bound CPU devices and threads; a GPU device needs no core of its own.
  checkCapacity(model, "unet", { ep: "cpu", devices: 8 }, { cores: 2, availableBytes: 2 ** 40 });
  assert.throws(
    () => checkCapacity(model, "unet", { ep: "cpu", devices: 9 }, { cores: 2 }),
    /Cannot run 9 CPU devices: this machine has 2 cores, and more than 8 devices would only take turns on them; use --gpus 8 or fewer/,
  );
  checkCapacity(model, "unet", { ep: "cuda", devices: 3 }, { cores: 2, availableBytes: 2 ** 40 });
  assert.throws(
    () => checkCapacity(model, "unet", { ep: "cuda", devices: 1, threads: 3 }, { cores: 2 }),
    /Cannot use 3 threads per session: this machine has 2 cores/,
  );
});

Deno.test("checkRunPlan fills the defaults and refuses plans that cannot run", () => {
  assert.deepEqual(checkRunPlan(model, 20, {}), {
    mode: "parastep",
    devices: 1,
    warmup: 5,
    stride: 2,
    exchange: "gather",
  });
  assert.equal(checkRunPlan(model, 3, {}).warmup, 3); // capped at T
  assert.throws(
    () => checkRunPlan(model, 6, { devices: 4 }),
    /only 1 steps run in parallel, so use at most 1 devices/,
  );
});
