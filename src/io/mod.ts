/**
 * File formats parastep reads and writes: .npy arrays, WAV audio, PNG images, input images (PNG,
 * JPEG) and their resampling, video (MP4, GIF, PNG frames); atomic file replacement and output sets
 * written as one transaction.
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
  removePendingWrites,
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
export {
  encodeHeatmapPng,
  encodeRgbPng,
  HEATMAP_ANCHORS,
  heatmapColour,
  type HeatmapOptions,
} from "./png.ts";
export {
  decodeWav,
  encodeWav,
  type EncodeWavOptions,
  type WavAudio,
  type WavFormat,
} from "./wav.ts";
export {
  decodeImage,
  ImageError,
  MAX_IMAGE_PIXELS,
  readImage,
  type RgbImage,
  sniffImageFormat,
} from "./image.ts";
export {
  antialiasKernel,
  gaussianKernel,
  interpolateBicubic,
  type Planes,
  resizeLanczos,
  resizeWithAntialiasing,
} from "./resize.ts";
export {
  encodeFramePngs,
  encodeGif,
  encodeMp4,
  findFfmpeg,
  frameFileName,
  frameRgb,
  framesToRgb,
  type Mp4Encoder,
  type Mp4Options,
  type RgbFrames,
} from "./video.ts";
