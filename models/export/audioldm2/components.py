"""The eight ONNX components of an AudioLDM2 pipeline and their tensor contracts (models/README.md)."""

from __future__ import annotations

import torch

from ..onnx_io import Component, TensorSpec
from . import wrappers

# Example shapes for tracing. They are deliberately "awkward": the masks contain padding (so no
# all-ones shortcut gets traced in), the latent frame count is odd and not a multiple of 8.
_BATCH, _SEQ, _POSITIONS, _FRAMES = 2, 7, 12, 13


def _padded_mask(batch: int, length: int) -> torch.Tensor:
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length // 2 :] = 0
    return mask


def dims(pipe) -> dict[str, int]:
    """The static widths the contracts are made of, read from the modules' configs."""
    clap = pipe.text_encoder
    return {
        "clap_dim": clap.text_projection.linear2.out_features,
        "t5_dim": pipe.text_encoder_2.config.d_model,
        "lm_dim": pipe.language_model.config.n_embd,
        "max_new_tokens": pipe.language_model.config.max_new_tokens,
        "latent_channels": pipe.unet.config.in_channels,
        "latent_width": pipe.vocoder.config.model_in_dim // pipe.vae_scale_factor,
        "mel_bins": pipe.vocoder.config.model_in_dim,
        "clap_vocab": clap.text_model.config.vocab_size,
        "t5_vocab": pipe.text_encoder_2.config.vocab_size,
        # score_waveforms' input: the feature extractor's frames (max_length / hop + 1) and mel bins
        "clap_frames": pipe.feature_extractor.nb_max_samples // pipe.feature_extractor.hop_length + 1,
        "clap_mel_bins": pipe.feature_extractor.feature_size,
    }


def build(pipe, dtype: torch.dtype = torch.float32) -> list[Component]:
    """Wrappers, contracts and example inputs for every component, in the pipeline's order."""
    d = dims(pipe)
    fname = {torch.float32: "float32", torch.float16: "float16"}[dtype]
    gen = torch.Generator().manual_seed(1234)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    def f(name, *shape):
        return TensorSpec(name, fname, tuple(shape))

    def i64(name, *shape):
        return TensorSpec(name, "int64", tuple(shape))

    B, S, P, T = _BATCH, _SEQ, _POSITIONS, _FRAMES
    C, W = d["latent_channels"], d["latent_width"]
    return [
        Component(
            "clap_text",
            wrappers.ClapText(pipe.text_encoder),
            [i64("input_ids", "batch", "sequence"), i64("attention_mask", "batch", "sequence")],
            [f("text_embeds", "batch", d["clap_dim"])],
            (torch.randint(3, d["clap_vocab"], (B, S), generator=gen), _padded_mask(B, S)),
        ),
        Component(
            "t5_encoder",
            wrappers.T5Encoder(pipe.text_encoder_2),
            [i64("input_ids", "batch", "sequence"), i64("attention_mask", "batch", "sequence")],
            [f("last_hidden_state", "batch", "sequence", d["t5_dim"])],
            (torch.randint(3, d["t5_vocab"], (B, S), generator=gen), _padded_mask(B, S)),
        ),
        Component(
            "projection",
            wrappers.Projection(pipe.projection_model),
            [
                f("clap", "batch", 1, d["clap_dim"]),
                i64("clap_mask", "batch", 1),
                f("t5", "batch", "sequence", d["t5_dim"]),
                i64("t5_mask", "batch", "sequence"),
            ],
            [f("hidden_states", "batch", "positions", d["lm_dim"]), i64("attention_mask", "batch", "positions")],
            (randn(B, 1, d["clap_dim"]), torch.ones(B, 1, dtype=torch.long), randn(B, S, d["t5_dim"]), _padded_mask(B, S)),
        ),
        Component(
            "gpt2",
            wrappers.Gpt2(pipe.language_model),
            [f("inputs_embeds", "batch", "positions", d["lm_dim"]), i64("attention_mask", "batch", "positions")],
            [f("last_hidden_state", "batch", "positions", d["lm_dim"])],
            (randn(B, P, d["lm_dim"]), _padded_mask(B, P)),
        ),
        Component(
            "unet",
            wrappers.UNet(pipe.unet),
            [
                f("sample", "batch", C, "frames", W),
                i64("timestep", "batch"),
                f("encoder_hidden_states", "batch", d["max_new_tokens"], d["lm_dim"]),
                f("encoder_hidden_states_1", "batch", "sequence", d["t5_dim"]),
                i64("encoder_attention_mask_1", "batch", "sequence"),
            ],
            [f("out_sample", "batch", C, "frames", W)],
            (
                randn(B, C, T, W),
                torch.tensor([981, 21], dtype=torch.long)[:B],
                randn(B, d["max_new_tokens"], d["lm_dim"]),
                randn(B, S, d["t5_dim"]),
                _padded_mask(B, S),
            ),
        ),
        Component(
            "vae_decoder",
            wrappers.VaeDecoder(pipe.vae),
            [f("latent", "batch", C, "frames", W)],
            [f("mel", "batch", 1, "mel_frames", d["mel_bins"])],
            (randn(B, C, T, W),),
        ),
        Component(
            "vocoder",
            wrappers.Vocoder(pipe.vocoder),
            [f("mel", "batch", "mel_frames", d["mel_bins"])],
            [f("waveform", "batch", "samples")],
            (randn(B, 4 * T, d["mel_bins"]),),
        ),
        # Last, so the example inputs drawn for the components above stay what they were.
        Component(
            "clap_audio",
            wrappers.ClapAudio(pipe.text_encoder),
            [f("input_features", "batch", 1, d["clap_frames"], d["clap_mel_bins"])],
            [f("audio_embeds", "batch", d["clap_dim"])],
            (randn(B, 1, d["clap_frames"], d["clap_mel_bins"]),),
        ),
    ]
