import assert from "node:assert/strict";
import { ClosedError, Env, OrtError, ortLibrary, Session, Tensor, Value } from "../../ffi/mod.ts";
import {
  AFFINE,
  boolModel,
  halfModel,
  int32Model,
  int64Model,
  misleadingModel,
  slowLoadingModel,
  slowModel,
  testFloats,
} from "../support/models.ts";

const ORT_NODE_PACKAGE = new URL(
  "../../node_modules/onnxruntime-node/package.json",
  import.meta.url,
);

Deno.test("the library reports the version of the onnxruntime-node package it came from", async () => {
  const lib = ortLibrary();
  const pkg = JSON.parse(await Deno.readTextFile(ORT_NODE_PACKAGE));
  if (lib.foundBy === "npm-package") assert.equal(lib.version, pkg.version);
  assert.match(lib.version, /^1\.\d+\.\d+/);
  assert.ok(lib.apiVersion >= 1 && lib.apiVersion <= Number(lib.version.split(".")[1]));
});

Deno.test("a session lists its inputs and outputs with types and symbolic dims", () => {
  using env = Env.create();
  using session = Session.create(env, AFFINE.bytes());
  assert.deepEqual(session.inputs, [
    { name: "x", type: "float32", elementType: 1, dims: ["batch", 3] },
  ]);
  assert.deepEqual(session.outputs.map((o) => [o.name, o.type, o.dims]), [
    ["y", "float32", ["batch", 4]],
    ["z", "float32", ["batch", 3]],
  ]);
  assert.equal(session.executionProvider, "cpu");
});

Deno.test("float32 runs match the same maths in TypeScript for batch 1, 2 and 7", () => {
  using env = Env.create();
  using session = Session.create(env, AFFINE.bytes(), { intraOpThreads: 1 });
  for (const batch of [1, 2, 7]) {
    const x = testFloats(batch * 3, batch);
    const out = session.run({ x: new Tensor("float32", x, [batch, 3]) });
    const want = AFFINE.expected(x, batch);
    assert.deepEqual(out.y!.dims, [batch, 4]);
    assert.deepEqual(out.z!.dims, [batch, 3]);
    assert.deepEqual(out.z!.data, want.z);
    for (let k = 0; k < want.y.length; k++) {
      assert.ok(
        Math.abs(out.y!.data[k] as number - want.y[k]!) <= 1e-6,
        `y[${k}]: ${out.y!.data[k]} vs ${want.y[k]}`,
      );
    }
  }
});

