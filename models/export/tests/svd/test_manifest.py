"""The SVD manifest.json against the graphs it describes, the README contract, and the pipeline it came from."""

from __future__ import annotations

import json

import numpy as np
import pytest
from diffusers import EulerDiscreteScheduler

from models.export.onnx_io import describe

from .helpers import COMMITTED, readme_contract, session

ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64"}


@pytest.fixture(params=["fresh", "committed"])
def folder(request, svd_tiny):
    path = svd_tiny.dir if request.param == "fresh" else COMMITTED
    return path, json.loads((path / "manifest.json").read_text(encoding="utf-8"))


def test_components_follow_readme_contract(folder):
    _, manifest = folder
    contract = readme_contract()
    assert list(contract) == ["image_encoder", "vae_encoder", "unet", "vae_decoder"], "README table not parsed"
    assert set(manifest["components"]) == set(contract)
    for name, (file, inputs, outputs) in contract.items():
        entry = manifest["components"][name]
        assert entry["file"] == file
        assert [t["name"] for t in entry["inputs"]] == inputs, name  # nothing pruned by the exporter
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
                assert ORT_TYPES[value.type] == spec["dtype"] == "float32", (name, spec["name"])
                assert list(value.shape) == spec["dims"], (name, spec["name"])


def test_contract_dims(svd_tiny):
    """The dims the runtime relies on, spelled out (symbolic names shared between graphs mean the same size)."""
    comps, cfg = svd_tiny.manifest["components"], svd_tiny.manifest["config"]
    D = cfg["imageEmbedDim"]

    def dims(name, kind):
        return {t["name"]: t["dims"] for t in comps[name][kind]}

    assert dims("image_encoder", "inputs") == {"pixel_values": ["batch", 3, 224, 224]}
    assert dims("image_encoder", "outputs") == {"image_embeds": ["batch", D]}
    assert dims("vae_encoder", "inputs") == {"image": ["batch", 3, "height", "width"]}
    assert dims("vae_encoder", "outputs") == {"latent": ["batch", 4, "latent_height", "latent_width"]}
    assert dims("unet", "inputs") == {
        "sample": ["batch", "frames", 8, "latent_height", "latent_width"],
        "timestep": ["batch"],
        "encoder_hidden_states": ["batch", 1, D],
        "added_time_ids": ["batch", 3],
    }
    assert dims("unet", "outputs") == {"out_sample": ["batch", "frames", 4, "latent_height", "latent_width"]}
    assert dims("vae_decoder", "inputs") == {"latents": [1, "frames", 4, "latent_height", "latent_width"]}
    assert dims("vae_decoder", "outputs") == {"frames": ["frames", 3, "height", "width"]}


def test_output_dims_hold_at_runtime(svd_tiny):
    """Every graph at sizes other than the trace's: outputs have the declared static dims and the sizes
    of the symbolic dims they share with an input (height = latent_height × vaeScaleFactor)."""
    rng = np.random.default_rng(0)
    s = svd_tiny.manifest["config"]["vaeScaleFactor"]
    sizes = {"batch": 3, "frames": 2, "latent_height": 6, "latent_width": 10}
    sizes |= {"height": 6 * s, "width": 10 * s}
    for name, entry in svd_tiny.manifest["components"].items():
        batch = 1 if name == "vae_decoder" else sizes["batch"]
        feed = {
            spec["name"]: rng.standard_normal(
                [{"batch": batch}.get(d, sizes.get(d, d)) if isinstance(d, str) else d for d in spec["dims"]]
            ).astype(np.float32)
            for spec in entry["inputs"]
        }
        outs = session(svd_tiny.dir / entry["file"]).run(None, feed)
        for spec, out in zip(entry["outputs"], outs):
            want = [sizes[d] if isinstance(d, str) else d for d in spec["dims"]]
            assert list(out.shape) == want, (name, spec["name"], out.shape)


