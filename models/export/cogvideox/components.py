"""The ONNX components of a CogVideoX pipeline, their tensor contracts, and the video shapes they serve.

One `text_encoder` serves every shape. The 2b transformer carries its sin-cos position table as a
constant, and the VAE decoder's frame batching is unrolled, so both are exported once per latent
shape (F', h, w) and named after it (`transformer_f3_h4_w6`, `vae_decoder_f3_h4_w6`). The 5b
transformer takes its rotary tables as inputs and has no shape-dependent constant: one `transformer`
graph with symbolic F', h, w serves every shape (the tests run it at several).

For diffusers' tiled decode (`vae.enable_tiling()`), one more VAE decoder graph per latent frame count,
`vae_decoder_tiles_f3`: the same frame-batched decode with symbolic latent height and width, which
the runtime runs on each overlapping tile of the latents (tiles have up to four sizes) before
blending them as `AutoencoderKLCogVideoX.tiled_decode` does. The frame batching depends on F' only;
the convolutions, upsamplers and spatial norms trace with the spatial sizes symbolic.
"""

from __future__ import annotations

import dataclasses

import torch

from ..errors import ExportError
from ..onnx_io import Component, TensorSpec
from . import wrappers

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ONNX_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
_BATCH = 2  # trace batch (CFG); the axis stays symbolic


