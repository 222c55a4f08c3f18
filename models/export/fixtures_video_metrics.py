"""Write video-metric fixtures for the Deno tests in tests/metrics/video_test.ts.

Standalone script (numpy only; scikit-image is not in the exporter's environment). Per-frame PSNR
and SSIM are computed here with numpy formulas written independently of the TypeScript code: PSNR
from the mean squared error, SSIM (Wang et al. 2004) as scikit-image's
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=R)`` defines it, but with a full 2-D Gaussian window (the outer product of scipy's
1-D ``gaussian_filter`` taps, truncate 3.5) applied by explicit sums over ``np.pad(mode="symmetric")``
(scipy's ``mode="reflect"``) instead of the separable filter the TypeScript code uses; the map is
averaged over the frame minus a border of ``min(5, (side - 1) // 2)`` pixels, then over channels.

From the repository root::

    .venv/bin/python models/export/fixtures_video_metrics.py [--out tests/fixtures/video_metrics]

Writes ``<case>_ref.npy``, ``<case>_est.npy`` (float32 [F, C, H, W]) and ``expected.json``
(per case: data range, per-frame PSNR in dB, or "Infinity", and SSIM).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

SEED = 20250613


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> np.ndarray:
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 / sigma**2 * x**2)
    taps /= taps.sum()
    return np.outer(taps, taps)


def filter2d(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    r = window.shape[0] // 2
    padded = np.pad(img, r, mode="symmetric")
    out = np.zeros_like(img)
    for dy in range(window.shape[0]):
        for dx in range(window.shape[1]):
            out += window[dy, dx] * padded[dy : dy + img.shape[0], dx : dx + img.shape[1]]
    return out


def ssim_plane(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    w = gaussian_window()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ux, uy = filter2d(x, w), filter2d(y, w)
    vx = filter2d(x * x, w) - ux * ux
    vy = filter2d(y * y, w) - uy * uy
    vxy = filter2d(x * y, w) - ux * uy
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    py = min(5, (x.shape[0] - 1) // 2)
    px = min(5, (x.shape[1] - 1) // 2)
    return float(s[py : x.shape[0] - py, px : x.shape[1] - px].mean())


def psnr_frame(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def make_case(rng, frames, channels, h, w, noise, data_range, identical=()):
    yy, xx = np.mgrid[0:h, 0:w]
    ref = np.stack(
        [
            np.stack([0.5 + 0.4 * np.sin(xx * (0.3 + 0.1 * c) + yy * 0.2 + f) for c in range(channels)])
            for f in range(frames)
        ]
    ) * data_range
    est = ref + rng.normal(0, noise * data_range, ref.shape)
    for f in identical:
        est[f] = ref[f]
    return ref.astype(np.float32), np.clip(est, 0, data_range).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/video_metrics"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    cases = {
        "rgb_3x20x27": make_case(rng, 3, 3, 20, 27, 0.05, 1.0, identical=(1,)),
        "grey_2x9x8_small": make_case(rng, 2, 1, 9, 8, 0.1, 1.0),
        "range2_1x16x16": make_case(rng, 1, 3, 16, 16, 0.02, 2.0),
    }
    expected = {}
    for name, (ref, est) in cases.items():
        np.save(args.out / f"{name}_ref.npy", ref)
        np.save(args.out / f"{name}_est.npy", est)
        data_range = 2.0 if name.startswith("range2") else 1.0
        r64, e64 = ref.astype(np.float64), est.astype(np.float64)
        psnr = [psnr_frame(r64[f], e64[f], data_range) for f in range(ref.shape[0])]
        ssim = [
            float(np.mean([ssim_plane(r64[f, c], e64[f, c], data_range) for c in range(ref.shape[1])]))
            for f in range(ref.shape[0])
        ]
        expected[name] = {
            "shape": list(ref.shape),
            "dataRange": data_range,
            "psnr": ["Infinity" if math.isinf(p) else p for p in psnr],
            "ssim": ssim,
        }
    (args.out / "expected.json").write_text(json.dumps({"numpy": np.__version__, "cases": expected}, indent=2) + "\n")
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
