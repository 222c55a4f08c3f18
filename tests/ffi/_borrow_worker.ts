// A Worker that borrows a session the test opened (its address), waits for
// the test's go, runs it a few times on its seed's input, recording when each run started and ended,
// closes its borrowed session and replies.
import { Env, Session, Tensor } from "../../ffi/mod.ts";
import { testFloats } from "../support/models.ts";

const self = globalThis as unknown as Worker & typeof globalThis;

interface Init {
  address: bigint;
  seed: number;
  size: number;
  /** [ready count, go flag]: both borrowers start their runs together. */
  sync: Int32Array;
}

self.onmessage = async (e: MessageEvent<Init>) => {
  try {
    using env = Env.create();
    const session = Session.borrow(env, e.data.address);
    const { size, seed, sync } = e.data;
    const x = new Tensor("float32", testFloats(size * size, seed), [size, size]);
    Atomics.add(sync, 0, 1);
    Atomics.notify(sync, 0);
    Atomics.wait(sync, 1, 0);
    const spans: [number, number][] = [];
    let y: Float32Array | undefined;
    for (let k = 0; k < 4; k++) {
      const start = performance.timeOrigin + performance.now();
      y = (await session.runAsync({ x })).y!.data as Float32Array;
      spans.push([start, performance.timeOrigin + performance.now()]);
    }
    await session.closeAsync();
    self.postMessage({ y, spans, owned: session.owned });
  } catch (err) {
    self.postMessage({ error: String(err) });
  }
};
