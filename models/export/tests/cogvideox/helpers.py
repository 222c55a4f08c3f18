"""Paths and small helpers of the CogVideoX exporter tests."""

from __future__ import annotations

import json

import numpy as np

from ..helpers import REPO

TINY = REPO / "models" / "cogvideox-tiny"
TINY_5B = REPO / "models" / "cogvideox-tiny-5b"
DDIM_FIXTURES = REPO / "tests" / "fixtures" / "cogvideox_ddim"


def manifest(folder) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def sizes_for(shape: dict, batch: int) -> dict[str, int]:
    """Values of the symbolic dims for one manifest `shapes` entry."""
    return {
        "batch": batch,
        "latent_frames": shape["latentFrames"],
        "latent_height": shape["latentHeight"],
        "latent_width": shape["latentWidth"],
        "video_tokens": shape["videoTokens"],
    }


def postprocess(frames: np.ndarray) -> np.ndarray:
    """[1, 3, F, H, W] VAE output → [F, H, W, 3] uint8, as documented in models/README.md."""
    video = np.clip(frames[0].transpose(1, 2, 3, 0) * np.float32(0.5) + np.float32(0.5), 0, 1)
    return (video * np.float32(255)).round().astype(np.uint8)
