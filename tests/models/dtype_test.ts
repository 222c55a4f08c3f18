/**
 * A model folder with graphs in two float types (`python -m models.export ... --dtype fp32,fp16`):
 * the manifest's `variants`, `--dtype` and the choice `auto` makes per execution provider. These
 * tests make the variant by hand from the committed tiny model (a copy of its UNet declared as the
 * fp16 graph), so they run everywhere; `tests/pipelines/audioldm2_fp16_test.ts` runs a real fp16
 * variant against diffusers.
 *
 * @module
 */

import assert from "node:assert/strict";
import { manifestDtypes, ManifestError, withDtype } from "../../src/models/manifest.ts";
import { chooseDtype, resolveModel, resolveModelFor } from "../../src/models/model.ts";
import { listModels } from "../../src/models/registry.ts";
import { audioldm2 } from "../../src/pipelines/audioldm2/mod.ts";
import { copyModel, editManifest, TINY_AUDIOLDM2 } from "../support/model_folders.ts";

type Json = Record<string, unknown>;

/** A copy of the tiny model whose UNet has an "fp16" variant at fp16/unet.onnx (same graph). */
async function withVariant(dir: string, edit: (m: Json) => void = () => {}): Promise<string> {
  const folder = `${dir}/dual`;
  await copyModel(TINY_AUDIOLDM2, folder);
  await Deno.mkdir(`${folder}/fp16`);
  await Deno.copyFile(`${folder}/unet.onnx`, `${folder}/fp16/unet.onnx`);
  await editManifest(folder, (m) => {
    const unet = (m.components as Json).unet as Json;
    m.variants = { fp16: { components: { unet: { ...unet, file: "fp16/unet.onnx" } } } };
    edit(m);
  });
  return folder;
}

Deno.test("a variant's graphs replace the folder's own in the manifest of its float type", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const folder = await withVariant(dir);
    const model = resolveModel(folder);
    assert.deepEqual(manifestDtypes(model.manifest), ["fp32", "fp16"]);
    const fp16 = withDtype(model.manifest, "fp16", model.manifestFile);
    assert.equal(fp16.dtype, "fp16");
    assert.equal(fp16.components.unet!.file, "fp16/unet.onnx");
    assert.equal(fp16.components.vae_decoder!.file, "vae_decoder.onnx"); // not replaced
    assert.deepEqual(fp16.variants, {});
    assert.equal(withDtype(model.manifest, "fp32", model.manifestFile), model.manifest);
    assert.equal(fp16.config.sampleRate, model.manifest.config.sampleRate);
    assert.deepEqual(listModels(dir).map((m) => [m.name, m.dtype]), [["dual", "fp32+fp16"]]);
    // The choice reaches the denoiser's open payload, which Workers and hosts resolve again.
    const chosen = resolveModelFor(folder, { dtype: "fp16", ep: "cpu" });
    const open = audioldm2.denoiserInit(chosen, {} as never);
    assert.equal(open.dtype, "fp16");
    assert.equal(
      resolveModel(open.modelDir, open.dtype).manifest.components.unet!.file,
      "fp16/unet.onnx",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a variant's fields replace the folder's, and the result is checked as a manifest", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const sampleRate = (rate: unknown) => (m: Json) => {
      ((m.variants as Json).fp16 as Json).fields = {
        config: { ...(m.config as Json), sampleRate: rate },
      };
    };
    const folder = await withVariant(dir, sampleRate(8000));
    const model = resolveModel(folder);
    assert.equal(model.manifest.config.sampleRate, 16000);
    assert.equal(withDtype(model.manifest, "fp16", model.manifestFile).config.sampleRate, 8000);
    const broken = await withVariant(`${dir}/broken`, sampleRate("fast"));
    const file = `${broken}/manifest.json`;
    assert.throws(
      () => withDtype(resolveModel(broken).manifest, "fp16", file),
      /'config\.sampleRate' must be a number: found "fast"/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--dtype auto is fp16 on CUDA when the folder holds it, else the folder's own", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const dual = resolveModel(await withVariant(dir));
    const single = resolveModel(TINY_AUDIOLDM2);
    assert.equal(chooseDtype(dual, "auto", "cuda"), "fp16");
    assert.equal(chooseDtype(dual, "auto", "cpu"), "fp32");
    assert.equal(chooseDtype(dual, "auto", "webgpu"), "fp32");
    assert.equal(chooseDtype(single, "auto", "cuda"), "fp32");
    assert.equal(chooseDtype(dual, "fp32", "cuda"), "fp32");
    assert.equal(chooseDtype(dual, "fp16", "cpu"), "fp16");
    assert.throws(
      () => chooseDtype(single, "fp16", "cuda"),
      (e: unknown) =>
        e instanceof ManifestError &&
        e.message.includes("the model has no fp16 graphs (it holds fp32)") &&
        e.message.includes("re-export it with --dtype fp32,fp16"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a malformed variants entry is refused at load, naming the field", async () => {
  const cases: [string, (m: Json) => void, RegExp][] = [
    ["unknown type", (m) => {
      m.variants = { int8: { components: {} } };
    }, /'variants\.int8' must be named by a float type other than the folder's "fp32"/],
    ["the folder's own type", (m) => {
      m.variants = { fp32: { components: {} } };
    }, /'variants\.fp32' must be named by a float type other than/],
    ["a component the folder lacks", (m) => {
      const v = (m.variants as Json).fp16 as Json;
      const unet = (v.components as Json).unet;
      v.components = { unet, transformer: unet };
    }, /'variants\.fp16\.components\.transformer' must be a component of 'components'/],
    ["a field a variant may not restate", (m) => {
      ((m.variants as Json).fp16 as Json).fields = { dtype: "fp32" };
    }, /'variants\.fp16\.fields\.dtype' must be absent/],
    ["a file outside the folder", (m) => {
      const v = (m.variants as Json).fp16 as Json;
      ((v.components as Json).unet as Json).file = "../unet.onnx";
    }, /'variants\.fp16\.components\.unet\.file' must be a path inside the model folder/],
  ];
  for (const [name, edit, message] of cases) {
    const dir = await Deno.makeTempDir();
    try {
      const folder = await withVariant(dir, edit);
      assert.throws(() => resolveModel(folder), message, name);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});
