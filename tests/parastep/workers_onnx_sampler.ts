/**
 * A sampler module (see `SamplerModule` in src/parastep/devices.ts) whose denoiser is an ONNX
 * graph run through ONNX Runtime (`Session.runAsync`), so the Worker tests exercise the real ORT
 * path: sessions per Worker, thread counts from the device assignment, and cancellation of runs
 * in flight when the sampler is disposed.
 *
 * The graph, for latents `x` of dims `[rows, 256]` doubled for CFG to `[2 * rows, 256]`:
 * `h_0 = x + cond + t * bias`, `h_{k+1} = tanh(h_k @ W_{k mod 2})` for `depth` layers,
 * `eps = 0.5 * h_depth + 0.1 * x`. Each layer is a `[2 * rows, 256] x [256, 256]` MatMul, so
 * `depth` sets how long a call takes. Guidance and the DDIM-like step run in JS, as a family's
 * scheduler does.
 *
 * @module
 */

import { Env, Session, Tensor } from "../../ffi/mod.ts";
import type { DeviceAssignment, OpenedSampler } from "../../src/parastep/mod.ts";
import { testFloats } from "../support/models.ts";
import { buildModel } from "../support/onnx_builder.ts";
import { guideFloat32, stepFloat32, toyTable } from "./_toy.ts";

/** Latent row width (the MatMul size). */
export const WIDTH = 256;

/** How the toy fails, and where. */
export interface OnnxToyFailure {
  /** The rank that fails. */
  rank: number;
  /** The step index of the failing model call (ignored for `open`). */
  step: number;
  /** `model`: the call at `step` rejects before running; `open`: the model bytes are corrupt. */
  how: "model" | "open";
}

/** The structured-cloneable init payload of the ONNX toy. */
export interface OnnxToyInit {
  /** The ONNX model bytes (from {@link onnxToyModel}). */
  model: Uint8Array;
  /** Latent rows: latents are `[rows, 256]`, eps `[2 * rows, 256]`. */
  rows: number;
  /** `T`: the tables are built for this many steps. */
  steps: number;
  /** Guidance scale `g`. */
  guidance: number;
  /** `[rows * 256]`: the conditioning of the conditional half (the unconditional half gets 0). */
  cond: Float32Array;
  /** An injected failure. */
  fail?: OnnxToyFailure;
  /**
   * A BroadcastChannel name on which each model call announces `{ rank, step }` as it starts, so a
   * test can act while runs are known to be in flight.
   */
  probe?: string;
}

/**
 * The toy denoiser graph with `depth` MatMul + Tanh layers; inputs `x`, `cond` (`[batch, 256]`)
 * and `t` (`[1]`), output `eps` (`[batch, 256]`).
 */
export function onnxToyModel(depth: number): Uint8Array {
  // Gain about 2 per layer (256 * E[w^2] = 2.08): activations stay O(1) through any depth instead
  // of decaying into denormals, which would make deep graphs crawl.
  const scale = 2.5 / Math.sqrt(WIDTH);
  const w0 = testFloats(WIDTH * WIDTH, 21).map((v) => v * scale);
  const w1 = testFloats(WIDTH * WIDTH, 22).map((v) => v * scale);
  const bias = testFloats(WIDTH, 23);
  const nodes = [
    { op: "Mul", inputs: ["t", "bias"], outputs: ["tb"] },
    { op: "Add", inputs: ["x", "cond"], outputs: ["xc"] },
    { op: "Add", inputs: ["xc", "tb"], outputs: ["h0"] },
  ];
  for (let k = 0; k < depth; k++) {
    nodes.push({ op: "MatMul", inputs: [`h${k}`, k % 2 === 0 ? "w0" : "w1"], outputs: [`m${k}`] });
    nodes.push({ op: "Tanh", inputs: [`m${k}`], outputs: [`h${k + 1}`] });
  }
  nodes.push({ op: "Mul", inputs: [`h${depth}`, "half"], outputs: ["a"] });
  nodes.push({ op: "Mul", inputs: ["x", "tenth"], outputs: ["b"] });
  nodes.push({ op: "Add", inputs: ["a", "b"], outputs: ["eps"] });
  return buildModel({
    inputs: [
      { name: "x", type: "float32", dims: ["batch", WIDTH] },
      { name: "cond", type: "float32", dims: ["batch", WIDTH] },
      { name: "t", type: "float32", dims: [1] },
    ],
    outputs: [{ name: "eps", type: "float32", dims: ["batch", WIDTH] }],
    initializers: [
      { name: "w0", type: "float32", dims: [WIDTH, WIDTH], data: w0 },
      { name: "w1", type: "float32", dims: [WIDTH, WIDTH], data: w1 },
      { name: "bias", type: "float32", dims: [WIDTH], data: bias },
      { name: "half", type: "float32", dims: [], data: new Float32Array([0.5]) },
      { name: "tenth", type: "float32", dims: [], data: new Float32Array([0.1]) },
    ],
    nodes,
  });
}

