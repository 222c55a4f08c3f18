"""Random-weight Stable Video Diffusion pipelines built from configs (`--tiny`, `--size bench`).

`tiny` is the "PIL path" variant of the diffusers fast-test configuration (video-pipelines.md §6.1):
the test's UNet, VAE and scheduler, with a CLIP vision tower at `image_size=224, patch_size=32` so a
PIL image takes the real preprocessing (blur + bicubic resize to 224) into CLIP. One deviation:
`layers_per_block=1` instead of 2 in the UNet, which keeps `models/svd-tiny` (graphs plus reference
arrays, whose 224×224 CLIP inputs alone take 1.2 MB) under 12 MB; every block type of the test
configuration is still there. `bench` has the real model's layout (4 UNet levels with attention in
the first three, a 4-level VAE with scale factor 8, a patch-14 CLIP) at small widths.

Every component is built right after `torch.manual_seed(seed * 1000 + k)`, so a build depends only
on the seed and the library versions.
"""

from __future__ import annotations

import dataclasses

import torch
from diffusers import (
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModelWithProjection

# The scheduler of stabilityai/stable-video-diffusion-img2vid(-xt) (scheduler/scheduler_config.json,
# identical in both), used for every size so the TypeScript Euler code is tested against the real
# schedule (Karras sigmas 700 → 0.002, v-prediction, continuous timesteps 0.25·ln σ).
REAL_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    trained_betas=None,
    prediction_type="v_prediction",
    interpolation_type="linear",
    use_karras_sigmas=True,
    sigma_min=0.002,
    sigma_max=700.0,
    timestep_spacing="leading",
    timestep_type="continuous",
    steps_offset=1,
    rescale_betas_zero_snr=False,
)


@dataclasses.dataclass(frozen=True)
class Size:
    """The knobs that differ between the random-weight sizes."""

    name: str
    unet_channels: tuple[int, ...]
    unet_down: tuple[str, ...]
    unet_up: tuple[str, ...]
    unet_layers_per_block: int
    unet_heads: int | tuple[int, ...]
    unet_num_frames: int  # unet.config.num_frames: the pipeline's default frame count
    time_embed_dim: int  # addition_time_embed_dim; the add embedding takes 3 of them
    vae_channels: tuple[int, ...]  # len = log2(vae_scale_factor) + 1; [0] a multiple of 32 (GroupNorm)
    vae_layers_per_block: int
    clip_hidden: int
    clip_layers: int
    clip_heads: int
    clip_intermediate: int
    clip_patch: int
    embed_dim: int  # CLIP projection_dim = the UNet's cross_attention_dim
    defaults: dict  # the manifest's `defaults` (what `parastep gen` uses when a flag is absent)


TINY = Size(
    name="tiny",
    unet_channels=(32, 64),
    unet_down=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    unet_up=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    unet_layers_per_block=1,
    unet_heads=8,
    unet_num_frames=3,
    time_embed_dim=32,
    vae_channels=(32, 64),  # vae_scale_factor 2
    vae_layers_per_block=1,
    clip_hidden=32,
    clip_layers=2,
    clip_heads=4,
    clip_intermediate=37,
    clip_patch=32,
    embed_dim=32,
    # reference case 1 is exactly this run (frames = unet_num_frames; 3 frames in chunks of 2 decode a
    # full and a partial chunk)
    defaults={
        "steps": 10, "warmup": 3, "frames": 3, "width": 48, "height": 32, "fps": 7, "motionBucketId": 127,
        "noiseAugStrength": 0.02, "minGuidance": 1.0, "maxGuidance": 3.0, "decodeChunk": 2,
    },
)

# Mid-size model for timing: the real layout at small widths, sized so that one CFG UNet call
# (batch 2, the default 6 frames of 64×64, latent 8×8) takes 30-80 ms on one CPU thread with
# onnxruntime (models/export/README.md). The same UNet costs ~80 ms at 128×64 and ~0.5 s at 8 frames
# of 256×128.
BENCH = Size(
    name="bench",
    unet_channels=(32, 64, 64, 96),
    unet_down=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
    unet_up=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
    unet_layers_per_block=2,
    unet_heads=(2, 4, 4, 6),  # head width 16
    unet_num_frames=6,
    time_embed_dim=64,
    vae_channels=(32, 32, 64, 64),  # vae_scale_factor 8, as in the real model
    vae_layers_per_block=2,
    clip_hidden=64,
    clip_layers=4,
    clip_heads=4,
    clip_intermediate=128,
    clip_patch=14,  # 256 patches, as ViT-H/14
    embed_dim=64,
    defaults={
        "steps": 25, "warmup": 5, "frames": 6, "width": 64, "height": 64, "fps": 7, "motionBucketId": 127,
        "noiseAugStrength": 0.02, "minGuidance": 1.0, "maxGuidance": 3.0, "decodeChunk": 3,
    },
)

SIZES = {"tiny": TINY, "bench": BENCH}


def _seeded(seed: int, k: int) -> None:
    torch.manual_seed(seed * 1000 + k)


def build_pipeline(size: Size, seed: int) -> StableVideoDiffusionPipeline:
    """A `StableVideoDiffusionPipeline` with random float32 weights, in eval mode, on the CPU."""
    vae_factor = 2 ** (len(size.vae_channels) - 1)
    _seeded(seed, 0)
    unet = UNetSpatioTemporalConditionModel(
        sample_size=size.defaults["height"] // vae_factor,
        in_channels=8,
        out_channels=4,
        down_block_types=size.unet_down,
        up_block_types=size.unet_up,
        block_out_channels=size.unet_channels,
        layers_per_block=size.unet_layers_per_block,
        cross_attention_dim=size.embed_dim,
        num_attention_heads=size.unet_heads,
        addition_time_embed_dim=size.time_embed_dim,
        projection_class_embeddings_input_dim=3 * size.time_embed_dim,
        num_frames=size.unet_num_frames,
    )
    _seeded(seed, 1)
    vae = AutoencoderKLTemporalDecoder(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * len(size.vae_channels),
        block_out_channels=list(size.vae_channels),
        layers_per_block=size.vae_layers_per_block,
        latent_channels=4,
        # the real checkpoints' value; the class default is the same number, so it is stated here
        scaling_factor=0.18215,
    )
    _seeded(seed, 2)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=size.clip_hidden,
            projection_dim=size.embed_dim,
            num_hidden_layers=size.clip_layers,
            num_attention_heads=size.clip_heads,
            intermediate_size=size.clip_intermediate,
            image_size=224,
            patch_size=size.clip_patch,
        )
    )
    pipe = StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**REAL_SCHEDULER),
        # CLIP's defaults (OpenAI mean/std), as in the real checkpoints' preprocessor_config.json
        feature_extractor=CLIPImageProcessorPil(crop_size=224, size=224),
    )
    pipe.set_progress_bar_config(disable=True)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    return pipe
