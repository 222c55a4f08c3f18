"""What diffusers' `AudioLDM2Pipeline.score_waveforms` needs besides the two CLAP graphs.

`score_waveforms` (diffusers 0.42.1, run when `num_waveforms_per_prompt > 1`):
1. tokenizes the prompt with the CLAP tokenizer, `padding=True` (no padding for one prompt);
2. resamples the cropped waveforms with `librosa.resample(audio, orig_sr=vocoder rate,
   target_sr=feature_extractor.sampling_rate)`, i.e. librosa's default `res_type="soxr_hq"`;
3. runs `ClapFeatureExtractor` on them (log-mel, `input_features` cast to the pipeline's dtype);
4. takes `ClapModel(**inputs).logits_per_text` = `text_embeds . audio_embeds * exp(logit_scale_t)`
   and sorts the waveforms by it, best first.

This module writes what the runtime needs to do 2-4 itself:
- `clapFeatures` in the manifest: the feature extractor's settings, named after its arguments;
- `clap_resampler.npy`: the impulse response of step 2. soxr's HQ converter at an integer ratio is a
  linear time-invariant FIR filter (checked here on random signals of several lengths, edges
  included, before it is written), so the runtime reproduces librosa's output with a polyphase
  convolution by this response; only integer up-sampling ratios are supported (every AudioLDM2
  checkpoint has a 16 kHz vocoder, and CLAP takes 48 kHz).

librosa is required: without it diffusers silently skips the ranking, so the reference would not be
diffusers' ranking.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ExportError

RESAMPLER_FILE = "clap_resampler.npy"
# Taps below this (relative to the peak) are dropped: soxr's float32 FFT convolution leaves noise of
# about 1e-7 of the peak everywhere, and the true tails are far below it.
_TAP_FLOOR = 1e-9
# How closely the measured FIR must reproduce librosa.resample on random signals (float32 output).
_CHECK_ATOL = 1e-5


def _librosa():
    try:
        import librosa
    except ImportError:
        raise ExportError(
            "the CLAP scoring reference needs librosa (diffusers skips score_waveforms without it): "
            "pip install -r models/export/requirements.txt"
        ) from None
    return librosa


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Exactly the call `score_waveforms` makes."""
    return _librosa().resample(audio, orig_sr=orig_sr, target_sr=target_sr)


def measure_resampler(orig_sr: int, target_sr: int) -> tuple[np.ndarray, int]:
    """The response `h` and delay `d` with `resample(x)[n] = sum_p x[p] h[n - up * p - d]`.

    Raises ExportError when the ratio is not an integer up-sampling ratio, or when the FIR does not
    reproduce librosa on random signals (the converter would then not be what this module assumes).
    """
    if target_sr % orig_sr != 0 or target_sr <= orig_sr:
        raise ExportError(
            f"CLAP scoring resamples {orig_sr} Hz to {target_sr} Hz: only integer up-sampling ratios are supported"
        )
    up = target_sr // orig_sr
    n, pos = 8192, 4096
    impulse = np.zeros((1, n), dtype=np.float32)
    impulse[0, pos] = 1.0
    response = resample(impulse, orig_sr, target_sr)[0].astype(np.float64)
    keep = np.nonzero(np.abs(response) > _TAP_FLOOR * np.abs(response).max())[0]
    lo, hi = int(keep.min()), int(keep.max())
    if lo == 0 or hi == len(response) - 1:
        raise ExportError("CLAP scoring: the resampler's impulse response is longer than the probe")
    taps = response[lo : hi + 1].astype(np.float32)
    delay = lo - up * pos
    rng = np.random.default_rng(0)
    for length in (37, 1000, 20480):
        x = rng.standard_normal((1, length)).astype(np.float32)
        want = resample(x, orig_sr, target_sr)[0].astype(np.float64)
        got = apply_resampler(x[0], taps, delay, up)
        err = float(np.abs(got - want).max())
        if got.shape != want.shape or err > _CHECK_ATOL:
            raise ExportError(
                f"CLAP scoring: librosa's resampler is not the measured FIR at length {length} "
                f"(max abs diff {err:.3g}, shapes {got.shape} {want.shape})"
            )
    return taps, delay


def apply_resampler(x: np.ndarray, taps: np.ndarray, delay: int, up: int) -> np.ndarray:
    """`y[n] = sum_p x[p] taps[n - up * p - delay]` for `n < up * len(x)` (float64)."""
    stuffed = np.zeros(up * len(x))
    stuffed[::up] = x
    full = np.convolve(stuffed, taps.astype(np.float64))  # full[m] = sum_q stuffed[q] taps[m - q]
    out = np.zeros(up * len(x))
    # y[n] = full[n - delay]
    src = np.arange(len(out)) - delay
    valid = (src >= 0) & (src < len(full))
    out[valid] = full[src[valid]]
    return out


def feature_settings(pipe) -> dict:
    """The manifest's `clapFeatures`: ClapFeatureExtractor's settings and the scoring constants."""
    fe = pipe.feature_extractor
    if fe.truncation != "rand_trunc" or getattr(pipe.text_encoder.config.audio_config, "enable_fusion", False):
        # The fused path stacks four mels and uses random crops and is_longer flags; no AudioLDM2
        # checkpoint uses it (cvssp's CLAP is laion/clap-htsat-unfused).
        raise ExportError(
            f"CLAP scoring supports the unfused model with truncation 'rand_trunc': this one has "
            f"truncation '{fe.truncation}', enable_fusion {pipe.text_encoder.config.audio_config.enable_fusion}"
        )
    if fe.padding not in ("repeatpad", "repeat", "pad"):
        raise ExportError(f"CLAP scoring: unknown feature extractor padding '{fe.padding}'")
    return {
        "samplingRate": int(fe.sampling_rate),
        "featureSize": int(fe.feature_size),
        "hopLength": int(fe.hop_length),
        "fftWindowSize": int(fe.fft_window_size),
        "maxSamples": int(fe.nb_max_samples),
        "frequencyMin": float(fe.frequency_min),
        "frequencyMax": float(fe.frequency_max),
        "truncation": fe.truncation,
        "padding": fe.padding,
        # ClapModel.forward: logits_per_text = text_embeds . audio_embeds * exp(logit_scale_t)
        "logitScaleText": float(pipe.text_encoder.logit_scale_t.detach().exp().float()),
    }


def write(pipe, build: Path) -> dict:
    """Write clap_resampler.npy into `build`; return the manifest's `clapFeatures`."""
    settings = feature_settings(pipe)
    orig_sr = int(pipe.vocoder.config.sampling_rate)
    taps, delay = measure_resampler(orig_sr, settings["samplingRate"])
    np.save(build / RESAMPLER_FILE, taps)
    settings["resampler"] = {
        "file": RESAMPLER_FILE,
        "from": "librosa.resample(res_type='soxr_hq'), measured as an FIR: y[n] = sum_p x[p] h[n - up*p - delay]",
        "fromRate": orig_sr,
        "up": settings["samplingRate"] // orig_sr,
        "delay": int(delay),
        "taps": int(len(taps)),
    }
    return settings
