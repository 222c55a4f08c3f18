import assert from "node:assert/strict";
import { ManifestError } from "../../src/models/manifest.ts";
import { checkComponentGraphs, resolveModel } from "../../src/models/model.ts";
import { familyOf } from "../../src/pipelines/mod.ts";
import { TextTokenizer } from "../../src/pipelines/tokenize.ts";
import { copyModel, editManifest, TINY_AUDIOLDM2 } from "../support/model_folders.ts";

type Json = Record<string, Record<string, unknown>>;

/**
 * Each corrupt manifest value is refused when the model is loaded, naming manifest.json and the
 * field, instead of failing late or allocating gigabytes.
 */
const CORRUPT: [string, (m: Json) => void, RegExp][] = [
  [
    "sampleRate 0",
    (m) => m.config!.sampleRate = 0,
    /'config\.sampleRate' must be an integer in 1\.\.384000: found 0/,
  ],
  [
    "sampleRate 44100.5",
    (m) => m.config!.sampleRate = 44100.5,
    /'config\.sampleRate' must be an integer/,
  ],
  [
    "vaeScalingFactor 0",
    (m) => m.config!.vaeScalingFactor = 0,
    /'config\.vaeScalingFactor' must be a number > 0/,
  ],
  [
    "latentChannels 1e9",
    (m) => m.config!.latentChannels = 1e9,
    /'config\.latentChannels' must be an integer in 1\.\.4096: found 1000000000/,
  ],
  [
    "maxNewTokens -1",
    (m) => m.config!.maxNewTokens = -1,
    /'config\.maxNewTokens' must be an integer in 1\.\.4096: found -1/,
  ],
  [
    "vaeScaleFactor 3",
    (m) => m.config!.vaeScaleFactor = 3,
    /'config\.vaeScaleFactor' must be a power of two/,
  ],
  [
    "modelMaxLength 1e8",
    (m) => (m.tokenizers!.t5 as Json[string]).modelMaxLength = 1e8,
    /'tokenizers\.t5\.modelMaxLength' must be an integer in 1\.\.65536/,
  ],
  [
    "num_train_timesteps 1e9",
    (m) => m.scheduler!.num_train_timesteps = 1e9,
    /'scheduler': .*'num_train_timesteps' must be an integer in 1\.\.100000/,
  ],
  [
    "defaults.duration 0",
    (m) => m.defaults!.duration = 0,
    /'defaults\.duration' must be a number > 0 and <= 60/,
  ],
  [
    "defaults.steps 0",
    (m) => m.defaults!.steps = 0,
    /'defaults\.steps' must be an integer in 1\.\.10000: found 0/,
  ],
  [
    "a dim of 1e10",
    (m) =>
      ((m.components!.unet as Json[string]).inputs as { dims: unknown[] }[])[0]!.dims[1] = 1e10,
    /'components\.unet\.inputs\[0\]\.dims\[1\]' must be an integer in 1\.\.2147483647/,
  ],
  [
    "a component outside the folder",
    (m) => (m.components!.unet as Json[string]).file = "../unet.onnx",
    /'components\.unet\.file' must be a path inside the model folder/,
  ],
  [
    "an absolute component path",
    (m) => (m.components!.vocoder as Json[string]).file = "/etc/passwd",
    /'components\.vocoder\.file' must be a path inside the model folder/,
  ],
  [
    "dtype int8",
    (m) => (m as Record<string, unknown>).dtype = "int8",
    /'dtype' must be "fp32", "fp16" or "bf16": found "int8"/,
  ],
  [
    "an unknown family",
    (m) => (m as Record<string, unknown>).family = "imagen",
    /'family' must be one of audioldm2.*: found "imagen"/,
  ],
];

Deno.test("a corrupt manifest value is refused at load, naming the file and the field", async (t) => {
  const dir = await Deno.makeTempDir();
  try {
    for (const [name, edit, message] of CORRUPT) {
      await t.step(name, async () => {
        const folder = `${dir}/${name.replaceAll(" ", "-")}`;
        await copyModel(TINY_AUDIOLDM2, folder);
        await editManifest(folder, (m) => edit(m as Json));
        assert.throws(
          () => familyOf(resolveModel(folder)),
          (e: unknown) =>
            e instanceof ManifestError && e.file === `${folder}/manifest.json` &&
            message.test(e.message),
        );
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a component that is a symlink out of the model folder is refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const folder = `${dir}/model`;
    await copyModel(TINY_AUDIOLDM2, folder);
    await Deno.rename(`${folder}/vocoder.onnx`, `${dir}/vocoder.onnx`);
    await Deno.symlink(`${dir}/vocoder.onnx`, `${folder}/vocoder.onnx`);
    assert.throws(
      () => familyOf(resolveModel(folder)),
      (e: unknown) =>
        e instanceof ManifestError &&
        /component 'vocoder' file .*vocoder\.onnx lies outside the model folder/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkComponentGraphs compares each graph file with the manifest without a session", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const folder = `${dir}/model`;
    await copyModel(TINY_AUDIOLDM2, folder);
    const components = Object.keys(resolveModel(folder).manifest.components);
    checkComponentGraphs(resolveModel(folder), components); // the committed model is consistent
    // The UNet replaced by the VAE decoder's graph.
    await Deno.copyFile(`${folder}/vae_decoder.onnx`, `${folder}/unet.onnx`);
    assert.throws(
      () => checkComponentGraphs(resolveModel(folder), components),
      /component 'unet' \(unet\.onnx\) has inputs \[latent\] but the manifest declares \[encoder_attention_mask_1, encoder_hidden_states, encoder_hidden_states_1, sample, timestep\]; re-export the model/,
    );
    // A graph file that is not ONNX at all.
    await Deno.writeTextFile(`${folder}/unet.onnx`, "not a model");
    assert.throws(
      () => checkComponentGraphs(resolveModel(folder), components),
      /component 'unet' \(unet\.onnx\) is not a readable ONNX model: .*; re-export the model/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a model path names one place; a bare name is looked up in the model folders", () => {
  assert.throws(
    () => resolveModel("/nonexistent/models/audioldm2"),
    /^ModelNotFoundError: Cannot find model '\/nonexistent\/models\/audioldm2': no manifest\.json in \/nonexistent\/models\/audioldm2\. /,
  );
  assert.throws(() => resolveModel("no-such-model"), (e: unknown) => {
    const message = (e as Error).message;
    return /no manifest\.json in no-such-model or .*\/models\/no-such-model or .*\.cache\/models\/no-such-model\./
      .test(message);
  });
});

Deno.test("a broken tokenizer_config.json is named as such, not as tokenizer.json", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const folder = `${dir}/model`;
    await copyModel(TINY_AUDIOLDM2, folder);
    await Deno.writeTextFile(`${folder}/tokenizer_2/tokenizer_config.json`, "{ not json");
    const model = resolveModel(folder);
    await assert.rejects(
      TextTokenizer.load(model.dir, model.manifest.tokenizers.t5!),
      (e: unknown) =>
        e instanceof ManifestError &&
        e.file === `${folder}/tokenizer_2/tokenizer_config.json` &&
        /cannot be read as JSON: .*; re-export the model$/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
