"""Random-weight CogVideoX pipelines built from configs (`--size tiny | tiny-5b | bench`).

All sizes keep the real model's geometry: VAE spatial factor 8 (four VAE levels), temporal factor 4,
transformer patch 2, and the real `CogVideoXDDIMScheduler` configs (v-prediction, trailing spacing,
zero-terminal-SNR; SNR shift 3.0 for 2b, 1.0 for 5b), so the scheduler the TypeScript side runs on
the tiny models is the one the real checkpoints use.

- `tiny`: 2b-like (absolute 3-D sin-cos positions baked into the transformer). Its default video is
  9 frames (latent frames F' = 3, odd: the VAE's first-frame branch) at 32 x 48 pixels, which gives
  a non-square 2 x 3 patch grid, so a swapped height/width cannot go unnoticed.
- `tiny-5b`: the 5b layout: rotary embeddings (the `freqs_cos`/`freqs_sin` inputs), VAE
  `scaling_factor` 0.7, SNR shift 1.0, and a different head count from `tiny`.
- `bench`: a 2b-like model for timing ParaStep (see models/export/README.md for the latency).

The text length is the model's `max_text_seq_length`, the same number as the tokenizer's
`model_max_length` (226 in THUDM's checkpoints). Every component is built right after
`torch.manual_seed(seed * 1000 + k)`, so a build depends only on the seed and the library versions.
"""

from __future__ import annotations

import dataclasses

import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel
from transformers import T5Config, T5EncoderModel

from ..audioldm2.tokenizers import build_t5_tokenizer

# THUDM/CogVideoX-2b scheduler/scheduler_config.json (video-pipelines.md §3.2), field by field.
SCHEDULER_2B = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    trained_betas=None,
    clip_sample=False,
    clip_sample_range=1.0,
    sample_max_value=1.0,
    set_alpha_to_one=True,
    steps_offset=0,
    prediction_type="v_prediction",
    timestep_spacing="trailing",
    rescale_betas_zero_snr=True,
    snr_shift_scale=3.0,
)
# THUDM/CogVideoX-5b: the same file except the SNR shift.
SCHEDULER_5B = {**SCHEDULER_2B, "snr_shift_scale": 1.0}

# Video-caption-like sentences for the T5 Unigram vocabulary; only their statistics matter.
CORPUS = (
    "A panda playing a small guitar in a bamboo forest",
    "A golden retriever running on a sunny beach at sunset",
    "Time-lapse of clouds moving over snowy mountains",
    "A red sports car driving along a coastal road",
    "Waves crashing against black rocks during a storm",
    "A chef slicing vegetables on a wooden cutting board",
    "A hot air balloon rising slowly over green hills",
    "Close-up of raindrops falling into a puddle",
    "A cat chasing a ball of yarn across the floor",
    "Fireworks exploding over a city skyline at night",
    "A astronaut walking on the surface of the moon",
    "A drone shot flying over a dense tropical forest",
    "Children playing football in a dusty village square",
    "A candle flame flickering in a dark room",
    "A butterfly landing on a bright yellow flower",
    "Traffic moving through a busy street in the rain",
    "An old man reading a newspaper on a park bench",
    "A sailboat drifting on a calm blue lake",
    "Snow falling softly on a quiet wooden cabin",
    "A dancer spinning on a stage under a spotlight",
    "A train crossing a stone bridge in the mountains",
    "Coffee being poured into a white ceramic cup",
    "A horse galloping through a field of tall grass",
    "Neon signs glowing in a narrow alley, cinematic lighting",
    "A robot arm assembling parts in a clean factory",
    "Leaves falling from a maple tree in autumn",
    "A whale jumping out of the ocean, slow motion",
    "A timelapse of a flower blooming, 4k, highly detailed",
    "A bird's-eye view of a river winding through a valley",
    "Smoke rising from a campfire under the stars",
    "Crème brûlée, café au lait, piñata, über, smörgåsbord",
    "Low quality, blurry, distorted, watermark, jpeg artifacts!",
    "1 2 3 4 5 6 7 8 9 10 frames per second",
    "A cartoon fox jumping over a lazy dog: very fast?",
)


@dataclasses.dataclass(frozen=True)
class Size:
    """The knobs that differ between the random-weight sizes."""

    name: str
    heads: int
    head_dim: int  # attention_head_dim; a multiple of 16 (the sin-cos table and RoPE split it 1/4, 3/8, 3/8)
    layers: int
    time_embed_dim: int
    latent_channels: int
    rope: bool  # use_rotary_positional_embeddings (5b) instead of the absolute sin-cos table (2b)
    text_length: int  # max_text_seq_length = tokenizer model_max_length
    t5_dim: int
    t5_layers: int
    t5_heads: int
    t5_words: int
    vae_channels: tuple[int, ...]  # four levels: spatial factor 8
    vae_layers: int
    vae_groups: int
    vae_scaling_factor: float
    scheduler: dict
    frames: int  # transformer sample_frames: the default video length
    height: int  # default video height in pixels = sample_height * 8
    width: int
    defaults: dict  # steps, guidance, warmup, fps (frames/height/width come from the transformer config)
    # `vae.enable_tiling(...)` arguments (tile_sample_min_height, tile_sample_min_width,
    # tile_overlap_factor_height, tile_overlap_factor_width) set on the VAE, tiling left off; with them
    # the folder gets tiled VAE decoder graphs and a tiled reference case. None: no tiled decode.
    vae_tiling: tuple[int, int, float, float] | None = None


