"""Latency of one classifier-free-guidance transformer call (batch 2) on one CPU thread with onnxruntime."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np


def transformer_latency(model_dir: Path, repeats: int = 30, warmup: int = 5) -> dict:
    """Median and spread (ms) of the default shape's transformer at batch 2."""
    import onnxruntime as ort

    model_dir = Path(model_dir)
    manifest = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
    shape = manifest["shapes"][0]  # the default video
    entry = manifest["components"][shape["transformer"]]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_dir / entry["file"]), options, providers=["CPUExecutionProvider"])
    sizes = {
        "batch": 2,
        "latent_frames": shape["latentFrames"],
        "latent_height": shape["latentHeight"],
        "latent_width": shape["latentWidth"],
        "video_tokens": shape["videoTokens"],
    }
    rng = np.random.default_rng(0)
    feed = {}
    for spec in entry["inputs"]:
        dims = [sizes[d] if isinstance(d, str) else d for d in spec["dims"]]
        if spec["dtype"] == "int64":
            feed[spec["name"]] = np.full(dims, 500, dtype=np.int64)
        else:
            feed[spec["name"]] = rng.standard_normal(dims).astype(spec["dtype"])
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {
        "what": f"{entry['file']}, batch 2 (CFG), onnxruntime CPU, intra_op_num_threads=1",
        "shape": {"hidden_states": list(feed["hidden_states"].shape), "textLength": manifest["config"]["maxTextSeqLength"]},
        "medianMs": round(statistics.median(times), 2),
        "minMs": round(times[0], 2),
        "p90Ms": round(times[int(0.9 * (len(times) - 1))], 2),
        "repeats": repeats,
        "onnxruntime": ort.__version__,
    }
