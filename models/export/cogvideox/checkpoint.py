"""Loading a real CogVideoX checkpoint (`--from <hub id or local dir>`) without network access.

Checks run before any weights are read, so bad input fails fast with one message: the source must
resolve offline (see checkpoints.resolve), `model_index.json` must describe a
`CogVideoXPipeline` (text-to-video; the image-to-video, video-to-video and Fun pipelines have other
inputs), the scheduler must be the deterministic `CogVideoXDDIMScheduler` the runtime implements, the
transformer must be a CogVideoX 1.0 one (no `patch_size_t`, no `ofs_embed_dim`), and every config field
the exporter reads must be present in the checkpoint's own JSON (diffusers would otherwise fill in a
class default silently: a missing `scaling_factor` becomes 2b's 1.15258426, wrong for 5b).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..checkpoints import resolve
from ..errors import ExportError

# file (relative to the checkpoint root) → fields the export or the runtime needs from it.
# `use_rotary_positional_embeddings` is not required: configs written before CogVideoX-5b existed lack
# it, and diffusers' default (False) is then right.
REQUIRED_FIELDS = {
    "model_index.json": ("tokenizer", "text_encoder", "vae", "transformer", "scheduler"),
    "transformer/config.json": (
        "num_attention_heads", "attention_head_dim", "in_channels", "text_embed_dim", "patch_size",
        "max_text_seq_length", "sample_frames", "sample_height", "sample_width", "temporal_compression_ratio",
    ),
    "vae/config.json": ("block_out_channels", "latent_channels", "scaling_factor", "temporal_compression_ratio"),
    "text_encoder/config.json": ("d_model",),
    "scheduler/scheduler_config.json": (
        "_class_name", "beta_start", "beta_end", "beta_schedule", "prediction_type", "timestep_spacing",
        "rescale_betas_zero_snr", "snr_shift_scale",
    ),
}


def _read(root: Path, rel: str) -> dict:
    file = root / rel
    if not file.is_file():
        raise ExportError(f"checkpoint {root}: missing file {file}")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ExportError(f"checkpoint {root}: cannot read {rel}: {err}") from None


def check_configs(root: Path) -> None:
    """Raise ExportError naming the first problem: another pipeline, a missing file or field, an unsupported variant."""
    index = _read(root, "model_index.json")
    if index.get("_class_name") != "CogVideoXPipeline":
        raise ExportError(
            f"checkpoint {root}: {root / 'model_index.json'} describes a {index.get('_class_name')}, "
            f"not a CogVideoXPipeline (only text-to-video CogVideoX is supported)"
        )
    for rel, fields in REQUIRED_FIELDS.items():
        data = _read(root, rel)
        for field in fields:
            if field not in data or data[field] is None:
                raise ExportError(f"checkpoint {root}: field '{field}' is missing from {root / rel}")
    scheduler = _read(root, "scheduler/scheduler_config.json")["_class_name"]
    if scheduler != "CogVideoXDDIMScheduler":
        raise ExportError(
            f"checkpoint {root}: scheduler {scheduler} is not supported (parastep runs CogVideoXDDIMScheduler); "
            f"set scheduler/scheduler_config.json's _class_name to CogVideoXDDIMScheduler to export it with DDIM"
        )
    transformer = _read(root, "transformer/config.json")
    for field in ("patch_size_t", "ofs_embed_dim"):
        if transformer.get(field):
            raise ExportError(f"checkpoint {root}: transformer {field} is set: CogVideoX 1.5 checkpoints are not supported")


def load(source: str):
    """The checkpoint's `CogVideoXPipeline` in float32 on the CPU, in eval mode.

    THUDM stores 2b in fp16 and 5b in bf16; both widen to float32 exactly. The export casts to the
    requested `--dtype` afterwards, and the reference runs in float32.
    """
    from diffusers import CogVideoXPipeline

    root = resolve(source)
    check_configs(root)
    pipe = CogVideoXPipeline.from_pretrained(root, dtype=torch.float32)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.to(torch.float32).eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe
