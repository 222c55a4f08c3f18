import assert from "node:assert/strict";
import { crc32 } from "../../src/io/crc32.ts";
import { encodeHeatmapPng, HEATMAP_ANCHORS, heatmapColour } from "../../src/io/png.ts";
import { loadJson } from "../fixtures/mod.ts";

const CRC_CASES = (await loadJson("png", "crc32.json")) as { hex: string; crc32: number }[];
const fromHex = (hex: string) =>
  new Uint8Array(hex.match(/../g)?.map((h) => parseInt(h, 16)) ?? []);

interface DecodedPng {
  readonly width: number;
  readonly height: number;
  readonly ihdr: Uint8Array;
  readonly chunkTypes: string[];
  readonly zlib: Uint8Array;
  readonly scanlines: Uint8Array;
}

/** A minimal PNG reader for the tests: checks signature and every chunk CRC, inflates IDAT. */
async function decodePng(png: Uint8Array): Promise<DecodedPng> {
  assert.deepEqual(Array.from(png.subarray(0, 8)), [
    0x89,
    0x50,
    0x4e,
    0x47,
    0x0d,
    0x0a,
    0x1a,
    0x0a,
  ]);
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const chunkTypes: string[] = [];
  const idat: Uint8Array[] = [];
  let ihdr = new Uint8Array(0);
  let p = 8;
  while (p < png.length) {
    const length = view.getUint32(p);
    const type = String.fromCharCode(...png.subarray(p + 4, p + 8));
    const data = png.subarray(p + 8, p + 8 + length);
    const crc = view.getUint32(p + 8 + length);
    assert.equal(crc, crc32(png.subarray(p + 4, p + 8 + length)), `CRC of ${type}`);
    chunkTypes.push(type);
    if (type === "IHDR") ihdr = data.slice();
    if (type === "IDAT") idat.push(data);
    p += 12 + length;
  }
  assert.equal(p, png.length, "chunks end exactly at the end of the file");
  const zlib = new Uint8Array(idat.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of idat) {
    zlib.set(c, off);
    off += c.length;
  }
  const inflated = new Blob([zlib]).stream().pipeThrough(new DecompressionStream("deflate"));
  const scanlines = new Uint8Array(await new Response(inflated).arrayBuffer());
  const hv = new DataView(ihdr.buffer);
  return { width: hv.getUint32(0), height: hv.getUint32(4), ihdr, chunkTypes, zlib, scanlines };
}

/** The documented colour map, re-derived here from the anchors: piecewise-linear, rounded. */
function expectedColour(k: number): number[] {
  const t = k / 255;
  let s = 0;
  while (s < HEATMAP_ANCHORS.length - 2 && t > HEATMAP_ANCHORS[s + 1]![0]) s++;
  const a = HEATMAP_ANCHORS[s]!;
  const b = HEATMAP_ANCHORS[s + 1]!;
  const w = (t - a[0]) / (b[0] - a[0]);
  return [1, 2, 3].map((c) => Math.round(a[c]! + w * (b[c]! - a[c]!)));
}

Deno.test("png crc32 equals Python's zlib.crc32", () => {
  assert.ok(CRC_CASES.length >= 5);
  for (const c of CRC_CASES) {
    assert.equal(crc32(fromHex(c.hex)), c.crc32, `crc32(${c.hex.slice(0, 16)}...)`);
  }
  const all = fromHex(CRC_CASES[4]!.hex);
  assert.equal(crc32(all.subarray(100), crc32(all.subarray(0, 100))), CRC_CASES[4]!.crc32);
});

