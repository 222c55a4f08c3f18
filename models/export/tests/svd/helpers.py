"""Helpers shared by the Stable Video Diffusion tests."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import onnxruntime as ort

from ..helpers import REPO

COMMITTED = REPO / "models" / "svd-tiny"
REFERENCE = COMMITTED / "reference"


def session(path: Path) -> ort.InferenceSession:
    """A session per graph file, made once: one intra-op thread, as the tiny graphs are latency-bound and
    the host is shared."""
    return _session(str(path))


@functools.lru_cache(maxsize=None)
def _session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def readme_contract() -> dict[str, tuple[str, list[str], list[str]]]:
    """component -> (file, input names, output names), parsed from the SVD table in models/README.md."""
    text = (REPO / "models" / "README.md").read_text(encoding="utf-8")
    section = text.split("## Stable Video Diffusion components", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[1].endswith(".onnx`"):
            names = [re.findall(r"`([a-z_0-9]+)`", cell) for cell in cells[2:]]
            rows[cells[0].strip("`")] = (cells[1].strip("`"), names[0], names[1])
    return rows