def test_manifest_fields(folder, svd_tiny):
    path, manifest = folder
    pipe = svd_tiny.pipe
    assert manifest["format"] == "parastep-model" and manifest["formatVersion"] == 1
    assert manifest["family"] == "svd" and manifest["dtype"] == "fp32"
    assert manifest["name"] == path.name == "svd-tiny"
    assert manifest["source"] == {"from": None, "tiny": True, "size": "tiny", "seed": 0}
    assert "tokenizers" not in manifest
    scheduler = EulerDiscreteScheduler.from_config(manifest["scheduler"])

    def public(config):  # diffusers' bookkeeping keys start with "_"
        return {k: v for k, v in dict(config).items() if not k.startswith("_")}

    assert public(scheduler.config) == public(pipe.scheduler.config)
    assert manifest["scheduler"]["_class_name"] == "EulerDiscreteScheduler"
    assert manifest["scheduler"]["prediction_type"] == "v_prediction" and manifest["scheduler"]["use_karras_sigmas"]
    assert manifest["config"] == {
        "vaeScaleFactor": pipe.vae_scale_factor,
        "vaeScalingFactor": pipe.vae.config.scaling_factor,
        "latentChannels": pipe.vae.config.latent_channels,
        "unetInChannels": pipe.unet.config.in_channels,
        "unetNumFrames": pipe.unet.config.num_frames,
        "imageEmbedDim": pipe.image_encoder.config.projection_dim,
        "clipImageSize": pipe.image_encoder.config.image_size,
        "clipImageMean": list(pipe.feature_extractor.image_mean),
        "clipImageStd": list(pipe.feature_extractor.image_std),
    }
    assert manifest["config"]["latentChannels"] == 4 and manifest["config"]["unetInChannels"] == 8
    assert manifest["config"]["clipImageSize"] == 224 and len(manifest["config"]["clipImageMean"]) == 3
    defaults = manifest["defaults"]
    assert set(defaults) == {
        "steps", "warmup", "frames", "width", "height", "fps", "motionBucketId", "noiseAugStrength",
        "minGuidance", "maxGuidance", "decodeChunk",
    }
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in defaults.values())
    assert isinstance(defaults["steps"], int) and isinstance(defaults["warmup"], int) and 0 < defaults["warmup"] < defaults["steps"]
    assert defaults["frames"] == manifest["config"]["unetNumFrames"]
    s = manifest["config"]["vaeScaleFactor"]
    assert defaults["width"] % 8 == 0 and defaults["height"] % 8 == 0 and defaults["width"] % s == 0
    assert 0 < defaults["decodeChunk"] < defaults["frames"]  # the tiny default exercises chunking
    import diffusers, onnx, onnxruntime, torch, transformers  # noqa: E401

    assert manifest["versions"] == {
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": 17,
    }


def test_real_defaults_are_the_pipelines():
    """For a real checkpoint the defaults are `__call__`'s own (frames from the UNet's config), plus
    ParaStep's warmup and the documented decode chunk."""
    import inspect
    from types import SimpleNamespace

    from diffusers import StableVideoDiffusionPipeline

    from models.export.svd import export

    params = inspect.signature(StableVideoDiffusionPipeline.__call__).parameters
    for frames in (14, 25):
        pipe = SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(num_frames=frames)))
        got = export.real_defaults(pipe)
        assert got == {
            "steps": params["num_inference_steps"].default,
            "warmup": 5,
            "frames": frames,
            "width": params["width"].default,
            "height": params["height"].default,
            "fps": params["fps"].default,
            "motionBucketId": params["motion_bucket_id"].default,
            "noiseAugStrength": params["noise_aug_strength"].default,
            "minGuidance": params["min_guidance_scale"].default,
            "maxGuidance": params["max_guidance_scale"].default,
            "decodeChunk": 8,
        }
    assert got["steps"] == 25 and got["width"] == 1024 and got["height"] == 576
