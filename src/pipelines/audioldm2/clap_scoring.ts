/**
 * Ranking several waveforms by CLAP text-audio similarity, as diffusers'
 * `AudioLDM2Pipeline.score_waveforms` (diffusers 0.42.1) does when `num_waveforms_per_prompt > 1`:
 *
 * 1. tokenize the prompt with the CLAP tokenizer, `padding=True` (one prompt: no padding);
 * 2. resample the cropped waveforms to the feature extractor's rate with `librosa.resample`
 *    (`soxr_hq`); here the FIR the exporter measured from librosa and checked against it
 *    (`clap_resampler.npy`, see models/export/audioldm2/scoring.py);
 * 3. `ClapFeatureExtractor` (transformers 5.24, `truncation="rand_trunc"`): repeat-pad to
 *    `max_length`, log-mel with Slaney filters ({@linkcode clapFeatures});
 * 4. `logits_per_text = text_embeds . audio_embeds * exp(logit_scale_t)`, sorted best first.
 *
 * One difference, stated where it happens: audio longer than the feature extractor's
 * `max_length` is cropped at a random offset by transformers (`np.random`); here it is cropped
 * at the start, so the ranking of audio longer than `max_length` (10 s for the real models) is
 * deterministic but may differ from a diffusers run.
 *
 * @module
 */

import { type Env, type Session, type SessionOptions, Tensor } from "../../../ffi/mod.ts";
import { decodeNpy, expectDtype } from "../../io/npy.ts";
import { ManifestError } from "../../models/manifest.ts";
import { type ModelFolder, openComponent } from "../../models/model.ts";
import { runFloat32 } from "../precision.ts";
import { TextTokenizer } from "../tokenize.ts";

/** The manifest's `clapFeatures`: `ClapFeatureExtractor`'s settings and the scoring constants. */
export interface ClapFeatureSettings {
  /** The feature extractor's rate (48 kHz for CLAP). */
  readonly samplingRate: number;
  /** Mel bins. */
  readonly featureSize: number;
  readonly hopLength: number;
  /** FFT size = window length (a power of two here). */
  readonly fftWindowSize: number;
  /** `max_length_s * sampling_rate`: every waveform is padded or cropped to it. */
  readonly maxSamples: number;
  readonly frequencyMin: number;
  readonly frequencyMax: number;
  readonly padding: "repeatpad" | "repeat" | "pad";
  /** `exp(logit_scale_t)`. */
  readonly logitScaleText: number;
  readonly resampler: {
    readonly file: string;
    /** The vocoder's rate it resamples from. */
    readonly fromRate: number;
    /** Integer up-sampling ratio. */
    readonly up: number;
    /** `y[n] = sum_p x[p] taps[n - up * p - delay]`. */
    readonly delay: number;
  };
}

/** Whether the folder can rank waveforms (folders exported before CLAP scoring cannot). */
export function hasClapScoring(model: ModelFolder): boolean {
  return model.manifest.components["clap_audio"] !== undefined &&
    model.manifest.raw["clapFeatures"] !== undefined;
}

/**
 * The manifest's `clapFeatures`, checked.
 *
 * @throws {ManifestError} naming the field
 */
export function clapFeatureSettings(model: ModelFolder): ClapFeatureSettings {
  const file = model.manifestFile;
  const raw = model.manifest.raw["clapFeatures"];
  const fail = (field: string, want: string, got: unknown): never => {
    throw new ManifestError(
      file,
      `'clapFeatures${field}' must be ${want}: found ${JSON.stringify(got)}; re-export the model`,
    );
  };
  if (typeof raw !== "object" || raw === null) return fail("", "an object", raw);
  const o = raw as Record<string, unknown>;
  const int = (v: unknown, field: string, min: number, max: number): number =>
    typeof v === "number" && Number.isInteger(v) && v >= min && v <= max
      ? v
      : fail(field, `an integer in ${min}..${max}`, v);
  const num = (v: unknown, field: string, min: number, max: number): number =>
    typeof v === "number" && Number.isFinite(v) && v >= min && v <= max
      ? v
      : fail(field, `a number in ${min}..${max}`, v);
  const samplingRate = int(o.samplingRate, ".samplingRate", 1, 384_000);
  const fftWindowSize = int(o.fftWindowSize, ".fftWindowSize", 2, 65_536);
  if ((fftWindowSize & (fftWindowSize - 1)) !== 0) {
    fail(".fftWindowSize", "a power of two", fftWindowSize);
  }
  if (o.truncation !== "rand_trunc") fail(".truncation", `"rand_trunc"`, o.truncation);
  if (o.padding !== "repeatpad" && o.padding !== "repeat" && o.padding !== "pad") {
    fail(".padding", `"repeatpad", "repeat" or "pad"`, o.padding);
  }
  const r = o.resampler;
  if (typeof r !== "object" || r === null) return fail(".resampler", "an object", r);
  const ro = r as Record<string, unknown>;
  if (typeof ro.file !== "string" || ro.file.includes("..") || ro.file.startsWith("/")) {
    fail(".resampler.file", "a file name in the folder", ro.file);
  }
  return {
    samplingRate,
    featureSize: int(o.featureSize, ".featureSize", 1, 4096),
    hopLength: int(o.hopLength, ".hopLength", 1, 65_536),
    fftWindowSize,
    maxSamples: int(o.maxSamples, ".maxSamples", fftWindowSize, 100_000_000),
    frequencyMin: num(o.frequencyMin, ".frequencyMin", 0, samplingRate / 2),
    frequencyMax: num(o.frequencyMax, ".frequencyMax", 0, samplingRate / 2),
    padding: o.padding as ClapFeatureSettings["padding"],
    logitScaleText: num(o.logitScaleText, ".logitScaleText", 0, 1e6),
    resampler: {
      file: ro.file as string,
      fromRate: int(ro.fromRate, ".resampler.fromRate", 1, 384_000),
      up: int(ro.up, ".resampler.up", 1, 64),
      delay: int(ro.delay, ".resampler.delay", -1e7, 1e7),
    },
  };
}

