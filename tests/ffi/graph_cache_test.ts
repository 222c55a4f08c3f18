import assert from "node:assert/strict";
import {
  Env,
  GraphCache,
  type GraphKey,
  readInitializers,
  Session,
  type SessionOptions,
  Tensor,
} from "../../ffi/mod.ts";
import { AFFINE, testFloats, writeExternalAffine } from "../support/models.ts";

const X = new Tensor("float32", testFloats(21, 5), [7, 3]);

/** A cache in a fresh temporary folder that records its warnings. */
function tempCache(runtime?: { version: string; buildInfo: string }) {
  const dir = Deno.makeTempDirSync({ prefix: "graph-cache-test-" });
  const warnings: string[] = [];
  const cache = new GraphCache(`${dir}/cache`, {
    onWarning: (m) => warnings.push(m),
    ...(runtime ? { runtime } : {}),
  });
  return {
    dir,
    cache,
    warnings,
    entries: () => {
      try {
        return [...Deno.readDirSync(`${dir}/cache/graphs`)].map((e) => e.name).sort();
      } catch {
        return [];
      }
    },
    [Symbol.dispose]: () => Deno.removeSync(dir, { recursive: true }),
  };
}

function open(env: Env, source: string | Uint8Array, options: SessionOptions) {
  const session = Session.create(env, source, { intraOpThreads: 1, ...options });
  try {
    return { status: session.graphCacheStatus, y: session.run({ x: X }).y! };
  } finally {
    session.close();
  }
}