Deno.test("png heat map has a valid header, chunk CRCs and zlib-wrapped IDAT", async () => {
  const frames = 37; // width
  const bins = 11; // height
  const data = new Float32Array(frames * bins).map((_, k) => Math.sin(k * 0.37) * 5);
  const png = await encodeHeatmapPng(data, [frames, bins]);
  const d = await decodePng(png);
  assert.deepEqual(d.chunkTypes, ["IHDR", "IDAT", "IEND"]);
  assert.equal(d.width, frames);
  assert.equal(d.height, bins);
  assert.deepEqual(Array.from(d.ihdr.subarray(8)), [8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
  // RFC 1950 zlib header: deflate method, and (CMF * 256 + FLG) divisible by 31.
  assert.equal(d.zlib[0]! & 0x0f, 8);
  assert.equal((d.zlib[0]! * 256 + d.zlib[1]!) % 31, 0);
  assert.equal(d.scanlines.length, bins * (1 + 3 * frames));
});

Deno.test("png pixels follow min/max normalisation, the colour map, and low bins at the bottom", async () => {
  const frames = 6;
  const bins = 5;
  // [frames, bins]: value = bin * 10 + frame, so the highest bin of the last frame is the maximum.
  const data = new Float64Array(frames * bins);
  for (let f = 0; f < frames; f++) for (let b = 0; b < bins; b++) data[f * bins + b] = b * 10 + f;
  const d = await decodePng(await encodeHeatmapPng(data, [frames, bins]));
  const stride = 1 + 3 * frames;
  const min = 0;
  const max = (bins - 1) * 10 + frames - 1;
  for (let y = 0; y < bins; y++) {
    assert.equal(d.scanlines[y * stride], 0, "filter type None");
    for (let x = 0; x < frames; x++) {
      const bin = bins - 1 - y; // top row is the highest bin
      const v = bin * 10 + x;
      const k = Math.round(((v - min) / (max - min)) * 255);
      const px = Array.from(d.scanlines.subarray(y * stride + 1 + 3 * x, y * stride + 4 + 3 * x));
      assert.deepEqual(px, expectedColour(k), `pixel (${x}, ${y}) for value ${v}`);
    }
  }
  // Bottom-left is the minimum (dark purple), top-right the maximum (yellow).
  const bottomLeft = Array.from(
    d.scanlines.subarray((bins - 1) * stride + 1, (bins - 1) * stride + 4),
  );
  const topRight = Array.from(d.scanlines.subarray(3 * (frames - 1) + 1, 3 * frames + 1));
  assert.deepEqual(bottomLeft, [0x44, 0x01, 0x54]);
  assert.deepEqual(topRight, [0xfd, 0xe7, 0x25]);
});

Deno.test("png colour table hits the anchors and gets lighter with the value", () => {
  for (const [t, r, g, b] of HEATMAP_ANCHORS) {
    const k = t * 255;
    if (Number.isInteger(k)) assert.deepEqual(heatmapColour(k), [r, g, b]);
  }
  let prev = -1;
  for (let k = 0; k < 256; k++) {
    const [r, g, b] = heatmapColour(k);
    assert.deepEqual([r, g, b], expectedColour(k));
    const luma = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    assert.ok(luma >= prev - 0.5, `luma drops at ${k}`);
    prev = luma;
  }
  assert.throws(() => heatmapColour(256), RangeError);
});

Deno.test("png fixed min/max clamp values; a constant image maps to the lowest colour", async () => {
  const data = new Float32Array([-5, 0, 5, 10]); // [frames 4, bins 1]
  const d = await decodePng(await encodeHeatmapPng(data, [4, 1], { min: 0, max: 5 }));
  const px = (x: number) => Array.from(d.scanlines.subarray(1 + 3 * x, 4 + 3 * x));
  assert.deepEqual(px(0), expectedColour(0));
  assert.deepEqual(px(1), expectedColour(0));
  assert.deepEqual(px(2), expectedColour(255));
  assert.deepEqual(px(3), expectedColour(255));
  const flat = await decodePng(await encodeHeatmapPng(new Float32Array(6).fill(3), [3, 2]));
  for (let y = 0; y < 2; y++) {
    for (let x = 0; x < 3; x++) {
      const o = y * 10 + 1 + 3 * x;
      assert.deepEqual(Array.from(flat.scanlines.subarray(o, o + 3)), expectedColour(0));
    }
  }
});

Deno.test("png refuses mismatched shapes, empty images, non-finite values and min > max", async () => {
  await assert.rejects(
    () => encodeHeatmapPng(new Float32Array(5), [2, 3]),
    /shape \[2, 3\] holds 6 values: current data length is 5$/,
  );
  await assert.rejects(
    () => encodeHeatmapPng(new Float32Array(0), [0, 3]),
    /'frames' must be an integer in 1\.\./,
  );
  await assert.rejects(
    () => encodeHeatmapPng(new Float32Array([0, NaN]), [2, 1]),
    /value 1 must be finite: current value is NaN$/,
  );
  await assert.rejects(
    () => encodeHeatmapPng(new Float32Array(2), [2, 1], { min: 1, max: 0 }),
    /'min' and 'max' must be finite with min <= max: current values are 1 and 0$/,
  );
});
