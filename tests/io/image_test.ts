import assert from "node:assert/strict";
import { decodeImage, ImageError, readImage, sniffImageFormat } from "../../src/io/image.ts";
import { fixturePath, loadJson, loadNpy } from "../fixtures/mod.ts";

interface DecodeCase {
  kind: "decode";
  name: string;
  file: string;
  mode: string;
  size: [number, number];
  what: string;
}

const index = (await loadJson("image", "index.json")) as { cases: { kind: string }[] };
const DECODE = index.cases.filter((c) => c.kind === "decode") as DecodeCase[];
const path = (...parts: string[]) => fixturePath("image", ...parts).pathname;

/**
 * Largest difference accepted between our JPEG pixels and Pillow's (libjpeg-turbo): the chroma
 * upsampling and colour conversion are libjpeg's, but jpeg-js's IDCT is not libjpeg's. Measured on
 * the fixtures (printed below): at most 3 levels, 0.2 on average; the pipeline's default noise
 * augmentation alone moves pixels by about 0.02 * 127 = 2.5 levels (one standard deviation).
 */
const JPEG_MAX_LEVELS = 4;

Deno.test("PNGs decode to exactly Pillow's convert('RGB') in every colour type, depth, filter, interlace", async () => {
  const pngs = DECODE.filter((c) => c.file.endsWith(".png"));
  assert.ok(pngs.length >= 12, `expected the PNG grid, found ${pngs.length}`);
  for (const c of pngs) {
    const image = readImage(path("decode", c.file));
    const want = await loadNpy("uint8", "image", "decode", `${c.name}.npy`);
    assert.deepEqual([image.width, image.height], c.size, c.name);
    assert.deepEqual(want.shape, [c.size[1], c.size[0], 3]);
    assert.deepEqual(image.data, want.data, `${c.name} (${c.what})`);
  }
});

Deno.test("JPEGs decode within a few levels of Pillow's", async () => {
  const jpegs = DECODE.filter((c) => c.file.endsWith(".jpg"));
  assert.ok(jpegs.length >= 4);
  const report: string[] = [];
  for (const c of jpegs) {
    const image = readImage(path("decode", c.file));
    const want = (await loadNpy("uint8", "image", "decode", `${c.name}.npy`)).data;
    assert.deepEqual([image.width, image.height], c.size, c.name);
    let max = 0;
    let sum = 0;
    for (let k = 0; k < want.length; k++) {
      const d = Math.abs(image.data[k]! - want[k]!);
      max = Math.max(max, d);
      sum += d;
    }
    report.push(`${c.name} max ${max} mean ${(sum / want.length).toFixed(3)}`);
    assert.ok(max <= JPEG_MAX_LEVELS, `${c.name}: differs from Pillow by ${max} levels`);
  }
  console.log(`jpeg-js vs Pillow (levels): ${report.join("; ")}`);
});

Deno.test("bad image files give one line naming the file and the problem", () => {
  const cases: [string, RegExp][] = [
    [
      "text.jpg",
      /^Cannot read the image '.*text\.jpg': it is not a PNG or JPEG image \(it holds text\)$/,
    ],
    ["empty.png", /^Cannot read the image '.*empty\.png': the file is empty$/],
    ["image.gif", /'.*image\.gif': GIF is not supported: convert it to PNG or JPEG$/],
    ["image.bmp", /BMP is not supported: convert it to PNG or JPEG$/],
    ["image.webp", /WebP is not supported: convert it to PNG or JPEG$/],
    ["truncated.png", /'.*truncated\.png': the PNG is (truncated|corrupt)/],
    ["bad_crc.png", /the PNG is corrupt: chunk IHDR fails its CRC check$/],
    ["truncated.jpg", /'.*truncated\.jpg': the JPEG data is corrupt \(/],
    ["missing.png", /^Cannot read the image '.*missing\.png': no such file$/],
  ];
  for (const [file, pattern] of cases) {
    assert.throws(() => readImage(path("bad", file)), (e: unknown) => {
      assert.ok(e instanceof ImageError && e instanceof RangeError, String(e));
      assert.match(e.message, pattern);
      assert.ok(!e.message.includes("\n"), "one line");
      return true;
    });
  }
  assert.throws(() => readImage(path("bad")), /Cannot read the image '.*bad': it is a folder$/);
});

Deno.test("PNG size limits: a 1-pixel-high image and an oversized header are refused", () => {
  // gray8.png with its IHDR patched (and its CRC fixed) to claim other sizes.
  const tiny = Deno.readFileSync(path("decode", "gray8.png"));
  const patched = tiny.slice();
  const view = new DataView(patched.buffer);
  view.setUint32(16, 100_000);
  view.setUint32(20, 100_000);
  fixCrc(patched, 8);
  assert.throws(
    () => decodeImage(patched, "huge.png"),
    /'huge\.png': it is 100000x100000 pixels, above the limit of 100 megapixels: scale it down first$/,
  );
  view.setUint32(16, 13);
  view.setUint32(20, 1);
  fixCrc(patched, 8);
  assert.throws(
    () => decodeImage(patched, "thin.png"),
    /'thin\.png': it is 13x1 pixels: an input image needs at least 2x2$/,
  );
});

/** Recomputes the CRC of the chunk at `offset` (zlib's CRC-32, bitwise). */
function fixCrc(bytes: Uint8Array, offset: number): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const length = view.getUint32(offset);
  let crc = 0xffffffff;
  for (const b of bytes.subarray(offset + 4, offset + 8 + length)) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0xedb88320 & -(crc & 1));
  }
  view.setUint32(offset + 8 + length, (crc ^ 0xffffffff) >>> 0);
}

Deno.test("sniffImageFormat names formats by their first bytes", () => {
  const bytes = (file: string) => Deno.readFileSync(path(...file.split("/")));
  assert.equal(sniffImageFormat(bytes("decode/rgb8_pillow.png")), "PNG");
  assert.equal(sniffImageFormat(bytes("decode/jpeg_420.jpg")), "JPEG");
  assert.equal(sniffImageFormat(bytes("bad/image.gif")), "GIF");
  assert.equal(sniffImageFormat(bytes("bad/image.webp")), "WebP");
  assert.equal(sniffImageFormat(bytes("bad/text.jpg")), undefined);
});
