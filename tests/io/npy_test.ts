import assert from "node:assert/strict";
import { decodeNpy, encodeNpy, type NpyArray, readNpy, writeNpy } from "../../src/io/npy.ts";
import { fixturePath, loadJson } from "../fixtures/mod.ts";

interface Expected {
  readonly descr: string;
  readonly shape: number[];
  readonly version: [number, number];
  readonly values: (number | string | boolean)[];
}

const EXPECTED = (await loadJson("npy", "expected.json")) as Record<string, Expected>;
const DTYPE_OF_DESCR: Record<string, string> = {
  "<f4": "float32",
  "<f8": "float64",
  "<f2": "float16",
  "<i4": "int32",
  "<i8": "int64",
  "|u1": "uint8",
  "|b1": "bool",
};

/** Values as JSON holds them: NaN/Infinity and integers are strings (int64 may exceed 2^53). */
function parseExpected(v: number | string | boolean, descr: string): number | bigint {
  if (typeof v === "boolean") return v ? 1 : 0;
  if (v === "NaN") return NaN;
  if (v === "Infinity") return Infinity;
  if (v === "-Infinity") return -Infinity;
  if (typeof v === "string") return descr === "<i8" ? BigInt(v) : Number(v);
  return v;
}

Deno.test("npy reads every dtype, version 1.0/2.0/3.0, 0-d and empty arrays numpy wrote", async () => {
  assert.ok(Object.keys(EXPECTED).length >= 10);
  for (const [name, exp] of Object.entries(EXPECTED)) {
    const arr = await readNpy(fixturePath("npy", `${name}.npy`));
    const bytes = await Deno.readFile(fixturePath("npy", `${name}.npy`));
    assert.deepEqual([bytes[6], bytes[7]], exp.version, `${name}: version`);
    assert.equal(arr.dtype, DTYPE_OF_DESCR[exp.descr], `${name}: dtype`);
    assert.deepEqual(arr.shape, exp.shape, `${name}: shape`);
    const want = exp.values.map((v) => parseExpected(v, exp.descr));
    const got = Array.from(arr.data as ArrayLike<number | bigint>);
    assert.equal(got.length, want.length, `${name}: length`);
    for (let k = 0; k < want.length; k++) {
      // Object.is tells -0 from 0 and matches NaN with NaN.
      assert.ok(Object.is(got[k], want[k]), `${name}[${k}]: got ${got[k]}, expected ${want[k]}`);
    }
  }
});

Deno.test("npy decodes to the matching typed array per dtype", async () => {
  const ctor = async (name: string) =>
    (await readNpy(fixturePath("npy", `${name}.npy`))).data.constructor;
  assert.equal(await ctor("f4_2x3"), Float32Array);
  assert.equal(await ctor("f8_4"), Float64Array);
  assert.equal(await ctor("f2_3x2"), Float16Array);
  assert.equal(await ctor("i4_5"), Int32Array);
  assert.equal(await ctor("i8_2x2x2"), BigInt64Array);
  assert.equal(await ctor("u1_3x3"), Uint8Array);
  assert.equal(await ctor("b1_4"), Uint8Array);
});

Deno.test("npy encode is byte-identical to np.save for version 1.0 files", async () => {
  let compared = 0;
  for (const [name, exp] of Object.entries(EXPECTED)) {
    if (exp.version[0] !== 1) continue;
    const bytes = await Deno.readFile(fixturePath("npy", `${name}.npy`));
    const again = encodeNpy(decodeNpy(bytes));
    assert.deepEqual(again, bytes, `${name}: re-encoded bytes`);
    compared++;
  }
  assert.ok(compared >= 9);
});

Deno.test("npy round-trips version 2.0/3.0 data through encode (written as 1.0)", async () => {
  for (const name of ["f4_v2", "f4_v3"]) {
    const arr = await readNpy(fixturePath("npy", `${name}.npy`));
    const back = decodeNpy(encodeNpy(arr));
    assert.deepEqual(back, arr);
  }
});

Deno.test("npy writeNpy then readNpy returns the same array and aligns data to 64 bytes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const arrays: NpyArray[] = [
      { dtype: "float32", shape: [2, 2], data: new Float32Array([1, -2, 3.5, NaN]) },
      { dtype: "int64", shape: [3], data: new BigInt64Array([-1n, 0n, 2n ** 62n]) },
      { dtype: "float16", shape: [2], data: new Float16Array([0.5, -65504]) },
      { dtype: "bool", shape: [], data: new Uint8Array([1]) },
    ];
    for (const [k, arr] of arrays.entries()) {
      const path = `${dir}/a${k}.npy`;
      await writeNpy(path, arr);
      const bytes = await Deno.readFile(path);
      const headerLength = new DataView(bytes.buffer).getUint16(8, true);
      assert.equal((10 + headerLength) % 64, 0);
      assert.deepEqual(await readNpy(path), arr);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("npy refuses Fortran order, big-endian and unsupported dtypes with clear errors", async () => {
  await assert.rejects(
    () => readNpy(fixturePath("npy", "refuse_fortran.npy")),
    (err: unknown) =>
      err instanceof TypeError &&
      /'fortran_order' must be False \(only C order is supported\): current value is True/.test(
        err.message,
      ) &&
      err.message.includes("refuse_fortran.npy"),
  );
  await assert.rejects(
    () => readNpy(fixturePath("npy", "refuse_big_endian.npy")),
    /'descr' must be one of <f4, <f8, <f2, <i4, <i8, \|u1, \|b1: current value is >f4/,
  );
  await assert.rejects(
    () => readNpy(fixturePath("npy", "refuse_complex.npy")),
    /'descr' must be one of .*: current value is <c8/,
  );
});

Deno.test("npy refuses bad magic, unknown versions, truncated data and mismatched shapes", async () => {
  const good = await Deno.readFile(fixturePath("npy", "f4_2x3.npy"));
  assert.throws(() => decodeNpy(new Uint8Array([1, 2, 3])), /does not start with the magic/);
  const v9 = good.slice();
  v9[6] = 9;
  assert.throws(
    () => decodeNpy(v9),
    /format version must be one of 1.0, 2.0, 3.0: current value is 9.0/,
  );
  assert.throws(
    () => decodeNpy(good.subarray(0, good.length - 1)),
    (err: unknown) =>
      err instanceof RangeError && /needs 24 data bytes: the file has 23/.test(err.message),
  );
  assert.throws(
    () => encodeNpy({ dtype: "float32", shape: [2, 2], data: new Float32Array(3) }),
    (err: unknown) =>
      err instanceof RangeError &&
      /shape \[2, 2\] holds 4 values: current data length is 3/.test(err.message),
  );
  assert.throws(
    () =>
      encodeNpy({ dtype: "float32", shape: [2], data: new Float64Array(2) } as unknown as NpyArray),
    (err: unknown) =>
      err instanceof TypeError &&
      /must be the typed array for float32: current value is a Float64Array/.test(err.message),
  );
});
