/**
 * WAV (RIFF/WAVE) encoding of mono audio and decoding of PCM16 / float32 files.
 *
 * Layouts written (all little endian):
 * - **pcm16**: `RIFF <size> WAVE`, `fmt ` (16 bytes: format 1, channels, rate, byte rate, block
 *   align, 16 bits), `data`. 44 bytes of header; the same bytes Python's `wave` module writes.
 * - **float32**: `RIFF <size> WAVE`, `fmt ` (18 bytes: format 3 = WAVE_FORMAT_IEEE_FLOAT, ...,
 *   32 bits, cbSize 0), `fact` (4 bytes: samples per channel, required for non-PCM formats), `data`.
 *   58 bytes of header.
 *
 * PCM16 conversion: `s = roundHalfEven(clip(x, −1, 1) · 32768)`, then clamped to [−32768, 32767]
 * (so +1.0 becomes 32767); decoding gives `s / 32768`. This is the libsndfile / soundfile
 * convention: decode(encode(x)) = x for every x that is a multiple of 2^-15 in [−1, 1).
 * NaN samples are refused. Float32 is written as is (values outside [−1, 1] are kept).
 *
 * @module
 */

/** The sample encodings this module reads and writes. */
export type WavFormat = "pcm16" | "float32";

/** Options for {@linkcode encodeWav}. */
export interface EncodeWavOptions {
  /**
   * Sample encoding: 16-bit integer PCM, or 32-bit IEEE float.
   * @default "pcm16"
   */
  readonly format?: WavFormat;
}

/** A decoded WAV file. */
export interface WavAudio {
  /** Frames per second. */
  readonly sampleRate: number;
  /** Number of channels. */
  readonly channels: number;
  /** The encoding found in the file. */
  readonly format: WavFormat;
  /** [frames × channels] interleaved samples; PCM16 scaled by 1/32768. */
  readonly samples: Float32Array;
}

const WAVE_FORMAT_PCM = 1;
const WAVE_FORMAT_IEEE_FLOAT = 3;
const WAVE_FORMAT_EXTENSIBLE = 0xfffe;
const PCM16_SCALE = 32768; // 2^15
const ACTION_ENCODE = "Cannot encode WAV";
const ACTION_DECODE = "Cannot decode WAV";

/**
 * Encode mono samples as a WAV file.
 *
 * @param samples [frames] mono samples, nominally in [−1, 1].
 * @param sampleRate Frames per second, an integer 1..2^31−1 (e.g. 16000 for AudioLDM2).
 * @param options Sample encoding (see {@linkcode EncodeWavOptions}).
 * @returns The file's bytes.
 * @throws {TypeError} If `samples` is not a Float32Array or `format` is unknown.
 * @throws {RangeError} If `sampleRate` is invalid, the data would exceed 4 GiB, or (pcm16) a
 *   sample is NaN.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeWav, encodeWav } from "./wav.ts";
 * const bytes = encodeWav(new Float32Array([0, 0.5, -1]), 16000);
 * const { samples } = decodeWav(bytes);
 * assert.ok(bytes.length === 44 + 6 && samples[1] === 0.5);
 * ```
 */
export function encodeWav(
  samples: Float32Array,
  sampleRate: number,
  options: EncodeWavOptions = {},
): Uint8Array {
  const format = options.format ?? "pcm16";
  if (!(samples instanceof Float32Array)) {
    throw new TypeError(`${ACTION_ENCODE} as 'samples' must be a Float32Array`);
  }
  if (!Number.isInteger(sampleRate) || sampleRate < 1 || sampleRate > 0x7fffffff) {
    throw new RangeError(
      `${ACTION_ENCODE} as 'sampleRate' must be an integer in 1..2147483647: current value is ${sampleRate}`,
    );
  }
  if (format !== "pcm16" && format !== "float32") {
    throw new TypeError(
      `${ACTION_ENCODE} as 'format' must be one of pcm16, float32: current value is ${
        String(format)
      }`,
    );
  }
  const channels = 1;
  const bytesPerSample = format === "pcm16" ? 2 : 4;
  const dataBytes = samples.length * bytesPerSample * channels;
  const fmtBytes = format === "pcm16" ? 16 : 18;
  const factBytes = format === "pcm16" ? 0 : 8 + 4;
  const headerBytes = 12 + 8 + fmtBytes + factBytes + 8;
  if (headerBytes - 8 + dataBytes > 0xffffffff) {
    throw new RangeError(
      `${ACTION_ENCODE} as the data must fit in 4 GiB: current length is ${samples.length} samples`,
    );
  }
  const out = new Uint8Array(headerBytes + dataBytes);
  const v = new DataView(out.buffer);
  let p = 0;
  const tag = (s: string) => {
    for (let k = 0; k < 4; k++) out[p++] = s.charCodeAt(k);
  };
  const u32 = (n: number) => {
    v.setUint32(p, n, true);
    p += 4;
  };
  const u16 = (n: number) => {
    v.setUint16(p, n, true);
    p += 2;
  };
  tag("RIFF");
  u32(out.length - 8);
  tag("WAVE");
  tag("fmt ");
  u32(fmtBytes);
  u16(format === "pcm16" ? WAVE_FORMAT_PCM : WAVE_FORMAT_IEEE_FLOAT);
  u16(channels);
  u32(sampleRate);
  u32(sampleRate * bytesPerSample * channels); // byte rate
  u16(bytesPerSample * channels); // block align
  u16(bytesPerSample * 8); // bits per sample
  if (format === "float32") {
    u16(0); // cbSize: no extension
    tag("fact");
    u32(4);
    u32(samples.length); // samples per channel
  }
  tag("data");
  u32(dataBytes);
  if (format === "pcm16") {
    for (let k = 0; k < samples.length; k++) {
      v.setInt16(p + 2 * k, floatToPcm16(samples[k]!, k), true);
    }
  } else {
    for (let k = 0; k < samples.length; k++) v.setFloat32(p + 4 * k, samples[k]!, true);
  }
  return out;
}

