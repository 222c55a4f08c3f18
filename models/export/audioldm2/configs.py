"""Random-weight AudioLDM2 pipelines built from configs (`--tiny`, `--size bench`).

Both sizes keep the real model's audio geometry: 16 kHz output and vocoder upsample rates whose
product is 160, so one mel frame is 0.01 s and a duration in seconds means what it means for
`cvssp/audioldm2`. Unlike diffusers' own dummy config, the UNet uses the nested
`cross_attention_dim=(None, lm_dim, t5_dim)` form of the real checkpoint, so every transformer
level has a self-attention block, a GPT2 cross-attention block and a masked T5 cross-attention
block, and no ONNX input goes unused.

Every component is built right after `torch.manual_seed(seed + k)`, so a build depends only on the
seed and the library versions.
"""

from __future__ import annotations

import dataclasses

import torch
from diffusers import AudioLDM2Pipeline, AutoencoderKL, DDIMScheduler
from diffusers.pipelines.audioldm2.modeling_audioldm2 import (
    AudioLDM2ProjectionModel,
    AudioLDM2UNet2DConditionModel,
)
from transformers import (
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    GPT2Config,
    GPT2LMHeadModel,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
    T5Config,
    T5EncoderModel,
)

from .tokenizers import build_clap_tokenizer, build_t5_tokenizer

# The scheduler of cvssp/audioldm2 (scheduler/scheduler_config.json), used for every size so the
# TypeScript DDIM code is tested against the real schedule.
REAL_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.0015,
    beta_end=0.0195,
    beta_schedule="scaled_linear",
    trained_betas=None,
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
    thresholding=False,
    timestep_spacing="leading",
    rescale_betas_zero_snr=False,
)


@dataclasses.dataclass(frozen=True)
class Size:
    """The knobs that differ between the random-weight sizes."""

    name: str
    clap_dim: int  # CLAP projection_dim (text_embeds width)
    clap_hidden: int
    clap_layers: int
    clap_vocab: int  # BPE vocabulary incl. the 256 byte symbols
    clap_max_length: int
    t5_dim: int
    t5_layers: int
    t5_heads: int
    t5_words: int  # whole-word Unigram pieces
    t5_max_length: int
    lm_dim: int  # GPT2 n_embd
    lm_layers: int
    lm_heads: int
    unet_channels: tuple[int, ...]
    unet_heads: int  # diffusers' `attention_head_dim`, which is really the head count
    unet_layers_per_block: int
    unet_sample_size: int  # latent frames of the default duration
    latent_channels: int
    vae_channels: tuple[int, ...]  # len = log2(vae_scale_factor) + 1
    mel_bins: int
    vocoder_channels: int
    vocoder_rates: tuple[int, ...]  # product must be 160 (0.01 s per mel frame at 16 kHz)
    norm_groups: int
    defaults: dict
    # Knobs the real configurations (real_configs.py) set; the defaults keep tiny and bench as they were.
    unet_head_counts: tuple[int, ...] | None = None  # per level; overrides unet_heads
    clap_heads: int = 2
    clap_intermediate: int | None = None  # None: 2 * clap_hidden + 5
    clap_model_vocab: int | None = None  # embedding rows; None: clap_vocab
    t5_ff: int | None = None  # None: 2 * t5_dim + 5
    t5_model_vocab: int | None = None  # None: t5_words + 200
    lm_vocab: int = 64  # wte is never used: the pipeline feeds inputs_embeds
    lm_positions: int | None = None  # None: t5_max_length + 21
    vae_layers_per_block: int = 1
    vocoder_kernels: tuple[int, ...] | None = None  # None: 2 * rate
    vocoder_resblock_kernels: tuple[int, ...] = (3, 5)
    vocoder_resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3), (1, 3))
    clap_audio: dict | None = None  # ClapAudioConfig; None: CLAP_AUDIO[name]
    clap_features: dict | None = None  # ClapFeatureExtractor arguments; None: CLAP_FEATURES[name]
    source: str | None = None  # the published checkpoint whose configuration this copies