/**
 * `y[n] = sum_p x[p] taps[n - up * p - delay]` for `n < up * len(x)`, accumulated in float64
 * and rounded to float32 (librosa returns the input's dtype): the measured soxr_hq response.
 */
export function resampleFir(
  x: Float32Array,
  taps: Float32Array,
  delay: number,
  up: number,
): Float32Array<ArrayBuffer> {
  const out = new Float32Array(up * x.length);
  const L = taps.length;
  for (let n = 0; n < out.length; n++) {
    // taps index j = n - up * p - delay in [0, L) -> p in ((n - delay - L) / up, (n - delay) / up]
    const m = n - delay;
    const pHi = Math.min(x.length - 1, Math.floor(m / up));
    const pLo = Math.max(0, Math.floor((m - L) / up) + 1);
    let acc = 0;
    for (let p = pLo; p <= pHi; p++) acc += x[p]! * taps[m - up * p]!;
    out[n] = acc;
  }
  return out;
}

function hertzToMelSlaney(f: number): number {
  const minLogHertz = 1000;
  const minLogMel = 15;
  const logstep = 27 / Math.log(6.4);
  return f >= minLogHertz ? minLogMel + Math.log(f / minLogHertz) * logstep : 3 * f / 200;
}

function melToHertzSlaney(m: number): number {
  const minLogHertz = 1000;
  const minLogMel = 15;
  const logstep = Math.log(6.4) / 27;
  return m >= minLogMel ? minLogHertz * Math.exp(logstep * (m - minLogMel)) : 200 * m / 3;
}

/**
 * transformers' `mel_filter_bank(..., norm="slaney", mel_scale="slaney")` in float64, as
 * `[bins][filters]` row-major (`num_frequency_bins x num_mel_filters`).
 */
export function melFilterBankSlaney(
  numFrequencyBins: number,
  numMelFilters: number,
  minFrequency: number,
  maxFrequency: number,
  samplingRate: number,
): Float64Array {
  const melMin = hertzToMelSlaney(minFrequency);
  const melMax = hertzToMelSlaney(maxFrequency);
  const count = numMelFilters + 2;
  const filterFreqs = new Float64Array(count);
  for (let k = 0; k < count; k++) {
    // np.linspace: start + k * step, the last point exactly `stop`
    const mel = k === count - 1 ? melMax : melMin + k * ((melMax - melMin) / (count - 1));
    filterFreqs[k] = melToHertzSlaney(mel);
  }
  const nyquist = Math.floor(samplingRate / 2);
  const out = new Float64Array(numFrequencyBins * numMelFilters);
  for (let b = 0; b < numFrequencyBins; b++) {
    const fft = b === numFrequencyBins - 1 ? nyquist : b * (nyquist / (numFrequencyBins - 1));
    for (let m = 0; m < numMelFilters; m++) {
      const down = -(filterFreqs[m]! - fft) / (filterFreqs[m + 1]! - filterFreqs[m]!);
      const upSlope = (filterFreqs[m + 2]! - fft) / (filterFreqs[m + 2]! - filterFreqs[m + 1]!);
      const w = Math.max(0, Math.min(down, upSlope));
      out[b * numMelFilters + m] = w * (2 / (filterFreqs[m + 2]! - filterFreqs[m]!));
    }
  }
  return out;
}

