// A Worker that opens AFFINE through a graph cache as soon as the test lets
// it (a shared flag), and replies with the cache status and the output.
import { Env, GraphCache, Session, Tensor } from "../../ffi/mod.ts";
import { testFloats } from "../support/models.ts";

const self = globalThis as unknown as Worker & typeof globalThis;

self.onmessage = (e: MessageEvent<{ dir: string; bytes: Uint8Array; go: Int32Array }>) => {
  try {
    using env = Env.create();
    Atomics.wait(e.data.go, 0, 0);
    using session = Session.create(env, e.data.bytes, {
      intraOpThreads: 1,
      graphCache: new GraphCache(e.data.dir),
    });
    const y = session.run({ x: new Tensor("float32", testFloats(21, 5), [7, 3]) }).y!;
    self.postMessage({ status: session.graphCacheStatus, y: y.data });
  } catch (err) {
    self.postMessage({ status: "failed", y: null, error: String(err) });
  }
};
