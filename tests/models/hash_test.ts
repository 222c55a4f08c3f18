import { canonicalJson, manifestHash, servedModel } from "../../src/models/hash.ts";
import { assert, assertEquals, assertThrows } from "../parastep/_assert.ts";

const MODELS = new URL("../../models", import.meta.url).pathname;

Deno.test("the content hash ignores key order and whitespace, and changes with any value", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const raw = JSON.parse(await Deno.readTextFile(`${MODELS}/audioldm2-tiny/manifest.json`));
    const reordered = Object.fromEntries(Object.entries(raw).reverse());
    await Deno.writeTextFile(`${dir}/a.json`, JSON.stringify(reordered));
    assertEquals(
      manifestHash(`${dir}/a.json`),
      manifestHash(`${MODELS}/audioldm2-tiny/manifest.json`),
    );
    raw.source.seed = 1;
    await Deno.writeTextFile(`${dir}/b.json`, JSON.stringify(raw, null, 2));
    assert(manifestHash(`${dir}/b.json`) !== manifestHash(`${dir}/a.json`));
    assertEquals(
      canonicalJson({ b: [1, { d: 1, c: 2 }], a: "x" }),
      '{"a":"x","b":[1,{"c":2,"d":1}]}',
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a served model is a folder name inside --models: paths and symlinks out are refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const name of ["../models", "a/b", "..", ".", "/etc", ""]) {
      assertThrows(() => servedModel(MODELS, name), RangeError, "never by a path");
    }
    // A folder that is a symlink to a model outside the models directory.
    await Deno.symlink(`${MODELS}/audioldm2-tiny`, `${dir}/outside`);
    assertThrows(
      () => servedModel(dir, "outside"),
      RangeError,
      "leads outside the models directory",
    );
    // A component file that is a symlink out of its folder.
    await Deno.mkdir(`${dir}/tiny`);
    await Deno.copyFile(`${MODELS}/audioldm2-tiny/manifest.json`, `${dir}/tiny/manifest.json`);
    await Deno.symlink(`${MODELS}/audioldm2-tiny/unet.onnx`, `${dir}/tiny/unet.onnx`);
    assertThrows(() => servedModel(dir, "tiny", ["unet"]), RangeError, "leads outside its folder");
    assertThrows(() => servedModel(dir, "tiny", ["nope"]), RangeError, "has no 'nope'");
    assertEquals(servedModel(MODELS, "audioldm2-tiny", ["unet"]).manifest.name, "audioldm2-tiny");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
