/**
 * Small ONNX models for the binding's tests, each paired with the same maths
 * written in TypeScript.
 *
 * @module
 */

import { buildModel } from "./onnx_builder.ts";

/** Deterministic pseudo-random floats in [-1, 1) (a 32-bit LCG), for test data. */
export function testFloats(n: number, seed: number): Float32Array<ArrayBuffer> {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/** float32: `y = relu(x @ w + b)` and `z = x * x`, x of dims [batch, 3]. */
export const AFFINE = {
  w: testFloats(12, 1), // [3, 4]
  b: testFloats(4, 2), // [4]
  bytes(): Uint8Array {
    return buildModel({
      inputs: [{ name: "x", type: "float32", dims: ["batch", 3] }],
      outputs: [
        { name: "y", type: "float32", dims: ["batch", 4] },
        { name: "z", type: "float32", dims: ["batch", 3] },
      ],
      initializers: [
        { name: "w", type: "float32", dims: [3, 4], data: AFFINE.w },
        { name: "b", type: "float32", dims: [4], data: AFFINE.b },
      ],
      nodes: [
        { op: "MatMul", inputs: ["x", "w"], outputs: ["xw"] },
        { op: "Add", inputs: ["xw", "b"], outputs: ["xwb"] },
        { op: "Relu", inputs: ["xwb"], outputs: ["y"] },
        { op: "Mul", inputs: ["x", "x"], outputs: ["z"] },
      ],
    });
  },
  /** The same maths in float32 arithmetic. */
  expected(x: Float32Array, batch: number): { y: Float32Array; z: Float32Array } {
    const y = new Float32Array(batch * 4);
    const z = new Float32Array(batch * 3);
    for (let r = 0; r < batch; r++) {
      for (let c = 0; c < 4; c++) {
        let acc = 0;
        for (let k = 0; k < 3; k++) {
          acc = Math.fround(acc + Math.fround(x[r * 3 + k]! * AFFINE.w[k * 4 + c]!));
        }
        y[r * 4 + c] = Math.max(0, Math.fround(acc + AFFINE.b[c]!));
      }
      for (let k = 0; k < 3; k++) z[r * 3 + k] = Math.fround(x[r * 3 + k]! ** 2);
    }
    return { y, z };
  },
};

/** float16: `y = f16(f32(x) * 3 + 0.5)`, x of dims [batch, 4]. */
export function halfModel(): Uint8Array {
  return buildModel({
    inputs: [{ name: "x", type: "float16", dims: ["batch", 4] }],
    outputs: [{ name: "y", type: "float16", dims: ["batch", 4] }],
    initializers: [
      { name: "three", type: "float32", dims: [], data: new Float32Array([3]) },
      { name: "half", type: "float32", dims: [], data: new Float32Array([0.5]) },
    ],
    nodes: [
      { op: "Cast", inputs: ["x"], outputs: ["x32"], attributes: [{ name: "to", int: 1 }] },
      { op: "Mul", inputs: ["x32", "three"], outputs: ["m"] },
      { op: "Add", inputs: ["m", "half"], outputs: ["a"] },
      { op: "Cast", inputs: ["a"], outputs: ["y"], attributes: [{ name: "to", int: 10 }] },
    ],
  });
}

/** int64: `y = x * x + 7`, x of dims [batch, 2]. */
export function int64Model(): Uint8Array {
  return buildModel({
    inputs: [{ name: "x", type: "int64", dims: ["batch", 2] }],
    outputs: [{ name: "y", type: "int64", dims: ["batch", 2] }],
    initializers: [{ name: "seven", type: "int64", dims: [], data: new BigInt64Array([7n]) }],
    nodes: [
      { op: "Mul", inputs: ["x", "x"], outputs: ["sq"] },
      { op: "Add", inputs: ["sq", "seven"], outputs: ["y"] },
    ],
  });
}

/** int32: `y = x - 3 * c` with c = [1, 2], x of dims [batch, 2]. */
export function int32Model(): Uint8Array {
  return buildModel({
    inputs: [{ name: "x", type: "int32", dims: ["batch", 2] }],
    outputs: [{ name: "y", type: "int32", dims: ["batch", 2] }],
    initializers: [{ name: "c", type: "int32", dims: [2], data: new Int32Array([3, 6]) }],
    nodes: [{ op: "Sub", inputs: ["x", "c"], outputs: ["y"] }],
  });
}

/** bool: `y = (not a) xor b`, both of dims [batch, 3]. */
export function boolModel(): Uint8Array {
  return buildModel({
    inputs: [
      { name: "a", type: "bool", dims: ["batch", 3] },
      { name: "b", type: "bool", dims: ["batch", 3] },
    ],
    outputs: [{ name: "y", type: "bool", dims: ["batch", 3] }],
    nodes: [
      { op: "Not", inputs: ["a"], outputs: ["na"] },
      { op: "Xor", inputs: ["na", "b"], outputs: ["y"] },
    ],
  });
}

/**
 * A slow model for cancellation and concurrency: `depth` chained
 * [size, size] x [size, size] matrix products (about 2 * size^3 * depth flops).
 */
export function slowModel(size: number, depth: number): Uint8Array {
  const w = testFloats(size * size, 9).map((v) => v / Math.sqrt(size));
  const nodes = [];
  for (let k = 0; k < depth; k++) {
    nodes.push({
      op: "MatMul",
      inputs: [k === 0 ? "x" : `h${k}`, "w"],
      outputs: [k === depth - 1 ? "y" : `h${k + 1}`],
    });
  }
  return buildModel({
    inputs: [{ name: "x", type: "float32", dims: [size, size] }],
    outputs: [{ name: "y", type: "float32", dims: [size, size] }],
    initializers: [{ name: "w", type: "float32", dims: [size, size], data: w }],
    nodes,
  });
}

/**
 * A graph whose declared output dims mislead: `y = reshape(x, [-1])` is
 * declared `["n"]` but holds n * 3 elements for x of dims [n, 3].
 */
export function misleadingModel(): Uint8Array {
  return buildModel({
    inputs: [{ name: "x", type: "float32", dims: ["n", 3] }],
    outputs: [{ name: "y", type: "float32", dims: ["n"] }],
    initializers: [{ name: "flat", type: "int64", dims: [1], data: new BigInt64Array([-1n]) }],
    nodes: [{ op: "Reshape", inputs: ["x", "flat"], outputs: ["y"] }],
  });
}

/**
 * A model that is slow to load and quick to run: `y = x + w_0 + ... + w_{nodes-1}`, one Add node
 * and one 16-float initializer per term. ONNX Runtime's graph passes over it grow faster than
 * linearly (32000 nodes took 13 s to load on one core here, 16000 took 6 s), and it checks its load
 * cancellation flag between the passes and between initializers, so a load can be cancelled.
 */
export function slowLoadingModel(nodes: number): Uint8Array {
  const initializers = [];
  const graph = [];
  for (let k = 0; k < nodes; k++) {
    initializers.push({
      name: `w${k}`,
      type: "float32" as const,
      dims: [16],
      data: new Float32Array(16).fill(k / nodes),
    });
    graph.push({
      op: "Add",
      inputs: [k === 0 ? "x" : `h${k}`, `w${k}`],
      outputs: [k === nodes - 1 ? "y" : `h${k + 1}`],
    });
  }
  return buildModel({
    inputs: [{ name: "x", type: "float32", dims: [16] }],
    outputs: [{ name: "y", type: "float32", dims: [16] }],
    initializers,
    nodes: graph,
  });
}

/**
 * AFFINE with its weights in an external data file: writes `affine.onnx` and
 * `affine.onnx.data` into `dir` and returns the model's path. `scale`
 * multiplies the weights (a different model with the same graph).
 */
export function writeExternalAffine(dir: string, scale = 1): string {
  const w = AFFINE.w.map((v) => Math.fround(v * scale));
  const b = AFFINE.b.map((v) => Math.fround(v * scale));
  const data = new Uint8Array(w.byteLength + b.byteLength);
  data.set(new Uint8Array(w.buffer), 0);
  data.set(new Uint8Array(b.buffer), w.byteLength);
  const location = "affine.onnx.data";
  const bytes = buildModel({
    inputs: [{ name: "x", type: "float32", dims: ["batch", 3] }],
    outputs: [{ name: "y", type: "float32", dims: ["batch", 4] }],
    initializers: [
      { name: "w", type: "float32", dims: [3, 4], data: w, external: { location, offset: 0 } },
      {
        name: "b",
        type: "float32",
        dims: [4],
        data: b,
        external: { location, offset: w.byteLength },
      },
    ],
    nodes: [
      { op: "MatMul", inputs: ["x", "w"], outputs: ["xw"] },
      { op: "Add", inputs: ["xw", "b"], outputs: ["xwb"] },
      { op: "Relu", inputs: ["xwb"], outputs: ["y"] },
    ],
  });
  Deno.writeFileSync(`${dir}/${location}`, data);
  Deno.writeFileSync(`${dir}/affine.onnx`, bytes);
  return `${dir}/affine.onnx`;
}
