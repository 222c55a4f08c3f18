import assert from "node:assert/strict";
import { OnnxFormatError, ProtoReader, WIRE } from "../../ffi/protobuf.ts";

// The encodings below are the examples of the protobuf encoding guide
// (protobuf.dev/programming-guides/encoding): 150 in field 1, "testing" in field 2.
const FIELD1_150 = [0x08, 0x96, 0x01];
const FIELD2_TESTING = [0x12, 0x07, ...new TextEncoder().encode("testing")];

Deno.test("ProtoReader reads varints, strings and nested messages of the protobuf guide", () => {
  const r = new ProtoReader(new Uint8Array([...FIELD1_150, ...FIELD2_TESTING]));
  const seen: [number, number, unknown][] = [];
  r.each((field, wire) => {
    seen.push([field, wire, wire === WIRE.varint ? r.varint() : r.string()]);
    return true;
  });
  assert.deepEqual(seen, [[1, WIRE.varint, 150], [2, WIRE.len, "testing"]]);
  // -1 as int64: ten bytes of two's complement.
  const minusOne = new ProtoReader(new Uint8Array([...Array(9).fill(0xff), 0x01]));
  assert.equal(minusOne.int64(), -1);
  // 2^53 - 1, the largest varint read exactly.
  const big = new ProtoReader(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]));
  assert.equal(big.varint(), 2 ** 53 - 1);
});

Deno.test("ProtoReader skips every wire type it is not asked to read", () => {
  const bytes = new Uint8Array([
    ...FIELD1_150,
    0x19,
    ...Array(8).fill(7), // field 3, fixed64
    0x25,
    1,
    2,
    3,
    4, // field 4, fixed32
    ...FIELD2_TESTING,
  ]);
  const r = new ProtoReader(bytes);
  const fields: number[] = [];
  r.each((field) => {
    fields.push(field);
    return false;
  });
  assert.deepEqual(fields, [1, 3, 4, 2]);
  assert.equal(r.pos, bytes.length);
});

Deno.test("ProtoReader refuses truncated and malformed messages, naming the file", () => {
  const cases: [number[], RegExp][] = [
    [[0x08, 0x96], /truncated varint/],
    [[0x12, 0x07, 0x74], /runs past its message/],
    [[0x0b], /unsupported protobuf wire type 3/],
    [Array(11).fill(0x80), /malformed varint/],
  ];
  for (const [bytes, detail] of cases) {
    const r = new ProtoReader(new Uint8Array(bytes), 0, bytes.length, "m.onnx");
    assert.throws(
      () => r.each((_, wire) => wire === WIRE.len ? (r.string(), true) : false),
      (e: unknown) =>
        e instanceof OnnxFormatError && e.path === "m.onnx" && detail.test(e.message) &&
        e.message.startsWith("Cannot read ONNX model m.onnx: "),
    );
  }
});
