"""Helpers shared by the exporter tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[3]
COMMITTED = REPO / "models" / "audioldm2-tiny"

# component -> largest relative error seen by the parity tests, printed at the end of the run
MAX_ERRORS: dict[str, float] = {}


def record_error(component: str, error: float) -> None:
    MAX_ERRORS[component] = max(error, MAX_ERRORS.get(component, 0.0))


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|: one number per tensor, insensitive to tiny individual values."""
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = float(np.abs(want).max())
    assert scale > 0, "reference tensor is all zeros; the comparison would be meaningless"
    return float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max() / scale)


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m models.export ...` from the repo root, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "models.export", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