TINY = Size(
    name="tiny",
    clap_dim=24,  # CLAP, T5 and GPT2 widths differ so a swapped tensor cannot go unnoticed
    clap_hidden=16,
    clap_layers=2,
    clap_vocab=600,
    clap_max_length=77,
    t5_dim=32,
    t5_layers=2,
    t5_heads=4,
    t5_words=400,
    t5_max_length=32,
    lm_dim=16,
    lm_layers=2,
    lm_heads=2,
    unet_channels=(16, 32, 32),  # two upsamplers: exercises the forwarded upsample_size twice
    unet_heads=2,
    unet_layers_per_block=1,
    unet_sample_size=32,  # 32 latent frames * 4 * 0.01 s = 1.28 s by default
    latent_channels=8,
    vae_channels=(8, 16, 16),  # vae_scale_factor 4, as in the real model
    mel_bins=16,
    vocoder_channels=16,
    vocoder_rates=(8, 5, 4),
    norm_groups=8,
    defaults={"steps": 20, "guidance": 3.5, "warmup": 5, "duration": 1.28},
)

# Mid-size model for timing: the real UNet layout (4 levels, attention below the top level) at 2.56 s,
# with widths tuned so that one CFG UNet call (batch 2, default duration, 64 latent frames) takes about
# 40 ms on one CPU thread with onnxruntime (in the 20-60 ms band; see models/export/README.md). At the
# real 10.24 s the level-1 self-attention over 1024 tokens alone costs ~300 ms.
BENCH = Size(
    name="bench",
    clap_dim=64,
    clap_hidden=64,
    clap_layers=2,
    clap_vocab=600,
    clap_max_length=77,
    t5_dim=64,
    t5_layers=2,
    t5_heads=4,
    t5_words=400,
    t5_max_length=64,
    lm_dim=64,
    lm_layers=2,
    lm_heads=4,
    unet_channels=(32, 48, 64, 96),
    unet_heads=4,
    unet_layers_per_block=1,
    unet_sample_size=64,  # 2.56 s
    latent_channels=8,
    vae_channels=(16, 32, 32),
    mel_bins=64,
    vocoder_channels=32,
    vocoder_rates=(5, 4, 2, 2, 2),
    norm_groups=8,
    defaults={"steps": 50, "guidance": 3.5, "warmup": 5, "duration": 2.56},
)

SIZES = {"tiny": TINY, "bench": BENCH}

# CLAP's audio tower for the random sizes: the structure of laion/clap-htsat-unfused (unfused Swin
# "HTSAT", one input channel, patch 4 with stride 4, log-mel input of `num_mel_bins` bins turned into a
# square `spec_size` image by folding time `spec_size // num_mel_bins` times), at tiny widths. The
# feature extractor is sized to match: `max_length_s * 48000 / hop_length + 1` frames must fit in
# `spec_size * (spec_size // num_mel_bins)`, and `feature_size == num_mel_bins`.
_TINY_CLAP_AUDIO = dict(
    spec_size=64,  # 64 // 16 = fold 4: 256 frames fit the 201 of 2 s
    num_mel_bins=16,
    window_size=4,  # divides the 16 x 16 patch grid and the 8 x 8 one after merging
    patch_size=4,
    patch_stride=(4, 4),
    patch_embeds_hidden_size=16,
    depths=[1, 1],
    num_attention_heads=[1, 2],
    hidden_size=32,  # patch_embeds_hidden_size * 2 ** (len(depths) - 1)
    num_hidden_layers=1,
    intermediate_size=37,
    enable_fusion=False,
    patch_embed_input_channels=1,
    layer_norm_eps=1e-5,
)
# ClapFeatureExtractor arguments. "rand_trunc" is the mode of the unfused checkpoint (the "fusion"
# default stacks 4 mels, which an unfused tower cannot take); 2 s keeps the tiny features small while
# the tiny model's 1.28 s default stays below it, so the features are deterministic (repeat-padded).
_TINY_CLAP_FEATURES = dict(
    feature_size=16,
    sampling_rate=48_000,
    hop_length=480,
    max_length_s=2,
    fft_window_size=1024,
    frequency_min=50,
    frequency_max=14_000,
    truncation="rand_trunc",
    padding="repeatpad",
)
CLAP_AUDIO = {"tiny": _TINY_CLAP_AUDIO, "bench": _TINY_CLAP_AUDIO}
CLAP_FEATURES = {"tiny": _TINY_CLAP_FEATURES, "bench": _TINY_CLAP_FEATURES}


