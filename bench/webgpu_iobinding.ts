/**
 * Measurement behind the README's "device-resident latents" note: the tiny UNet on WebGPU, per
 * call, as the Denoiser runs it today (`runAsync` with host feeds: the conditioning is uploaded on
 * every call) against ORT's IoBinding with the conditioning bound once (uploaded once, kept on the
 * device) and only the sample, the timestep and the output bound per call. Interleaved in blocks
 * of 5 calls, 8 blocks each; prints both medians and whether the outputs are identical.
 *
 * Usage: deno run -A bench/webgpu_iobinding.ts [webgpu|cpu]
 *
 * IoBinding is not in the binding (ffi/): this reads its OrtApi slots directly (133 RunWithBinding,
 * 134 CreateIoBinding, 135 ReleaseIoBinding, 136 BindInput, 137 BindOutput), since it showed no
 * gain to carry it for.
 *
 * @module
 */

import { Env, ortLibrary, Session, Tensor, Value } from "../ffi/mod.ts";
import { check, cString, pointerOut, readPointer } from "../ffi/library.ts";
import { median } from "../src/metrics/stats.ts";

const ep = (Deno.args[0] ?? "webgpu") as "webgpu" | "cpu";
const lib = Deno.dlopen(ortLibrary().path, {
  OrtGetApiBase: { parameters: [], result: "pointer" },
});
const base = new Deno.UnsafePointerView(lib.symbols.OrtGetApiBase()!);
const getApi = new Deno.UnsafeFnPointer(
  base.getPointer(0)!,
  { parameters: ["u32"], result: "pointer" } as const,
);
const table = new Deno.UnsafePointerView(getApi.call(ortLibrary().apiVersion)!);
const fn = <D extends Deno.ForeignFunction>(slot: number, def: D) =>
  new Deno.UnsafeFnPointer(table.getPointer(slot * 8)!, def);
const RunWithBinding = fn(
  133,
  { parameters: ["pointer", "pointer", "pointer"], result: "pointer", nonblocking: true } as const,
);
const CreateIoBinding = fn(134, { parameters: ["pointer", "buffer"], result: "pointer" } as const);
const ReleaseIoBinding = fn(135, { parameters: ["pointer"], result: "void" } as const);
const BindInput = fn(
  136,
  { parameters: ["pointer", "buffer", "pointer"], result: "pointer" } as const,
);
const BindOutput = fn(
  137,
  { parameters: ["pointer", "buffer", "pointer"], result: "pointer" } as const,
);

const { api } = ortLibrary();
using env = Env.create();
using session = Session.create(
  env,
  new URL("../models/audioldm2-tiny/unet.onnx", import.meta.url).pathname,
  { executionProvider: ep, intraOpThreads: 1 },
);
const wave = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.7));
const B = 2, L = 7, dims = [B, 8, 32, 4], n = B * 8 * 32 * 4;
const conditioning = {
  encoder_hidden_states: Value.fromTensor(env, new Tensor("float32", wave(B * 8 * 16), [B, 8, 16])),
  encoder_hidden_states_1: Value.fromTensor(
    env,
    new Tensor("float32", wave(B * L * 32), [B, L, 32]),
  ),
  encoder_attention_mask_1: Value.fromTensor(
    env,
    new Tensor("int64", new BigInt64Array(B * L).fill(1n), [B, L]),
  ),
};
const sample = new Tensor("float32", wave(n), dims);
const timestep = new Tensor("int64", new BigInt64Array([500n, 500n]), [B]);
const out = new Tensor("float32", new Float32Array(n), dims);

async function today(): Promise<void> {
  await session.runAsync({ sample, timestep, ...conditioning }, { outputs: { out_sample: out } });
}

const bindingOut = pointerOut();
check(CreateIoBinding.call(session.pointer, bindingOut), "CreateIoBinding");
const binding = readPointer(bindingOut, "CreateIoBinding");
for (const [name, value] of Object.entries(conditioning)) {
  check(BindInput.call(binding, cString(name), value.pointer), "BindInput");
}
const runOptionsOut = pointerOut();
check(api.CreateRunOptions.call(runOptionsOut), "CreateRunOptions");
const runOptions = readPointer(runOptionsOut, "CreateRunOptions");
const names = {
  sample: cString("sample"),
  timestep: cString("timestep"),
  out: cString("out_sample"),
};

async function bound(): Promise<void> {
  using x = Value.fromTensor(env, sample);
  using t = Value.fromTensor(env, timestep);
  using y = Value.fromTensor(env, out);
  check(BindInput.call(binding, names.sample, x.pointer), "BindInput");
  check(BindInput.call(binding, names.timestep, t.pointer), "BindInput");
  check(BindOutput.call(binding, names.out, y.pointer), "BindOutput");
  check(await RunWithBinding.call(session.pointer, runOptions, binding), "RunWithBinding");
}

try {
  await today();
  const first = out.data.slice();
  out.data.fill(0);
  await bound();
  const same = first.every((v, k) => v === out.data[k]);
  for (let k = 0; k < 3; k++) {
    await today();
    await bound();
  }
  const times = { today: [] as number[], bound: [] as number[] };
  for (let block = 0; block < 16; block++) {
    const which = block % 4 === 0 || block % 4 === 3 ? "today" : "bound";
    for (let k = 0; k < 5; k++) {
      const t0 = performance.now();
      await (which === "today" ? today() : bound());
      times[which].push(performance.now() - t0);
    }
  }
  console.log(
    `${ep}: Run with host feeds ${median(times.today).toFixed(2)} ms, IoBinding with the ` +
      `conditioning bound once ${median(times.bound).toFixed(2)} ms (median of ` +
      `${times.today.length} calls each; outputs ${same ? "identical" : "differ"})`,
  );
} finally {
  ReleaseIoBinding.call(binding);
  api.ReleaseRunOptions.call(runOptions);
  for (const value of Object.values(conditioning)) value.close();
}
