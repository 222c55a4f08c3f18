/**
 * The models `bench:ffi` times, shared by the Deno side (which writes them)
 * and described for the Node side by their input names and dims.
 *
 * @module
 */

import { buildModel } from "../tests/support/onnx_builder.ts";
import { AFFINE } from "../tests/support/models.ts";

/** A model to time and how to make its inputs. */
export interface BenchModel {
  name: string;
  bytes: Uint8Array;
  inputs: { name: string; dims: number[] }[];
}

/** One input (AFFINE) and a five-input graph shaped like a denoiser call. */
export function benchModels(): BenchModel[] {
  const names = ["sample", "timestep", "hidden", "hidden_1", "mask_1"];
  const five = buildModel({
    inputs: names.map((name) => ({ name, type: "float32" as const, dims: [2, 16] })),
    outputs: [{ name: "out", type: "float32", dims: [2, 16] }],
    nodes: names.slice(1).map((name, k) => ({
      op: "Add",
      inputs: [k === 0 ? "sample" : `s${k}`, name],
      outputs: [k === names.length - 2 ? "out" : `s${k + 1}`],
    })),
  });
  return [
    {
      name: "affine",
      bytes: AFFINE.bytes(),
      inputs: [{ name: "x", dims: [1, 3] }],
    },
    {
      name: "five-inputs",
      bytes: five,
      inputs: names.map((name) => ({ name, dims: [2, 16] })),
    },
  ];
}
