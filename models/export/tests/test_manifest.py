"""manifest.json against the graphs it describes, the README contract, and the pipeline it came from."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from diffusers import DDIMScheduler
from transformers import AutoTokenizer

from models.export.onnx_io import describe

from .helpers import COMMITTED, REPO, session

ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64"}


def _contract() -> dict[str, tuple[str, list[str], list[str]]]:
    """component -> (file, input names, output names), parsed from the table in models/README.md."""
    text = (REPO / "models" / "README.md").read_text(encoding="utf-8")
    section = text.split("## AudioLDM2 components", 1)[1].split("\n## ", 1)[0]  # up to the next family
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[1].endswith(".onnx`"):
            names = [re.findall(r"`([a-z_0-9]+)`", cell) for cell in cells[2:]]
            rows[cells[0].strip("`")] = (cells[1].strip("`"), names[0], names[1])
    return rows


@pytest.fixture(params=["fresh", "committed"])
def folder(request, tiny):
    path = tiny.dir if request.param == "fresh" else COMMITTED
    return path, json.loads((path / "manifest.json").read_text(encoding="utf-8"))


def test_components_follow_readme_contract(folder):
    _, manifest = folder
    contract = _contract()
    assert len(contract) == 8, "the README table could not be parsed"
    assert set(manifest["components"]) == set(contract)
    for name, (file, inputs, outputs) in contract.items():
        entry = manifest["components"][name]
        assert entry["file"] == file
        # every contract input is a graph input: none was pruned by the exporter
        assert [t["name"] for t in entry["inputs"]] == inputs, name
        assert [t["name"] for t in entry["outputs"]] == outputs, name


def test_manifest_matches_graphs(folder):
    path, manifest = folder
    for name, entry in manifest["components"].items():
        graph = path / entry["file"]
        assert {"inputs": entry["inputs"], "outputs": entry["outputs"]} == describe(graph), name
        sess = session(graph)
        for specs, values in ((entry["inputs"], sess.get_inputs()), (entry["outputs"], sess.get_outputs())):
            assert [v.name for v in values] == [s["name"] for s in specs], name
            for spec, value in zip(specs, values):
                assert ORT_TYPES[value.type] == spec["dtype"], (name, spec["name"])
                assert len(value.shape) == len(spec["dims"]), (name, spec["name"])
                for want, got in zip(spec["dims"], value.shape):
                    assert got == want, (name, spec["name"], spec["dims"], value.shape)


def test_output_dims_hold_at_runtime(tiny):
    """Run every graph at non-trace sizes: outputs must have the manifest's static dims, and symbolic
    dims shared with an input must take that input's size."""
    rng = np.random.default_rng(0)
    sizes = {"batch": 3, "sequence": 5, "positions": 9, "frames": 11, "mel_frames": 44}
    for name, entry in tiny.manifest["components"].items():
        feed = {}
        for spec in entry["inputs"]:
            shape = [sizes[d] if isinstance(d, str) else d for d in spec["dims"]]
            feed[spec["name"]] = (
                np.ones(shape, dtype=np.int64) if spec["dtype"] == "int64" else rng.standard_normal(shape).astype(np.float32)
            )
        if "timestep" in feed:
            feed["timestep"][:] = 500
        outs = session(tiny.dir / entry["file"]).run(None, feed)
        for spec, out in zip(entry["outputs"], outs):
            assert out.ndim == len(spec["dims"])
            for want, got in zip(spec["dims"], out.shape):
                if isinstance(want, int):
                    assert got == want, (name, spec["name"])
                elif any(want in s["dims"] for s in entry["inputs"]):
                    assert got == sizes[want], (name, spec["name"], want)
        if name == "projection":  # "positions" = sequence + sos/eos of both encoders + the CLAP vector
            assert outs[0].shape[1] == sizes["sequence"] + 5


def test_manifest_fields(folder, tiny):
    path, manifest = folder
    pipe = tiny.pipe
    assert manifest["format"] == "parastep-model" and manifest["formatVersion"] == 1
    assert manifest["family"] == "audioldm2" and manifest["dtype"] == "fp32"
    assert manifest["name"] == path.name
    assert manifest["source"] == {"from": None, "tiny": True, "size": "tiny", "seed": 0}
    for key, tok in (("clap", pipe.tokenizer), ("t5", pipe.tokenizer_2)):
        entry = manifest["tokenizers"][key]
        tok_dir = path / entry["dir"]
        assert (tok_dir / "tokenizer.json").is_file() and (tok_dir / "tokenizer_config.json").is_file()
        loaded = AutoTokenizer.from_pretrained(tok_dir)
        assert type(loaded) is type(tok)
        assert entry["modelMaxLength"] == loaded.model_max_length == tok.model_max_length
        assert entry["padTokenId"] == loaded.pad_token_id == tok.pad_token_id
        # no padding/truncation state baked into tokenizer.json (the manifest's limits say how)
        raw = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
        assert raw["padding"] is None and raw["truncation"] is None
    assert manifest["tokenizers"]["clap"]["modelMaxLength"] < 100 and manifest["tokenizers"]["t5"]["modelMaxLength"] < 64
    scheduler = DDIMScheduler.from_config(manifest["scheduler"])

    def public(config):  # diffusers' bookkeeping keys start with "_"
        return {k: v for k, v in dict(config).items() if not k.startswith("_")}

    assert public(scheduler.config) == public(pipe.scheduler.config)
    assert manifest["scheduler"]["_class_name"] == "DDIMScheduler"
    cfg = manifest["config"]
    vocoder = pipe.vocoder.config
    assert cfg == {
        "sampleRate": vocoder.sampling_rate,
        "vaeScaleFactor": pipe.vae_scale_factor,
        "vaeScalingFactor": pipe.vae.config.scaling_factor,
        "latentChannels": pipe.unet.config.in_channels,
        "melBins": vocoder.model_in_dim,
        "vocoderUpsampleFactor": float(np.prod(vocoder.upsample_rates)) / vocoder.sampling_rate,
        "unetSampleSize": pipe.unet.config.sample_size,
        "maxNewTokens": pipe.language_model.config.max_new_tokens,
        "languageModelDim": pipe.language_model.config.n_embd,
    }
    # audio-like: 16 kHz and 0.01 s per mel frame, as in cvssp/audioldm2
    assert cfg["sampleRate"] == 16000 and abs(cfg["vocoderUpsampleFactor"] - 0.01) < 1e-12
    assert manifest["defaults"]["duration"] == pytest.approx(cfg["unetSampleSize"] * cfg["vaeScaleFactor"] * 0.01)
    assert manifest["defaults"]["guidance"] == 3.5 and manifest["defaults"]["warmup"] == 5
    import diffusers, onnx, onnxruntime, torch, transformers  # noqa: E401

    assert manifest["versions"] == {
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": 17,
    }
