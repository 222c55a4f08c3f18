"""The published AudioLDM2 configurations, for random-weight real-size exports (`--size base|large|music`)
and their tiny-scaled copies (`--size base-tiny|large-tiny|music-tiny`, what the tests export).

No network is reachable here, so the values are not read from the Hub. Where each comes from:

- [conv] diffusers' `scripts/convert_original_audioldm2_to_diffusers.py` (read through the code search
  tool): `DEFAULT_CONFIG` (AudioLDM2 base: UNet `model_channels` 128, `channel_mult` [1, 2, 3, 5],
  `num_res_blocks` 2, `attention_resolutions` [8, 4, 2], `num_head_channels` 32, `context_dim`
  [768, 1024], 8 latent channels; VAE `ch` 128, `ch_mult` [1, 2, 4], 2 res blocks, `z_channels` 8;
  vocoder rates [5, 4, 2, 2, 2], kernels [16, 16, 8, 4, 4], initial channel 1024, resblock kernels
  [3, 7, 11], dilations [1, 3, 5] x 3, 64 mels, 16 kHz; GPT2 `max_new_tokens` 8 (sequence_gen_length);
  scheduler betas 0.0015..0.0195 scaled_linear, 1000 steps), its `create_unet_diffusers_config`
  (block types from the attention resolutions) and its help text ("128 for the small checkpoints, 192
  for the medium": the large checkpoint's 750 M UNet fits 192, not 256, since parameters grow with the
  square of the width: 350 M x (192/128)^2 = 790 M). The script loads CLAP's text config from
  `laion/clap-htsat-unfused`, T5 from `google/flan-t5-large` (tokenizer `model_max_length` 128, "hard-
  coded in the original implementation") and GPT2 from `gpt2`.
- [mem] from memory of the published configs, not verified here:
  `laion/clap-htsat-unfused` (RoBERTa-base text tower: 768 wide, 12 layers, 12 heads, 3072 FFN, vocab
  50265, 514 positions; projection 512; unfused HTSAT audio tower = transformers' ClapAudioConfig
  defaults; feature extractor 64 mels, 10 s, hop 480, FFT 1024, 50..14000 Hz, `truncation
  "rand_trunc"`, `padding "repeatpad"`; tokenizer `model_max_length` 512), `google/flan-t5-large`
  (d_model 1024, d_ff 2816, d_kv 64, 16 heads, 24 layers, gated-gelu, vocab 32128), `gpt2` (768 wide,
  12 layers, 12 heads, vocab 50257, 1024 positions), the VAE scaling factor 0.4110932946205139 (learned;
  the value the tiny fixture already uses), `unet.sample_size` 256 (10.24 s default duration), and
  that `cvssp/audioldm2-music` has the base model's structure (it differs in its training data).
- [derived] the UNet head counts: the original `num_head_channels` 32 gives width / 32 heads per level
  (base 4, 8, 12, 20; large 6, 12, 18, 30). Whether the diffusers checkpoints store these per-level
  counts or diffusers' default `attention_head_dim` 8 was not verified; it changes attention cost, not
  parameter count.

Tokenizers stay the locally built ones (tokenizers.py): token ids stay below every embedding table, so
the graphs and the runtime are exercised exactly as with the real vocabularies, whose files are not
reachable here.
"""

from __future__ import annotations

import dataclasses

from .configs import Size

# [mem] ClapFeatureExtractor of laion/clap-htsat-unfused (cvssp/audioldm2/feature_extractor).
REAL_CLAP_FEATURES = dict(
    feature_size=64,
    sampling_rate=48_000,
    hop_length=480,
    max_length_s=10,
    fft_window_size=1024,
    frequency_min=50,
    frequency_max=14_000,
    truncation="rand_trunc",
    padding="repeatpad",
)
# [mem] ClapAudioConfig of laion/clap-htsat-unfused: transformers' defaults (spelled out).
REAL_CLAP_AUDIO = dict(
    window_size=8,
    num_mel_bins=64,
    spec_size=256,
    patch_size=4,
    patch_stride=(4, 4),
    hidden_size=768,
    patch_embeds_hidden_size=96,
    depths=[2, 2, 6, 2],
    num_attention_heads=[4, 8, 16, 32],
    enable_fusion=False,
    patch_embed_input_channels=1,
    layer_norm_eps=1e-5,
)

