// A Worker that owns one session over AFFINE and one slow model. On "init" it
// loads them; on "go" it runs them, recording when each slow run started and
// ended so the test can see that the two workers ran at the same time.
import { Env, Session, Tensor } from "../../ffi/mod.ts";
import { AFFINE, slowModel, testFloats } from "../support/models.ts";

const self = globalThis as unknown as Worker & typeof globalThis;
let env: Env | undefined;
let affine: Session | undefined;
let slow: Session | undefined;

self.onmessage = (event: MessageEvent<{ kind: "init" | "go" | "close"; seed: number }>) => {
  const { kind, seed } = event.data;
  if (kind === "init") {
    env = Env.create();
    affine = Session.create(env, AFFINE.bytes(), { intraOpThreads: 1 });
    slow = Session.create(env, slowModel(256, 12), { intraOpThreads: 1 });
    self.postMessage({ kind: "ready" });
  } else if (kind === "go") {
    const x = testFloats(6, seed);
    const y = affine!.run({ x: new Tensor("float32", x, [2, 3]) }).y!.data;
    const big = new Tensor("float32", testFloats(256 * 256, seed), [256, 256]);
    const spans: [number, number][] = [];
    for (let k = 0; k < 6; k++) {
      const start = performance.timeOrigin + performance.now();
      slow!.run({ x: big });
      spans.push([start, performance.timeOrigin + performance.now()]);
    }
    self.postMessage({ kind: "done", x, y, spans });
  } else {
    affine?.close();
    slow?.close();
    env?.close();
    self.postMessage({ kind: "closed" });
  }
};
