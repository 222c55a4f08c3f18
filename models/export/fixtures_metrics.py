"""Write audio-metric fixtures for the Deno tests in tests/metrics/.

Standalone script (numpy only). From the repository root::

    /work/venvs/exp/bin/python models/export/fixtures_metrics.py [--out tests/fixtures/metrics]

numpy computes the same formulas parastep documents (src/metrics/*.ts), in float64 from the
float32 inputs, independently of the TypeScript code:

- rfft: ``np.fft.rfft(x, n)`` (zero-padding x to the power of two n);
- power spectrogram: periodic Hann ``w[n] = 0.5 - 0.5 cos(2 pi n / nFft)``, frames
  ``[f hop, f hop + nFft)`` for f < 1 + (L - nFft) // hop (one zero-padded frame if L < nFft),
  ``P = |rfft(w * frame)|^2``;
- SNR = 10 log10(sum ref^2 / sum (ref - est)^2);
- LSD = mean_f sqrt(mean_k (10 log10((P_ref + eps) / (P_est + eps)))^2), eps = 1e-10;
- PSNR = 10 log10(peak^2 / MSE), peak = max(ref) - min(ref), MSE = mean((ref - est)^2).

Writes .npy inputs and reference outputs plus expected.json into the output folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SEED = 11
RATE = 16000
EPS = 1e-10


def power_spectrogram(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    x = x.astype(np.float64)
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    frames = 1 + (len(x) - n_fft) // hop if len(x) >= n_fft else 1
    out = np.empty((frames, n_fft // 2 + 1))
    for f in range(frames):
        seg = np.zeros(n_fft)
        chunk = x[f * hop : f * hop + n_fft]
        seg[: len(chunk)] = chunk
        out[f] = np.abs(np.fft.rfft(window * seg)) ** 2
    return out


def snr(ref: np.ndarray, est: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    est = est.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2)))


def lsd(ref: np.ndarray, est: np.ndarray, n_fft: int, hop: int) -> float:
    pr = power_spectrogram(ref, n_fft, hop)
    pe = power_spectrogram(est, n_fft, hop)
    db = 10 * np.log10((pr + EPS) / (pe + EPS))
    return float(np.mean(np.sqrt(np.mean(db**2, axis=1))))


def psnr(ref: np.ndarray, est: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    est = est.astype(np.float64)
    peak = ref.max() - ref.min()
    return float(10 * np.log10(peak**2 / np.mean((ref - est) ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/metrics"))
    args = ap.parse_args()
    d: Path = args.out
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)

    # FFT: 1000 samples zero-padded to 1024; and a length-8 transform.
    x = rng.standard_normal(1000)
    np.save(d / "fft_input.npy", x)
    spec = np.fft.rfft(x, n=1024)
    np.save(d / "fft_1024_re.npy", spec.real)
    np.save(d / "fft_1024_im.npy", spec.imag)
    spec8 = np.fft.rfft(x[:8], n=8)
    np.save(d / "fft_8_re.npy", spec8.real)
    np.save(d / "fft_8_im.npy", spec8.imag)

    # Audio: a chord with vibrato and a little noise (0.25 s at 16 kHz), and a degraded copy.
    t = np.arange(4000) / RATE
    ref = (
        0.4 * np.sin(2 * np.pi * 220 * t + 0.3 * np.sin(2 * np.pi * 5 * t))
        + 0.2 * np.sin(2 * np.pi * 660 * t)
        + 0.1 * np.sin(2 * np.pi * 2500 * t)
        + 0.01 * rng.standard_normal(len(t))
    ).astype(np.float32)
    est = (0.9 * ref + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
    np.save(d / "audio_ref.npy", ref)
    np.save(d / "audio_est.npy", est)

    # STFT reference for a short signal.
    np.save(d / "stft_256_100.npy", power_spectrogram(ref[:1200], 256, 100))

    # PSNR: a "log-mel" [frames 64, bins 16] and a noisy copy.
    mel = (np.log(rng.gamma(2.0, 1.0, (64, 16)) + 1e-5) * 2 - 5).astype(np.float32)
    mel_est = (mel + 0.1 * rng.standard_normal(mel.shape)).astype(np.float32)
    np.save(d / "mel_ref.npy", mel)
    np.save(d / "mel_est.npy", mel_est)

    expected = {
        "numpy": np.__version__,
        "epsilon": EPS,
        "snr": snr(ref, est),
        "snr_prefix_1000": snr(ref[:1000], est[:1000]),
        "lsd": [
            {"nFft": 2048, "hop": 512, "length": 4000, "value": lsd(ref, est, 2048, 512)},
            {"nFft": 512, "hop": 128, "length": 4000, "value": lsd(ref, est, 512, 128)},
            {"nFft": 2048, "hop": 512, "length": 1000, "value": lsd(ref[:1000], est[:1000], 2048, 512)},
        ],
        "stft": {"nFft": 256, "hop": 100, "length": 1200},
        "psnr": psnr(mel, mel_est),
    }
    (d / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(f"wrote {d}")


if __name__ == "__main__":
    main()
