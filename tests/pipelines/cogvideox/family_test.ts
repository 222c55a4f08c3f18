import assert from "node:assert/strict";
import { resolveModel } from "../../../src/models/model.ts";
import { FAMILIES, familyOf } from "../../../src/pipelines/mod.ts";
import {
  type CheckedRequest,
  checkMemory,
  checkRequest,
  cogvideox,
  estimateMemory,
  prepareLatents,
} from "../../../src/pipelines/cogvideox/mod.ts";
import { svd } from "../../../src/pipelines/svd/mod.ts";
import { TextTokenizer } from "../../../src/pipelines/tokenize.ts";
import { randn } from "../../../src/random.ts";
import { copyModel, editManifest } from "../../support/model_folders.ts";

const TINY = new URL("../../../models/cogvideox-tiny", import.meta.url).pathname;
const TINY_5B = new URL("../../../models/cogvideox-tiny-5b", import.meta.url).pathname;

Deno.test("a flag several families take is declared alike by each (the parser reads one spec)", () => {
  const seen = new Map<string, { family: string; spec: Record<string, unknown> }>();
  let shared = 0;
  for (const family of Object.values(FAMILIES)) {
    for (const spec of family.flags) {
      const parsing = {
        type: spec.type,
        short: spec.short,
        min: spec.min,
        choices: spec.choices,
        output: spec.output,
      };
      const first = seen.get(spec.name);
      if (first === undefined) {
        seen.set(spec.name, { family: family.name, spec: parsing });
        continue;
      }
      shared++;
      assert.deepEqual(parsing, first.spec, `--${spec.name}: ${family.name} vs ${first.family}`);
    }
  }
  // prompt, negative-prompt, guidance (audioldm2); frames, width, height, fps, gif, frames-dir (svd).
  assert.equal(shared, 9);
  // The video output flags are the very same specs.
  for (const name of ["gif", "frames-dir"]) {
    assert.equal(
      cogvideox.flags.find((f) => f.name === name),
      svd.flags.find((f) => f.name === name),
    );
  }
});

Deno.test("the registry finds the cogvideox family for both tiny folders", () => {
  assert.equal(familyOf(resolveModel(TINY)), cogvideox);
  assert.equal(familyOf(resolveModel(TINY_5B)), cogvideox);
  assert.equal(FAMILIES.cogvideox, cogvideox);
});

Deno.test("requests take the manifest's defaults; several frame counts share a latent shape", () => {
  const model = resolveModel(TINY);
  const r = cogvideox.checkRequest(model, { seed: 0, flags: { prompt: "a dog" } });
  assert.deepEqual(
    [r.steps, r.guidance, r.dynamicCfg, r.frames, r.width, r.height, r.fps],
    [20, 6, false, 9, 48, 32, 8],
  );
  assert.deepEqual(r.latentDims, [1, 3, 4, 4, 6]);
  assert.equal(r.shape.transformer, "transformer_f3_h4_w6");
  assert.equal(r.shape.vaeDecoder, "vae_decoder_f3_h4_w6");
  assert.deepEqual(r.notices, []);
  assert.equal(cogvideox.describe(r), "9 frames 48x32 at 8 fps");
  assert.equal(cogvideox.defaultOutput(r), "a-dog_s0.mp4");
  // 13..16 frames all give F' = 4, which decodes to 16.
  for (const frames of [13, 14, 15, 16]) {
    const r4 = checkRequest(model, { prompt: "a dog", frames });
    assert.deepEqual(r4.latentDims, [1, 4, 4, 4, 6]);
    assert.equal(r4.shape.frames, 16);
    assert.equal(r4.notices.length, frames === 16 ? 0 : 1);
  }
  // Without guidance only the prompt is encoded.
  const g1 = checkRequest(model, { prompt: "a dog", guidance: 1 });
  assert.equal(g1.cfg, false);
  assert.equal(g1.inputIds.length, 32);
  const g6 = checkRequest(model, { prompt: "a dog", negativePrompt: "blurry" });
  assert.equal(g6.inputIds.length, 64);
});