function bitsOf(t: Tensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

Deno.test("the first session writes the optimised graph, the next loads it, and both give ORT's own outputs bit for bit", () => {
  using t = tempCache();
  using env = Env.create();
  const plain = open(env, AFFINE.bytes(), {});
  const first = open(env, AFFINE.bytes(), { graphCache: t.cache });
  const second = open(env, AFFINE.bytes(), { graphCache: t.cache });
  assert.equal(plain.status, "off");
  assert.equal(first.status, "written");
  assert.equal(second.status, "hit");
  assert.deepEqual(bitsOf(first.y), bitsOf(plain.y));
  assert.deepEqual(bitsOf(second.y), bitsOf(plain.y));
  const [entry] = t.entries();
  assert.equal(t.entries().length, 1);
  // The stored graph is ORT's optimised one (MatMul + Add + Relu fused), not a copy of the input.
  const stored = new TextDecoder("latin1").decode(
    Deno.readFileSync(`${t.dir}/cache/graphs/${entry}/model.onnx`),
  );
  assert.ok(stored.includes("FusedGemm"), "the cached graph is not the optimised one");
  assert.ok(!new TextDecoder("latin1").decode(AFFINE.bytes()).includes("Gemm"));
  assert.deepEqual(t.warnings, []);
});

Deno.test("level 'disabled' bypasses the cache", () => {
  using t = tempCache();
  using env = Env.create();
  const r = open(env, AFFINE.bytes(), { graphCache: t.cache, graphOptimizationLevel: "disabled" });
  assert.equal(r.status, "off");
  assert.deepEqual(t.entries(), []);
});

Deno.test("another model gets another entry", () => {
  using t = tempCache();
  using env = Env.create();
  const a = writeExternalAffine(t.dir, 1);
  assert.equal(open(env, a, { graphCache: t.cache }).status, "written");
  assert.equal(open(env, a, { graphCache: t.cache }).status, "hit");
  // Same graph file, other weights in its external data file (same size): a different model.
  const before = Deno.readFileSync(a);
  const other = Deno.makeTempDirSync({ dir: t.dir });
  writeExternalAffine(other, 2);
  Deno.copyFileSync(`${other}/affine.onnx.data`, `${t.dir}/affine.onnx.data`);
  assert.deepEqual(Deno.readFileSync(a), before);
  const changed = open(env, a, { graphCache: t.cache });
  assert.equal(changed.status, "written");
  assert.equal(t.entries().length, 2);
  // And it computes with the new weights, not the cached old ones.
  const fresh = open(env, a, {});
  assert.deepEqual(bitsOf(changed.y), bitsOf(fresh.y));
});

Deno.test("another ONNX Runtime build gets another entry", () => {
  using t = tempCache();
  using env = Env.create();
  assert.equal(open(env, AFFINE.bytes(), { graphCache: t.cache }).status, "written");
  const newer = new GraphCache(t.cache.dir, {
    runtime: { version: "9.99.0", buildInfo: "another build" },
    onWarning: (m) => t.warnings.push(m),
  });
  assert.equal(open(env, AFFINE.bytes(), { graphCache: newer }).status, "written");
  assert.equal(open(env, AFFINE.bytes(), { graphCache: newer }).status, "hit");
  assert.equal(t.entries().length, 2);
});

Deno.test("another execution provider or CUDA device gets another key", () => {
  // Only the CPU provider runs here, so this checks the key, not a session.
  using t = tempCache();
  const runtime = { version: "1.30.0", buildInfo: "b" };
  const key: GraphKey = {
    modelHash: "m",
    ep: "cpu",
    deviceId: null,
    graphOptimizationLevel: "all",
    configEntries: {},
    freeDimensions: {},
  };
  const names = [
    key,
    { ...key, ep: "cuda", deviceId: 0 },
    { ...key, ep: "cuda", deviceId: 1 },
    { ...key, ep: "webgpu" },
  ].map((k) => t.cache.keyOf(k, runtime));
  assert.equal(new Set(names).size, 4);
  // Config entries are keyed whatever order they come in.
  assert.equal(
    t.cache.keyOf({ ...key, configEntries: { a: "1", b: "2" } }, runtime),
    t.cache.keyOf({ ...key, configEntries: { b: "2", a: "1" } }, runtime),
  );
});

Deno.test("options that change the graph get another entry; threads do not", () => {
  using t = tempCache();
  using env = Env.create();
  const bytes = AFFINE.bytes();
  assert.equal(open(env, bytes, { graphCache: t.cache }).status, "written");
  assert.equal(open(env, bytes, { graphCache: t.cache, intraOpThreads: 2 }).status, "hit");
  assert.equal(open(env, bytes, { graphCache: t.cache, allowSpinning: false }).status, "hit");
  const extended = open(env, bytes, { graphCache: t.cache, graphOptimizationLevel: "extended" });
  assert.equal(extended.status, "written");
  const config = { "session.disable_quant_qdq": "1" };
  assert.equal(open(env, bytes, { graphCache: t.cache, configEntries: config }).status, "written");
  assert.equal(
    open(env, bytes, { graphCache: t.cache, freeDimensions: { batch: 7 } }).status,
    "written",
  );
  assert.equal(open(env, bytes, { graphCache: t.cache, prepacking: false }).status, "written");
  assert.equal(t.entries().length, 5);
});

for (
  const [what, damage] of [
    ["truncated", (p: string) => Deno.truncateSync(p, Math.floor(Deno.statSync(p).size / 2))],
    // Weights changed in place: ORT would load it and compute wrong outputs.
    ["garbled (same size)", (p: string) => {
      const b = Deno.readFileSync(p);
      const raw = readInitializers(b).map((i) => i.data).find((d) => d.kind === "raw");
      assert.ok(raw?.kind === "raw");
      for (let k = raw.offset; k < raw.offset + raw.byteLength; k++) b[k] = b[k]! ^ 0x40;
      Deno.writeFileSync(p, b);
    }],
    ["removed", (p: string) => Deno.removeSync(p)],
  ] as const
) {
  Deno.test(`a ${what} cached graph is rebuilt with one warning, never used`, () => {
    using t = tempCache();
    using env = Env.create();
    const bytes = AFFINE.bytes();
    const plain = open(env, bytes, {});
    open(env, bytes, { graphCache: t.cache });
    const [entry] = t.entries();
    damage(`${t.dir}/cache/graphs/${entry}/model.onnx`);
    const rebuilt = open(env, bytes, { graphCache: t.cache });
    assert.equal(rebuilt.status, "written");
    assert.deepEqual(bitsOf(rebuilt.y), bitsOf(plain.y));
    assert.equal(t.warnings.length, 1, t.warnings.join("\n"));
    assert.match(
      t.warnings[0]!,
      /^parastep: the cached optimised graph .* is damaged \(.*\); rebuilding it$/,
    );
    assert.ok(!t.warnings[0]!.includes("\n"));
    assert.equal(open(env, bytes, { graphCache: t.cache }).status, "hit");
    assert.equal(t.warnings.length, 1);
  });
}

Deno.test("a damaged entry.json is rebuilt with one warning", () => {
  using t = tempCache();
  using env = Env.create();
  open(env, AFFINE.bytes(), { graphCache: t.cache });
  const [entry] = t.entries();
  Deno.writeTextFileSync(`${t.dir}/cache/graphs/${entry}/entry.json`, "{ not json");
  assert.equal(open(env, AFFINE.bytes(), { graphCache: t.cache }).status, "written");
  assert.equal(t.warnings.length, 1);
});

Deno.test("a model's hash is memoised by size, times and inode, and recomputed when the file changes", () => {
  using t = tempCache();
  const path = writeExternalAffine(t.dir);
  const first = t.cache.modelHash(path);
  const memos = [...Deno.readDirSync(`${t.cache.dir}/hashes`)].map((e) => e.name);
  // The model file's memo: forge its hash; an unchanged file is then not read again.
  const memoFile = memos.map((m) => `${t.cache.dir}/hashes/${m}`).find((m) =>
    JSON.parse(Deno.readTextFileSync(m)).path === Deno.realPathSync(path)
  )!;
  const memo = JSON.parse(Deno.readTextFileSync(memoFile));
  Deno.writeTextFileSync(memoFile, JSON.stringify({ ...memo, sha256: "f".repeat(64) }));
  assert.notEqual(t.cache.modelHash(path), first);
  // Rewriting the file with the same bytes changes its ctime: hashed again.
  Deno.writeFileSync(path, Deno.readFileSync(path));
  assert.equal(t.cache.modelHash(path), first);
});

Deno.test("two Workers opening the same model on an empty cache at once both succeed and leave one entry", async () => {
  using t = tempCache();
  const workers = [0, 1].map(() =>
    new Worker(new URL("./_cache_worker.ts", import.meta.url), { type: "module" })
  );
  try {
    const replies = workers.map((w) =>
      new Promise<{ status: string; y: Float32Array; error?: string }>((resolve, reject) => {
        w.onmessage = (e) => resolve(e.data);
        w.onerror = (e) => {
          e.preventDefault();
          reject(new Error(e.message));
        };
      })
    );
    // Both wait at the same shared flag, so their first opens start together.
    const go = new Int32Array(new SharedArrayBuffer(4));
    for (const w of workers) w.postMessage({ dir: t.cache.dir, bytes: AFFINE.bytes(), go });
    Atomics.store(go, 0, 1);
    Atomics.notify(go, 0);
    const [a, b] = await Promise.all(replies);
    assert.equal(a!.error, undefined);
    assert.equal(b!.error, undefined);
    assert.deepEqual(a!.y, b!.y);
    assert.ok(["written", "hit"].includes(a!.status) && ["written", "hit"].includes(b!.status));
    // One entry, no temporary folder left behind.
    assert.equal(t.entries().length, 1, t.entries().join(", "));
    using env = Env.create();
    assert.equal(open(env, AFFINE.bytes(), { graphCache: t.cache }).status, "hit");
  } finally {
    for (const w of workers) w.terminate();
  }
});

Deno.test("a cache folder that cannot be written warns once and opens without caching", () => {
  using t = tempCache();
  Deno.writeTextFileSync(`${t.dir}/file`, "");
  const blocked = new GraphCache(`${t.dir}/file/cache`, { onWarning: (m) => t.warnings.push(m) });
  using env = Env.create();
  const r = open(env, AFFINE.bytes(), { graphCache: blocked });
  assert.equal(r.status, "off");
  assert.equal(t.warnings.length, 1);
  assert.match(t.warnings[0]!, /cannot write to the graph cache/);
});

Deno.test("when ORT cannot write the optimised graph, the session opens uncached with one warning", () => {
  using t = tempCache();
  using env = Env.create();
  const plain = open(env, AFFINE.bytes(), {});
  // An entry ORT reads only when it saves the optimised graph.
  const configEntries = { "session.optimized_model_external_initializers_min_size_in_bytes": "x" };
  const r = open(env, AFFINE.bytes(), { graphCache: t.cache, configEntries, logLevel: "fatal" });
  assert.equal(r.status, "off");
  assert.deepEqual(bitsOf(r.y), bitsOf(plain.y));
  assert.equal(t.warnings.length, 1);
  assert.match(t.warnings[0]!, /^parastep: cannot cache the optimised graph: /);
  assert.ok(!t.warnings[0]!.includes("\n"));
  assert.deepEqual(t.entries(), []);
});
