import {
  decodeStepMessage,
  encodeStepMessage,
  type Float32StepMessage,
  STEP_HEADER_BYTES,
  StepCodecError,
  type StepCodecField,
} from "../../../src/parastep/nats/mod.ts";
import { assert, assertEquals, assertThrows } from "../_assert.ts";

/** The bench model's latents: [1, 8, 64, 16]. */
const BENCH_DIMS = [1, 8, 64, 16];
const BENCH_ELEMENTS = 1 * 8 * 64 * 16;
const GEN = crypto.randomUUID();

/** Deterministic floats with the awkward values mixed in (-0, infinities, subnormals, NaN). */
function floats(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  for (let j = 0; j < n; j++) out[j] = Math.sin(seed + 0.37 * j) * 10 ** ((j % 9) - 4);
  const bits = new Uint32Array(out.buffer);
  out[0] = -0;
  out[1] = Infinity;
  out[2] = -Infinity;
  bits[3] = 0x0000_0001; // the smallest subnormal
  bits[4] = 0x7fc0_1234; // a NaN with a payload
  return out;
}

function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

function messages(): Float32StepMessage[] {
  const base = { gen: GEN, from: 3, depth: 17 };
  return [
    { ...base, step: 12, kind: "eps", eps: floats(BENCH_ELEMENTS, 1) },
    { ...base, step: 13, kind: "latents", x: floats(BENCH_ELEMENTS, 2) },
    {
      ...base,
      step: 4,
      kind: "warmup",
      x: floats(BENCH_ELEMENTS, 3),
      cache: floats(BENCH_ELEMENTS, 4),
    },
  ];
}

function arraysOf(message: Float32StepMessage): Float32Array[] {
  switch (message.kind) {
    case "eps":
      return [message.eps];
    case "latents":
      return [message.x];
    case "warmup":
      return [message.x, message.cache];
  }
}

Deno.test("step messages of the bench model's size round-trip bit for bit, for every kind", () => {
  for (const message of messages()) {
    const sentAt = 1_765_000_000_123.25;
    const bytes = encodeStepMessage(message, BENCH_DIMS, sentAt);
    const count = message.kind === "warmup" ? 2 : 1;
    // The size the format implies: the header, then raw float32s, nothing else.
    assertEquals(bytes.byteLength, 128 + count * BENCH_ELEMENTS * 4, message.kind);
    const decoded = decodeStepMessage(bytes);
    assertEquals(decoded.dims, BENCH_DIMS);
    assertEquals(decoded.dtype, "float32");
    assertEquals(decoded.sentAt, sentAt);
    const got = decoded.message;
    assertEquals(
      [got.gen, got.step, got.kind, got.from, got.depth],
      [message.gen, message.step, message.kind, message.from, message.depth],
    );
    const want = arraysOf(message);
    const have = arraysOf(got);
    assertEquals(have.length, want.length);
    have.forEach((array, j) => {
      assert(array instanceof Float32Array);
      assertEquals(bits(array), bits(want[j]!), `${message.kind} array ${j}`);
    });
  }
});

Deno.test("the payload is raw little-endian float32 after a 128-byte header starting with PSTP", () => {
  const eps = Float32Array.from([1.5, -2.25, 3e-8]);
  const bytes = encodeStepMessage(
    { gen: "g-1", step: 7, kind: "eps", from: 2, depth: 9, eps },
    [3],
    0,
  );
  assertEquals(STEP_HEADER_BYTES, 128);
  assertEquals(new TextDecoder().decode(bytes.subarray(0, 4)), "PSTP");
  // Written by DataView here, independently of the codec's byte copy.
  const expected = new Uint8Array(12);
  const view = new DataView(expected.buffer);
  eps.forEach((v, j) => view.setFloat32(4 * j, v, true));
  assertEquals(Array.from(bytes.subarray(128)), Array.from(expected));
  // The generation id is readable ASCII in the header.
  assertEquals(new TextDecoder().decode(bytes.subarray(64, 67)), "g-1");
});

Deno.test("decoding copies the payload out and reads a buffer at any offset", () => {
  const eps = messages()[0]!;
  const bytes = encodeStepMessage(eps, BENCH_DIMS, 5);
  // At an odd offset inside a larger buffer, as a network read may hand it over.
  const host = new Uint8Array(bytes.byteLength + 3);
  host.set(bytes, 1);
  const decoded = decodeStepMessage(host.subarray(1, 1 + bytes.byteLength)).message;
  assert(decoded.kind === "eps" && eps.kind === "eps");
  assertEquals(bits(decoded.eps), bits(eps.eps));
  host.fill(0);
  assertEquals(bits(decoded.eps), bits(eps.eps)); // its own copy
  assertEquals(decoded.eps.byteOffset, 0);
  assertEquals(decoded.eps.buffer.byteLength, BENCH_ELEMENTS * 4);
});

