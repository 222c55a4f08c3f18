/**
 * File formats parastep reads and writes: .npy arrays, WAV audio, PNG heat maps; atomic
 * file replacement and output sets written as one transaction.
 *
 * @module
 */

export { writeFileAtomic } from "./atomic.ts";
export {
  type CommitOptions,
  type CommitStep,
  NAME_MAX,
  type OutputContent,
  OutputPathError,
  OutputSet,
  type OutputTarget,
  PATH_MAX,
  type PlannedOutput,
  WriteFileError,
  type WrittenOutput,
} from "./output_set.ts";
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
