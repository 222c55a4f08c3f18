"""Latency of one classifier-free-guidance UNet call (batch 2) on one CPU thread with onnxruntime."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np

T5_LENGTH = 16  # a typical short prompt's T5 length


def unet_latency(model_dir: Path, frames: int | None = None, repeats: int = 30, warmup: int = 5) -> dict:
    """Median and spread (ms) of `unet.onnx` at batch 2 and the default duration's latent frames."""
    import onnxruntime as ort

    model_dir = Path(model_dir)
    manifest = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
    unet = manifest["components"]["unet"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_dir / unet["file"]), options, providers=["CPUExecutionProvider"])
    frames = frames or manifest["config"]["unetSampleSize"]
    sizes = {"batch": 2, "frames": frames, "sequence": T5_LENGTH}
    rng = np.random.default_rng(0)
    feed = {}
    for spec in unet["inputs"]:
        shape = [sizes[d] if isinstance(d, str) else d for d in spec["dims"]]
        if spec["dtype"] == "int64":
            feed[spec["name"]] = np.full(shape, 500 if spec["name"] == "timestep" else 1, dtype=np.int64)
        else:
            feed[spec["name"]] = rng.standard_normal(shape).astype(spec["dtype"])
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {
        "what": "unet.onnx, batch 2 (CFG), onnxruntime CPU, intra_op_num_threads=1",
        "shape": {"sample": list(feed["sample"].shape), "sequence": T5_LENGTH},
        "medianMs": round(statistics.median(times), 2),
        "minMs": round(times[0], 2),
        "p90Ms": round(times[int(0.9 * (len(times) - 1))], 2),
        "repeats": repeats,
        "onnxruntime": ort.__version__,
    }
