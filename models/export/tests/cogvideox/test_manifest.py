"""manifest.json of both tiny sizes against the graphs it describes, the README contract, and the pipeline."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from diffusers import CogVideoXDDIMScheduler
from transformers import AutoTokenizer

from models.export.cogvideox import components, configs
from models.export.onnx_io import describe

from ..helpers import REPO, session
from .helpers import TINY, TINY_5B, manifest, sizes_for

ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64"}


def _contract() -> list[tuple[re.Pattern, re.Pattern, list[str], list[str]]]:
    """(name pattern, file pattern, input names, output names) per row of the table in models/README.md."""

    def pattern(cell):  # `transformer_f<F'>_h<h>_w<w>` matches transformer_f3_h4_w6
        text = re.escape(cell.strip("`"))
        for placeholder in ("<F'>", "<h>", "<w>"):
            text = text.replace(re.escape(placeholder), r"\d+")
        return re.compile(text + r"\Z")

    text = (REPO / "models" / "README.md").read_text(encoding="utf-8")
    section = text.split("## CogVideoX components", 1)[1].split("\n### ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[1].endswith(".onnx`"):
            names = [re.findall(r"`([a-z_0-9]+)`", cell) for cell in cells[2:]]
            rows.append((pattern(cells[0]), pattern(cells[1]), names[0], names[1]))
    return rows


@pytest.fixture(params=["fresh-tiny", "committed-tiny", "fresh-tiny-5b", "committed-tiny-5b"])
def folder(request, cog_tiny, cog_tiny_5b):
    fresh = {"tiny": cog_tiny, "tiny-5b": cog_tiny_5b}
    kind, size = request.param.split("-", 1)
    model = fresh[size]
    path = model.dir if kind == "fresh" else {"tiny": TINY, "tiny-5b": TINY_5B}[size]
    return path, manifest(path), model.pipe


def test_components_follow_readme_contract(folder):
    _, m, _ = folder
    contract = _contract()
    assert len(contract) == 5, "the README table could not be parsed"
    for name, entry in m["components"].items():
        rows = [r for r in contract if r[0].match(name)]
        assert len(rows) == 1, name
        _, file, inputs, outputs = rows[0]
        assert entry["file"] == name + ".onnx" and file.match(entry["file"]), name
        assert [t["name"] for t in entry["inputs"]] == inputs, name
        assert [t["name"] for t in entry["outputs"]] == outputs, name


def test_manifest_matches_graphs(folder):
    path, m, _ = folder
    for name, entry in m["components"].items():
        graph = path / entry["file"]
        assert {"inputs": entry["inputs"], "outputs": entry["outputs"]} == describe(graph), name
        sess = session(graph)
        for specs, values in ((entry["inputs"], sess.get_inputs()), (entry["outputs"], sess.get_outputs())):
            assert [v.name for v in values] == [s["name"] for s in specs], name
            for spec, value in zip(specs, values):
                assert ORT_TYPES[value.type] == spec["dtype"], (name, spec["name"])
    assert not list(path.glob("*.onnx.data")), "tiny graphs carry their weights inline"
    assert sorted(p.name for p in path.glob("*.onnx")) == sorted(e["file"] for e in m["components"].values())


def test_shapes_name_graphs_of_their_shape(folder):
    """Every `shapes` entry's graphs take and give tensors of that shape (run at batch 1 and 2)."""
    path, m, pipe = folder
    assert m["shapes"], "no shapes"
    first = m["shapes"][0]
    assert (first["frames"], first["height"], first["width"]) == tuple(m["defaults"][k] for k in ("frames", "height", "width"))
    cfg = m["config"]
    keys = set()
    for entry in m["shapes"]:
        shape = components.model_shape(pipe, entry["frames"], entry["height"], entry["width"])
        assert shape.canonical() == shape, "frames must be the decoded frame count"
        assert (entry["latentFrames"], entry["latentHeight"], entry["latentWidth"], entry["videoTokens"]) == (
            shape.latent_frames, shape.latent_height, shape.latent_width, shape.video_tokens,
        )
        keys.add((entry["latentFrames"], entry["height"], entry["width"]))
        rng = np.random.default_rng(entry["frames"])
        for batch in (1, 2):
            sizes = sizes_for(entry, batch)
            tr = m["components"][entry["transformer"]]
            feed = {}
            for spec in tr["inputs"]:
                dims = [sizes[d] if isinstance(d, str) else d for d in spec["dims"]]
                feed[spec["name"]] = (
                    np.full(dims, 500, np.int64) if spec["dtype"] == "int64" else rng.standard_normal(dims).astype(np.float32)
                )
            assert feed["hidden_states"].shape == (batch, shape.latent_frames, cfg["latentChannels"], shape.latent_height, shape.latent_width)
            (out,) = session(path / tr["file"]).run(None, feed)
            assert out.shape == feed["hidden_states"].shape
        vae = m["components"][entry["vaeDecoder"]]
        assert vae["inputs"][0]["dims"] == [1, cfg["latentChannels"], shape.latent_frames, shape.latent_height, shape.latent_width]
        assert vae["outputs"][0]["dims"] == [1, 3, entry["frames"], entry["height"], entry["width"]]
        assert ("vaeTileDecoder" in entry) == ("vaeTiling" in m)
        if "vaeTileDecoder" in entry:
            tiles = m["components"][entry["vaeTileDecoder"]]
            assert entry["vaeTileDecoder"] == f"vae_decoder_tiles_f{shape.latent_frames}"
            assert tiles["inputs"][0]["dims"] == [1, cfg["latentChannels"], shape.latent_frames, "latent_height", "latent_width"]
            assert tiles["outputs"][0]["dims"] == [1, 3, entry["frames"], "height", "width"]
    assert len(keys) == len(m["shapes"]), "two entries for one shape"
    used = {e["transformer"] for e in m["shapes"]} | {e["vaeDecoder"] for e in m["shapes"]} | {"text_encoder"}
    used |= {e["vaeTileDecoder"] for e in m["shapes"] if "vaeTileDecoder" in e}
    assert used == set(m["components"]), "a component no shape uses, or a shape without its graph"
    if cfg["useRotaryPositionalEmbeddings"]:
        assert {e["transformer"] for e in m["shapes"]} == {"transformer"}


def test_manifest_fields(folder):
    path, m, pipe = folder
    size = configs.SIZES[m["source"]["size"]]
    assert m["format"] == "parastep-model" and m["formatVersion"] == 1
    assert m["family"] == "cogvideox" and m["dtype"] == "fp32" and m["name"] == path.name
    assert m["source"] == {"from": None, "tiny": True, "size": size.name, "seed": 0}
    entry = m["tokenizers"]["t5"]
    assert set(m["tokenizers"]) == {"t5"}
    tok_dir = path / entry["dir"]
    assert sorted(p.name for p in tok_dir.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    loaded = AutoTokenizer.from_pretrained(tok_dir)
    assert entry["modelMaxLength"] == loaded.model_max_length == m["config"]["maxTextSeqLength"]
    assert entry["padTokenId"] == loaded.pad_token_id == 0
    raw = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert raw["padding"] is None and raw["truncation"] is None
    scheduler = CogVideoXDDIMScheduler.from_config(m["scheduler"])
    public = lambda config: {k: v for k, v in dict(config).items() if not k.startswith("_")}  # noqa: E731
    assert public(scheduler.config) == public(pipe.scheduler.config) == {**public(scheduler.config), **size.scheduler}
    assert m["scheduler"]["_class_name"] == "CogVideoXDDIMScheduler"
    tr, vae = pipe.transformer.config, pipe.vae.config
    assert m["config"] == {
        "vaeScaleFactorSpatial": 2 ** (len(vae.block_out_channels) - 1),
        "vaeScaleFactorTemporal": vae.temporal_compression_ratio,
        "vaeScalingFactor": vae.scaling_factor,
        "latentChannels": tr.in_channels,
        "patchSize": tr.patch_size,
        "maxTextSeqLength": tr.max_text_seq_length,
        "textEmbedDim": pipe.text_encoder.config.d_model,
        "useRotaryPositionalEmbeddings": int(tr.use_rotary_positional_embeddings),
        "attentionHeadDim": tr.attention_head_dim,
        "numAttentionHeads": tr.num_attention_heads,
        "sampleFrames": tr.sample_frames,
        "sampleHeight": tr.sample_height,
        "sampleWidth": tr.sample_width,
    }
    assert m["config"]["vaeScaleFactorSpatial"] == 8 and m["config"]["vaeScaleFactorTemporal"] == 4
    if size.vae_tiling is None:
        assert "vaeTiling" not in m
    else:  # the VAE's attributes after enable_tiling(*size.vae_tiling), as tiled_decode reads them
        vae_model = pipe.vae
        assert m["vaeTiling"] == {
            "tileSampleMinHeight": vae_model.tile_sample_min_height,
            "tileSampleMinWidth": vae_model.tile_sample_min_width,
            "tileLatentMinHeight": vae_model.tile_latent_min_height,
            "tileLatentMinWidth": vae_model.tile_latent_min_width,
            "tileOverlapFactorHeight": vae_model.tile_overlap_factor_height,
            "tileOverlapFactorWidth": vae_model.tile_overlap_factor_width,
        }
        assert list(size.vae_tiling) == [m["vaeTiling"][k] for k in (
            "tileSampleMinHeight", "tileSampleMinWidth", "tileOverlapFactorHeight", "tileOverlapFactorWidth")]
        assert not vae_model.use_tiling, "the exported pipeline decodes untiled by default, as diffusers"
    assert m["config"]["useRotaryPositionalEmbeddings"] == (size.name == "tiny-5b")
    assert m["defaults"] == {
        **size.defaults,
        "frames": tr.sample_frames,
        "height": tr.sample_height * 8,
        "width": tr.sample_width * 8,
    }
    assert all(isinstance(v, (int, float)) for v in list(m["config"].values()) + list(m["defaults"].values()))
    import diffusers, onnx, onnxruntime, torch, transformers  # noqa: E401

    assert m["versions"] == {
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": 17,
    }