@dataclasses.dataclass(frozen=True)
class Shape:
    """One video shape: `frames` is what diffusers' `num_frames` would be asked for."""

    frames: int
    height: int
    width: int
    spatial: int = 8  # vae_scale_factor_spatial
    temporal: int = 4  # vae_scale_factor_temporal
    patch: int = 2

    @property
    def latent_frames(self) -> int:
        return (self.frames - 1) // self.temporal + 1  # CogVideoXPipeline.__call__, step 5

    @property
    def latent_height(self) -> int:
        return self.height // self.spatial

    @property
    def latent_width(self) -> int:
        return self.width // self.spatial

    @property
    def output_frames(self) -> int:
        """Frames the VAE decodes: 1 + 4 (F' - 1) for odd F' (first frame kept single), 4 F' for even F'."""
        f = self.latent_frames
        return self.temporal * (f - 1) + 1 if f % 2 == 1 else self.temporal * f

    @property
    def video_tokens(self) -> int:
        return self.latent_frames * (self.latent_height // self.patch) * (self.latent_width // self.patch)

    @property
    def key(self) -> str:
        return f"f{self.latent_frames}_h{self.latent_height}_w{self.latent_width}"

    def canonical(self) -> "Shape":
        """The same latent shape, asked for with the frame count it decodes to."""
        return dataclasses.replace(self, frames=self.output_frames)

    def check(self) -> None:
        step = self.spatial * self.patch
        if self.frames < 1:
            raise ExportError(f"--frames {self.frames}: must be at least 1")
        for name, value in (("height", self.height), ("width", self.width)):
            if value < step or value % step:
                raise ExportError(
                    f"--{name} {value}: must be a positive multiple of {step} (VAE factor {self.spatial} x patch {self.patch})"
                )


def model_shape(pipe, frames: int, height: int, width: int) -> Shape:
    return Shape(
        frames,
        height,
        width,
        spatial=pipe.vae_scale_factor_spatial,
        temporal=pipe.vae_scale_factor_temporal,
        patch=pipe.transformer.config.patch_size,
    )


def default_shape(pipe) -> Shape:
    """diffusers' defaults: sample_frames frames at sample_height x sample_width latents (x 8 pixels)."""
    cfg = pipe.transformer.config
    s = pipe.vae_scale_factor_spatial
    return model_shape(pipe, cfg.sample_frames, cfg.sample_height * s, cfg.sample_width * s)


def uses_rope(pipe) -> bool:
    return bool(pipe.transformer.config.use_rotary_positional_embeddings)


def transformer_name(pipe, shape: Shape) -> str:
    return "transformer" if uses_rope(pipe) else f"transformer_{shape.key}"


def vae_decoder_name(shape: Shape) -> str:
    return f"vae_decoder_{shape.key}"


def vae_tile_decoder_name(latent_frames: int) -> str:
    return f"vae_decoder_tiles_f{latent_frames}"


def vae_tiling(vae) -> dict:
    """The VAE's tile sizes and overlaps as `tiled_decode` reads them (`enable_tiling` arguments, and the
    latent tile size diffusers derives from them), under the manifest's names."""
    return {
        "tileSampleMinHeight": int(vae.tile_sample_min_height),
        "tileSampleMinWidth": int(vae.tile_sample_min_width),
        "tileLatentMinHeight": int(vae.tile_latent_min_height),
        "tileLatentMinWidth": int(vae.tile_latent_min_width),
        "tileOverlapFactorHeight": float(vae.tile_overlap_factor_height),
        "tileOverlapFactorWidth": float(vae.tile_overlap_factor_width),
    }


def rotary_tables(pipe, shape: Shape) -> tuple[torch.Tensor, torch.Tensor]:
    """`freqs_cos`, `freqs_sin` [video_tokens, head_dim] float32, computed by the pipeline's own method."""
    return pipe._prepare_rotary_positional_embeddings(shape.height, shape.width, shape.latent_frames, torch.device("cpu"))


def build(pipe, shapes: list[Shape], dtype: str = "fp32", tiles: bool = False) -> list[Component]:
    """Wrappers, contracts and example inputs: text_encoder, then per shape the transformer and the VAE decoder,
    then with `tiles` a tile decoder per distinct latent frame count.

    `text_encoder` stays float32 whatever `dtype` is: T5 v1.1 overflows in fp16 (diffusers and
    transformers keep parts of it in fp32 for that reason), and ONNX Runtime's CPU provider has no bf16
    kernels. The runtime casts its output to the transformer's float type, as the pipeline does. With
    bf16 the VAE decoder stays float32 too (see `vae_dtype`); the caller converts the modules to match.
    """
    tdtype = TORCH_DTYPES[dtype]
    vae_dtype = torch.float32 if dtype == "bf16" else tdtype  # no bf16 Conv3d/GroupNorm in ONNX opset 17
    cfg = pipe.transformer.config
    text_len = cfg.max_text_seq_length
    t5_dim = pipe.text_encoder.config.d_model
    channels = cfg.in_channels
    gen = torch.Generator().manual_seed(1234)

    def randn(*shape, dt=tdtype):
        return torch.randn(*shape, generator=gen).to(dt)

    def spec(name, dt, *dims):
        return TensorSpec(name, "int64" if dt is torch.int64 else ONNX_NAMES[dt], tuple(dims))

    vocab = pipe.text_encoder.config.vocab_size
    comps = [
        Component(
            "text_encoder",
            wrappers.TextEncoder(pipe.text_encoder),
            [spec("input_ids", torch.int64, "batch", text_len)],
            [spec("last_hidden_state", torch.float32, "batch", text_len, t5_dim)],
            (torch.randint(2, vocab, (_BATCH, text_len), generator=gen),),
        )
    ]
    timestep = torch.tensor([981, 21], dtype=torch.long)[:_BATCH]
    rope_done = False
    for shape in shapes:
        f, h, w = shape.latent_frames, shape.latent_height, shape.latent_width
        if uses_rope(pipe):
            if not rope_done:
                # traced at the first shape; F', h, w and the token count stay symbolic
                cos, sin = rotary_tables(pipe, shape)
                dims = ("batch", "latent_frames", channels, "latent_height", "latent_width")
                comps.append(
                    Component(
                        "transformer",
                        wrappers.RotaryTransformer(pipe.transformer),
                        [
                            spec("hidden_states", tdtype, *dims),
                            spec("encoder_hidden_states", tdtype, "batch", text_len, t5_dim),
                            spec("timestep", torch.int64, "batch"),
                            spec("freqs_cos", torch.float32, "video_tokens", cfg.attention_head_dim),
                            spec("freqs_sin", torch.float32, "video_tokens", cfg.attention_head_dim),
                        ],
                        [spec("sample", tdtype, *dims)],
                        (randn(_BATCH, f, channels, h, w), randn(_BATCH, text_len, t5_dim), timestep, cos, sin),
                    )
                )
                rope_done = True
        else:
            dims = ("batch", f, channels, h, w)
            comps.append(
                Component(
                    transformer_name(pipe, shape),
                    wrappers.Transformer(pipe.transformer, f, h, w),
                    [
                        spec("hidden_states", tdtype, *dims),
                        spec("encoder_hidden_states", tdtype, "batch", text_len, t5_dim),
                        spec("timestep", torch.int64, "batch"),
                    ],
                    [spec("sample", tdtype, *dims)],
                    (randn(_BATCH, f, channels, h, w), randn(_BATCH, text_len, t5_dim), timestep),
                )
            )
        s = pipe.vae_scale_factor_spatial
        comps.append(
            Component(
                vae_decoder_name(shape),
                wrappers.VaeDecoder(pipe.vae),
                [spec("z", vae_dtype, 1, channels, f, h, w)],
                [spec("frames", vae_dtype, 1, pipe.vae.config.out_channels, shape.output_frames, h * s, w * s)],
                (randn(1, channels, f, h, w, dt=vae_dtype),),
            )
        )
    if tiles:
        done = set()
        for shape in shapes:
            f = shape.latent_frames
            if f in done:
                continue
            done.add(f)
            # traced at the shape's own (non-square) latent size; height and width stay symbolic
            comps.append(
                Component(
                    vae_tile_decoder_name(f),
                    wrappers.VaeDecoder(pipe.vae),
                    [spec("z", vae_dtype, 1, channels, f, "latent_height", "latent_width")],
                    [spec("frames", vae_dtype, 1, pipe.vae.config.out_channels, shape.output_frames, "height", "width")],
                    (randn(1, channels, f, shape.latent_height, shape.latent_width, dt=vae_dtype),),
                )
            )
    return comps
