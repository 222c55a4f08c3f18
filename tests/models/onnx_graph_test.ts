import assert from "node:assert/strict";
import { Env, Session } from "../../ffi/mod.ts";
import { OnnxFormatError, readGraphIo } from "../../src/models/onnx_graph.ts";
import { AFFINE, boolModel, halfModel, int64Model } from "../support/models.ts";

const TINY = new URL("../../models/audioldm2-tiny", import.meta.url).pathname;

/** What ORT itself reports for a graph: the reference for the file reader. */
function sessionIo(env: Env, path: string) {
  using session = Session.create(env, path);
  return { inputs: session.inputs, outputs: session.outputs };
}

Deno.test("readGraphIo reads the inputs and outputs ORT reports, for every tiny AudioLDM2 graph", () => {
  using env = Env.create();
  const graphs = [...Deno.readDirSync(TINY)].filter((e) => e.name.endsWith(".onnx"));
  assert.equal(graphs.length, 8); // with clap_audio, for --waveforms
  for (const { name } of graphs) {
    const path = `${TINY}/${name}`;
    assert.deepEqual(readGraphIo(path), sessionIo(env, path), name);
  }
});

Deno.test("readGraphIo leaves out initializers and reads every element type", async () => {
  using env = Env.create();
  const dir = await Deno.makeTempDir();
  try {
    const models: Record<string, Uint8Array> = {
      affine: AFFINE.bytes(), // initializers w, b
      half: halfModel(),
      int64: int64Model(),
      bool: boolModel(),
    };
    for (const [name, bytes] of Object.entries(models)) {
      const path = `${dir}/${name}.onnx`;
      await Deno.writeFile(path, bytes);
      const io = readGraphIo(path);
      assert.deepEqual(io, sessionIo(env, path), name);
      assert.ok(io.inputs.every((i) => i.type !== null), name);
    }
    assert.deepEqual(readGraphIo(`${dir}/affine.onnx`).inputs.map((i) => i.name), ["x"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readGraphIo refuses files that are not ONNX models, naming the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const unet = await Deno.readFile(`${TINY}/unet.onnx`);
    const cases: [string, Uint8Array, RegExp][] = [
      ["empty", new Uint8Array(0), /holds no graph/],
      ["text", new TextEncoder().encode("this is not a model\n"), /./],
      ["truncated", unet.subarray(0, 4000), /truncated|overruns/],
    ];
    for (const [name, bytes, detail] of cases) {
      const path = `${dir}/${name}.onnx`;
      await Deno.writeFile(path, bytes);
      assert.throws(
        () => readGraphIo(path),
        (e: unknown) =>
          e instanceof OnnxFormatError && e.path === path && detail.test(e.message) &&
          e.message.startsWith(`Cannot read ONNX model ${path}: `),
        name,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
