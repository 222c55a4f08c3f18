/**
 * Quality metrics (SNR, log-spectral distance, PSNR; per-frame video PSNR and SSIM) and the FFT /
 * STFT they use.
 *
 * @module
 */

export {
  type Array2D,
  DEFAULT_LSD_EPSILON,
  logSpectralDistance,
  type LsdOptions,
  psnr,
  type Samples,
  snr,
} from "./audio.ts";
export { nextPowerOfTwo, RealFft, rfft, type Spectrum } from "./fft.ts";
export {
  DEFAULT_HOP,
  DEFAULT_N_FFT,
  type PowerSpectrogram,
  powerSpectrogram,
  type StftOptions,
} from "./stft.ts";
export { framePsnr, frameSsim, meanFinite, type VideoShape } from "./video.ts";
