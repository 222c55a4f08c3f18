"""Latency of one classifier-free-guidance UNet call (batch 2) on one CPU thread with onnxruntime.

Besides wall-clock times the record holds the calling thread's CPU time per call (with one intra-op
thread onnxruntime computes on the caller's thread): on a shared host the wall clock also counts the
time the thread waits for a core, the CPU time does not.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np


def unet_latency(model_dir: Path, repeats: int = 30, warmup: int = 5) -> dict:
    """Median and spread (ms) of `unet.onnx` at batch 2, the default frames and the default size."""
    import onnxruntime as ort

    model_dir = Path(model_dir)
    manifest = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
    unet = manifest["components"]["unet"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_dir / unet["file"]), options, providers=["CPUExecutionProvider"])
    defaults, factor = manifest["defaults"], manifest["config"]["vaeScaleFactor"]
    sizes = {
        "batch": 2,
        "frames": defaults["frames"],
        "latent_height": defaults["height"] // factor,
        "latent_width": defaults["width"] // factor,
    }
    rng = np.random.default_rng(0)
    feed = {}
    for spec in unet["inputs"]:
        shape = [sizes[d] if isinstance(d, str) else d for d in spec["dims"]]
        feed[spec["name"]] = rng.standard_normal(shape).astype(spec["dtype"])
    feed["timestep"][:] = 0.25 * np.log(100.0)
    feed["added_time_ids"][:] = [defaults["fps"] - 1, defaults["motionBucketId"], defaults["noiseAugStrength"]]
    for _ in range(warmup):
        session.run(None, feed)
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        session.run(None, feed)
        cpu.append((time.thread_time() - start_cpu) * 1e3)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {
        "what": "unet.onnx, batch 2 (CFG), onnxruntime CPU, intra_op_num_threads=1",
        "shape": {"sample": list(feed["sample"].shape)},
        "medianMs": round(statistics.median(times), 2),
        "minMs": round(times[0], 2),
        "p90Ms": round(times[int(0.9 * (len(times) - 1))], 2),
        "cpuMedianMs": round(statistics.median(cpu), 2),
        "repeats": repeats,
        "onnxruntime": ort.__version__,
    }
