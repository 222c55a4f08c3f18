"""The published configurations (`--size base|large|music`) on their tiny-scaled copies.

The real sizes are gigabytes; these tests export the tiny-scaled copies (same structure, see
`real_configs.tiny_scaled`) and check them against PyTorch, and check the real sizes' structure and
parameter counts without allocating their weights (meta device).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.pipelines.audioldm2.modeling_audioldm2 import AudioLDM2UNet2DConditionModel

from models.export.audioldm2 import configs, real_configs

from .helpers import rel_error, session

REAL = ("base", "large", "music")
# UNet parameters published for AudioLDM2 (paper, model cards): base and music 350 M, large 750 M.
PUBLISHED_UNET_PARAMS = {"base": 350e6, "large": 750e6, "music": 350e6}


def _meta_unet(size):
    with torch.device("meta"):
        return AudioLDM2UNet2DConditionModel(**configs.unet_config(size))


@pytest.mark.parametrize("name", REAL)
def test_real_unet_sizes_match_the_published_parameter_counts(name):
    count = sum(p.numel() for p in _meta_unet(configs.SIZES[name]).parameters())
    assert abs(count / PUBLISHED_UNET_PARAMS[name] - 1) < 0.15, f"{name}: {count / 1e6:.0f} M parameters"


@pytest.mark.parametrize("name", REAL)
def test_tiny_scaled_copy_keeps_the_structure(name):
    real, tiny = configs.SIZES[name], configs.SIZES[f"{name}-tiny"]
    r, t = configs.unet_config(real), configs.unet_config(tiny)
    for key in ("down_block_types", "up_block_types", "layers_per_block", "attention_head_dim", "in_channels"):
        assert r[key] == t[key], key
    assert [[d is None for d in level] for level in r["cross_attention_dim"]] == [
        [d is None for d in level] for level in t["cross_attention_dim"]
    ]
    assert len(real.vae_channels) == len(tiny.vae_channels) and real.vae_layers_per_block == tiny.vae_layers_per_block
    for key in ("vocoder_rates", "vocoder_kernels", "vocoder_resblock_kernels", "vocoder_resblock_dilations",
                "clap_heads", "t5_heads", "lm_heads", "clap_features", "mel_bins", "latent_channels"):
        assert getattr(real, key) == getattr(tiny, key), key
    for key in ("depths", "num_attention_heads", "window_size", "spec_size", "num_mel_bins", "patch_size",
                "enable_fusion", "patch_embed_input_channels"):
        assert real.clap_audio[key] == tiny.clap_audio[key], key


@pytest.fixture(scope="module", params=[f"{n}-tiny" for n in REAL])
def scaled(request, tmp_path_factory):
    from models.export import cli

    out = tmp_path_factory.mktemp("scaled") / f"audioldm2-{request.param}"
    args = cli.parse(["audioldm2", "--size", request.param, "--no-reference", "--out", str(out)])
    pipe, source, defaults = cli.load_pipeline(args, log=lambda *_: None)
    manifest = cli.export_pipeline(pipe, args, source, defaults, log=lambda *_: None)
    return out, manifest, pipe


def test_tiny_scaled_unet_matches_pytorch(scaled):
    out, manifest, pipe = scaled
    rng = np.random.default_rng(0)
    C, W = manifest["config"]["latentChannels"], manifest["config"]["melBins"] // manifest["config"]["vaeScaleFactor"]
    sample = rng.standard_normal((2, C, 13, W), dtype=np.float32)  # 13 frames: not a multiple of 8
    timestep = np.array([981, 21], dtype=np.int64)
    lm = rng.standard_normal((2, 8, pipe.language_model.config.n_embd), dtype=np.float32)
    t5 = rng.standard_normal((2, 5, pipe.text_encoder_2.config.d_model), dtype=np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=np.int64)
    (got,) = session(out / "unet.onnx").run(
        None,
        {"sample": sample, "timestep": timestep, "encoder_hidden_states": lm, "encoder_hidden_states_1": t5,
         "encoder_attention_mask_1": mask},
    )
    with torch.no_grad():
        want = pipe.unet(
            torch.from_numpy(sample), torch.from_numpy(timestep), encoder_hidden_states=torch.from_numpy(lm),
            encoder_hidden_states_1=torch.from_numpy(t5), encoder_attention_mask_1=torch.from_numpy(mask),
            return_dict=False,
        )[0].numpy()
    assert rel_error(got, want) <= 1e-4


def test_tiny_scaled_clap_audio_matches_pytorch(scaled):
    out, manifest, pipe = scaled
    feats = manifest["clapFeatures"]
    assert feats["featureSize"] == 64 and feats["maxSamples"] == 480_000 and feats["truncation"] == "rand_trunc"
    dims = manifest["components"]["clap_audio"]["inputs"][0]["dims"]
    assert dims[1:] == [1, 1001, 64]
    x = np.random.default_rng(1).standard_normal((2, *dims[1:]), dtype=np.float32) * 10 - 40
    (got,) = session(out / "clap_audio.onnx").run(None, {"input_features": x})
    with torch.no_grad():
        ids = torch.tensor([[0, 5, 2]])
        want = pipe.text_encoder(input_ids=ids, attention_mask=torch.ones_like(ids), input_features=torch.from_numpy(x))
    assert rel_error(got, want.audio_embeds.numpy()) <= 1e-4