/**
 * Convert one sample to 16-bit PCM: `clamp(roundHalfEven(clip(x, −1, 1) · 32768), −32768, 32767)`.
 *
 * @param x The sample.
 * @param index Its position, for the error message.
 * @returns The integer sample.
 * @throws {RangeError} If `x` is NaN.
 */
function floatToPcm16(x: number, index: number): number {
  if (Number.isNaN(x)) {
    throw new RangeError(
      `${ACTION_ENCODE} as sample ${index} must be a number: current value is NaN`,
    );
  }
  const c = x < -1 ? -1 : x > 1 ? 1 : x;
  const s = roundHalfEven(c * PCM16_SCALE); // exact: x is a float32, the product a double
  return s > 32767 ? 32767 : s;
}

function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * Decode a WAV file holding 16-bit PCM or 32-bit float samples (format 1, 3, or
 * WAVE_FORMAT_EXTENSIBLE with either sub-format), any number of channels. Unknown chunks (`LIST`,
 * `fact`, ...) are skipped.
 *
 * @param bytes The whole file.
 * @returns Sample rate, channel count, format and interleaved samples.
 * @throws {TypeError} If the file is not RIFF/WAVE or uses another encoding.
 * @throws {RangeError} If a chunk runs past the end of the file or `fmt `/`data` is missing.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeWav, encodeWav } from "./wav.ts";
 * const audio = decodeWav(encodeWav(new Float32Array([0.25]), 8000, { format: "float32" }));
 * assert.ok(audio.format === "float32" && audio.sampleRate === 8000);
 * ```
 */
export function decodeWav(bytes: Uint8Array): WavAudio {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tagAt = (p: number) => String.fromCharCode(...bytes.subarray(p, p + 4));
  if (bytes.length < 12 || tagAt(0) !== "RIFF" || tagAt(8) !== "WAVE") {
    throw new TypeError(`${ACTION_DECODE} as the data does not start with RIFF....WAVE`);
  }
  let fmt: { format: WavFormat; channels: number; sampleRate: number; blockAlign: number } | null =
    null;
  let data: Uint8Array | null = null;
  let p = 12;
  while (p + 8 <= bytes.length) {
    const id = tagAt(p);
    const size = v.getUint32(p + 4, true);
    const body = p + 8;
    if (body + size > bytes.length) {
      throw new RangeError(
        `${ACTION_DECODE} as chunk '${id}' at byte ${p} needs ${size} bytes: ${
          bytes.length - body
        } remain`,
      );
    }
    if (id === "fmt ") fmt = parseFmt(v, body, size);
    else if (id === "data") data = bytes.subarray(body, body + size);
    p = body + size + (size & 1); // chunks are padded to an even size
  }
  if (fmt === null) throw new RangeError(`${ACTION_DECODE} as the file has no 'fmt ' chunk`);
  if (data === null) throw new RangeError(`${ACTION_DECODE} as the file has no 'data' chunk`);
  if (data.length % fmt.blockAlign !== 0) {
    throw new RangeError(
      `${ACTION_DECODE} as the data size must be a multiple of the block align (${fmt.blockAlign}): current value is ${data.length}`,
    );
  }
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const n = fmt.format === "pcm16" ? data.length / 2 : data.length / 4;
  const samples = new Float32Array(n);
  if (fmt.format === "pcm16") {
    for (let k = 0; k < n; k++) samples[k] = dv.getInt16(2 * k, true) / PCM16_SCALE;
  } else {
    for (let k = 0; k < n; k++) samples[k] = dv.getFloat32(4 * k, true);
  }
  return { sampleRate: fmt.sampleRate, channels: fmt.channels, format: fmt.format, samples };
}

function parseFmt(
  v: DataView,
  p: number,
  size: number,
): { format: WavFormat; channels: number; sampleRate: number; blockAlign: number } {
  if (size < 16) {
    throw new RangeError(
      `${ACTION_DECODE} as the 'fmt ' chunk must have at least 16 bytes: current value is ${size}`,
    );
  }
  let tag = v.getUint16(p, true);
  const channels = v.getUint16(p + 2, true);
  const sampleRate = v.getUint32(p + 4, true);
  const blockAlign = v.getUint16(p + 12, true);
  const bits = v.getUint16(p + 14, true);
  if (tag === WAVE_FORMAT_EXTENSIBLE) {
    if (size < 40) {
      throw new RangeError(
        `${ACTION_DECODE} as an extensible 'fmt ' chunk must have 40 bytes: current value is ${size}`,
      );
    }
    tag = v.getUint16(p + 24, true); // first two bytes of the sub-format GUID
  }
  let format: WavFormat;
  if (tag === WAVE_FORMAT_PCM && bits === 16) format = "pcm16";
  else if (tag === WAVE_FORMAT_IEEE_FLOAT && bits === 32) format = "float32";
  else {
    throw new TypeError(
      `${ACTION_DECODE} as the encoding must be 16-bit PCM or 32-bit float: current value is format ${tag} with ${bits} bits`,
    );
  }
  if (channels < 1 || blockAlign !== channels * (bits / 8)) {
    throw new RangeError(
      `${ACTION_DECODE} as the block align must be channels × bytes per sample (${
        channels * (bits / 8)
      }): current value is ${blockAlign}`,
    );
  }
  return { format, channels, sampleRate, blockAlign };
}
