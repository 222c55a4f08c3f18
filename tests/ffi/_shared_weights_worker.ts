// A Worker that opens a model on weights shared by the test (a
// SharedArrayBuffer) and a prepacked container the test owns (its address),
// runs it once, closes, and replies with the output.
import {
  Env,
  PrepackedWeights,
  Session,
  SharedWeights,
  type SharedWeightsData,
  Tensor,
} from "../../ffi/mod.ts";

const self = globalThis as unknown as Worker & typeof globalThis;

interface Init {
  bytes: Uint8Array;
  data: SharedWeightsData;
  address: bigint;
  x: Float32Array<ArrayBuffer>;
}

self.onmessage = (e: MessageEvent<Init>) => {
  try {
    using env = Env.create();
    using weights = SharedWeights.open(e.data.data);
    using prepacked = PrepackedWeights.borrow(e.data.address);
    using session = Session.create(env, e.data.bytes, {
      intraOpThreads: 1,
      sharedWeights: weights,
      prepackedWeights: prepacked,
    });
    const y = session.run({ x: new Tensor("float32", e.data.x, [5, 64]) }).y!;
    self.postMessage({ y: y.data });
  } catch (err) {
    self.postMessage({ error: String(err) });
  }
};
