"""Each ONNX component against the pipeline's own PyTorch modules, on random inputs, at several batch sizes.

The PyTorch side is called exactly as `CogVideoXPipeline` calls it (not through the export wrappers),
so the tests also cover what the wrappers add: the text encoder without a mask, the sin-cos table
presented per shape, the rotary tables as inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.export.cogvideox import components

from ..helpers import record_error, rel_error, session

TOL = 1e-4  # fp32 relative error bound (max |diff| / max |reference|)


def _check(name, got, want):
    err = rel_error(got, want)
    record_error(name, err)
    assert err <= TOL, f"{name}: relative error {err:.2e} > {TOL}"


def _run(model, name, feed):
    entry = model.manifest["components"][name]
    return session(model.dir / entry["file"]).run(None, feed)[0]


def _shape(model, frames):
    return next(s for s in model.manifest["shapes"] if s["frames"] == frames)


@pytest.mark.parametrize("batch", [1, 3])
def test_text_encoder(cog_tiny, batch):
    pipe = cog_tiny.pipe
    rng = np.random.default_rng(batch)
    length = pipe.transformer.config.max_text_seq_length
    ids = rng.integers(2, len(pipe.tokenizer), (batch, length))
    ids[0, length // 3 :] = pipe.tokenizer.pad_token_id  # padding is attended to: no mask, as in the pipeline
    got = _run(cog_tiny, "text_encoder", {"input_ids": ids})
    with torch.no_grad():
        want = pipe.text_encoder(torch.from_numpy(ids))[0].numpy()
    _check("cogvideox text_encoder", got, want)


def _transformer_feed(pipe, rng, batch, shape, timesteps):
    cfg = pipe.transformer.config
    return {
        "hidden_states": rng.standard_normal(
            (batch, shape.latent_frames, cfg.in_channels, shape.latent_height, shape.latent_width), dtype=np.float32
        ),
        "encoder_hidden_states": rng.standard_normal((batch, cfg.max_text_seq_length, cfg.text_embed_dim), dtype=np.float32),
        "timestep": np.asarray(timesteps, dtype=np.int64),
    }


def _torch_transformer(pipe, feed, rotary=None):
    with torch.no_grad():
        return pipe.transformer(
            hidden_states=torch.from_numpy(feed["hidden_states"]),
            encoder_hidden_states=torch.from_numpy(feed["encoder_hidden_states"]),
            timestep=torch.from_numpy(feed["timestep"]),
            image_rotary_emb=rotary,
            return_dict=False,
        )[0].numpy()


@pytest.mark.parametrize("frames,batch", [(9, 2), (9, 1), (16, 3), (16, 2)])
def test_transformer_2b(cog_tiny, frames, batch):
    """One graph per shape: F' = 3 (the config's sample size: diffusers' stored table) and F' = 4 (a table
    diffusers recomputes in `forward`; traced naively, that graph would add zeros instead)."""
    pipe, entry = cog_tiny.pipe, _shape(cog_tiny, frames)
    shape = components.model_shape(pipe, frames, entry["height"], entry["width"])
    rng = np.random.default_rng(frames * 10 + batch)
    feed = _transformer_feed(pipe, rng, batch, shape, [999, 500, 1][:batch])
    got = _run(cog_tiny, entry["transformer"], feed)
    _check("cogvideox transformer (2b)", got, _torch_transformer(pipe, feed))


@pytest.mark.parametrize(
    "frames,height,width,batch",
    [(9, 32, 48, 2), (13, 32, 64, 1), (17, 64, 48, 3), (1, 16, 16, 2)],
)
def test_transformer_rotary_any_shape(cog_tiny_5b, frames, height, width, batch):
    """The 5b graph takes any (F', h, w) with the pipeline's own rotary tables."""
    pipe = cog_tiny_5b.pipe
    shape = components.model_shape(pipe, frames, height, width)
    cos, sin = components.rotary_tables(pipe, shape)
    feed = _transformer_feed(pipe, np.random.default_rng(frames), batch, shape, [981, 21, 500][:batch])
    feed.update(freqs_cos=cos.numpy(), freqs_sin=sin.numpy())
    got = _run(cog_tiny_5b, "transformer", feed)
    assert got.shape == feed["hidden_states"].shape
    _check("cogvideox transformer (5b)", got, _torch_transformer(pipe, feed, (cos, sin)))


def test_transformer_uses_every_input(cog_tiny_5b):
    pipe = cog_tiny_5b.pipe
    shape = components.default_shape(pipe)
    cos, sin = components.rotary_tables(pipe, shape)
    feed = _transformer_feed(pipe, np.random.default_rng(1), 2, shape, [600, 600])
    feed.update(freqs_cos=cos.numpy(), freqs_sin=sin.numpy())
    base = _run(cog_tiny_5b, "transformer", feed)
    changes = {
        "encoder_hidden_states": lambda f: f["encoder_hidden_states"].__imul__(-1),
        "timestep": lambda f: f["timestep"].__setitem__(slice(None), 20),
        "freqs_cos": lambda f: f["freqs_cos"].__setitem__(slice(None), 1),
        "freqs_sin": lambda f: f["freqs_sin"].__setitem__(slice(None), 0),
    }
    for name, change in changes.items():
        changed = {k: v.copy() for k, v in feed.items()}
        change(changed)
        assert rel_error(_run(cog_tiny_5b, "transformer", changed), base) > 1e-3, f"output does not depend on {name}"


def test_transformer_timestep_per_sample(cog_tiny):
    """timestep [batch]: each row is denoised at its own t, as with two separate calls."""
    pipe = cog_tiny.pipe
    shape = components.default_shape(pipe)
    feed = _transformer_feed(pipe, np.random.default_rng(2), 2, shape, [901, 51])
    got = _run(cog_tiny, "transformer_f3_h4_w6", feed)
    for row in range(2):
        single = {k: v[row : row + 1] for k, v in feed.items()}
        _check("cogvideox transformer (2b)", got[row : row + 1], _torch_transformer(pipe, single))
    assert rel_error(got[0:1], got[1:2]) > 1e-2


@pytest.mark.parametrize("frames", [9, 16])
def test_vae_decoder(cog_tiny, frames):
    """Odd F' = 3 (one 3-frame batch, first frame kept single) and even F' = 4 (two batches, caches between)."""
    pipe, entry = cog_tiny.pipe, _shape(cog_tiny, frames)
    rng = np.random.default_rng(frames)
    z = rng.standard_normal((1, pipe.vae.config.latent_channels, entry["latentFrames"], 4, 6), dtype=np.float32)
    got = _run(cog_tiny, entry["vaeDecoder"], {"z": z})
    with torch.no_grad():
        want = pipe.vae.decode(torch.from_numpy(z)).sample.numpy()
    assert got.shape == (1, 3, entry["frames"], entry["height"], entry["width"])
    _check("cogvideox vae_decoder", got, want)


@pytest.mark.parametrize("frames", [9, 16])
def test_vae_tile_decoder_at_every_tile_size(cog_tiny, frames):
    """The tile decoder (symbolic height and width) is diffusers' untiled frame-batched decode at each tile size
    the tiny tiling cuts (3x4, 3x3, 2x4, 2x3 latents), at the full size, and at a one-latent sliver."""
    pipe, entry = cog_tiny.pipe, _shape(cog_tiny, frames)
    assert not pipe.vae.use_tiling
    rng = np.random.default_rng(frames + 100)
    for h, w in ((3, 4), (3, 3), (2, 4), (2, 3), (4, 6), (1, 2)):
        z = rng.standard_normal((1, pipe.vae.config.latent_channels, entry["latentFrames"], h, w), dtype=np.float32)
        got = _run(cog_tiny, entry["vaeTileDecoder"], {"z": z})
        with torch.no_grad():
            want = pipe.vae.decode(torch.from_numpy(z)).sample.numpy()
        assert got.shape == (1, 3, entry["frames"], 8 * h, 8 * w)
        _check(f"cogvideox vae_decoder_tiles {h}x{w}", got, want)