_BASE_UNET = (128, 256, 384, 640)  # [conv] 128 x [1, 2, 3, 5]
_LARGE_UNET = (192, 384, 576, 960)  # [conv] 192 x [1, 2, 3, 5]


def _heads(channels: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(c // 32 for c in channels)  # [derived] num_head_channels 32


BASE = Size(
    name="base",
    source="cvssp/audioldm2",
    clap_dim=512,  # [mem] CLAP projection_dim
    clap_hidden=768,
    clap_layers=12,
    clap_heads=12,
    clap_intermediate=3072,
    clap_vocab=600,  # the local tokenizer's size
    clap_model_vocab=50265,
    clap_max_length=512,
    t5_dim=1024,
    t5_layers=24,
    t5_heads=16,
    t5_ff=2816,
    t5_words=400,
    t5_model_vocab=32128,
    t5_max_length=128,  # [conv]
    lm_dim=768,
    lm_layers=12,
    lm_heads=12,
    lm_vocab=50257,
    lm_positions=1024,
    unet_channels=_BASE_UNET,
    unet_heads=8,
    unet_head_counts=_heads(_BASE_UNET),
    unet_layers_per_block=2,  # [conv] num_res_blocks
    unet_sample_size=256,  # [mem] 10.24 s
    latent_channels=8,
    vae_channels=(128, 256, 512),  # [conv] 128 x [1, 2, 4]
    vae_layers_per_block=2,
    mel_bins=64,
    vocoder_channels=1024,
    vocoder_rates=(5, 4, 2, 2, 2),
    vocoder_kernels=(16, 16, 8, 4, 4),
    vocoder_resblock_kernels=(3, 7, 11),
    vocoder_resblock_dilations=((1, 3, 5), (1, 3, 5), (1, 3, 5)),
    norm_groups=32,  # diffusers' default, as in the checkpoints' configs
    clap_audio=REAL_CLAP_AUDIO,
    clap_features=REAL_CLAP_FEATURES,
    defaults={"steps": 200, "guidance": 3.5, "warmup": 5, "duration": 10.24},
)
LARGE = dataclasses.replace(
    BASE,
    name="large",
    source="cvssp/audioldm2-large",
    unet_channels=_LARGE_UNET,
    unet_head_counts=_heads(_LARGE_UNET),
)
MUSIC = dataclasses.replace(BASE, name="music", source="cvssp/audioldm2-music")


def tiny_scaled(size: Size) -> Size:
    """A copy of `size` small enough for the tests, with the same structure.

    Kept: UNet levels and block types, layers per block, per-level head counts (2 channels per head),
    the nested cross-attention (self, GPT2, T5) at every level, VAE levels and layers, vocoder rates,
    kernels and resblocks, the T5 (gated-gelu) / GPT2 / unfused-HTSAT CLAP variants and their head
    counts, the feature extractor. Scaled down: every width, layer count (2), vocabularies, and the
    default duration (0.64 s).
    """
    heads = size.unet_head_counts or (size.unet_heads,) * len(size.unet_channels)
    audio = dict(size.clap_audio or {})
    audio.update(patch_embeds_hidden_size=8, hidden_size=8 * 2 ** (len(audio["depths"]) - 1))
    audio["num_attention_heads"] = [min(h, 8 * 2**k) for k, h in enumerate(audio["num_attention_heads"])]
    return dataclasses.replace(
        size,
        name=f"{size.name}-tiny",
        clap_dim=24,
        clap_hidden=size.clap_heads * 2,
        clap_layers=2,
        clap_intermediate=None,
        clap_model_vocab=None,
        clap_max_length=77,
        t5_dim=size.t5_heads * 2,
        t5_layers=2,
        t5_ff=None,
        t5_model_vocab=None,
        t5_max_length=32,
        lm_dim=size.lm_heads * 2,
        lm_layers=2,
        lm_vocab=64,
        lm_positions=None,
        unet_channels=tuple(2 * h for h in heads),
        unet_sample_size=16,
        vae_channels=tuple(c // 16 for c in size.vae_channels),
        vocoder_channels=32,
        norm_groups=4,
        clap_audio=audio,
        defaults={**size.defaults, "steps": 20, "duration": 0.64},
    )


REAL_SIZES = {s.name: s for s in (BASE, LARGE, MUSIC)}
TINY_SCALED = {f"{name}-tiny": tiny_scaled(s) for name, s in REAL_SIZES.items()}