/** In-place iterative radix-2 FFT of (re, im), length a power of two. */
function fft(re: Float64Array, im: Float64Array): void {
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      [re[i], re[j]] = [re[j]!, re[i]!];
      [im[i], im[j]] = [im[j]!, im[i]!];
    }
  }
  for (let len = 2; len <= n; len <<= 1) {
    const angle = -2 * Math.PI / len;
    const half = len >> 1;
    for (let k = 0; k < half; k++) {
      const wr = Math.cos(angle * k);
      const wi = Math.sin(angle * k);
      for (let s = 0; s < n; s += len) {
        const a = s + k;
        const b = a + half;
        const xr = re[b]! * wr - im[b]! * wi;
        const xi = re[b]! * wi + im[b]! * wr;
        re[b] = re[a]! - xr;
        im[b] = im[a]! - xi;
        re[a] = re[a]! + xr;
        im[a] = im[a]! + xi;
      }
    }
  }
}

/** Frames of {@linkcode clapFeatures}' output: `max_length / hop + 1` (centred STFT). */
export function clapFrames(settings: ClapFeatureSettings): number {
  return Math.floor(settings.maxSamples / settings.hopLength) + 1;
}

/**
 * `ClapFeatureExtractor(truncation="rand_trunc")` on one waveform at `samplingRate`: pad (or
 * crop, at the start) to `maxSamples`, then the log-mel spectrogram of transformers'
 * `spectrogram(..., window_function(n_fft, "hann"), power=2, mel_filters=slaney, log_mel="dB")`,
 * transposed: `[frames][featureSize]` as float32. Like numpy, the STFT is computed in float64 and
 * stored as complex64 before the power.
 *
 * @param filters from {@linkcode melFilterBankSlaney} for these settings
 */
export function clapFeatures(
  wave: Float32Array,
  settings: ClapFeatureSettings,
  filters: Float64Array = melFilterBankSlaney(
    settings.fftWindowSize / 2 + 1,
    settings.featureSize,
    settings.frequencyMin,
    settings.frequencyMax,
    settings.samplingRate,
  ),
): Float32Array<ArrayBuffer> {
  const max = settings.maxSamples;
  // _get_input_mel: longer audio is cropped (transformers: at np.random's offset; here at 0),
  // shorter audio is repeated and/or zero-padded.
  const padded = new Float64Array(max);
  if (wave.length >= max) {
    for (let k = 0; k < max; k++) padded[k] = wave[k]!;
  } else if (wave.length > 0) {
    const repeats = settings.padding === "repeatpad"
      ? Math.floor(max / wave.length)
      : settings.padding === "repeat"
      ? Math.floor(max / wave.length) + 1
      : 1;
    const filled = Math.min(max, repeats * wave.length);
    for (let k = 0; k < filled; k++) padded[k] = wave[k % wave.length]!;
  }
  // spectrogram(center=True, pad_mode="reflect")
  const N = settings.fftWindowSize;
  const pad = N >> 1;
  const reflect = (i: number) => {
    let j = i - pad;
    if (j < 0) j = -j;
    if (j >= max) j = 2 * (max - 1) - j;
    return padded[j]!;
  };
  const window = new Float64Array(N); // np.hanning(N + 1)[:-1]
  for (let k = 0; k < N; k++) window[k] = 0.5 - 0.5 * Math.cos(2 * Math.PI * k / N);
  const frames = Math.floor((max + 2 * pad - N) / settings.hopLength) + 1;
  const bins = N / 2 + 1;
  const F = settings.featureSize;
  const out = new Float32Array(frames * F);
  const re = new Float64Array(N);
  const im = new Float64Array(N);
  const power = new Float64Array(bins);
  for (let t = 0; t < frames; t++) {
    const start = t * settings.hopLength;
    for (let k = 0; k < N; k++) {
      re[k] = reflect(start + k) * window[k]!;
      im[k] = 0;
    }
    fft(re, im);
    for (let b = 0; b < bins; b++) {
      const r = Math.fround(re[b]!); // complex64
      const i = Math.fround(im[b]!);
      const mag = Math.hypot(r, i);
      power[b] = mag * mag;
    }
    for (let m = 0; m < F; m++) {
      let acc = 0;
      for (let b = 0; b < bins; b++) acc += filters[b * F + m]! * power[b]!;
      // np.maximum(mel_floor, ...) then power_to_db(reference 1, min_value 1e-10)
      out[t * F + m] = 10 * Math.log10(Math.max(1e-10, acc));
    }
  }
  return out;
}

function floatOutput(outputs: Record<string, Tensor>, name: string): Float32Array {
  const t = outputs[name];
  if (t === undefined || !(t.data instanceof Float32Array)) {
    throw new Error(`the graph returned no float32 '${name}'`);
  }
  return t.data;
}

