import assert from "node:assert/strict";
import {
  Env,
  OnnxFormatError,
  PrepackedWeights,
  readInitializers,
  Session,
  SharedWeights,
  shareWeights,
  Tensor,
} from "../../ffi/mod.ts";
import { buildModel } from "../support/onnx_builder.ts";
import { AFFINE, testFloats, writeExternalAffine } from "../support/models.ts";

/** y = x @ w (w of [64, 64], big enough for MLAS to pre-pack it), then + b. */
const W = testFloats(64 * 64, 11);
const B = testFloats(64, 12);
function matmulModel(): Uint8Array {
  return buildModel({
    inputs: [{ name: "x", type: "float32", dims: ["batch", 64] }],
    outputs: [{ name: "y", type: "float32", dims: ["batch", 64] }],
    initializers: [
      { name: "w", type: "float32", dims: [64, 64], data: W },
      { name: "b", type: "float32", dims: [64], data: B },
      { name: "steps", type: "int64", dims: [2], data: new BigInt64Array([3n, 4n]) },
    ],
    nodes: [
      { op: "MatMul", inputs: ["x", "w"], outputs: ["xw"] },
      { op: "Add", inputs: ["xw", "b"], outputs: ["y"] },
    ],
  });
}
const X = new Tensor("float32", testFloats(5 * 64, 13), [5, 64]);

Deno.test("readInitializers finds each initializer's name, type, dims and bytes in the model", () => {
  const bytes = matmulModel();
  const found = readInitializers(bytes);
  assert.deepEqual(found.map((i) => [i.name, i.dataType, i.dims]), [
    ["w", 1, [64, 64]],
    ["b", 1, [64]],
    ["steps", 7, [2]],
  ]);
  const w = found[0]!.data;
  assert.equal(w.kind, "raw");
  if (w.kind !== "raw") return;
  const read = new Float32Array(bytes.slice(w.offset, w.offset + w.byteLength).buffer);
  assert.deepEqual(read, W);
});

Deno.test("readInitializers reports external data with its file, offset and length", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const found = readInitializers(Deno.readFileSync(writeExternalAffine(dir)));
    assert.deepEqual(found.map((i) => [i.name, i.data]), [
      ["w", { kind: "external", location: "affine.onnx.data", offset: 0, byteLength: 48 }],
      ["b", { kind: "external", location: "affine.onnx.data", offset: 48, byteLength: 16 }],
    ]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("readInitializers refuses bytes that are not a protobuf", () => {
  assert.throws(() => readInitializers(new Uint8Array([0x3a, 0xff, 0xff])), OnnxFormatError);
});

Deno.test("shareWeights copies the weights into one shared buffer, 64-byte aligned", () => {
  const shared = shareWeights(matmulModel(), { minBytes: 0 });
  assert.ok(shared.buffer instanceof SharedArrayBuffer);
  assert.deepEqual(shared.tensors.map((t) => [t.name, t.type, t.dims]), [
    ["w", "float32", [64, 64]],
    ["b", "float32", [64]],
    ["steps", "int64", [2]],
  ]);
  for (const t of shared.tensors) assert.equal(t.offset % 64, 0);
  const w = shared.tensors[0]!;
  assert.deepEqual(new Float32Array(shared.buffer, w.offset, 64 * 64), W);
  // Small tensors stay with ORT by default.
  assert.deepEqual(shareWeights(matmulModel()).tensors.map((t) => t.name), ["w"]);
});

Deno.test("shareWeights reads external data from the model's folder", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const path = writeExternalAffine(dir);
    const shared = shareWeights(Deno.readFileSync(path), { dir, minBytes: 0 });
    const w = shared.tensors.find((t) => t.name === "w")!;
    assert.deepEqual(new Float32Array(shared.buffer, w.offset, 12), AFFINE.w);
    // Without the folder, external data is left to ORT.
    assert.deepEqual(shareWeights(Deno.readFileSync(path), { minBytes: 0 }).tensors, []);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("sessions on shared weights and one prepacked container give the outputs of a plain session", () => {
  using env = Env.create();
  const bytes = matmulModel();
  using plain = Session.create(env, bytes, { intraOpThreads: 1 });
  const want = plain.run({ x: X }).y!;
  const data = shareWeights(bytes, { minBytes: 0 });
  const weights = SharedWeights.open(data);
  const prepacked = PrepackedWeights.create();
  const sessions = [0, 1].map(() =>
    Session.create(env, bytes, {
      intraOpThreads: 1,
      sharedWeights: weights,
      prepackedWeights: prepacked,
    })
  );
  // The sessions hold both: closing the handles now releases them only after the sessions.
  weights.close();
  prepacked.close();
  for (const s of sessions) assert.deepEqual(s.run({ x: X }).y, want);
  // The session reads the shared memory: changing it changes the outputs.
  const w = data.tensors.find((t) => t.name === "b")!;
  new Float32Array(data.buffer, w.offset, 64).fill(100);
  const moved = sessions[0]!.run({ x: X }).y!.data as Float32Array;
  assert.ok(
    moved.every((v, k) => Math.abs(v - ((want.data[k] as number) - B[k % 64]! + 100)) < 1e-3),
  );
  for (const s of sessions) s.close();
  assert.throws(() => prepacked.pointer, /closed/);
});

Deno.test("a borrowed container is not released by its borrower", () => {
  using env = Env.create();
  using owner = PrepackedWeights.create();
  const borrowed = PrepackedWeights.borrow(owner.address);
  assert.equal(borrowed.owned, false);
  borrowed.close();
  // Still usable through its owner.
  const bytes = matmulModel();
  using weights = SharedWeights.open(shareWeights(bytes));
  using s = Session.create(env, bytes, { sharedWeights: weights, prepackedWeights: owner });
  assert.equal(s.run({ x: X }).y!.dims.join(","), "5,64");
  assert.throws(() => PrepackedWeights.borrow(0n), RangeError);
});

Deno.test("Workers of one process share one container by its address", async () => {
  const bytes = matmulModel();
  const data = shareWeights(bytes);
  using env = Env.create();
  using plain = Session.create(env, bytes, { intraOpThreads: 1 });
  const want = plain.run({ x: X }).y!.data;
  using container = PrepackedWeights.create();
  const workers = [0, 1].map(() =>
    new Worker(new URL("./_shared_weights_worker.ts", import.meta.url), { type: "module" })
  );
  try {
    const replies = await Promise.all(
      workers.map((w) =>
        new Promise<{ y?: Float32Array; error?: string }>((resolve, reject) => {
          w.onmessage = (e) => resolve(e.data);
          w.onerror = (e) => {
            e.preventDefault();
            reject(new Error(e.message));
          };
          w.postMessage({ bytes, data, address: container.address, x: X.data });
        })
      ),
    );
    for (const r of replies) {
      assert.equal(r.error, undefined);
      assert.deepEqual(r.y, want);
    }
  } finally {
    for (const w of workers) w.terminate();
  }
});
