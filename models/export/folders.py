"""What every family's model folder shares: the `--out` safety check and the manifest's `versions`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .errors import ExportError


def check_out(out: Path) -> None:
    """Refuse to replace a non-empty folder that is not a model folder (e.g. a typo like `--out models`)."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a directory")
    manifest = out / "manifest.json"
    if any(out.iterdir()) and not manifest.is_file():
        raise ExportError(f"--out {out}: a non-empty folder without manifest.json; refusing to replace it")


def save_arrays(out_dir: Path, arrays: dict, to_numpy: Callable) -> dict:
    """Write each of `arrays` as `out_dir/<name>.npy` (converted by the family's `to_numpy`); return the
    case.json `files` entry of each: its dtype and shape."""
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, value in arrays.items():
        arr = to_numpy(value)
        np.save(out_dir / f"{name}.npy", arr)
        files[name] = {"dtype": str(arr.dtype), "shape": list(arr.shape)}
    return files


def versions() -> dict:
    """Library versions and the ONNX opset, as the manifest records them."""
    import diffusers
    import onnx
    import onnxruntime
    import torch
    import transformers

    from .onnx_io import OPSET

    return {
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": OPSET,
    }