Deno.test("T5 token ids match diffusers' (max_length padding, truncation, no mask) for every tokens.json case", async () => {
  for (const folder of [TINY, TINY_5B]) {
    const model = resolveModel(folder);
    const { cases } = JSON.parse(
      await Deno.readTextFile(`${folder}/reference/tokens.json`),
    ) as { cases: { prompt: string; inputIds: number[] }[] };
    const L = model.manifest.config.maxTextSeqLength as number;
    const tokenizer = TextTokenizer.loadSync(model.dir, model.manifest.tokenizers.t5!);
    let truncated = 0;
    for (const c of cases) {
      const e = tokenizer.encode(c.prompt, { length: L });
      assert.deepEqual(
        Array.from(e.ids, Number),
        c.inputIds,
        JSON.stringify(c.prompt).slice(0, 40),
      );
      if (e.dropped > 0) truncated++;
      // What checkRequest sends for a prompt without guidance.
      if (c.prompt.trim() !== "") {
        const r = checkRequest(model, { prompt: c.prompt, guidance: 1 });
        assert.deepEqual(Array.from(r.inputIds, Number), c.inputIds);
        assert.equal(r.notices.length, e.dropped > 0 ? 1 : 0);
      }
    }
    assert.ok(truncated >= 2, `${folder}: ${truncated} truncated cases`);
  }
});

Deno.test("seeded latents are parastep's randn over [1, F', C, h, w] (init_noise_sigma is 1)", () => {
  const model = resolveModel(TINY);
  const r = checkRequest(model, { prompt: "a dog", seed: 11 });
  const x = prepareLatents(r);
  assert.equal(x.length, 3 * 4 * 4 * 6);
  assert.deepEqual(x, randn(11, x.length));
  // Injected latents are used as given.
  const given = new Float32Array(x.length).fill(0.25);
  assert.deepEqual(prepareLatents(checkRequest(model, { prompt: "a dog", latents: given })), given);
  assert.throws(
    () => checkRequest(model, { prompt: "a dog", latents: new Float32Array(5) }),
    /the given latents hold 5 values: \[1,3,4,4,6\] needs 288/,
  );
});

Deno.test("the memory check refuses what cannot fit, with the estimate and what to lower", () => {
  const model = resolveModel(TINY);
  const r = checkRequest(model, { prompt: "a dog" });
  const m = estimateMemory(model, r);
  // Tokens: 32 of text and 3 x 2 x 3 patches.
  assert.equal(m.tokens, 32 + 18);
  assert.equal(m.attention, 2 * 2 * 50 * 50 * 4);
  assert.ok(m.weights.denoising > 0 && m.weights.textEncoder > 0);
  // On the CPU the weights and activations count; on a GPU only parastep's own arrays.
  assert.throws(
    () => checkMemory(model, r, "cpu", 1e6),
    /^RangeError: Cannot generate 9 frames of 48x32 on the CPU: that needs about 0\.0 GiB of memory \(one transformer call's attention over 50 tokens alone 0\.0 GiB, the VAE decode 0\.0 GiB\) and 0\.0 GiB is available; use --decode-tiles \(the VAE decode in tiles needs about 0\.0 GiB\), fewer --frames or a smaller --width\/--height \(an exported shape\), or a GPU \(--ep cuda\)$/,
  );
  // A folder without tile decoders does not suggest them.
  const noTiles = resolveModel(TINY_5B);
  assert.throws(
    () => checkMemory(noTiles, checkRequest(noTiles, { prompt: "a dog" }), "cpu", 1e6),
    /is available; use fewer --frames or a smaller --width\/--height \(an exported shape\), or a GPU/,
  );
  checkMemory(model, r, "cuda", 1e6);
  assert.throws(
    () => checkMemory(model, r, "cuda", 1e3),
    /^RangeError: Cannot generate 9 frames of 48x32: that needs/,
  );
  assert.throws(
    () => checkRequest(model, { prompt: "a dog" }, 1e3),
    /parastep's own arrays alone need .* use fewer --frames or a smaller --width\/--height$/,
  );
});

Deno.test("when the untiled decode cannot fit, the refusal names --decode-tiles, and with it the estimate uses the tile's activations", () => {
  const model = resolveModel(TINY);
  const whole = checkRequest(model, { prompt: "a dog", frames: 16 });
  const tiled = checkRequest(model, { prompt: "a dog", frames: 16, decodeTiles: true });
  assert.equal(whole.decodeTiles, false);
  assert.equal(tiled.decodeTiles, true);
  const m = estimateMemory(model, whole);
  const t = estimateMemory(model, tiled);
  // The largest tile is 24 x 32 pixels of the 32 x 48 video (3 x 4 of 4 x 6 latents), and the
  // tile graph has the untiled one's weights: the decode's activations scale by the pixels.
  assert.ok(
    m.tiledDecoder !== null && Math.abs(m.tiledDecoder / m.decoder - (24 * 32) / (32 * 48)) < 1e-3,
  );
  assert.equal(t.decoder, m.tiledDecoder);
  assert.equal(t.tiledDecoder, m.tiledDecoder);
  // Parastep holds the four decoded tiles until they are blended: (24 + 16) x (32 + 24) pixels.
  assert.equal(t.host - m.host, 16 * 3 * 40 * 56 * 4);
  assert.ok(m.decoder > m.denoiser, "on the tiny model the decode is the largest activation");
  // A capacity between the two needs: the untiled request is refused, naming --decode-tiles with the
  // tiled estimate; the tiled one fits.
  const need = (e: typeof m) =>
    e.host + Math.max(e.weights.textEncoder, e.weights.denoising + Math.max(e.denoiser, e.decoder));
  assert.ok(need(t) < need(m));
  const capacity = (need(t) + need(m)) / 2;
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
  assert.throws(
    () => checkMemory(model, whole, "cpu", capacity),
    (e: unknown) => {
      assert.ok(e instanceof RangeError);
      assert.equal(
        e.message,
        `Cannot generate 16 frames of 48x32 on the CPU: that needs about ${
          gib(need(m))
        } of memory ` +
          `(one transformer call's attention over ${m.tokens} tokens alone ${
            gib(m.attention)
          }, the VAE decode ` +
          `${gib(m.decoder)}) and ${
            gib(capacity)
          } is available; use --decode-tiles (the VAE decode in tiles ` +
          `needs about ${
            gib(m.tiledDecoder!)
          }), fewer --frames or a smaller --width/--height (an exported shape), ` +
          `or a GPU (--ep cuda)`,
      );
      return true;
    },
  );
  checkMemory(model, tiled, "cpu", capacity);
  // Below the tiled need it is refused too, without suggesting tiles again.
  assert.throws(
    () => checkMemory(model, tiled, "cpu", need(t) - 1),
    /the VAE decode in tiles 0\.0 GiB\) and 0\.0 GiB is available; use fewer --frames/,
  );
});

