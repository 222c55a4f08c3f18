import assert from "node:assert/strict";
import { Env, Session, Tensor } from "../../ffi/mod.ts";
import { slowModel, testFloats } from "../support/models.ts";

const SIZE = 192;

Deno.test("Workers borrowing one session run it side by side and get a session of their own's outputs", async () => {
  using env = Env.create();
  const bytes = slowModel(SIZE, 12);
  // One intra-op thread: each run computes on the thread that called it.
  using shared = Session.create(env, bytes, { intraOpThreads: 1 });
  using reference = Session.create(env, bytes, { intraOpThreads: 1 });
  const workers = [1, 2].map(() =>
    new Worker(new URL("./_borrow_worker.ts", import.meta.url), { type: "module" })
  );
  const sync = new Int32Array(new SharedArrayBuffer(8));
  try {
    const pending = Promise.all(
      workers.map((w, k) =>
        new Promise<
          { y?: Float32Array; spans: [number, number][]; owned: boolean; error?: string }
        >(
          (resolve, reject) => {
            w.onmessage = (e) => resolve(e.data);
            w.onerror = (e) => {
              e.preventDefault();
              reject(new Error(e.message));
            };
            w.postMessage({ address: shared.address, seed: k + 1, size: SIZE, sync });
          },
        )
      ),
    );
    let settled = false;
    pending.finally(() => settled = true).catch(() => {});
    while (Atomics.load(sync, 0) < 2 && !settled) await new Promise((r) => setTimeout(r, 5));
    Atomics.store(sync, 1, 1);
    Atomics.notify(sync, 1);
    const replies = await pending;
    replies.forEach((r, k) => {
      assert.equal(r.error, undefined);
      assert.equal(r.owned, false);
      const x = new Tensor("float32", testFloats(SIZE * SIZE, k + 1), [SIZE, SIZE]);
      assert.deepEqual(r.y, reference.run({ x }).y!.data, `worker ${k}`);
    });
    const [a, b] = replies;
    const overlaps = a!.spans.some(([s1, e1]) => b!.spans.some(([s2, e2]) => s1 < e2 && s2 < e1));
    assert.ok(overlaps, "the two borrowers' runs never overlapped in time");
    // The borrowers closed; the owner's session still runs.
    const x = new Tensor("float32", testFloats(SIZE * SIZE, 3), [SIZE, SIZE]);
    assert.deepEqual(shared.run({ x }), reference.run({ x }));
  } finally {
    for (const w of workers) w.terminate();
  }
});

Deno.test("borrowing address 0 is refused", () => {
  using env = Env.create();
  assert.throws(() => Session.borrow(env, 0n), RangeError);
});