TINY = Size(
    name="tiny",
    heads=2,
    head_dim=16,
    layers=2,
    time_embed_dim=16,
    latent_channels=4,
    rope=False,
    text_length=32,
    t5_dim=24,  # T5, transformer (32) and time embedding (16) widths differ so swapped tensors show
    t5_layers=2,
    t5_heads=4,
    t5_words=300,
    vae_channels=(8, 8, 8, 8),
    vae_layers=1,
    vae_groups=4,
    vae_scaling_factor=1.15258426,  # the 2b checkpoint's value
    scheduler=SCHEDULER_2B,
    frames=9,  # F' = 3: odd, one 3-frame VAE batch
    height=32,
    width=48,
    defaults={"steps": 20, "guidance": 6.0, "warmup": 5, "fps": 8},
    # Tiles of 24 x 32 pixels (3 x 4 latents) starting every 2 latent rows / 3 latent columns, blended over 8
    # pixels: the 32 x 48 video splits into 2 x 2 overlapping tiles of four different sizes (3x4, 3x3, 2x4,
    # 2x3 latents) whose crops (16 + 16 rows, 24 + 24 columns) give back exactly 32 x 48. diffusers' own
    # defaults (half the VAE's sample size, overlaps 1/6 and 1/5) are tuned for 480 x 720: at 32 x 48
    # they would decode a 50 x 56 video.
    vae_tiling=(24, 32, 1 / 3, 1 / 4),
)

TINY_5B = dataclasses.replace(
    TINY,
    name="tiny-5b",
    heads=3,
    rope=True,
    vae_scaling_factor=0.7,  # the 5b checkpoint's value
    scheduler=SCHEDULER_5B,
    defaults={"steps": 10, "guidance": 6.0, "warmup": 3, "fps": 8},
    vae_tiling=None,  # the folder stays under 2 MB
)

# 2b layout at 49 frames (F' = 13) and 64 x 96 pixels: 13 * 4 * 6 = 312 video tokens + 226 text tokens, with
# widths and depth chosen so that one CFG transformer call (batch 2) takes 30-80 ms on one CPU thread with
# onnxruntime (models/export/README.md: 39.5 ms with 6 layers; 2 layers took 15 ms). The real 480 x 720 would be 17,550 video tokens.
BENCH = Size(
    name="bench",
    heads=2,
    head_dim=64,
    layers=6,
    time_embed_dim=128,
    latent_channels=16,
    rope=False,
    text_length=226,
    t5_dim=64,
    t5_layers=2,
    t5_heads=4,
    t5_words=300,
    vae_channels=(16, 32, 32, 64),
    vae_layers=1,
    vae_groups=8,
    vae_scaling_factor=1.15258426,
    scheduler=SCHEDULER_2B,
    frames=49,
    height=64,
    width=96,
    defaults={"steps": 50, "guidance": 6.0, "warmup": 13, "fps": 8},
)

SIZES = {s.name: s for s in (TINY, TINY_5B, BENCH)}


def _seeded(seed: int, k: int) -> None:
    torch.manual_seed(seed * 1000 + k)


def build_pipeline(size: Size, seed: int) -> CogVideoXPipeline:
    """A `CogVideoXPipeline` with random float32 weights, in eval mode, on the CPU."""
    tokenizer = build_t5_tokenizer(size.t5_words, size.text_length, CORPUS)
    _seeded(seed, 0)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=size.heads,
        attention_head_dim=size.head_dim,
        in_channels=size.latent_channels,
        out_channels=size.latent_channels,
        time_embed_dim=size.time_embed_dim,
        text_embed_dim=size.t5_dim,
        num_layers=size.layers,
        sample_width=size.width // 8,
        sample_height=size.height // 8,
        sample_frames=size.frames,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=size.text_length,
        use_rotary_positional_embeddings=size.rope,
    )
    _seeded(seed, 1)
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * len(size.vae_channels),
        up_block_types=("CogVideoXUpBlock3D",) * len(size.vae_channels),
        block_out_channels=size.vae_channels,
        latent_channels=size.latent_channels,
        layers_per_block=size.vae_layers,
        norm_num_groups=size.vae_groups,
        temporal_compression_ratio=4,
        sample_height=size.height,
        sample_width=size.width,
        scaling_factor=size.vae_scaling_factor,
    )
    if size.vae_tiling is not None:
        vae.enable_tiling(*size.vae_tiling)  # stores the tile sizes and overlaps ...
        vae.disable_tiling()  # ... and leaves diffusers' default (untiled) decode on
    _seeded(seed, 2)
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer) + 28,  # a few ids the tokenizer never emits, as in the real T5 (32128 > 32100)
            d_model=size.t5_dim,
            d_ff=2 * size.t5_dim + 5,
            d_kv=size.t5_dim // size.t5_heads,
            num_heads=size.t5_heads,
            num_layers=size.t5_layers,
            feed_forward_proj="gated-gelu",  # T5 v1.1, as in CogVideoX's T5-XXL
            dropout_rate=0.0,
        )
    )
    pipe = CogVideoXPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(**size.scheduler),
    )
    pipe.set_progress_bar_config(disable=True)
    for module in torch_modules(pipe):
        module.eval()
    return pipe


def torch_modules(pipe) -> list[torch.nn.Module]:
    return [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
