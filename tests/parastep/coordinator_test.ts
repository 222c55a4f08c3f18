import assert from "node:assert/strict";
import { webGpuLock } from "../../ffi/mod.ts";
import { assignDevices, runWorkers, type ShutdownReport } from "../../src/parastep/mod.ts";
import { jsToyCond, jsToyX0 } from "./workers_js_sampler.ts";
import { HANG_MS, JS_MODULE, within } from "./workers_support.ts";

Deno.test("assignDevices() splits CPU cores evenly, at least one thread per rank", () => {
  assert.deepEqual(assignDevices(2, { ep: "cpu", cores: 2 }), [
    { rank: 0, devices: 2, ep: "cpu", deviceId: 0, intraOpThreads: 1 },
    { rank: 1, devices: 2, ep: "cpu", deviceId: 0, intraOpThreads: 1 },
  ]);
  assert.deepEqual(assignDevices(3, { cores: 16 }).map((d) => d.intraOpThreads), [5, 5, 5]);
  assert.deepEqual(assignDevices(4, { cores: 1 }).map((d) => d.intraOpThreads), [1, 1, 1, 1]);
  assert.equal(assignDevices(1)[0]!.intraOpThreads, navigator.hardwareConcurrency);
});

Deno.test("assignDevices() puts rank r on CUDA device r and every rank on the one WebGPU device", () => {
  assert.deepEqual(assignDevices(3, { ep: "cuda", cores: 8 }).map((d) => d.deviceId), [0, 1, 2]);
  assert.deepEqual(assignDevices(3, { ep: "webgpu", cores: 8 }).map((d) => d.deviceId), [0, 0, 0]);
  assert.deepEqual(assignDevices(2, { ep: "auto", cores: 8 }).map((d) => d.deviceId), [0, 1]);
  assert.deepEqual(assignDevices(2, { ep: "auto", cores: 8 }).map((d) => d.ep), ["auto", "auto"]);
});

Deno.test("assignDevices() gives every rank that may run on WebGPU the process's WebGPU lock", () => {
  const lock = webGpuLock().buffer;
  for (const ep of ["webgpu", "auto"] as const) {
    assert.ok(assignDevices(2, { ep }).every((d) => d.webgpuLock === lock), ep);
  }
  for (const ep of ["cpu", "cuda"] as const) {
    assert.ok(assignDevices(2, { ep }).every((d) => d.webgpuLock === undefined), ep);
  }
});

Deno.test("assignDevices() refuses bad device counts, providers and core counts", () => {
  assert.throws(() => assignDevices(0), /'devices' must be an integer >= 1: current value is 0/);
  assert.throws(() => assignDevices(1.5), RangeError);
  // @ts-expect-error: an unknown provider, as a caller without types could pass
  assert.throws(() => assignDevices(2, { ep: "tpu" }), /'ep' must be one of cpu, cuda/);
  assert.throws(() => assignDevices(2, { cores: 0 }), /'cores' must be an integer >= 1/);
});

function job() {
  return {
    plan: { steps: 6, warmup: 1, devices: 2 },
    module: JS_MODULE,
    init: { steps: 6, cond: jsToyCond(8), guidance: 2 },
    x0: jsToyX0(8),
  };
}

Deno.test("runWorkers() checks its inputs before starting any worker", async () => {
  let started = false;
  const onShutdown = () => started = true;
  await assert.rejects(
    runWorkers({ ...job(), module: "./workers_js_sampler.ts" }, { onShutdown }),
    (e: unknown) => e instanceof TypeError && /'module' must be an absolute URL/.test(e.message),
  );
  await assert.rejects(
    // @ts-expect-error: latents of the wrong type, as a caller without types could pass
    runWorkers({ ...job(), x0: [1, 2, 3] }, { onShutdown }),
    (e: unknown) => e instanceof TypeError && /'x0' must be a Float32Array/.test(e.message),
  );
  await assert.rejects(
    runWorkers({ ...job(), plan: { steps: 4, warmup: 5, devices: 2 } }, { onShutdown }),
    RangeError,
  );
  await assert.rejects(
    runWorkers(job(), { devices: assignDevices(3), onShutdown }),
    /'devices' must hold one assignment per rank \(2\): current length is 3/,
  );
  await assert.rejects(
    runWorkers(job(), { closeTimeoutMs: -1, onShutdown }),
    /'closeTimeoutMs' must be a finite number >= 0/,
  );
  assert.equal(started, false);
});

Deno.test("runWorkers() terminates a worker that does not close within closeTimeoutMs", async () => {
  let shutdown: ShutdownReport[] | undefined;
  const base = job();
  const result = await within(
    HANG_MS,
    runWorkers(
      { ...base, init: { ...base.init, disposeHangs: true } },
      { closeTimeoutMs: 200, onShutdown: (r) => shutdown = r },
    ),
  );
  // The run itself succeeded; only the shutdown had to force the workers.
  assert.equal(result.output.length, 8);
  assert.deepEqual(result.shutdown, shutdown);
  for (const report of shutdown!) {
    assert.equal(report.timedOut, true);
    assert.equal(report.closed, false);
  }
});

Deno.test("runWorkers() reports wall times, per-round waits and progress up to the last step", async () => {
  const steps: number[] = [];
  const result = await within(
    HANG_MS,
    runWorkers(job(), { onStep: (i) => steps.push(i), progressIntervalMs: 0 }),
  );
  // Every step when the interval is 0, in order.
  assert.deepEqual(steps, [0, 1, 2, 3, 4, 5]);
  const { startMs, runMs, shutdownMs, totalMs } = result.wallMs;
  for (const ms of [startMs, runMs, shutdownMs]) assert.ok(ms >= 0 && ms <= totalMs);
  // T - W = 5 on N = 2: rounds 0..2.
  assert.deepEqual(result.waitMsPerRound.map((r) => r.length), [3, 3]);
  assert.ok(result.ranks[1]!.warmupWaitMs >= 0);
  assert.equal(typeof result.gen, "string");
});
