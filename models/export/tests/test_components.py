"""Each ONNX component against the pipeline's own PyTorch call, on random inputs at several shapes.

The PyTorch side is called exactly as `AudioLDM2Pipeline` calls it (not through the export
wrappers), so the tests also cover what the wrappers add: the explicit CLAP normalisation, the
GPT2 trunk without cache, and the forced upsample sizes in the UNet.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from .helpers import record_error, rel_error, session

TOL = 1e-4  # fp32 relative error bound (max |diff| / max |reference|)


def _mask(rng, batch, length):
    """Masks with trailing padding of random lengths; row 0 keeps a single token when length > 1."""
    mask = np.ones((batch, length), dtype=np.int64)
    for row in range(batch):
        keep = 1 if row == 0 else int(rng.integers(1, length + 1))
        mask[row, keep:] = 0
    return mask


def _run(tiny, name, feed):
    sess = session(tiny.dir / tiny.manifest["components"][name]["file"])
    outs = sess.run(None, feed)
    return outs, [o.name for o in sess.get_outputs()]


def _check(name, got, want):
    err = rel_error(got, want)
    record_error(name, err)
    assert err <= TOL, f"{name}: relative error {err:.2e} > {TOL}"


def _t(x):
    return torch.from_numpy(x)


@pytest.mark.parametrize("batch,seq", [(1, 77), (3, 9)])
def test_clap_text(tiny, batch, seq):
    rng = np.random.default_rng(seq)
    ids = rng.integers(3, tiny.pipe.text_encoder.text_model.config.vocab_size, (batch, seq))
    mask = _mask(rng, batch, seq)
    ids[mask == 0] = tiny.pipe.tokenizer.pad_token_id
    (got,), _ = _run(tiny, "clap_text", {"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        out = tiny.pipe.text_encoder.get_text_features(_t(ids), attention_mask=_t(mask))
    want = getattr(out, "pooler_output", out).numpy()  # the pipeline's own v4/v5 handling
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, rtol=1e-5)
    _check("clap_text", got, want)


@pytest.mark.parametrize("batch,seq", [(1, 5), (3, 32)])
def test_t5_encoder(tiny, batch, seq):
    rng = np.random.default_rng(seq)
    ids = rng.integers(3, len(tiny.pipe.tokenizer_2), (batch, seq))
    mask = _mask(rng, batch, seq)
    (got,), _ = _run(tiny, "t5_encoder", {"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        want = tiny.pipe.text_encoder_2(_t(ids), attention_mask=_t(mask))[0].numpy()
    _check("t5_encoder", got, want)


@pytest.mark.parametrize("batch,seq", [(2, 7), (1, 1)])
def test_projection(tiny, batch, seq):
    rng = np.random.default_rng(seq)
    proj = tiny.pipe.projection_model
    clap = rng.standard_normal((batch, 1, proj.config.text_encoder_dim), dtype=np.float32)
    t5 = rng.standard_normal((batch, seq, proj.config.text_encoder_1_dim), dtype=np.float32)
    clap_mask, t5_mask = np.ones((batch, 1), dtype=np.int64), _mask(rng, batch, seq)
    (hidden, mask), names = _run(tiny, "projection", {"clap": clap, "clap_mask": clap_mask, "t5": t5, "t5_mask": t5_mask})
    assert names == ["hidden_states", "attention_mask"]
    with torch.no_grad():
        out = proj(hidden_states=_t(clap), hidden_states_1=_t(t5), attention_mask=_t(clap_mask), attention_mask_1=_t(t5_mask))
    _check("projection", hidden, out.hidden_states.numpy())
    np.testing.assert_array_equal(mask, out.attention_mask.numpy())


@pytest.mark.parametrize("batch,positions", [(2, 20), (1, 45)])
def test_gpt2(tiny, batch, positions):
    rng = np.random.default_rng(positions)
    embeds = rng.standard_normal((batch, positions, tiny.pipe.language_model.config.n_embd), dtype=np.float32)
    mask = _mask(rng, batch, positions)
    mask[:, 0] = 1
    (got,), _ = _run(tiny, "gpt2", {"inputs_embeds": embeds, "attention_mask": mask})
    with torch.no_grad():
        out = tiny.pipe.language_model(inputs_embeds=_t(embeds), attention_mask=_t(mask), output_hidden_states=True)
    _check("gpt2", got, out.hidden_states[-1].numpy())  # what generate_language_model appends


def test_gpt2_loop_matches_cached_generation(tiny):
    """Eight cache-free ONNX passes give diffusers' KV-cached `generate_language_model` output."""
    rng = np.random.default_rng(3)
    lm_dim = tiny.pipe.language_model.config.n_embd
    embeds = rng.standard_normal((2, 14, lm_dim), dtype=np.float32)
    mask = np.ones((2, 14), dtype=np.int64)
    mask[0, 6:13] = 0  # padding in the middle, as the negative prompt's T5 mask has before eos_embed_1
    sess = session(tiny.dir / "gpt2.onnx")
    cur_e, cur_m = embeds, mask
    for _ in range(tiny.manifest["config"]["maxNewTokens"]):
        (hidden,) = sess.run(None, {"inputs_embeds": cur_e, "attention_mask": cur_m})
        cur_e = np.concatenate([cur_e, hidden[:, -1:]], axis=1)
        cur_m = np.concatenate([cur_m, np.ones((2, 1), dtype=np.int64)], axis=1)
    with torch.no_grad():
        want = tiny.pipe.generate_language_model(_t(embeds), attention_mask=_t(mask), max_new_tokens=8).numpy()
    _check("gpt2 (8-step loop)", cur_e[:, -8:], want)


