import assert from "node:assert/strict";
import { ProcessLock, shareWebGpuLock, webGpuLock } from "../../ffi/mod.ts";

Deno.test("a ProcessLock admits one holder at a time across Workers", async () => {
  const lock = new ProcessLock();
  const log = new SharedArrayBuffer(8);
  const rounds = 20;
  const workers = [1, 2, 3].map(() =>
    new Worker(new URL("./_lock_worker.ts", import.meta.url), { type: "module" })
  );
  try {
    const results = await Promise.all(
      workers.map((w, id) =>
        new Promise<{ overlaps: number }>((resolve, reject) => {
          w.onmessage = (e) => resolve(e.data);
          w.onerror = (e) => reject(e.error ?? e.message);
          w.postMessage({ lock: lock.buffer, log, id: id + 1, rounds });
        })
      ),
    );
    assert.deepEqual(results.map((r) => r.overlaps), [0, 0, 0]);
    assert.equal(new Int32Array(log)[1], 3 * rounds);
    // Free again at the end.
    assert.ok(lock.tryAcquire());
    lock.release();
  } finally {
    for (const w of workers) w.terminate();
  }
});

Deno.test("a ProcessLock waiter gives up when cancelled, and a realm cannot wait on itself", async () => {
  const lock = new ProcessLock();
  const other = new ProcessLock(lock.buffer); // another realm's view of the same word
  assert.ok(other.tryAcquire());
  assert.equal(lock.tryAcquire(), false);
  let cancel: Error | undefined;
  const waiting = lock.acquire(() => cancel);
  setTimeout(() => cancel = new Error("stop"), 20);
  await assert.rejects(waiting, /stop/);
  // The holder releases; a waiter gets it.
  const next = lock.acquire();
  other.release();
  await next;
  assert.ok(lock.heldHere);
  assert.throws(
    () => lock.acquireSync("run"),
    /Cannot run while another WebGPU call of this thread/,
  );
  lock.release();
  assert.throws(() => lock.release(), /does not hold/);
});

Deno.test("shareWebGpuLock() makes this realm use another realm's WebGPU lock", () => {
  const mine = webGpuLock();
  const theirs = new ProcessLock();
  shareWebGpuLock(theirs.buffer);
  try {
    assert.equal(webGpuLock().buffer, theirs.buffer);
  } finally {
    shareWebGpuLock(mine.buffer);
  }
  assert.equal(webGpuLock().buffer, mine.buffer);
});