/**
 * Open the toy on `device`: one ORT session with the device's intra-op threads.
 *
 * @param init See {@link OnnxToyInit}.
 * @param device The rank's assignment.
 * @returns The sampler; disposing it cancels runs in flight and waits for them.
 */
export function openSampler(init: OnnxToyInit, device: DeviceAssignment): OpenedSampler {
  const { rows, steps: T, guidance: g } = init;
  const n = rows * WIDTH;
  const fail = init.fail?.rank === device.rank ? init.fail : undefined;
  // A corrupt model: the first bytes overwritten, as a truncated download would leave it.
  const bytes = fail?.how === "open" ? init.model.slice(0, 64).fill(0xff) : init.model;
  const env = Env.create();
  let session: Session;
  try {
    session = Session.create(env, bytes, {
      executionProvider: device.ep,
      deviceId: device.deviceId,
      intraOpThreads: device.intraOpThreads,
      interOpThreads: 1,
      allowSpinning: false,
    });
  } catch (error) {
    env.close();
    throw error;
  }
  // [2 * rows, 256]: conditioning of the doubled batch, [0; cond]; made once per generation.
  const condBoth = new Float32Array(2 * n);
  condBoth.set(init.cond, n);
  const condTensor = new Tensor("float32", condBoth, [2 * rows, WIDTH]);
  // Per-step tables: the model's time input and the DDIM-like alpha-bars.
  const t = new Float32Array(T);
  for (let i = 0; i < T; i++) t[i] = 1 - i / T;
  const { alphaBar } = toyTable(T);
  const probe = init.probe === undefined ? null : new BroadcastChannel(init.probe);

  return {
    executionProvider: session.executionProvider,
    async model(x, i) {
      if (fail?.how === "model" && i === fail.step) {
        throw new Error(`injected failure at step ${i} on rank ${device.rank}`);
      }
      // Fresh input arrays per call: with one session serving every rank (the in-process
      // reference), calls interleave, so a reused input buffer could be overwritten mid-run.
      const doubled = new Float32Array(2 * n); // [2 * rows, 256]: [x; x]
      doubled.set(x);
      doubled.set(x, n);
      probe?.postMessage({ rank: device.rank, step: i });
      const { eps } = await session.runAsync({
        x: new Tensor("float32", doubled, [2 * rows, WIDTH]),
        cond: condTensor,
        t: new Tensor("float32", t.subarray(i, i + 1), [1]),
      });
      if (!(eps?.data instanceof Float32Array)) throw new Error("toy model returned no eps");
      return eps.data;
    },
    guide: (eps) => guideFloat32(eps, n, g),
    step: (e, i, x) => stepFloat32(alphaBar, e, i, x),
    async [Symbol.asyncDispose]() {
      probe?.close();
      await session.closeAsync();
      env.close();
    },
  };
}
