/**
 * File formats parastep reads and writes: .npy arrays, WAV audio, PNG heat maps, and atomic
 * file replacement.
 *
 * @module
 */

export { removePendingWrites, writeFileAtomic, WriteFileError } from "./atomic.ts";
export { crc32 } from "./crc32.ts";
export {
  decodeNpy,
  encodeNpy,
  expectDtype,
  type NpyArray,
  type NpyDataMap,
  type NpyDtype,
  readNpy,
  writeNpy,
} from "./npy.ts";
export { encodeHeatmapPng, HEATMAP_ANCHORS, heatmapColour, type HeatmapOptions } from "./png.ts";
export {
  decodeWav,
  encodeWav,
  type EncodeWavOptions,
  type WavAudio,
  type WavFormat,
} from "./wav.ts";
