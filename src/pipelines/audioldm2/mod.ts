/**
 * AudioLDM2 text-to-audio as a {@linkcode PipelineFamily}: its flags, and diffusers'
 * `AudioLDM2Pipeline.__call__` stages from ./pipeline.ts (check, encode, decode) around the
 * ParaStep engine, which runs ./sampler.ts on each device. Writes a WAV and, optionally, the
 * mel spectrogram as a PNG.
 *
 * @module
 */

import { encodeHeatmapPng } from "../../io/png.ts";
import { encodeWav, type WavFormat } from "../../io/wav.ts";
import { slugFileName } from "../../io/paths.ts";
import { logSpectralDistance, psnr, snr } from "../../metrics/audio.ts";
import type { FlagValues, OutputContent, OutputTarget, PipelineFamily } from "../family.ts";
import {
  type CheckedRequest,
  checkManifest,
  checkRequest,
  COMPONENTS,
  type Conditioning,
  type Decoded,
  Decoder,
  encodePrompt,
  prepareLatents,
} from "./pipeline.ts";
import { generationInit } from "./sampler.ts";

export * from "./pipeline.ts";
export * from "./clap_scoring.ts";
export { type AudioLdm2Generation, generationInit, openDenoiser } from "./sampler.ts";

function text(flags: FlagValues, name: string): string | undefined {
  const v = flags[name];
  return typeof v === "string" ? v : undefined;
}

/**
 * Where `--keep-all` writes the waveform of rank `r` (1 = best): `OUT-r` before the extension
 * (`a/x.wav` -> `a/x-1.wav`; no extension: `x-1`).
 */
export function rankedPath(out: string, r: number): string {
  const slash = Math.max(out.lastIndexOf("/"), out.lastIndexOf("\\"));
  const dot = out.lastIndexOf(".");
  return dot > slash + 1 ? `${out.slice(0, dot)}-${r}${out.slice(dot)}` : `${out}-${r}`;
}

function number(flags: FlagValues, name: string): number | undefined {
  const v = flags[name];
  return typeof v === "number" ? v : undefined;
}

/** AudioLDM2: text to audio. */
export const audioldm2: PipelineFamily<CheckedRequest, Conditioning, Decoded> = {
  name: "audioldm2",
  title: "text to audio (AudioLDM2)",
  flags: [
    { name: "prompt", short: "p", type: "string", value: "TEXT", help: "What to generate" },
    {
      name: "negative-prompt",
      type: "string",
      value: "TEXT",
      help: "What to steer away from (default: none)",
    },
    {
      name: "guidance",
      type: "number",
      value: "G",
      help: "Classifier-free guidance scale; <= 1 turns it off (default: the model's, 3.5)",
    },
    {
      name: "duration",
      type: "number",
      value: "SECONDS",
      help: "Audio length (default: the model's)",
    },
    {
      name: "waveforms",
      type: "integer",
      min: 1,
      value: "K",
      help:
        "Waveforms generated together (batch K in the denoiser), ranked by CLAP score; the best is the output (default: 1)",
    },
    {
      name: "keep-all",
      type: "boolean",
      help:
        "With --waveforms K: also write all K, best first, as OUT-1.wav .. OUT-K.wav (default: off)",
      output: true,
    },
    {
      name: "spectrogram",
      type: "string",
      value: "PATH",
      help: "Also write the mel spectrogram as a PNG",
      output: true,
    },
    {
      name: "wav-format",
      type: "string",
      choices: ["pcm16", "float32"],
      help: "WAV sample format (default: pcm16)",
      output: true,
    },
  ],
  benchFlags: { prompt: "A hammer hitting a wooden surface" },
  components: COMPONENTS,
  samplerModule: new URL("./sampler.ts", import.meta.url),

  checkManifest,

  checkRequest(model, input) {
    const prompt = text(input.flags, "prompt");
    if (prompt === undefined) {
      throw new RangeError("Missing --prompt: describe the audio to generate");
    }
    const negativePrompt = text(input.flags, "negative-prompt");
    const guidance = number(input.flags, "guidance");
    const duration = number(input.flags, "duration");
    const waveforms = number(input.flags, "waveforms");
    return checkRequest(model, {
      prompt,
      ...(negativePrompt !== undefined ? { negativePrompt } : {}),
      ...(input.steps !== undefined ? { steps: input.steps } : {}),
      ...(guidance !== undefined ? { guidance } : {}),
      ...(duration !== undefined ? { duration } : {}),
      ...(waveforms !== undefined ? { waveforms } : {}),
      seed: input.seed,
    });
  },

  async encode(env, model, request, options) {
    return (await encodePrompt(env, model, request, options)).conditioning;
  },

  denoiserInit(model) {
    return { modelDir: model.dir, component: "unet", dtype: model.manifest.dtype };
  },

  generationInit(_model, request, conditioning) {
    return generationInit(request.steps, request.latentDims, conditioning);
  },

  prepareLatents,

  openDecoder(env, model, options) {
    return Decoder.open(env, model, options);
  },

  outputs(request, out, flags) {
    const targets: OutputTarget[] = [{ path: out, label: "the output" }];
    const spectrogram = text(flags, "spectrogram");
    if (spectrogram !== undefined) targets.push({ path: spectrogram, label: "the spectrogram" });
    if (flags["keep-all"] === true) {
      if (request.waveforms === 1) {
        throw new RangeError(
          "Cannot use --keep-all without --waveforms K (K > 1): one waveform is the output",
        );
      }
      for (let r = 1; r <= request.waveforms; r++) {
        targets.push({ path: rankedPath(out, r), label: `waveform ${r}` });
      }
    }
    return targets;
  },

  render(request, media, targets, flags) {
    const format = (text(flags, "wav-format") ?? "pcm16") as WavFormat;
    const [, , frames, bins] = media.mel.dims;
    return Promise.resolve(
      targets.map((target): OutputContent => {
        if (target.label === "the spectrogram") {
          return () => encodeHeatmapPng(media.mel.data, [frames!, bins!]);
        }
        const label = target.label ?? "";
        const rank = label.startsWith("waveform ") ? Number(label.slice(9)) : 1;
        return () => encodeWav(media.waveforms[rank - 1]!, request.sampleRate, { format });
      }),
    );
  },

  defaultOutput(request) {
    return slugFileName(request.prompt, request.seed, "wav", "audio");
  },

  describe(request) {
    const audio = `${request.duration} s at ${request.sampleRate / 1000} kHz`;
    return request.waveforms === 1 ? audio : `${audio}, best of ${request.waveforms} by CLAP score`;
  },

  quality(reference, output) {
    const [, , frames, bins] = reference.mel.dims;
    return [
      { name: "SNR dB", value: snr(reference.waveform, output.waveform) },
      { name: "LSD dB", value: logSpectralDistance(reference.waveform, output.waveform) },
      {
        name: "mel PSNR dB",
        value: psnr(
          { data: reference.mel.data, shape: [frames!, bins!] },
          { data: output.mel.data, shape: [frames!, bins!] },
        ),
      },
    ];
  },

  samples(media) {
    return media.waveform;
  },
};