Deno.test("--decode-tiles is refused, in one line, where the folder cannot tile", async () => {
  assert.throws(
    () => checkRequest(resolveModel(TINY_5B), { prompt: "a dog", decodeTiles: true }),
    /^RangeError: Cannot decode in tiles \(--decode-tiles\): 'cogvideox-tiny-5b' has no tile decoder graphs \(manifest 'vaeTiling'\); the exporter adds them to a folder made from a checkpoint \('python -m models\.export cogvideox --from <checkpoint>'\), or decode without --decode-tiles$/,
  );
  // Tile sizes whose crops do not add up to the video (diffusers' defaults at 32 x 48 would decode
  // 50 x 56 pixels) are refused rather than giving another size.
  const folder = await Deno.makeTempDir();
  try {
    await copyModel(TINY, folder);
    await editManifest(folder, (m) => {
      Object.assign(m.vaeTiling as Record<string, number>, {
        tileSampleMinHeight: 16,
        tileSampleMinWidth: 24,
        tileLatentMinHeight: 2,
        tileLatentMinWidth: 3,
        tileOverlapFactorHeight: 1 / 6,
        tileOverlapFactorWidth: 1 / 5,
      });
    });
    assert.throws(
      () => checkRequest(resolveModel(folder), { prompt: "a dog", decodeTiles: true }),
      /^RangeError: Cannot decode 48x32 in tiles \(--decode-tiles\): this model's 24x16 tiles would give a 56x50 video \(as diffusers' tiled_decode would\); decode without --decode-tiles$/,
    );
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});

Deno.test("at CogVideoX-2b's size the attention estimate is the spec's 70.6 GiB (49 frames of 720x480)", () => {
  const model = resolveModel(TINY);
  const real = {
    ...model,
    manifest: {
      ...model.manifest,
      config: {
        ...model.manifest.config,
        numAttentionHeads: 30,
        attentionHeadDim: 64,
        maxTextSeqLength: 226,
        textEmbedDim: 4096,
        latentChannels: 16,
      },
    },
  };
  const shape = {
    frames: 49,
    height: 480,
    width: 720,
    latentFrames: 13,
    latentHeight: 60,
    latentWidth: 90,
    videoTokens: 13 * 30 * 45,
    transformer: "transformer_f3_h4_w6",
    vaeDecoder: "vae_decoder_f3_h4_w6",
  };
  const request = {
    ...checkRequest(model, { prompt: "a dog" }),
    shape,
    width: 720,
    height: 480,
    latentDims: [1, 13, 16, 60, 90],
  } as CheckedRequest;
  const m = estimateMemory(real, request);
  // video-pipelines.md §4.3: the largest tensor of a CFG call is 2·30·17776²·4 B = 70.6 GiB.
  assert.equal(m.tokens, 17776);
  assert.equal((m.attention / 2 ** 30).toFixed(1), "70.6");
  assert.throws(
    () => checkMemory(real, request, "cpu", 64 * 2 ** 30),
    /attention over 17776 tokens alone 70\.6 GiB/,
  );
});

