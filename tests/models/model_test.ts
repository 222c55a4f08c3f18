import assert from "node:assert/strict";
import { allocate, elementCount, Env, GraphCache, type Session, Tensor } from "../../ffi/mod.ts";
import {
  defaultGraphCacheDir,
  GRAPH_CACHE_ENV,
  type ModelFolder,
  openComponent,
  openComponentAsync,
  type OpenComponentOptions,
  resolveModel,
} from "../../src/models/model.ts";
import { testFloats } from "../support/models.ts";

const TINY = decodeURIComponent(new URL("../../models/audioldm2-tiny", import.meta.url).pathname);
const DIMS: Record<string, number> = {
  batch: 2,
  sequence: 5,
  positions: 9,
  frames: 16,
  mel_frames: 64,
};

/** Inputs for every input of `session`: small ids and masks of 1 for int64, test floats else. */
function feeds(session: Session): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  session.inputs.forEach((input, k) => {
    const dims = input.dims.map((d) => typeof d === "number" ? d : DIMS[d] ?? 2);
    const n = elementCount(dims);
    if (input.type === "int64") {
      const data = allocate("int64", n);
      for (let i = 0; i < n; i++) {
        data[i] = input.name.includes("mask") ? 1n : BigInt((i * 7 + k) % 10);
      }
      out[input.name] = new Tensor("int64", data, dims);
    } else {
      out[input.name] = new Tensor("float32", testFloats(n, 100 + k), dims);
    }
  });
  return out;
}

/** Opens, runs once on fixed inputs, closes; the outputs' bytes by name, and the cache status. */
function runOnce(env: Env, model: ModelFolder, component: string, options: OpenComponentOptions) {
  const session = openComponent(env, model, component, { intraOpThreads: 1, ...options });
  try {
    const outputs = session.run(feeds(session));
    return {
      status: session.graphCacheStatus,
      bytes: Object.fromEntries(
        Object.entries(outputs).map(([name, t]) => [
          name,
          new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength).slice(),
        ]),
      ),
    };
  } finally {
    session.close();
  }
}

function tempDir(): string & Disposable {
  const dir = Deno.makeTempDirSync({ prefix: "model-test-" });
  return Object.assign(dir, { [Symbol.dispose]: () => Deno.removeSync(dir, { recursive: true }) });
}

const model = resolveModel(TINY);
const components = Object.keys(model.manifest.components);

Deno.test("every tiny component gives the same outputs bit for bit uncached, when its optimised graph is written, and from the cache", () => {
  using dir = tempDir();
  using env = Env.create();
  const cache = new GraphCache(`${dir}`, { onWarning: (m) => assert.fail(m) });
  for (const component of components) {
    const plain = runOnce(env, model, component, {});
    const written = runOnce(env, model, component, { cache });
    const hit = runOnce(env, model, component, { cache });
    assert.equal(written.status, "written", component);
    assert.equal(hit.status, "hit", component);
    assert.deepEqual(written.bytes, plain.bytes, `${component}: written vs uncached`);
    assert.deepEqual(hit.bytes, plain.bytes, `${component}: cached vs uncached`);
  }
});

Deno.test("an asynchronous open writes and then hits the same cache entry as a synchronous one", async () => {
  using dir = tempDir();
  using env = Env.create();
  const cache = new GraphCache(`${dir}`, { onWarning: (m) => assert.fail(m) });
  const plain = runOnce(env, model, "unet", {});
  const written = await openComponentAsync(env, model, "unet", { intraOpThreads: 1, cache });
  written.close();
  assert.equal(written.graphCacheStatus, "written");
  const hit = runOnce(env, model, "unet", { cache });
  assert.equal(hit.status, "hit");
  assert.deepEqual(hit.bytes, plain.bytes);
  const hitAsync = await openComponentAsync(env, model, "unet", { intraOpThreads: 1, cache });
  try {
    assert.equal(hitAsync.graphCacheStatus, "hit");
    const out = await hitAsync.runAsync(feeds(hitAsync));
    for (const [name, t] of Object.entries(out)) {
      assert.deepEqual(
        new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
        hit.bytes[name],
      );
    }
  } finally {
    hitAsync.close();
  }
});

Deno.test("graphs loaded from their path or from bytes give the same outputs", () => {
  using env = Env.create();
  for (const component of ["vae_decoder", "vocoder"]) {
    const path = runOnce(env, model, component, { source: "path" });
    const bytes = runOnce(env, model, component, { source: "bytes" });
    assert.deepEqual(path.bytes, bytes.bytes, component);
  }
});

Deno.test("the default graph cache folder is .cache/ort in the checkout, or $PARASTEP_CACHE_DIR", () => {
  const saved = Deno.env.get(GRAPH_CACHE_ENV);
  try {
    Deno.env.delete(GRAPH_CACHE_ENV);
    assert.equal(
      defaultGraphCacheDir(),
      decodeURIComponent(new URL("../../.cache/ort", import.meta.url).pathname),
    );
    Deno.env.set(GRAPH_CACHE_ENV, "/somewhere/else");
    assert.equal(defaultGraphCacheDir(), "/somewhere/else");
  } finally {
    if (saved === undefined) Deno.env.delete(GRAPH_CACHE_ENV);
    else Deno.env.set(GRAPH_CACHE_ENV, saved);
  }
});

Deno.test("cache: true caches in $PARASTEP_CACHE_DIR", () => {
  using dir = tempDir();
  const saved = Deno.env.get(GRAPH_CACHE_ENV);
  try {
    Deno.env.set(GRAPH_CACHE_ENV, `${dir}/ort`);
    using env = Env.create();
    assert.equal(runOnce(env, model, "vocoder", { cache: true }).status, "written");
    assert.equal(runOnce(env, model, "vocoder", { cache: true }).status, "hit");
    assert.equal([...Deno.readDirSync(`${dir}/ort/graphs`)].length, 1);
  } finally {
    if (saved === undefined) Deno.env.delete(GRAPH_CACHE_ENV);
    else Deno.env.set(GRAPH_CACHE_ENV, saved);
  }
});
