// A Worker that takes a shared ProcessLock `rounds` times, and inside each hold writes its id
// into a shared log slot, sleeps, and checks that no one else entered meanwhile.
import { ProcessLock } from "../../ffi/mod.ts";

const self = globalThis as unknown as Worker & typeof globalThis;

self.onmessage = async (
  event: MessageEvent<
    { lock: SharedArrayBuffer; log: SharedArrayBuffer; id: number; rounds: number }
  >,
) => {
  const { id, rounds } = event.data;
  const lock = new ProcessLock(event.data.lock);
  const log = new Int32Array(event.data.log);
  let overlaps = 0;
  for (let k = 0; k < rounds; k++) {
    if (k % 2 === 0) await lock.acquire();
    else lock.acquireSync("test the lock");
    Atomics.store(log, 0, id);
    await new Promise((r) => setTimeout(r, 2));
    if (Atomics.load(log, 0) !== id) overlaps++;
    Atomics.add(log, 1, 1);
    lock.release();
  }
  self.postMessage({ overlaps });
};