Deno.test("checkManifest names the field a broken CogVideoX folder gets wrong", async (t) => {
  const folder = await Deno.makeTempDir();
  try {
    const cases: [string, (m: Record<string, unknown>) => void, RegExp][] = [
      ["no shapes", (m) => delete m.shapes, /'shapes' must list the exported video shapes/],
      [
        "a shape's token count",
        (m) => ((m.shapes as Record<string, unknown>[])[0]!.videoTokens = 17),
        /'shapes\[0\]\.videoTokens' must be 18 for this shape: found 17; re-export the model/,
      ],
      [
        "a shape's graph",
        (m) => ((m.shapes as Record<string, unknown>[])[1]!.transformer = "transformer_f9"),
        /'shapes\[1\]\.transformer' must name a component: found "transformer_f9"/,
      ],
      [
        "a shape not a multiple of 16",
        (m) => ((m.shapes as Record<string, unknown>[])[0]!.width = 40),
        /'shapes\[0\]\.width' must be a multiple of 16: found 40/,
      ],
      [
        "defaults that are not the first shape",
        (m) => ((m.defaults as Record<string, number>).frames = 16),
        /'shapes\[0\]' \(9 frames of 48x32\) must be the default video \(defaults: 16 frames of 48x32\)/,
      ],
      [
        "a tokenizer shorter than the text length",
        (m) => ((m.tokenizers as Record<string, Record<string, number>>).t5!.modelMaxLength = 16),
        /'tokenizers\.t5\.modelMaxLength' \(16\) must be at least 'config\.maxTextSeqLength' \(32\)/,
      ],
      [
        "another scheduler",
        (m) => ((m.scheduler as Record<string, unknown>)._class_name = "CogVideoXDPMScheduler"),
        /'scheduler' \(at the default 20 steps\): .*'_class_name' must be CogVideoXDDIMScheduler/,
      ],
      [
        "a config number out of range",
        (m) => ((m.config as Record<string, number>).useRotaryPositionalEmbeddings = 2),
        /'config\.useRotaryPositionalEmbeddings' must be an integer in 0\.\.1: found 2/,
      ],
      [
        "a latent tile size that is not the pixel size / 8",
        (m) => ((m.vaeTiling as Record<string, number>).tileLatentMinWidth = 5),
        /'vaeTiling' field 'tileLatentMinWidth' must be int\(32 \/ 8\) = 4: found 5; re-export the model/,
      ],
      [
        "an overlap factor out of range",
        (m) => ((m.vaeTiling as Record<string, number>).tileOverlapFactorHeight = 1),
        /'vaeTiling' field 'tileOverlapFactorHeight' must be a number in \(0, 1\): found 1/,
      ],
      [
        "tile decoders without the tile sizes",
        (m) => delete m.vaeTiling,
        /'shapes\[0\]\.vaeTileDecoder' needs 'vaeTiling' \(the tile sizes\); re-export the model/,
      ],
      [
        "a tile decoder that is not a component",
        (
          m,
        ) => ((m.shapes as Record<string, unknown>[])[1]!.vaeTileDecoder = "vae_decoder_tiles_f9"),
        /'shapes\[1\]\.vaeTileDecoder' must name a component: found "vae_decoder_tiles_f9"/,
      ],
    ];
    for (const [name, edit, message] of cases) {
      await t.step(name, async () => {
        await Deno.remove(folder, { recursive: true });
        await copyModel(TINY, folder);
        await editManifest(folder, edit);
        assert.throws(() => familyOf(resolveModel(folder)), message);
      });
    }
    await t.step("a missing per-shape graph file", async () => {
      await Deno.remove(folder, { recursive: true });
      await copyModel(TINY, folder);
      await Deno.remove(`${folder}/vae_decoder_f4_h4_w6.onnx`);
      assert.throws(
        () => familyOf(resolveModel(folder)),
        /component 'vae_decoder_f4_h4_w6' file .* is missing; re-export the model/,
      );
    });
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});