def _seeded(seed: int, k: int) -> None:
    torch.manual_seed(seed * 1000 + k)


def unet_config(size: Size) -> dict:
    """`AudioLDM2UNet2DConditionModel` arguments for `size`."""
    return dict(
        sample_size=size.unet_sample_size,
        in_channels=size.latent_channels,
        out_channels=size.latent_channels,
        block_out_channels=size.unet_channels,
        layers_per_block=size.unet_layers_per_block,
        norm_num_groups=size.norm_groups,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(size.unet_channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(size.unet_channels) - 1) + ("UpBlock2D",),
        cross_attention_dim=((None, size.lm_dim, size.t5_dim),) * len(size.unet_channels),
        attention_head_dim=size.unet_head_counts or size.unet_heads,
        flip_sin_to_cos=True,
        freq_shift=0,
    )


def build_pipeline(size: Size, seed: int) -> AudioLDM2Pipeline:
    """An `AudioLDM2Pipeline` with random float32 weights, in eval mode, on the CPU."""
    _seeded(seed, 0)
    unet = AudioLDM2UNet2DConditionModel(**unet_config(size))
    _seeded(seed, 1)
    vae = AutoencoderKL(
        in_channels=1,
        out_channels=1,
        latent_channels=size.latent_channels,
        block_out_channels=list(size.vae_channels),
        down_block_types=["DownEncoderBlock2D"] * len(size.vae_channels),
        up_block_types=["UpDecoderBlock2D"] * len(size.vae_channels),
        layers_per_block=size.vae_layers_per_block,
        norm_num_groups=size.norm_groups,
        sample_size=size.unet_sample_size * 2 ** (len(size.vae_channels) - 1),
        scaling_factor=0.4110932946205139,  # the real checkpoint's value, far from 1 on purpose
    )
    _seeded(seed, 2)
    text_encoder = _clap(size, seed)
    _seeded(seed, 3)
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=size.t5_model_vocab or size.t5_words + 200,
            d_model=size.t5_dim,
            d_ff=size.t5_ff or 2 * size.t5_dim + 5,
            d_kv=size.t5_dim // size.t5_heads,
            num_heads=size.t5_heads,
            num_layers=size.t5_layers,
            feed_forward_proj="gated-gelu",  # as in Flan-T5
            dropout_rate=0.0,
        )
    )
    _seeded(seed, 4)
    language_model = GPT2LMHeadModel(
        GPT2Config(
            n_embd=size.lm_dim,
            n_layer=size.lm_layers,
            n_head=size.lm_heads,
            vocab_size=size.lm_vocab,
            bos_token_id=0,
            eos_token_id=0,
            n_positions=size.lm_positions or size.t5_max_length + 5 + 8 + 8,
        )
    )
    language_model.config.max_new_tokens = 8
    _seeded(seed, 5)
    projection_model = AudioLDM2ProjectionModel(
        text_encoder_dim=size.clap_dim, text_encoder_1_dim=size.t5_dim, langauge_model_dim=size.lm_dim
    )
    # diffusers initialises the SOS/EOS embeddings to ones; random values make their order observable.
    with torch.no_grad():
        for name in ("sos_embed", "eos_embed", "sos_embed_1", "eos_embed_1"):
            getattr(projection_model, name).normal_()
    _seeded(seed, 6)
    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=size.mel_bins,
            sampling_rate=16000,
            upsample_initial_channel=size.vocoder_channels,
            upsample_rates=list(size.vocoder_rates),
            upsample_kernel_sizes=list(size.vocoder_kernels or [2 * r for r in size.vocoder_rates]),
            resblock_kernel_sizes=list(size.vocoder_resblock_kernels),
            resblock_dilation_sizes=[list(d) for d in size.vocoder_resblock_dilations],
            normalize_before=False,
        )
    )
    _variance_preserving_init(vocoder)
    pipe = AudioLDM2Pipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        projection_model=projection_model,
        language_model=language_model,
        tokenizer=build_clap_tokenizer(size.clap_vocab, size.clap_max_length),
        tokenizer_2=build_t5_tokenizer(size.t5_words, size.t5_max_length),
        feature_extractor=ClapFeatureExtractor(**(size.clap_features or CLAP_FEATURES[size.name])),
        unet=unet,
        scheduler=DDIMScheduler(**REAL_SCHEDULER),
        vocoder=vocoder,
    )
    pipe.set_progress_bar_config(disable=True)
    for module in _torch_modules(pipe):
        module.eval()
    return pipe


