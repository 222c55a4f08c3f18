"""Loading a real Stable Video Diffusion checkpoint (`--from <hub id or local dir>`) without network access.

Checks run before any weights are read, so bad input fails fast with one message: the source must be
local (`checkpoints.resolve`), its model_index.json must describe a StableVideoDiffusionPipeline with
an EulerDiscreteScheduler (the scheduler the runtime implements), and every config field the export
or the runtime needs must be in the checkpoint's own JSON (diffusers would fill in class defaults
silently: `scaling_factor` 0.18215, `prediction_type` "epsilon", `num_frames` 25, ...).
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import checkpoints
from ..errors import ExportError

# file (relative to the checkpoint root) → fields the export or the runtime needs from it
REQUIRED_FIELDS = {
    "model_index.json": ("image_encoder", "unet", "vae", "scheduler", "feature_extractor"),
    "unet/config.json": (
        "in_channels", "out_channels", "num_frames", "block_out_channels", "cross_attention_dim",
        "addition_time_embed_dim",
    ),
    "vae/config.json": ("block_out_channels", "latent_channels", "scaling_factor"),
    "image_encoder/config.json": ("projection_dim", "image_size"),
    "feature_extractor/preprocessor_config.json": ("image_mean", "image_std"),
    "scheduler/scheduler_config.json": (
        "_class_name", "beta_start", "beta_end", "beta_schedule", "prediction_type", "use_karras_sigmas",
        "sigma_min", "sigma_max", "timestep_spacing", "timestep_type",
    ),
}
SCHEDULER = "EulerDiscreteScheduler"
WEIGHT_FOLDERS = ("unet", "vae", "image_encoder")


def check_configs(root: Path) -> None:
    """Raise ExportError naming the first missing file or field, or an unsupported pipeline or scheduler."""
    checkpoints.check_configs(root, REQUIRED_FIELDS, "StableVideoDiffusionPipeline")
    file = root / "scheduler" / "scheduler_config.json"
    name = json.loads(file.read_text(encoding="utf-8"))["_class_name"]
    if name != SCHEDULER:
        raise ExportError(f"checkpoint {root}: {file} names a {name}; only the {SCHEDULER} of SVD is supported")


def weights_variant(root: Path) -> str | None:
    """None when every weight folder has full-precision files, "fp16" when some only have the fp16 variant.

    The Hub repos ship both `*.safetensors` and `*.fp16.safetensors`; a download of the fp16 variant
    alone is common, and diffusers only loads it when asked for the variant.
    """
    def kinds(folder: Path) -> tuple[bool, bool]:
        names = [p.name for p in folder.glob("*") if p.suffix in (".safetensors", ".bin")]
        return any(".fp16." not in n for n in names), any(".fp16." in n for n in names)

    variant = None
    for name in WEIGHT_FOLDERS:
        full, half = kinds(root / name)
        if not full and not half:
            raise ExportError(f"checkpoint {root}: no weights (*.safetensors or *.bin) in {root / name}")
        if not full:
            variant = "fp16"
    return variant


def load(source: str):
    """The checkpoint's `StableVideoDiffusionPipeline` in float32 on the CPU, in eval mode.

    Weights stored only as the fp16 variant are loaded as such and upcast: the export and the
    reference run in float32 (`--dtype fp16` converts the graphs afterwards). Every check runs before
    torch or diffusers is imported, so bad input is refused at once.
    """
    root = checkpoints.resolve(source)
    check_configs(root)
    variant = weights_variant(root)

    import torch

    from . import quiet_clip_processor_fallback

    quiet_clip_processor_fallback()
    from diffusers import StableVideoDiffusionPipeline

    pipe = StableVideoDiffusionPipeline.from_pretrained(root, variant=variant, dtype=torch.float32)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.to(torch.float32).eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe
