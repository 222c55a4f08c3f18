"""The committed references (made by diffusers' pipeline) against the committed ONNX graphs.

The graphs are driven the way models/README.md tells the TypeScript runtime to drive them: token ids
from the saved tokenizer files, the manifest's `shapes` to pick graphs, the rotary tables from the
documented recipe (implemented here in numpy, independently of diffusers), guidance and the
permute/scale before the VAE as documented. The scheduler step is diffusers' own
`CogVideoXDDIMScheduler.step`. If this reproduces every recorded intermediate, a runtime that follows
the README and matches the scheduler fixtures matches diffusers.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from diffusers import CogVideoXDDIMScheduler
from transformers import AutoTokenizer

from ..helpers import rel_error, session
from .helpers import TINY, TINY_5B, manifest, postprocess

FOLDERS = {"tiny": TINY, "tiny-5b": TINY_5B}
CASES = [(size, p.name) for size, folder in FOLDERS.items() for p in sorted((folder / "reference").iterdir()) if p.is_dir() and p.name.startswith("case")]


class Graphs:
    def __init__(self, folder):
        self.folder = folder
        self.manifest = manifest(folder)
        self.sessions = {}

    def __call__(self, name, **feed):
        if name not in self.sessions:
            self.sessions[name] = session(self.folder / self.manifest["components"][name]["file"])
        return self.sessions[name].run(None, feed)[0]

    def shape(self, latent_frames, height, width):
        """The manifest's shape entry for a request, as the runtime picks it (None: not exported)."""
        return next(
            (s for s in self.manifest["shapes"] if (s["latentFrames"], s["height"], s["width"]) == (latent_frames, height, width)),
            None,
        )


@pytest.fixture(scope="module")
def graphs():
    return {size: Graphs(folder) for size, folder in FOLDERS.items()}


def _load(size, case):
    ref = FOLDERS[size] / "reference" / case
    info = json.loads((ref / "case.json").read_text("utf-8"))
    arrays = {name: np.load(ref / f"{name}.npy") for name in info["files"]}
    for name, meta in info["files"].items():
        assert list(arrays[name].shape) == meta["shape"] and str(arrays[name].dtype) == meta["dtype"], name
    return info, arrays


def rope_tables(config: dict, latent_frames: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The rotary-table recipe of models/README.md ("Rotary tables"), in numpy."""
    p, s = config["patchSize"], config["vaeScaleFactorSpatial"]
    gh, gw = height // (s * p), width // (s * p)
    base_h, base_w = config["sampleHeight"] // p, config["sampleWidth"] // p
    if gh / gw > base_h / base_w:
        rh, rw = base_h, round(base_h / gh * gw)
    else:
        rw, rh = base_w, round(base_w / gw * gh)
    top, left = round((base_h - rh) / 2), round((base_w - rw) / 2)

    def linspace(start, stop, n):  # torch.linspace in float32 (from both ends)
        step = (stop - start) / (n - 1) if n > 1 else 0.0
        return np.array([start + step * i if i < n // 2 else stop - step * (n - 1 - i) for i in range(n)], np.float32)

    pos_t = linspace(0, latent_frames * (latent_frames - 1) / latent_frames, latent_frames)
    pos_h = linspace(top, (top + rh) * (gh - 1) / gh, gh)
    pos_w = linspace(left, (left + rw) * (gw - 1) / gw, gw)
    dim = config["attentionHeadDim"]

    def axis(pos, d):
        inv = (1.0 / (10000.0 ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d)))).astype(np.float32)
        angles = np.outer(pos, inv).astype(np.float32)
        return np.repeat(np.cos(angles), 2, axis=1), np.repeat(np.sin(angles), 2, axis=1)

    (ct, st), (ch, sh), (cw, sw) = axis(pos_t, dim // 4), axis(pos_h, dim // 8 * 3), axis(pos_w, dim // 8 * 3)

    def combine(t, h, w):
        grid = np.concatenate(
            [
                np.broadcast_to(t[:, None, None], (latent_frames, gh, gw, t.shape[1])),
                np.broadcast_to(h[None, :, None], (latent_frames, gh, gw, h.shape[1])),
                np.broadcast_to(w[None, None, :], (latent_frames, gh, gw, w.shape[1])),
            ],
            axis=-1,
        )
        return grid.reshape(latent_frames * gh * gw, dim)

    return combine(ct, ch, cw), combine(st, sh, sw)


def tiled_decode(g, name: str, z: np.ndarray, tiling: dict, spatial: int) -> np.ndarray:
    """The tiled decode of models/README.md (`vaeTiling`): the tile decoder graph on each tile of z, blended by
    diffusers' own `blend_v`/`blend_h` (they do not read `self`) and cropped."""
    from diffusers import AutoencoderKLCogVideoX as Vae

    _, _, _, h, w = z.shape
    th, tw = tiling["tileLatentMinHeight"], tiling["tileLatentMinWidth"]
    assert w > tw or h > th, "the tiled case must really tile"
    fh, fw = tiling["tileOverlapFactorHeight"], tiling["tileOverlapFactorWidth"]
    step_h, step_w = int(th * (1 - fh)), int(tw * (1 - fw))
    blend_h, blend_w = int(tiling["tileSampleMinHeight"] * fh), int(tiling["tileSampleMinWidth"] * fw)
    limit_h, limit_w = tiling["tileSampleMinHeight"] - blend_h, tiling["tileSampleMinWidth"] - blend_w
    assert (th, tw) == (tiling["tileSampleMinHeight"] // spatial, tiling["tileSampleMinWidth"] // spatial)
    rows = [
        [torch.from_numpy(g(name, z=np.ascontiguousarray(z[:, :, :, i : i + th, j : j + tw]))) for j in range(0, w, step_w)]
        for i in range(0, h, step_h)
    ]
    assert len(rows) * len(rows[0]) > 1
    out = []
    for i, row in enumerate(rows):
        kept = []
        for j, tile in enumerate(row):
            if i > 0:
                tile = Vae.blend_v(None, rows[i - 1][j], tile, blend_h)
            if j > 0:
                tile = Vae.blend_h(None, row[j - 1], tile, blend_w)
            kept.append(tile[:, :, :, :limit_h, :limit_w])
        out.append(torch.cat(kept, dim=4))
    return torch.cat(out, dim=3).numpy()


def dynamic_guidance(scale: float, t: int, steps: int) -> float:
    """diffusers' use_dynamic_cfg formula, with the raw timestep t, as documented."""
    return 1 + scale * (1 - math.cos(math.pi * ((steps - t) / steps) ** 5.0)) / 2


def test_cases_cover_what_they_should():
    infos = {(size, case): _load(size, case)[0] for size, case in CASES}
    tiny = [i for (size, _), i in infos.items() if size == "tiny"]
    assert sorted(c for s, c in CASES if s == "tiny") == ["case1", "case2", "case3", "case4", "case5"]
    tiled = [i for i in tiny if "vaeTiling" in i]
    assert [i["name"] for i in tiled] == ["case5"] and tiled[0]["vaeTiling"] == manifest(TINY)["vaeTiling"]
    assert any(i["latentFrames"] % 2 == 1 for i in tiny) and any(i["latentFrames"] % 2 == 0 for i in tiny)
    assert any(i["useDynamicCfg"] for i in tiny) and any(i["guidance"] <= 1 for i in tiny)
    assert any(1000 % i["steps"] for i in tiny)
    m = manifest(TINY)
    case1 = infos[("tiny", "case1")]
    assert (case1["steps"], case1["guidance"], case1["frames"], case1["height"], case1["width"]) == tuple(
        m["defaults"][k] for k in ("steps", "guidance", "frames", "height", "width")
    )
    five = infos[("tiny-5b", "case2")]
    assert five["outputType"] == "latent" and (five["height"], five["width"]) != (32, 48)
    for (size, case), info in infos.items():
        _, a = _load(size, case)
        gen = torch.Generator().manual_seed(info["seed"])
        np.testing.assert_array_equal(a["latents_initial"], torch.randn(a["latents_initial"].shape, generator=gen).numpy())


@pytest.mark.parametrize("size,case", CASES)
def test_tokens_and_text_encoder(graphs, size, case):
    info, a = _load(size, case)
    g = graphs[size]
    entry = g.manifest["tokenizers"]["t5"]
    tok = AutoTokenizer.from_pretrained(g.folder / entry["dir"])
    length = g.manifest["config"]["maxTextSeqLength"]
    texts = [info["negativePrompt"], info["prompt"]] if info["guidance"] > 1 else [info["prompt"]]
    ids = tok(texts, padding="max_length", max_length=length, truncation=True, add_special_tokens=True).input_ids
    np.testing.assert_array_equal(np.array(ids, dtype=np.int64), a["input_ids"])
    assert rel_error(g("text_encoder", input_ids=a["input_ids"]), a["prompt_embeds"]) <= 1e-5


@pytest.mark.parametrize("size,case", CASES)
def test_denoising_and_decoding(graphs, size, case):
    info, a = _load(size, case)
    g = graphs[size]
    cfg = g.manifest["config"]
    scheduler = CogVideoXDDIMScheduler.from_config(g.manifest["scheduler"])
    scheduler.set_timesteps(info["steps"])
    np.testing.assert_array_equal(scheduler.timesteps.numpy(), a["timesteps"])
    np.testing.assert_array_equal(scheduler.alphas_cumprod.numpy(), a["alphas_cumprod"])
    assert float(scheduler.final_alpha_cumprod) == a["final_alpha_cumprod"][0]
    shape = g.shape(info["latentFrames"], info["height"], info["width"])
    if cfg["useRotaryPositionalEmbeddings"]:
        name = "transformer"
        cos, sin = rope_tables(cfg, info["latentFrames"], info["height"], info["width"])
        np.testing.assert_allclose(cos, a["freqs_cos"], rtol=0, atol=2e-6)
        np.testing.assert_allclose(sin, a["freqs_sin"], rtol=0, atol=2e-6)
        rotary = {"freqs_cos": a["freqs_cos"], "freqs_sin": a["freqs_sin"]}
    else:
        assert shape is not None, "a 2b reference shape must have its graphs in the manifest"
        name = shape["transformer"]
        rotary = {}
    cfg_batch = 2 if info["guidance"] > 1 else 1
    embeds = a["prompt_embeds"]

    def transformer(latents, t):
        return g(
            name,
            hidden_states=np.concatenate([latents] * cfg_batch),
            encoder_hidden_states=embeds,
            timestep=np.full(cfg_batch, t, dtype=np.int64),
            **rotary,
        )

    np.testing.assert_array_equal(a["transformer_hidden_states_step0"], np.concatenate([a["latents_initial"]] * cfg_batch))
    np.testing.assert_array_equal(a["transformer_timestep_step0"], np.full(cfg_batch, a["timesteps"][0]))
    assert rel_error(transformer(a["latents_initial"], a["timesteps"][0]), a["transformer_out_step0"]) <= 1e-5
    for i, t in enumerate(a["timesteps"]):
        want = dynamic_guidance(info["guidance"], int(t), info["steps"]) if info["useDynamicCfg"] else info["guidance"]
        assert a["guidance_scales"][i] == pytest.approx(want, rel=1e-15)

    def step(i, latents):
        t = a["timesteps"][i]
        v = transformer(latents, t)
        if cfg_batch == 2:
            uncond, cond = np.split(v, 2)
            v = uncond + np.float32(a["guidance_scales"][i]) * (cond - uncond)
        return scheduler.step(torch.from_numpy(v), int(t), torch.from_numpy(latents)).prev_sample.numpy()

    previous = a["latents_initial"]
    for i in range(info["steps"]):  # per step, from the recorded previous latents
        assert rel_error(step(i, previous), a["latents_steps"][i]) <= 1e-4, i
        previous = a["latents_steps"][i]
    np.testing.assert_array_equal(a["latents_steps"][-1], a["latents_final"])
    latents = a["latents_initial"]
    for i in range(info["steps"]):  # free-running, as a sampler would
        latents = step(i, latents)
    assert rel_error(latents, a["latents_final"]) <= 1e-3
    if info["outputType"] == "latent":
        assert "frames" not in a
        return
    z = a["latents_final"].transpose(0, 2, 1, 3, 4) * np.float32(1 / cfg["vaeScalingFactor"])
    np.testing.assert_array_equal(z, a["vae_z"])
    if "vaeTiling" in info:
        frames = tiled_decode(g, shape["vaeTileDecoder"], a["vae_z"], g.manifest["vaeTiling"], cfg["vaeScaleFactorSpatial"])
        untiled = g(shape["vaeDecoder"], z=a["vae_z"])
        assert rel_error(untiled, a["frames"]) > 0.1, "tiling must change the pixels"
    else:
        frames = g(shape["vaeDecoder"], z=a["vae_z"])
    assert frames.shape == a["frames"].shape == (1, 3, shape["frames"], info["height"], info["width"])
    assert rel_error(frames, a["frames"]) <= 1e-4
    np.testing.assert_array_equal(postprocess(a["frames"]), a["video"])
    # from the ONNX frames a value on a rounding edge may land one level off
    diff = np.abs(postprocess(frames).astype(np.int16) - a["video"])
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_rope_fixtures_follow_the_recipe():
    """reference/rope/ (diffusers' `_prepare_rotary_positional_embeddings`) at shapes with fractional and
    repeated positions equals the documented recipe."""
    cfg = manifest(TINY_5B)["config"]
    listing = json.loads((TINY_5B / "reference" / "rope" / "rope.json").read_text("utf-8"))["shapes"]
    assert len(listing) >= 3
    fractional = False
    for entry in listing:
        cos, sin = rope_tables(cfg, entry["latentFrames"], entry["height"], entry["width"])
        folder = TINY_5B / "reference" / entry["dir"]
        want_cos, want_sin = np.load(folder / "freqs_cos.npy"), np.load(folder / "freqs_sin.npy")
        assert list(want_cos.shape) == entry["shape"] == [entry["latentFrames"] * entry["gridHeight"] * entry["gridWidth"], cfg["attentionHeadDim"]]
        np.testing.assert_allclose(cos, want_cos, rtol=0, atol=2e-6, err_msg=entry["dir"])
        np.testing.assert_allclose(sin, want_sin, rtol=0, atol=2e-6, err_msg=entry["dir"])
        # a non-integer position shows as an h- or w-angle that is not a multiple of the lowest frequency
        h_part = np.arccos(np.clip(want_cos[:, cfg["attentionHeadDim"] // 4], -1, 1))
        fractional |= bool(np.any(np.abs(h_part - np.round(h_part)) > 1e-3))
    assert fractional, "no rope fixture exercises the crop region's fractional positions"


@pytest.mark.parametrize("folder", [TINY, TINY_5B])
def test_tokens_fixture_matches_saved_tokenizer(folder):
    tokens = json.loads((folder / "reference" / "tokens.json").read_text("utf-8"))
    tok = AutoTokenizer.from_pretrained(folder / tokens["tokenizer"]["dir"])
    length = tokens["tokenizer"]["maxLength"]
    assert length == manifest(folder)["config"]["maxTextSeqLength"]
    truncated = False
    for entry in tokens["cases"]:
        ids = tok(entry["prompt"], padding="max_length", max_length=length, truncation=True, add_special_tokens=True).input_ids
        assert entry["inputIds"] == ids, entry["prompt"]
        truncated |= len(tok(entry["prompt"]).input_ids) > length
    assert truncated, "no prompt in tokens.json is long enough to be truncated"
    assert "" in [e["prompt"] for e in tokens["cases"]]
