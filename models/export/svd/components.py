"""The four ONNX components of a Stable Video Diffusion pipeline and their tensor contracts (models/README.md)."""

from __future__ import annotations

import torch

from ..onnx_io import Component, TensorSpec
from . import wrappers

# Example shapes for tracing, deliberately "awkward": batch 2 with different timesteps and time ids
# per row, 5 frames, and an odd latent size (13 × 17) so no divisible-size shortcut is traced in.
_BATCH, _FRAMES, _LATENT_H, _LATENT_W = 2, 5, 13, 17


def dims(pipe) -> dict[str, int]:
    """The static widths the contracts are made of, read from the modules' configs."""
    return {
        "embed_dim": pipe.image_encoder.config.projection_dim,
        "clip_size": pipe.image_encoder.config.image_size,
        "latent_channels": pipe.vae.config.latent_channels,
        "unet_in_channels": pipe.unet.config.in_channels,
        "unet_out_channels": pipe.unet.config.out_channels,
        "vae_scale_factor": pipe.vae_scale_factor,
    }


def build(pipe, dtype: torch.dtype = torch.float32, encoder_dtype: torch.dtype | None = None) -> list[Component]:
    """Wrappers, contracts and example inputs for every component, in the pipeline's order.

    `encoder_dtype` is the VAE encoder's float type when it differs from `dtype` (an fp16 export
    keeps it float32 when the VAE asks for `force_upcast`, as the pipeline does).
    """
    d = dims(pipe)
    encoder_dtype = encoder_dtype or dtype
    names = {torch.float32: "float32", torch.float16: "float16"}
    gen = torch.Generator().manual_seed(1234)

    def randn(*shape, dt=dtype):
        return torch.randn(*shape, generator=gen).to(dt)

    def f(name, *shape, dt=dtype):
        return TensorSpec(name, names[dt], tuple(shape))

    B, F, h, w = _BATCH, _FRAMES, _LATENT_H, _LATENT_W
    s = d["vae_scale_factor"]
    C, D = d["latent_channels"], d["embed_dim"]
    return [
        Component(
            "image_encoder",
            wrappers.ImageEncoder(pipe.image_encoder),
            [f("pixel_values", "batch", 3, d["clip_size"], d["clip_size"])],
            [f("image_embeds", "batch", D)],
            (randn(B, 3, d["clip_size"], d["clip_size"]),),
        ),
        Component(
            "vae_encoder",
            wrappers.VaeEncoder(pipe.vae),
            [f("image", "batch", 3, "height", "width", dt=encoder_dtype)],
            [f("latent", "batch", C, "latent_height", "latent_width", dt=encoder_dtype)],
            (randn(B, 3, h * s, w * s, dt=encoder_dtype),),
        ),
        Component(
            "unet",
            wrappers.UNet(pipe.unet),
            [
                f("sample", "batch", "frames", d["unet_in_channels"], "latent_height", "latent_width"),
                f("timestep", "batch"),
                f("encoder_hidden_states", "batch", 1, D),
                f("added_time_ids", "batch", 3),
            ],
            [f("out_sample", "batch", "frames", d["unet_out_channels"], "latent_height", "latent_width")],
            (
                randn(B, F, d["unet_in_channels"], h, w),
                torch.tensor([1.6377, -0.4211])[:B].to(dtype),
                randn(B, 1, D),
                torch.tensor([[6.0, 127.0, 0.02], [9.0, 40.0, 0.3]])[:B].to(dtype),
            ),
        ),
        Component(
            "vae_decoder",
            wrappers.VaeDecoder(pipe.vae),
            [f("latents", 1, "frames", C, "latent_height", "latent_width")],
            [f("frames", "frames", 3, "height", "width")],
            (randn(1, F, C, h, w),),
        ),
    ]