/** Scores and order of K waveforms. */
export interface WaveformRanking {
  /** `logits_per_text` per waveform, in batch order. */
  readonly scores: readonly number[];
  /** Batch indices, best first (a stable descending sort, as `torch.argsort` gives without ties). */
  readonly order: readonly number[];
}

/** The two CLAP graphs, the resampler and the tokenizer, opened once for a run. */
export class ClapScorer implements Disposable {
  readonly #text: Session;
  readonly #audio: Session;
  readonly #tokenizer: TextTokenizer;
  readonly #settings: ClapFeatureSettings;
  readonly #taps: Float32Array;
  readonly #filters: Float64Array;

  private constructor(
    text: Session,
    audio: Session,
    tokenizer: TextTokenizer,
    settings: ClapFeatureSettings,
    taps: Float32Array,
  ) {
    this.#text = text;
    this.#audio = audio;
    this.#tokenizer = tokenizer;
    this.#settings = settings;
    this.#taps = taps;
    this.#filters = melFilterBankSlaney(
      settings.fftWindowSize / 2 + 1,
      settings.featureSize,
      settings.frequencyMin,
      settings.frequencyMax,
      settings.samplingRate,
    );
  }

  /**
   * Opens `clap_text`, `clap_audio`, the CLAP tokenizer and the resampler's taps.
   *
   * @throws {ManifestError} for missing or malformed scoring data
   */
  static async open(
    env: Env,
    model: ModelFolder,
    sessionOptions: SessionOptions = {},
  ): Promise<ClapScorer> {
    const settings = clapFeatureSettings(model);
    const tapsFile = `${model.dir}/${settings.resampler.file}`;
    let taps: Float32Array;
    try {
      taps = expectDtype(decodeNpy(Deno.readFileSync(tapsFile)), "float32").data;
    } catch (e) {
      throw new ManifestError(
        tapsFile,
        `cannot be read as a float32 .npy: ${(e as Error).message}; re-export the model`,
      );
    }
    const spec = model.manifest.tokenizers["clap"];
    if (spec === undefined) {
      throw new ManifestError(
        model.manifestFile,
        "'tokenizers.clap' is missing; re-export the model",
      );
    }
    const tokenizer = await TextTokenizer.load(model.dir, spec);
    const text = openComponent(env, model, "clap_text", sessionOptions);
    try {
      const audio = openComponent(env, model, "clap_audio", sessionOptions);
      return new ClapScorer(text, audio, tokenizer, settings, taps);
    } catch (e) {
      text.close();
      throw e;
    }
  }

  /** The settings it scores with. */
  get settings(): ClapFeatureSettings {
    return this.#settings;
  }

  /** Step 2: one waveform at the vocoder's rate to the feature extractor's rate. */
  resample(wave: Float32Array): Float32Array<ArrayBuffer> {
    const r = this.#settings.resampler;
    return resampleFir(wave, this.#taps, r.delay, r.up);
  }

  /** Steps 2-3 for K waveforms: `input_features` [K, 1, frames, mel bins]. */
  features(waves: readonly Float32Array[]): Tensor<"float32"> {
    const T = clapFrames(this.#settings);
    const F = this.#settings.featureSize;
    const data = new Float32Array(waves.length * T * F);
    waves.forEach((w, k) => {
      data.set(clapFeatures(this.resample(w), this.#settings, this.#filters), k * T * F);
    });
    return new Tensor("float32", data, [waves.length, 1, T, F]);
  }

  /** Steps 1-4: scores of `waves` (at the vocoder's rate, cropped) against `prompt`, and their order. */
  score(prompt: string, waves: readonly Float32Array[]): WaveformRanking {
    const enc = this.#tokenizer.encode(prompt, "longest");
    const S = enc.ids.length;
    const text = floatOutput(
      runFloat32(this.#text, {
        input_ids: new Tensor("int64", enc.ids, [1, S]),
        attention_mask: new Tensor("int64", enc.mask, [1, S]),
      }),
      "text_embeds",
    );
    const audio = floatOutput(
      runFloat32(this.#audio, { input_features: this.features(waves) }),
      "audio_embeds",
    );
    const d = text.length; // [1, clap_dim]
    const scale = Math.fround(this.#settings.logitScaleText);
    const scores = waves.map((_, k) => {
      let dot = 0;
      for (let j = 0; j < d; j++) {
        dot = Math.fround(dot + Math.fround(text[j]! * audio[k * d + j]!));
      }
      return Math.fround(dot * scale);
    });
    const order = scores.map((_, k) => k).sort((a, b) => scores[b]! - scores[a]! || a - b);
    return { scores, order };
  }

  /** Closes both graphs. */
  [Symbol.dispose](): void {
    this.#text.close();
    this.#audio.close();
  }
}