def _clap_config(size: Size, audio_config: dict) -> ClapConfig:
    return ClapConfig(
        text_config=dict(
            vocab_size=size.clap_model_vocab or size.clap_vocab,
            hidden_size=size.clap_hidden,
            num_hidden_layers=size.clap_layers,
            num_attention_heads=size.clap_heads,
            intermediate_size=size.clap_intermediate or 2 * size.clap_hidden + 5,
            max_position_embeddings=size.clap_max_length + 3,  # RoBERTa positions start at pad_id + 1
            bos_token_id=0,
            pad_token_id=1,
            eos_token_id=2,
            layer_norm_eps=1e-5,
        ),
        audio_config=audio_config,
        projection_dim=size.clap_dim,
    )


# The audio tower the tiny and bench CLAP had before it was used for scoring (too small for any
# feature extractor). Its weights are still drawn first, because transformers initialises the text
# projection after the audio tower: drawing it keeps the committed tiny fixture's text weights (and
# so clap_text.onnx and every reference that depends on it) bit-identical.
_DRAW_ONLY_AUDIO = dict(
    spec_size=8,
    window_size=4,
    num_mel_bins=8,
    intermediate_size=37,
    layer_norm_eps=1e-5,
    depths=[1, 1],
    num_attention_heads=[1, 1],
    num_hidden_layers=1,
    hidden_size=192,
    patch_size=2,
    patch_stride=2,
    patch_embed_input_channels=4,
)


def _clap(size: Size, seed: int) -> ClapModel:
    """CLAP with the text weights of the original draw and an audio tower sized for scoring."""
    if size.clap_audio is not None:  # the real configurations: one draw
        return ClapModel(_clap_config(size, dict(size.clap_audio)))
    drawn = ClapModel(_clap_config(size, _DRAW_ONLY_AUDIO))  # under _seeded(seed, 2), as before
    _seeded(seed, 7)
    clap = ClapModel(_clap_config(size, dict(CLAP_AUDIO[size.name])))
    clap.text_model.load_state_dict(drawn.text_model.state_dict())
    clap.text_projection.load_state_dict(drawn.text_projection.state_dict())
    with torch.no_grad():
        clap.logit_scale_t.copy_(drawn.logit_scale_t)
        clap.logit_scale_a.copy_(drawn.logit_scale_a)
    return clap


def _variance_preserving_init(vocoder) -> None:
    """Re-draw the vocoder's convolutions as N(0, 1/fan_in) with zero bias.

    transformers initialises HiFi-GAN convolutions with std 0.01, which shrinks a random vocoder's
    waveform to ~1e-8, and PyTorch's default init leaves a near-constant waveform dominated by the
    biases. With unit-gain weights the waveform has std ~0.1 and follows its mel input, so the
    fixtures can tell a wrong mel from a right one.
    """
    with torch.no_grad():
        for module in vocoder.modules():
            if isinstance(module, torch.nn.ConvTranspose1d):
                fan_in = module.weight.shape[0] * module.weight.shape[2] / module.stride[0]
            elif isinstance(module, torch.nn.Conv1d):
                fan_in = module.weight[0].numel()
            else:
                continue
            module.weight.normal_(0.0, fan_in**-0.5)
            module.bias.zero_()


def _torch_modules(pipe: AudioLDM2Pipeline) -> list[torch.nn.Module]:
    return [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]


# The published configurations and their tiny-scaled copies (real_configs.py imports Size from here).
from .real_configs import REAL_SIZES, TINY_SCALED  # noqa: E402

SIZES.update(REAL_SIZES)
SIZES.update(TINY_SCALED)
