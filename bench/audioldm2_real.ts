/**
 * `deno run --allow-all bench/audioldm2_real.ts --size base`: per-step UNet latency of a real-size
 * AudioLDM2 folder (random weights, `python -m models.export audioldm2 --size base|large|music`)
 * through parastep (ONNX Runtime through Deno FFI) and through diffusers' PyTorch UNet on the same
 * weights (bench/audioldm2_torch_unet.py rebuilds them from the same seed), with the same intra-op
 * threads and input shapes: one denoising step of 10.24 s of audio is one UNet call at batch 2
 * (classifier-free guidance) over 256 latent frames. Both are loaded at once and alternate call by
 * call (never running together), so load from elsewhere hits both alike; `--no-interleave` runs
 * them one after the other instead. Peak RSS is each process's own (VmHWM).
 *
 * Prints one JSON object: folder bytes, session open time, parastep median / min step latency and
 * peak RSS (VmHWM), and the PyTorch side's.
 *
 * Usage:
 *   deno run --allow-all bench/audioldm2_real.ts --size base [--dir .cache/models/audioldm2-base]
 *     [--threads 2] [--frames 256] [--repeats 3] [--python .venv/bin/python] [--no-torch] [--no-interleave]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Env, Tensor } from "../ffi/mod.ts";
import { median } from "../src/metrics/stats.ts";
import { openComponent, resolveModel } from "../src/models/model.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    size: { type: "string", default: "base" },
    dir: { type: "string" },
    threads: { type: "string", default: "2" },
    frames: { type: "string", default: "256" },
    sequence: { type: "string", default: "12" },
    repeats: { type: "string", default: "3" },
    python: { type: "string", default: ".venv/bin/python" },
    "no-torch": { type: "boolean", default: false },
    "no-interleave": { type: "boolean", default: false },
  },
});

const dir = values.dir ?? `.cache/models/audioldm2-${values.size}`;
const threads = Number(values.threads);
const frames = Number(values.frames);
const L = Number(values.sequence);
const repeats = Number(values.repeats);

function folderBytes(path: string): number {
  let total = 0;
  for (const e of Deno.readDirSync(path)) {
    const p = `${path}/${e.name}`;
    total += e.isDirectory ? folderBytes(p) : Deno.statSync(p).size;
  }
  return total;
}

function peakRssMiB(): number {
  const status = Deno.readTextFileSync("/proc/self/status");
  const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? NaN);
  return kb / 1024;
}

/** Standard normal values from a fixed LCG + Box-Muller (inputs only; the values do not matter). */
function noise(n: number, seed: number): Float32Array<ArrayBuffer> {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 1) / 4294967297;
  for (let k = 0; k < n; k++) {
    out[k] = Math.sqrt(-2 * Math.log(next())) * Math.cos(2 * Math.PI * next());
  }
  return out;
}

const model = resolveModel(dir);
const c = model.manifest.config;
const C = Number(c["latentChannels"]);
const Wl = Number(c["melBins"]) / Number(c["vaeScaleFactor"]);
const lmDim = Number(c["languageModelDim"]);
const t5Dim = Number(model.manifest.components["unet"]!.inputs[3]!.dims[2]);
const env = Env.create({ logLevel: "error" });
let t0 = performance.now();
const unet = openComponent(env, model, "unet", { intraOpThreads: threads });
const openMs = performance.now() - t0;
const feeds = {
  sample: new Tensor("float32", noise(2 * C * frames * Wl, 1), [2, C, frames, Wl]),
  timestep: new Tensor("int64", new BigInt64Array([981n, 981n]), [2]),
  encoder_hidden_states: new Tensor("float32", noise(2 * 8 * lmDim, 2), [2, 8, lmDim]),
  encoder_hidden_states_1: new Tensor("float32", noise(2 * L * t5Dim, 3), [2, L, t5Dim]),
  encoder_attention_mask_1: new Tensor("int64", new BigInt64Array(2 * L).fill(1n), [2, L]),
};
// With --interleave (the default) the PyTorch side is loaded beside this one and the two alternate
// call by call, so a burst of load from elsewhere slows both alike; with --no-interleave they run one
// after the other and never share memory.
const torchArgs = [
  "bench/audioldm2_torch_unet.py",
  "--size",
  values.size,
  "--threads",
  String(threads),
  "--frames",
  String(frames),
  "--sequence",
  String(L),
  "--repeats",
  String(repeats),
];
const times: number[] = [];
let torch: unknown = null;
const interleave = !values["no-torch"] && !values["no-interleave"];
if (interleave) {
  const child = new Deno.Command(values.python, {
    args: [...torchArgs, "--serve"],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter())
    .getReader();
  const writer = child.stdin.getWriter();
  const readLine = async () => {
    const { value, done } = await lines.read();
    if (done) throw new Error("the PyTorch side ended early");
    return value;
  };
  if ((await readLine()) !== "ready") throw new Error("the PyTorch side did not start");
  for (let k = 0; k <= repeats; k++) {
    t0 = performance.now();
    unet.run(feeds);
    if (k > 0) times.push(performance.now() - t0);
    await writer.write(new TextEncoder().encode("go\n"));
    await readLine();
  }
  await writer.close();
  torch = JSON.parse(await readLine());
  await child.status;
} else {
  for (let k = 0; k <= repeats; k++) {
    t0 = performance.now();
    unet.run(feeds);
    if (k > 0) times.push(performance.now() - t0);
  }
}
const parastep = {
  openMs,
  medianMs: median(times),
  minMs: Math.min(...times),
  timesMs: times,
  peakRssMiB: peakRssMiB(),
};
unet.close();
env.close();

if (!values["no-torch"] && !interleave) {
  const out = await new Deno.Command(values.python, { args: torchArgs, stderr: "inherit" })
    .output();
  if (!out.success) throw new Error(`the PyTorch side failed (exit ${out.code})`);
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  torch = JSON.parse(lines.at(-1)!);
}

function lineSplitter(): TransformStream<string, string> {
  let buffer = "";
  return new TransformStream({
    transform(chunk, controller) {
      buffer += chunk;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        controller.enqueue(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
      }
    },
    flush(controller) {
      if (buffer) controller.enqueue(buffer);
    },
  });
}

console.log(JSON.stringify(
  {
    size: values.size,
    dir,
    folderBytes: folderBytes(dir),
    threads,
    frames,
    batch: 2,
    parastep,
    torch,
  },
  null,
  2,
));