Deno.test("a short, truncated or foreign buffer is rejected with one line naming the problem", () => {
  const good = encodeStepMessage(messages()[0]!, BENCH_DIMS, 0);
  const cases: [string, Uint8Array, StepCodecField, string][] = [
    ["empty", new Uint8Array(0), "length", "0 bytes, shorter than the 128-byte header"],
    ["short", good.slice(0, 127), "length", "127 bytes, shorter than the 128-byte header"],
    [
      "truncated payload",
      good.slice(0, good.byteLength - 4),
      "payload",
      `is ${good.byteLength - 4} bytes, and 1 float32 array of dims [1,8,64,16] after the ` +
      `header make ${good.byteLength}`,
    ],
    ["trailing bytes", concat(good, new Uint8Array(4)), "payload", "after the header make"],
    ["JSON", new TextEncoder().encode(JSON.stringify({ x: [1, 2] }).padEnd(200)), "magic", "PSTP"],
  ];
  for (const [name, bytes, field, text] of cases) {
    const error = assertThrows(() => decodeStepMessage(bytes), StepCodecError, text);
    assertEquals(error.field, field, name);
    assert(!error.message.includes("\n"), `${name}: one line`);
  }
});

Deno.test("every header field is checked on decode", () => {
  const good = encodeStepMessage(messages()[1]!, BENCH_DIMS, 0);
  const patched = (patch: (bytes: Uint8Array, view: DataView) => void): Uint8Array => {
    const copy = good.slice();
    patch(copy, new DataView(copy.buffer));
    return copy;
  };
  const cases: [Uint8Array, StepCodecField, string][] = [
    [patched((b) => b[4] = 2), "version", "format version is 2, and this build reads version 1"],
    [
      patched((b) => b[5] = 9),
      "kind",
      "kind code 9 is not one of 1 (eps), 2 (latents), 3 (warmup)",
    ],
    [patched((b) => b[6] = 2), "dtype", "dtype code 2 is not 1 (float32)"],
    [patched((b) => b[7] = 0), "dims", "ndim 0 is not in 1..8"],
    [patched((b) => b[7] = 9), "dims", "ndim 9 is not in 1..8"],
    [patched((_, v) => v.setUint32(36, 0, true)), "dims", "contain a 0"],
    // The same floats declared as [1, 8, 64, 8]: the size no longer adds up.
    [patched((_, v) => v.setUint32(44, 8, true)), "payload", "dims [1,8,64,8]"],
    [patched((b) => b[64] = 0x2e), "gen", "generation id"], // "." would break the subject
    [patched((b) => b[20] = 0), "gen", "generation id (0 bytes)"],
    [patched((b) => b[20] = 65), "gen", "generation id (65 bytes)"],
  ];
  for (const [bytes, field, text] of cases) {
    const error = assertThrows(() => decodeStepMessage(bytes), StepCodecError, text);
    assertEquals(error.field, field, text);
  }
});

Deno.test("encoding refuses a payload of another size and fields the header cannot hold", () => {
  const eps = (overrides: Partial<Float32StepMessage> = {}) =>
    ({
      gen: "g",
      step: 1,
      kind: "eps",
      from: 1,
      depth: 1,
      eps: new Float32Array(4),
      ...overrides,
    }) as Float32StepMessage;
  assertThrows(() => encodeStepMessage(eps(), [5], 0), RangeError, "Float32Array of 5 floats");
  assertThrows(
    () =>
      encodeStepMessage(
        {
          gen: "g",
          step: 1,
          kind: "warmup",
          from: 0,
          depth: 1,
          x: new Float32Array(4),
          cache: new Float32Array(3),
        },
        [4],
        0,
      ),
    RangeError,
    "current length is 3",
  );
  assertThrows(() => encodeStepMessage(eps({ gen: "a.b" }), [4], 0), RangeError, "generation id");
  assertThrows(() => encodeStepMessage(eps({ gen: "x".repeat(65) }), [4], 0), RangeError, "1..64");
  assertThrows(() => encodeStepMessage(eps({ step: -1 }), [4], 0), RangeError, "'step'");
  assertThrows(() => encodeStepMessage(eps({ depth: 1.5 }), [4], 0), RangeError, "'depth'");
  assertThrows(() => encodeStepMessage(eps({ from: 2 ** 32 }), [4], 0), RangeError, "'from'");
  assertThrows(() => encodeStepMessage(eps(), [], 0), RangeError, "1..8 sizes");
  assertThrows(() => encodeStepMessage(eps(), [1, 1, 1, 1, 1, 1, 1, 1, 4], 0), RangeError);
  assertThrows(() => encodeStepMessage(eps(), [2, 0, 2], 0), RangeError, "integer >= 1");
  // The largest values that fit do round-trip.
  const max = 2 ** 32 - 1;
  const big = decodeStepMessage(
    encodeStepMessage(eps({ step: max, from: max, depth: max, gen: "x".repeat(64) }), [4], 0),
  ).message;
  assertEquals([big.step, big.from, big.depth, big.gen.length], [max, max, max, 64]);
});

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
