"""Finding a real checkpoint offline and checking its config files before any weights are read.

The exporter runs with HF_HUB_OFFLINE=1: `--from` is a local directory or a hub id already in the
local Hugging Face cache. Every config field the exporter or the runtime relies on must be present
in the checkpoint's own JSON, because diffusers and transformers would otherwise fill in a class
default silently (a missing `scaling_factor` becomes 0.18215, a missing `prediction_type` becomes
"epsilon", ...).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ExportError


def resolve(source: str) -> Path:
    """A local checkpoint directory for `source`: the directory itself, or the cached hub snapshot."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    # A hub id is "name" or "owner/name"; anything else can only have meant a directory.
    if source.startswith((".", "/", "~")) or source.count("/") > 1 or os.sep != "/" and os.sep in source:
        raise ExportError(f"--from {source}: no such directory")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(source, local_files_only=True))
    except HFValidationError:
        raise ExportError(f"--from {source}: neither a local directory nor a valid Hugging Face repo id") from None
    except Exception:  # noqa: BLE001 - any failure here means "not available offline"
        raise ExportError(
            f"--from {source}: not a local directory, and the Hugging Face Hub cannot be reached "
            f"(HF_HUB_OFFLINE=1) with no cached copy; download the checkpoint elsewhere and pass its directory"
        ) from None


def check_configs(root: Path, required: dict[str, tuple[str, ...]], pipeline_class: str) -> None:
    """Raise ExportError naming the first missing file or field, or a model_index.json of another class.

    `required` maps a file relative to `root` to the fields it must hold (non-null); model_index.json
    is checked first, so a checkpoint of another pipeline is refused before anything else is read.
    """
    for rel, fields in sorted(required.items(), key=lambda item: item[0] != "model_index.json"):
        file = root / rel
        if not file.is_file():
            raise ExportError(f"checkpoint {root}: missing file {file}")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ExportError(f"checkpoint {root}: cannot read {rel}: {err}") from None
        if rel == "model_index.json" and data.get("_class_name") != pipeline_class:
            article = "an" if pipeline_class[0] in "AEIOU" else "a"
            raise ExportError(
                f"checkpoint {root}: {file} describes a {data.get('_class_name')}, not {article} {pipeline_class}"
            )
        for field in fields:
            if field not in data or data[field] is None:
                raise ExportError(f"checkpoint {root}: field '{field}' is missing from {file}")
