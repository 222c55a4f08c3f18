// The onnxruntime-node side of `deno task bench:ffi`: loads the model at argv[2]
// and prints {"fresh": µs, "reuse": µs}, the median of argv[3] timed calls of
// session.run (after a warm-up of a tenth as many) with float32 inputs whose
// dims by name are the JSON of argv[4]: fresh inputs and runtime-allocated
// outputs, then inputs made once and preallocated outputs.
import * as ort from "onnxruntime-node";

const [path, callsArg, dimsArg] = process.argv.slice(2);
const dimsByName = JSON.parse(dimsArg);
const calls = Number(callsArg);
const session = await ort.InferenceSession.create(path, {
  intraOpNumThreads: 1,
  executionProviders: ["cpu"],
});
const size = (dims) => dims.reduce((a, b) => a * b, 1);
const fresh = () =>
  Object.fromEntries(
    Object.entries(dimsByName).map((
      [name, dims],
    ) => [name, new ort.Tensor("float32", new Float32Array(size(dims)).fill(0.5), dims)]),
  );

async function time(fn) {
  for (let k = 0; k < calls / 10; k++) await fn();
  const samples = [];
  for (let k = 0; k < calls; k++) {
    const t0 = performance.now();
    await fn();
    samples.push((performance.now() - t0) * 1000);
  }
  samples.sort((a, b) => a - b);
  const mid = samples.length >> 1;
  return samples.length % 2 ? samples[mid] : (samples[mid - 1] + samples[mid]) / 2;
}

const inputs = fresh();
const outputs = Object.fromEntries(
  Object.entries(await session.run(fresh())).map((
    [name, t],
  ) => [name, new ort.Tensor("float32", new Float32Array(t.size), t.dims)]),
);
const result = {
  fresh: await time(() => session.run(fresh())),
  reuse: await time(() => session.run(inputs, outputs)),
};
await session.release();
console.log(JSON.stringify(result));