def _unet_feed(tiny, rng, batch, frames, seq, timesteps):
    cfg = tiny.manifest["config"]
    width = cfg["melBins"] // cfg["vaeScaleFactor"]
    t5_dim = tiny.pipe.text_encoder_2.config.d_model
    return {
        "sample": rng.standard_normal((batch, cfg["latentChannels"], frames, width), dtype=np.float32),
        "timestep": np.asarray(timesteps, dtype=np.int64),
        "encoder_hidden_states": rng.standard_normal((batch, cfg["maxNewTokens"], cfg["languageModelDim"]), dtype=np.float32),
        "encoder_hidden_states_1": rng.standard_normal((batch, seq, t5_dim), dtype=np.float32),
        "encoder_attention_mask_1": _mask(rng, batch, seq),
    }


def _torch_unet(pipe, feed, t):
    with torch.no_grad():
        return pipe.unet(
            _t(feed["sample"]),
            t,
            encoder_hidden_states=_t(feed["encoder_hidden_states"]),
            encoder_hidden_states_1=_t(feed["encoder_hidden_states_1"]),
            encoder_attention_mask_1=_t(feed["encoder_attention_mask_1"]),
        ).sample.numpy()


@pytest.mark.parametrize("batch,frames,seq", [(2, 32, 7), (2, 25, 12), (1, 7, 1)])
def test_unet(tiny, batch, frames, seq):
    """Frames 32 (a multiple of 8) and 25/7 (diffusers forwards upsample sizes) through one graph."""
    rng = np.random.default_rng(frames)
    t = torch.tensor([951, 1][:batch])
    feed = _unet_feed(tiny, rng, batch, frames, seq, t.numpy())
    (got,), _ = _run(tiny, "unet", feed)
    _check("unet", got, _torch_unet(tiny.pipe, feed, t))


def test_unet_timestep_per_sample(tiny):
    """timestep [batch]: each sample is denoised at its own t, as with two separate scalar-t calls."""
    rng = np.random.default_rng(0)
    feed = _unet_feed(tiny, rng, 2, 25, 6, [901, 51])
    (got,), _ = _run(tiny, "unet", feed)
    for row, t in enumerate((901, 51)):
        single = {k: v[row : row + 1] for k, v in feed.items()}
        _check("unet", got[row : row + 1], _torch_unet(tiny.pipe, single, torch.tensor(t)))
    assert rel_error(got[0:1], got[1:2]) > 1e-2  # the two timesteps do matter


@pytest.mark.parametrize("batch,frames", [(1, 32), (2, 25)])
def test_vae_decoder(tiny, batch, frames):
    rng = np.random.default_rng(frames)
    cfg = tiny.manifest["config"]
    latent = rng.standard_normal((batch, cfg["latentChannels"], frames, cfg["melBins"] // cfg["vaeScaleFactor"]), dtype=np.float32)
    (got,), _ = _run(tiny, "vae_decoder", {"latent": latent})
    with torch.no_grad():
        want = tiny.pipe.vae.decode(_t(latent)).sample.numpy()
    assert got.shape == (batch, 1, frames * cfg["vaeScaleFactor"], cfg["melBins"])
    _check("vae_decoder", got, want)


@pytest.mark.parametrize("batch,frames", [(1, 128), (2, 100)])
def test_vocoder(tiny, batch, frames):
    rng = np.random.default_rng(frames)
    mel = rng.standard_normal((batch, frames, tiny.manifest["config"]["melBins"]), dtype=np.float32)
    (got,), _ = _run(tiny, "vocoder", {"mel": mel})
    with torch.no_grad():
        want = tiny.pipe.vocoder(_t(mel)).numpy()
    # at least one sample per 0.01 s mel frame (HiFi-GAN may emit a few extra; the pipeline crops)
    assert got.shape[1] >= frames * 160
    _check("vocoder", got, want)


def test_unet_uses_every_input(tiny):
    """Both cross-attention streams and the T5 mask change the output (diffusers' own dummy UNet
    never reads the T5 stream; this tiny one must)."""
    rng = np.random.default_rng(5)
    feed = _unet_feed(tiny, rng, 2, 16, 6, [500, 500])
    feed["encoder_attention_mask_1"][:] = 1
    (base,), _ = _run(tiny, "unet", feed)
    changes = {
        "encoder_hidden_states": lambda f: f["encoder_hidden_states"].__imul__(-1),
        "encoder_hidden_states_1": lambda f: f["encoder_hidden_states_1"].__imul__(-1),
        "encoder_attention_mask_1": lambda f: f["encoder_attention_mask_1"].__setitem__((slice(None), slice(3, None)), 0),
        "timestep": lambda f: f["timestep"].__setitem__(slice(None), 20),
    }
    for name, change in changes.items():
        changed = {k: v.copy() for k, v in feed.items()}
        change(changed)
        (out,), _ = _run(tiny, "unet", changed)
        assert rel_error(out, base) > 1e-3, f"unet output does not depend on {name}"


@pytest.mark.parametrize("batch", [1, 3])
def test_clap_audio(tiny, batch):
    """audio_embeds as ClapModel.forward computes them for logits_per_text (unfused: no is_longer)."""
    rng = np.random.default_rng(batch)
    dims = tiny.manifest["components"]["clap_audio"]["inputs"][0]["dims"]
    feats = rng.standard_normal((batch, *dims[1:]), dtype=np.float32) * 10 - 40  # log-mel dB scale
    (got,), _ = _run(tiny, "clap_audio", {"input_features": feats})
    with torch.no_grad():
        clap = tiny.pipe.text_encoder
        ids = torch.tensor([[0, 5, 2]])
        out = clap(input_ids=ids, attention_mask=torch.ones_like(ids), input_features=_t(feats))
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, rtol=1e-5)
    _check("clap_audio", got, out.audio_embeds.numpy())