Deno.test("a session loaded from a file path gives the same outputs as from bytes", async () => {
  const path = await Deno.makeTempFile({ suffix: ".onnx" });
  try {
    await Deno.writeFile(path, AFFINE.bytes());
    using env = Env.create();
    using fromPath = Session.create(env, path);
    using fromBytes = Session.create(env, AFFINE.bytes());
    const x = new Tensor("float32", testFloats(6, 3), [2, 3]);
    assert.deepEqual(fromPath.run({ x }), fromBytes.run({ x }));
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("float16 tensors go in and come out as Float16Array", () => {
  using env = Env.create();
  using session = Session.create(env, halfModel());
  const x = new Float16Array([1, 2.5, -3, 0.1, 100, -0.25, 7, 0]);
  const { y } = session.run({ x: new Tensor("float16", x, [2, 4]) });
  assert.equal(y!.type, "float16");
  assert.deepEqual(y!.dims, [2, 4]);
  const want = new Float16Array(x.map((v) => Math.fround(Math.fround(v * 3) + 0.5)));
  assert.deepEqual(y!.data, want);
});

Deno.test("int64, int32 and bool tensors round-trip through their models", () => {
  using env = Env.create();
  using i64 = Session.create(env, int64Model());
  const x64 = new BigInt64Array([3n, -4n, 2n ** 31n, 0n]);
  const y64 = i64.run({ x: new Tensor("int64", x64, [2, 2]) }).y!;
  assert.deepEqual(y64.data, x64.map((v) => v * v + 7n));

  using i32 = Session.create(env, int32Model());
  const x32 = new Int32Array([3, -4, 10, 6]);
  const y32 = i32.run({ x: new Tensor("int32", x32, [2, 2]) }).y!;
  assert.deepEqual(y32.data, x32.map((v, k) => v - [3, 6][k % 2]!));

  using b = Session.create(env, boolModel());
  const a = new Uint8Array([1, 0, 1, 0, 0, 1]);
  const c = new Uint8Array([1, 1, 0, 0, 1, 1]);
  const y = b.run({
    a: new Tensor("bool", a, [2, 3]),
    b: new Tensor("bool", c, [2, 3]),
  }).y!;
  assert.equal(y.type, "bool");
  assert.deepEqual(y.data, a.map((v, k) => (1 - v) ^ c[k]!));
});

Deno.test("values are reused across runs and outputs can be written into caller arrays", () => {
  using env = Env.create();
  using session = Session.create(env, AFFINE.bytes());
  const x = testFloats(3, 11);
  using input = Value.fromTensor(env, new Tensor("float32", x, [1, 3]));
  const y = new Tensor("float32", new Float32Array(4), [1, 4]);
  for (let k = 0; k < 3; k++) {
    x[0] = k; // the value reads the array at each run: no copy was taken
    const out = session.run({ x: input }, { outputs: { y } });
    assert.equal(out.y, y);
    assert.deepEqual(y.data, AFFINE.expected(x, 1).y);
  }
  const onlyZ = session.run({ x: input }, { outputs: ["z"] });
  assert.deepEqual(Object.keys(onlyZ), ["z"]);
});

Deno.test("outputs of successive runs are separate arrays, also when dims change", () => {
  using env = Env.create();
  using session = Session.create(env, AFFINE.bytes());
  const results = [1, 2, 1, 3].map((batch, k) => {
    const x = testFloats(batch * 3, 20 + k);
    return { x, batch, out: session.run({ x: new Tensor("float32", x, [batch, 3]) }) };
  });
  for (const { x, batch, out } of results) {
    const want = AFFINE.expected(x, batch);
    assert.deepEqual(out.z!.data, want.z);
    assert.deepEqual(out.y!.dims, [batch, 4]);
  }
  assert.notEqual(results[0]!.out.z!.data.buffer, results[2]!.out.z!.data.buffer);
});

Deno.test("a graph whose output dims are misdeclared still gives ORT's real output", async () => {
  using env = Env.create();
  using session = Session.create(env, misleadingModel());
  assert.deepEqual(session.outputs[0]!.dims, ["n"]);
  const x = testFloats(6, 3);
  for (let k = 0; k < 2; k++) {
    const { y } = session.run({ x: new Tensor("float32", x, [2, 3]) });
    assert.deepEqual(y!.dims, [6]);
    assert.deepEqual(y!.data, x);
  }
  const { y } = await session.runAsync({ x: new Tensor("float32", x, [2, 3]) });
  assert.deepEqual(y!.data, x);
});

Deno.test("bad inputs and models raise OrtError with ORT's code and message", () => {
  using env = Env.create();
  assert.throws(
    () => Session.create(env, "/nonexistent/model.onnx"),
    (e: unknown) =>
      e instanceof OrtError && e.codeName === "NO_SUCHFILE" &&
      /File doesn't exist/.test(e.message),
  );
  assert.throws(
    () => Session.create(env, new TextEncoder().encode("this is not a protobuf")),
    (e: unknown) => e instanceof OrtError && e.codeName === "INVALID_PROTOBUF",
  );
  using session = Session.create(env, AFFINE.bytes());
  const x = new Tensor("float32", testFloats(6, 1), [2, 3]);
  assert.throws(
    () => session.run({ q: x }),
    (e: unknown) =>
      e instanceof OrtError && e.codeName === "INVALID_ARGUMENT" &&
      /Invalid input name: q/.test(e.ortMessage),
  );
  assert.throws(
    () => session.run({ x: new Tensor("int32", new Int32Array(6), [2, 3]) }),
    (e: unknown) => e instanceof OrtError && /Unexpected input data type/.test(e.ortMessage),
  );
  assert.throws(
    () => session.run({ x: new Tensor("float32", testFloats(6, 1), [6]) }),
    (e: unknown) => e instanceof OrtError && /Invalid rank for input: x/.test(e.ortMessage),
  );
  assert.throws(
    () => session.run({ x }, { outputs: ["nope"] }),
    (e: unknown) => e instanceof OrtError && /nope/.test(e.ortMessage),
  );
  // The session is still usable after every refused call.
  assert.deepEqual(session.run({ x }).z!.dims, [2, 3]);
});

Deno.test("tensors refuse data that does not match their type or dims", () => {
  assert.throws(() => new Tensor("float32", new Float32Array(5), [2, 3]), RangeError);
  assert.throws(() => new Tensor("float32", new Float32Array(6), [2, -3]), RangeError);
  assert.throws(
    // deno-lint-ignore no-explicit-any -- deliberately wrong at runtime
    () => new Tensor("int64", new Float32Array(6) as any, [2, 3]),
    TypeError,
  );
});

Deno.test("a closed session or value refuses use instead of passing NULL to ORT", () => {
  using env = Env.create();
  const session = Session.create(env, AFFINE.bytes());
  const value = Value.fromTensor(env, new Tensor("float32", new Float32Array(3), [1, 3]));
  value.close();
  value.close();
  assert.throws(() => session.run({ x: value }), ClosedError);
  session.close();
  session.close();
  assert.throws(
    () => session.run({ x: new Tensor("float32", new Float32Array(3), [1, 3]) }),
    ClosedError,
  );
});

Deno.test("runAsync gives the same outputs as run", async () => {
  using env = Env.create();
  using session = Session.create(env, AFFINE.bytes());
  const x = new Tensor("float32", testFloats(9, 5), [3, 3]);
  const [a, b] = await Promise.all([session.runAsync({ x }), session.runAsync({ x })]);
  assert.deepEqual(a, session.run({ x }));
  assert.deepEqual(b, a);
});

Deno.test("aborting a nonblocking run stops it and rejects with the abort reason", async () => {
  using env = Env.create();
  await using session = Session.create(env, slowModel(384, 400), { intraOpThreads: 1 });
  const x = new Tensor("float32", testFloats(384 * 384, 4), [384, 384]);
  const controller = new AbortController();
  const reason = new Error("stop now");
  const run = session.runAsync({ x }, { signal: controller.signal });
  setTimeout(() => controller.abort(reason), 50);
  await assert.rejects(run, (e: unknown) => e === reason);
  assert.equal(session.pending, 0);
  // An already aborted signal refuses to start.
  await assert.rejects(session.runAsync({ x }, { signal: controller.signal }), (e) => e === reason);
});

Deno.test("createAsync loads off the event loop: the same session as create, by path and by bytes", async () => {
  const path = await Deno.makeTempFile({ suffix: ".onnx" });
  try {
    await Deno.writeFile(path, AFFINE.bytes());
    using env = Env.create();
    using sync = Session.create(env, AFFINE.bytes(), { intraOpThreads: 1 });
    // A timer must fire while the slow model loads: the event loop is not blocked.
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const slow = Session.createAsync(env, slowLoadingModel(4000), { intraOpThreads: 1 });
    using fromBytes = await Session.createAsync(env, AFFINE.bytes(), { intraOpThreads: 1 });
    using fromPath = await Session.createAsync(env, path, { executionProvider: "auto" });
    using loaded = await slow;
    clearInterval(timer);
    assert.ok(ticks > 0, "no timer fired while the model loaded");
    assert.deepEqual(fromBytes.inputs, sync.inputs);
    assert.deepEqual(fromBytes.outputs, sync.outputs);
    const x = new Tensor("float32", testFloats(6, 8), [2, 3]);
    assert.deepEqual(fromBytes.run({ x }), sync.run({ x }));
    assert.deepEqual(fromPath.run({ x }), sync.run({ x }));
    assert.equal(fromPath.executionProvider, fromPath.providerAttempts.at(-1)!.ep);
    assert.deepEqual(loaded.inputs.map((i) => i.name), ["x"]);
    // Errors come back as from create.
    await assert.rejects(
      Session.createAsync(env, "/nonexistent/model.onnx"),
      (e: unknown) => e instanceof OrtError && e.codeName === "NO_SUCHFILE",
    );
    await assert.rejects(
      Session.createAsync(env, new TextEncoder().encode("this is not a protobuf")),
      (e: unknown) => e instanceof OrtError && e.codeName === "INVALID_PROTOBUF",
    );
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("aborting createAsync cancels the load well before it would end, rejecting with the reason", async () => {
  if (ortLibrary().setLoadCancellationFlag === null) {
    console.log(`skipped: ONNX Runtime ${ortLibrary().version} has no load cancellation flag`);
    return;
  }
  using env = Env.create();
  const bytes = slowLoadingModel(12000);
  // The whole load, as the yardstick (about 4 s on one core here).
  let started = performance.now();
  (await Session.createAsync(env, bytes, { intraOpThreads: 1 })).close();
  const fullMs = performance.now() - started;
  const controller = new AbortController();
  const reason = new Error("stop loading");
  started = performance.now();
  const load = Session.createAsync(env, bytes, { intraOpThreads: 1, signal: controller.signal });
  setTimeout(() => controller.abort(reason), fullMs / 4);
  await assert.rejects(load, (e: unknown) => e === reason);
  const cancelledMs = performance.now() - started;
  assert.ok(
    cancelledMs < 0.75 * fullMs,
    `cancelled after ${cancelledMs.toFixed(0)} ms of a ${fullMs.toFixed(0)} ms load`,
  );
  // An aborted signal refuses to start.
  await assert.rejects(
    Session.createAsync(env, AFFINE.bytes(), { signal: controller.signal }),
    (e: unknown) => e === reason,
  );
});

Deno.test("closing a session cancels its runs in flight and then releases it", async () => {
  using env = Env.create();
  const session = Session.create(env, slowModel(384, 400), { intraOpThreads: 1 });
  const x = new Tensor("float32", testFloats(384 * 384, 4), [384, 384]);
  const run = session.runAsync({ x });
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(session.pending, 1);
  const closed = session.closeAsync();
  await assert.rejects(run, ClosedError);
  await closed;
  assert.equal(session.pending, 0);
});

Deno.test("5000 runs with fresh input tensors grow RSS by less than 10 MB", () => {
  using env = Env.create();
  using session = Session.create(env, AFFINE.bytes(), { intraOpThreads: 1 });
  // 24 KB in and 56 KB out per run: a leaked tensor would show as hundreds of MB.
  const once = (k: number) => {
    const x = new Tensor("float32", testFloats(2048 * 3, k), [2048, 3]);
    const out = session.run({ x });
    if (out.y!.dims[0] !== 2048) throw new Error("unexpected output");
  };
  // Warm up past the allocator's high-water mark: the heap grows once to hold
  // the garbage V8 has not yet collected, then stays flat (measured: +20 MB by
  // 20000 runs, then within 4 MB up to 120000 runs).
  for (let k = 0; k < 20000; k++) once(k);
  const before = Deno.memoryUsage().rss;
  for (let k = 0; k < 5000; k++) once(k);
  const grown = Deno.memoryUsage().rss - before;
  assert.ok(grown < 10 * 2 ** 20, `RSS grew by ${(grown / 2 ** 20).toFixed(2)} MB`);
});

Deno.test("a session keeps working after its env is closed, and the env goes when the session does", () => {
  const env = Env.create();
  const session = Session.create(env, AFFINE.bytes());
  env.close();
  const x = testFloats(3, 2);
  assert.deepEqual(
    session.run({ x: new Tensor("float32", x, [1, 3]) }).z!.data,
    AFFINE.expected(x, 1).z,
  );
  session.close();
  assert.throws(() => env.cpuMemoryInfo, ClosedError);
});

Deno.test("auto opens the session on the first provider that works and records every attempt", () => {
  using env = Env.create();
  using session = Session.create(env, AFFINE.bytes(), { executionProvider: "auto" });
  const attempts = session.providerAttempts;
  assert.equal(attempts.at(-1)!.ok, true);
  assert.equal(attempts.at(-1)!.ep, session.executionProvider);
  assert.deepEqual(attempts.map((a) => a.ep), ["cuda", "webgpu", "cpu"].slice(0, attempts.length));
  for (const failed of attempts.slice(0, -1)) assert.ok(failed.reason, `${failed.ep} has a reason`);
});

Deno.test("loading options that change how a session loads keep its outputs bit for bit", () => {
  using env = Env.create();
  const bytes = AFFINE.bytes();
  const x = new Tensor("float32", testFloats(21, 4), [7, 3]);
  using plain = Session.create(env, bytes, { intraOpThreads: 1 });
  const want = plain.run({ x });
  for (
    const options of [
      { prepacking: false },
      { configEntries: { "session.use_env_allocators": "0" } },
      { freeDimensions: { batch: 7 } },
      { source: "thunk" },
    ] as const
  ) {
    const { source, ...rest } = { source: "bytes", ...options };
    using s = Session.create(env, source === "thunk" ? () => bytes : bytes, {
      intraOpThreads: 1,
      ...rest,
    });
    assert.deepEqual(s.run({ x }), want, JSON.stringify(options));
  }
});

Deno.test("a free dimension override fixes that dimension: other sizes are refused", () => {
  using env = Env.create();
  using s = Session.create(env, AFFINE.bytes(), { freeDimensions: { batch: 2 } });
  assert.equal(s.run({ x: new Tensor("float32", testFloats(6, 1), [2, 3]) }).y!.dims[0], 2);
  assert.throws(
    () => s.run({ x: new Tensor("float32", testFloats(9, 1), [3, 3]) }),
    (e) => e instanceof OrtError && /dimension|Got: 3/i.test(e.message),
  );
  assert.throws(
    () => Session.create(env, AFFINE.bytes(), { freeDimensions: { batch: -1 } }),
    /'freeDimensions.batch' must be a non-negative integer/,
  );
});

Deno.test("optimizedModelFilePath writes the optimised graph, which loads and computes the same", () => {
  const dir = Deno.makeTempDirSync();
  try {
    using env = Env.create();
    const x = new Tensor("float32", testFloats(6, 9), [2, 3]);
    using s = Session.create(env, AFFINE.bytes(), { optimizedModelFilePath: `${dir}/opt.onnx` });
    const saved = Deno.readFileSync(`${dir}/opt.onnx`);
    assert.ok(new TextDecoder("latin1").decode(saved).includes("FusedGemm"));
    using again = Session.create(env, saved, { graphOptimizationLevel: "disabled" });
    assert.deepEqual(again.run({ x }), s.run({ x }));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("profiling writes ORT's trace of the session's load and runs", () => {
  const dir = Deno.makeTempDirSync();
  try {
    using env = Env.create();
    using s = Session.create(env, AFFINE.bytes(), { profilingPrefix: `${dir}/trace` });
    s.run({ x: new Tensor("float32", testFloats(6, 9), [2, 3]) });
    const path = s.endProfiling();
    assert.ok(path.startsWith(`${dir}/trace`), path);
    const events = JSON.parse(Deno.readTextFileSync(path)) as { name: string; dur: number }[];
    const names = events.map((e) => e.name);
    assert.ok(names.includes("session_initialization"), names.join(", "));
    assert.ok(names.includes("model_run"), names.join(", "));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
