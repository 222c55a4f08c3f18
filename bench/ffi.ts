/**
 * `deno task bench:ffi`: per-call overhead of `Run` through parastep's binding
 * against onnxruntime-node's JS API on the same tiny models (their compute is
 * a few microseconds, so the time is mostly the bindings'). Each side runs in
 * its own process, one after the other, and reports the median of `--calls`
 * timed calls after a warm-up of a tenth as many, in two modes:
 *
 * - `fresh`: new input arrays and tensors on every call, outputs allocated by
 *   the runtime (what a naive caller does);
 * - `reuse`: inputs made once, outputs preallocated by the caller (what a
 *   denoising loop does; both APIs support it).
 *
 * Usage: deno task bench:ffi [--calls 2000] [--json PATH]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Env, Session, Tensor, Value } from "../ffi/mod.ts";
import { median } from "../src/metrics/stats.ts";
import { type BenchModel, benchModels } from "./_ffi_models.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { calls: { type: "string", default: "2000" }, json: { type: "string" } },
});
const calls = Number(values.calls);
if (!Number.isInteger(calls) || calls < 1000) {
  console.error(`bench:ffi: --calls must be an integer >= 1000: current value is ${values.calls}`);
  Deno.exit(2);
}

/** Times `fn` `calls` times after `calls / 10` warm-up calls; returns the median in µs. */
async function time(fn: () => unknown): Promise<number> {
  for (let k = 0; k < calls / 10; k++) await fn();
  const samples: number[] = [];
  for (let k = 0; k < calls; k++) {
    const t0 = performance.now();
    await fn();
    samples.push((performance.now() - t0) * 1000);
  }
  return median(samples);
}

const size = (dims: number[]) => dims.reduce((a, b) => a * b, 1);

async function measureBinding(model: BenchModel) {
  using env = Env.create();
  using session = Session.create(env, model.bytes, { intraOpThreads: 1 });
  const fresh = () =>
    Object.fromEntries(
      model.inputs.map((i) => [
        i.name,
        new Tensor("float32", new Float32Array(size(i.dims)).fill(0.5), i.dims),
      ]),
    );
  const values: Value[] = [];
  const keep = (v: Value) => (values.push(v), v);
  try {
    const inputs = Object.fromEntries(
      model.inputs.map((i) => [i.name, keep(Value.fromTensor(env, fresh()[i.name]!))]),
    );
    const outputs = Object.fromEntries(
      Object.entries(session.run(fresh())).map(([name, t]) => [
        name,
        keep(Value.fromTensor(env, new Tensor("float32", new Float32Array(t.size), t.dims))),
      ]),
    );
    return {
      fresh: await time(() => session.run(fresh())),
      freshAsync: await time(() => session.runAsync(fresh())),
      reuse: await time(() => session.run(inputs, { outputs })),
      reuseAsync: await time(() => session.runAsync(inputs, { outputs })),
    };
  } finally {
    for (const v of values) v.close();
  }
}

const dir = await Deno.makeTempDir({ prefix: "parastep-bench-ffi-" });
try {
  const rows = [];
  for (const model of benchModels()) {
    const path = `${dir}/${model.name}.onnx`;
    await Deno.writeFile(path, model.bytes);
    const ours = await measureBinding(model);
    const node = await new Deno.Command("node", {
      args: [
        new URL("./_ffi_node.mjs", import.meta.url).pathname,
        path,
        String(calls),
        JSON.stringify(Object.fromEntries(model.inputs.map((i) => [i.name, i.dims]))),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (!node.success) throw new Error(`the onnxruntime-node side failed (exit ${node.code})`);
    const theirs = JSON.parse(new TextDecoder().decode(node.stdout));
    rows.push({
      model: model.name,
      inputs: model.inputs.length,
      calls,
      parastep: ours,
      ortNode: theirs,
    });
  }
  console.log(
    `Median per-call latency in µs (${calls} calls each, one intra-op thread, Deno ${Deno.version.deno}):`,
  );
  console.log(
    "| model | mode | parastep run (sync) | parastep runAsync | onnxruntime-node run |",
  );
  console.log("|---|---|---|---|---|");
  const f = (x: number) => x.toFixed(1);
  for (const r of rows) {
    console.log(
      `| ${r.model} | fresh | ${f(r.parastep.fresh)} | ${f(r.parastep.freshAsync)} | ${
        f(r.ortNode.fresh)
      } |`,
    );
    console.log(
      `| ${r.model} | reuse | ${f(r.parastep.reuse)} | ${f(r.parastep.reuseAsync)} | ${
        f(r.ortNode.reuse)
      } |`,
    );
  }
  if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(rows, null, 2));
} finally {
  await Deno.remove(dir, { recursive: true });
}
