/**
 * Stable Video Diffusion's two views of the input image, as `StableVideoDiffusionPipeline.__call__`
 * makes them from a PIL image (diffusers 0.42.1):
 *
 * - {@linkcode clipPixelValues}, `_encode_image`: the original image (not resized to the video
 *   size) / 255, `2x − 1`, `_resize_with_antialiasing` to the CLIP size, `(x + 1) / 2`, then the
 *   CLIP image processor's `(x − mean) / std`;
 * - {@linkcode vaeImage}, `video_processor.preprocess(image, height, width)`: Pillow's Lanczos
 *   resize to width x height (a copy at the same size), / 255, `2x − 1`.
 *
 * Every step rounds to float32 in the order torch and numpy compute it.
 *
 * @module
 */

import type { RgbImage } from "../../io/image.ts";
import { type Planes, resizeLanczos, resizeWithAntialiasing } from "../../io/resize.ts";

/** RGB bytes to planes [3, H, W] of `v / 255` (diffusers' `pil_to_numpy`), float32. */
export function toPlanes(image: RgbImage): Planes {
  const { width, height } = image;
  const n = width * height;
  const data = new Float32Array(3 * n);
  for (let k = 0; k < n; k++) {
    for (let c = 0; c < 3; c++) data[c * n + k] = Math.fround(image.data[3 * k + c]! / 255);
  }
  return { channels: 3, height, width, data };
}

/** `2x − 1` in float32, in place. */
function toSigned(data: Float32Array): Float32Array {
  for (let k = 0; k < data.length; k++) data[k] = Math.fround(Math.fround(2 * data[k]!) - 1);
  return data;
}

/**
 * The CLIP image encoder's `pixel_values` [1, 3, size, size] for `image`.
 *
 * @param mean the processor's per-channel mean (3 numbers)
 * @param std the processor's per-channel standard deviation (3 numbers)
 */
export function clipPixelValues(
  image: RgbImage,
  size: number,
  mean: readonly number[],
  std: readonly number[],
): Float32Array {
  const f = Math.fround;
  const planes = toPlanes(image);
  toSigned(planes.data);
  const resized = resizeWithAntialiasing(planes, size, size).data;
  const n = size * size;
  for (let c = 0; c < 3; c++) {
    const m = f(mean[c]!);
    const s = f(std[c]!);
    for (let k = c * n; k < (c + 1) * n; k++) {
      const unit = f(f(resized[k]! + 1) / 2);
      resized[k] = f(f(unit - m) / s);
    }
  }
  return resized;
}

/** The VAE encoder's image [1, 3, height, width] in [−1, 1] (before noise augmentation). */
export function vaeImage(image: RgbImage, width: number, height: number): Float32Array {
  return toSigned(toPlanes(resizeLanczos(image, width, height)).data);
}
