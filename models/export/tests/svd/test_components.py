"""Each SVD ONNX component against the pipeline's own PyTorch call, on random inputs at several shapes.

The PyTorch side is called as `StableVideoDiffusionPipeline` calls it (not through the export
wrappers), so the tests also cover what the wrappers add: the 5-D decode chunk, the timestep per
batch row and the forced upsample sizes in the UNet. Every dynamic axis is run at two or more values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ..helpers import record_error, rel_error
from .helpers import session

TOL = 1e-4  # fp32 relative error bound (max |diff| / max |reference|)


def _run(svd_tiny, name, feed):
    return session(svd_tiny.dir / svd_tiny.manifest["components"][name]["file"]).run(None, feed)[0]


def _check(name, got, want):
    err = rel_error(got, want)
    record_error(f"svd {name}", err)
    assert err <= TOL, f"{name}: relative error {err:.2e} > {TOL}"


def _t(x):
    return torch.from_numpy(x)


@pytest.mark.parametrize("batch", [1, 3])
def test_image_encoder(svd_tiny, batch):
    rng = np.random.default_rng(batch)
    pixels = rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)
    got = _run(svd_tiny, "image_encoder", {"pixel_values": pixels})
    with torch.no_grad():
        want = svd_tiny.pipe.image_encoder(_t(pixels)).image_embeds.numpy()
    assert got.shape == (batch, svd_tiny.manifest["config"]["imageEmbedDim"])
    _check("image_encoder", got, want)


@pytest.mark.parametrize("batch,height,width", [(1, 32, 48), (2, 56, 24)])
def test_vae_encoder(svd_tiny, batch, height, width):
    rng = np.random.default_rng(height)
    image = rng.uniform(-1, 1, (batch, 3, height, width)).astype(np.float32)
    got = _run(svd_tiny, "vae_encoder", {"image": image})
    with torch.no_grad():
        want = svd_tiny.pipe.vae.encode(_t(image)).latent_dist.mode().numpy()
    s = svd_tiny.manifest["config"]["vaeScaleFactor"]
    assert got.shape == (batch, 4, height // s, width // s)
    _check("vae_encoder", got, want)


def _unet_feed(svd_tiny, rng, batch, frames, h, w, timesteps):
    dim = svd_tiny.manifest["config"]["imageEmbedDim"]
    return {
        "sample": rng.standard_normal((batch, frames, 8, h, w), dtype=np.float32),
        "timestep": np.asarray(timesteps, dtype=np.float32),
        "encoder_hidden_states": rng.standard_normal((batch, 1, dim), dtype=np.float32),
        "added_time_ids": np.array([[6, 127, 0.02], [9, 30, 0.1], [4, 255, 0.5]], dtype=np.float32)[:batch],
    }


def _torch_unet(pipe, feed, t):
    with torch.no_grad():
        return pipe.unet(
            _t(feed["sample"]), t, _t(feed["encoder_hidden_states"]), _t(feed["added_time_ids"])
        ).sample.numpy()


@pytest.mark.parametrize(
    "batch,frames,h,w",
    [
        (2, 3, 16, 24),  # the reference case's shape, CFG batch
        (1, 2, 20, 16),
        (3, 5, 9, 7),  # odd latent sides: diffusers forwards the upsample sizes
    ],
)
def test_unet(svd_tiny, batch, frames, h, w):
    rng = np.random.default_rng(frames)
    t = torch.tensor([1.6377701, -0.4, 0.9][:batch])
    feed = _unet_feed(svd_tiny, rng, batch, frames, h, w, t.numpy())
    got = _run(svd_tiny, "unet", feed)
    assert got.shape == (batch, frames, 4, h, w)
    _check("unet", got, _torch_unet(svd_tiny.pipe, feed, t))


def test_unet_timestep_per_row(svd_tiny):
    """timestep [batch]: each row is denoised at its own t, as the pipeline's scalar-t call does it."""
    rng = np.random.default_rng(0)
    feed = _unet_feed(svd_tiny, rng, 2, 3, 16, 24, [1.2, -1.1])
    got = _run(svd_tiny, "unet", feed)
    for row, t in enumerate((1.2, -1.1)):
        single = {k: v[row : row + 1] for k, v in feed.items()}
        _check("unet", got[row : row + 1], _torch_unet(svd_tiny.pipe, single, torch.tensor(t)))  # 0-d t
    assert rel_error(got[0:1], got[1:2]) > 1e-2


def test_unet_uses_every_input(svd_tiny):
    """The embeddings, each added time id, the timestep, and the image-latent channels all change the output."""
    rng = np.random.default_rng(5)
    feed = _unet_feed(svd_tiny, rng, 2, 3, 8, 12, [0.5, 0.5])
    base = _run(svd_tiny, "unet", feed)
    changes = {
        "encoder_hidden_states": lambda f: f["encoder_hidden_states"].__imul__(-1),
        "added_time_ids fps": lambda f: f["added_time_ids"].__setitem__((slice(None), 0), 20),
        "added_time_ids motion": lambda f: f["added_time_ids"].__setitem__((slice(None), 1), 10),
        "added_time_ids noise": lambda f: f["added_time_ids"].__setitem__((slice(None), 2), 0.9),
        "timestep": lambda f: f["timestep"].__setitem__(slice(None), -1.0),
        "sample image latents": lambda f: f["sample"][:, :, 4:].__imul__(-1),
    }
    for name, change in changes.items():
        changed = {k: v.copy() for k, v in feed.items()}
        change(changed)
        assert rel_error(_run(svd_tiny, "unet", changed), base) > 1e-3, f"unet output does not depend on {name}"


@pytest.mark.parametrize("frames,h,w", [(1, 16, 24), (2, 9, 7), (3, 20, 16)])
def test_vae_decoder(svd_tiny, frames, h, w):
    rng = np.random.default_rng(frames)
    latents = rng.standard_normal((1, frames, 4, h, w), dtype=np.float32)
    got = _run(svd_tiny, "vae_decoder", {"latents": latents})
    with torch.no_grad():
        want = svd_tiny.pipe.vae.decode(_t(latents[0]), num_frames=frames).sample.numpy()  # as decode_latents
    s = svd_tiny.manifest["config"]["vaeScaleFactor"]
    assert got.shape == (frames, 3, h * s, w * s)
    _check("vae_decoder", got, want)


def test_decode_chunks_change_the_frames(svd_tiny):
    """The temporal convolutions see zero padding at chunk borders: decoding 4 frames as 2 + 2 is not
    decoding them at once, which is why the chunk size is part of a run's definition."""
    latents = np.random.default_rng(9).standard_normal((1, 4, 4, 8, 8), dtype=np.float32)
    whole = _run(svd_tiny, "vae_decoder", {"latents": latents})
    halves = np.concatenate([_run(svd_tiny, "vae_decoder", {"latents": latents[:, i : i + 2]}) for i in (0, 2)])
    assert rel_error(halves, whole) > 1e-3
