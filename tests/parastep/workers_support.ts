/**
 * Shared pieces of the Worker tests: module URLs, a hang detector, and the in-process reference.
 *
 * @module
 */

import {
  assignDevices,
  type Exchange,
  type OpenedSampler,
  type ParaStepPlan,
  runInProcess,
  type ShutdownReport,
} from "../../src/parastep/mod.ts";
import assert from "node:assert/strict";

/** The pure-JS float32 toy sampler module. */
export const JS_MODULE = new URL("./workers_js_sampler.ts", import.meta.url);
/** The ONNX toy sampler module. */
export const ONNX_MODULE = new URL("./workers_onnx_sampler.ts", import.meta.url);

/**
 * A generous bound for "ends within seconds": a hang detector, not a speed assertion. Worker
 * start-up (module compile, session creation) is a large part of it on a loaded 2-core machine.
 */
export const HANG_MS = 20_000;

/** Resolve or reject as `promise` does, or reject if it takes longer than `ms` (a hang). */
export async function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Still running after ${ms} ms: a hang`)), ms);
  });
  try {
    return await Promise.race([promise, hang]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Run `plan` in this process over one sampler opened by `open` for rank 0 of one device (the
 * reference: runInProcess has been checked against the literal algorithm), and dispose it.
 */
export async function inProcessReference(
  plan: ParaStepPlan,
  open: (
    device: ReturnType<typeof assignDevices>[number],
  ) => Promise<OpenedSampler> | OpenedSampler,
  x0: Float32Array,
  intraOpThreads = 1,
  exchange: Exchange = "gather",
) {
  const device = { ...assignDevices(1)[0]!, intraOpThreads };
  await using sampler = await open(device);
  return await runInProcess(plan, () => sampler, x0, { exchange });
}

/** Assert that every worker replied `closed` (sampler disposed, nothing in flight), none timed out. */
export function assertAllClosed(reports: ShutdownReport[] | undefined, devices: number): void {
  assert.ok(reports, "onShutdown was never called");
  assert.equal(reports.length, devices);
  reports.forEach((report, rank) => {
    assert.equal(report.rank, rank);
    assert.equal(report.timedOut, false, `rank ${rank} timed out closing`);
    assert.equal(report.closed, true, `rank ${rank} did not reply closed`);
    assert.equal(report.close?.disposeError ?? null, null, `rank ${rank} failed to dispose`);
  });
}
