"""`python -m models.export svd`: the committed folder regenerated, a checkpoint directory, and bad input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import PIL.Image
import pytest
import torch
from onnx import numpy_helper

from models.export import cli
from models.export.errors import ExportError
from models.export.svd import checkpoint, configs

from ..helpers import rel_error, run_cli
from .helpers import COMMITTED, REFERENCE, session


def _weights(path):
    model = onnx.load(str(path))
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}, [n.op_type for n in model.graph.node]


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


def test_regenerated_tiny_reproduces_committed_folder(svd_tiny):
    """`--tiny` now (the session fixture, same seed and versions) gives the committed folder: the same
    manifest, the same graphs and weights, and the same reference within float tolerance."""
    assert _files(svd_tiny.dir) == _files(COMMITTED)
    assert svd_tiny.manifest == json.loads((COMMITTED / "manifest.json").read_text("utf-8"))
    for graph in sorted(COMMITTED.glob("*.onnx")):
        (got_w, got_ops), (want_w, want_ops) = _weights(svd_tiny.dir / graph.name), _weights(graph)
        assert got_ops == want_ops, graph.name
        assert got_w.keys() == want_w.keys(), graph.name
        for name, want in want_w.items():
            np.testing.assert_allclose(got_w[name], want, rtol=1e-6, atol=1e-7, err_msg=f"{graph.name}:{name}")
    # float results may differ in the last bits between CPUs; integers and the input images may not
    for rel in _files(COMMITTED / "reference"):
        got, want = svd_tiny.dir / "reference" / rel, REFERENCE / rel
        if rel.suffix == ".npy":
            g, w = np.load(got), np.load(want)
            assert g.dtype == w.dtype and g.shape == w.shape, rel
            if w.dtype == np.uint8:  # rounding of x * 255 may flip at a .5 boundary
                assert np.abs(g.astype(int) - w).max() <= 1, rel
            else:
                assert rel_error(g, w) <= 1e-4, rel
        elif rel.suffix == ".png":
            np.testing.assert_array_equal(np.asarray(PIL.Image.open(got)), np.asarray(PIL.Image.open(want)))
        else:
            assert json.loads(got.read_text("utf-8")) == json.loads(want.read_text("utf-8")), rel


def test_committed_folder_is_small():
    size = sum(p.stat().st_size for p in COMMITTED.rglob("*") if p.is_file())
    assert size < 12_000_000, f"models/svd-tiny is {size / 1e6:.1f} MB"


def test_same_seed_same_weights_other_seed_other_weights():
    """A build depends only on the seed: seed 0 twice is identical, seed 1 changes every component."""

    def state(seed):
        pipe = configs.build_pipeline(configs.TINY, seed)
        return {name: pipe.components[name].state_dict() for name in ("unet", "vae", "image_encoder")}

    first, again, other = state(0), state(0), state(1)
    for name in first:
        assert all(torch.equal(first[name][k], again[name][k]) for k in first[name]), name
        assert any(not torch.equal(first[name][k], other[name][k]) for k in first[name]), name


def test_checkpoint_directory(svd_tiny, tmp_path):
    """--from <dir>: a saved pipeline exports with the real checkpoints' defaults, and its UNet graph
    reproduces the committed reference (same weights)."""
    ckpt = tmp_path / "ckpt"
    svd_tiny.pipe.save_pretrained(ckpt)
    out = tmp_path / "from-dir"
    result = run_cli("svd", "--from", str(ckpt), "--out", str(out))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    committed = json.loads((COMMITTED / "manifest.json").read_text("utf-8"))
    assert manifest["source"] == {"from": str(ckpt), "tiny": False, "size": None, "seed": None}
    assert manifest["components"] == committed["components"] and manifest["config"] == committed["config"]
    assert manifest["scheduler"] == committed["scheduler"]
    assert manifest["defaults"] == {
        "steps": 25, "warmup": 5, "frames": committed["config"]["unetNumFrames"], "width": 1024, "height": 576,
        "fps": 7, "motionBucketId": 127, "noiseAugStrength": 0.02, "minGuidance": 1.0, "maxGuidance": 3.0,
        "decodeChunk": 8,
    }
    assert not (out / "reference").exists()  # --reference is on for --tiny only
    a = {n: np.load(REFERENCE / "case1" / f"{n}.npy") for n in ("unet_sample_step0", "unet_timestep_step0", "unet_encoder_hidden_states", "added_time_ids", "unet_out_step0")}
    got = session(out / "unet.onnx").run(
        None,
        {
            "sample": a["unet_sample_step0"],
            "timestep": np.repeat(a["unet_timestep_step0"], 2),
            "encoder_hidden_states": a["unet_encoder_hidden_states"],
            "added_time_ids": a["added_time_ids"],
        },
    )[0]
    assert rel_error(got, a["unet_out_step0"]) <= 1e-5


def test_fp16_variant_checkpoint(tmp_path):
    """A download of the Hub's fp16 variant alone (`*.fp16.safetensors`) loads, upcast to float32."""
    pipe = configs.build_pipeline(configs.TINY, 0)
    for module in (pipe.unet, pipe.vae, pipe.image_encoder):
        module.to(torch.float16)
    pipe.save_pretrained(tmp_path, variant="fp16")
    assert not list((tmp_path / "unet").glob("diffusion_pytorch_model.safetensors"))
    assert checkpoint.weights_variant(tmp_path) == "fp16"
    loaded = checkpoint.load(str(tmp_path))
    for name in ("unet", "vae", "image_encoder"):
        module = loaded.components[name]
        assert module.dtype == torch.float32, name
        for key, value in pipe.components[name].state_dict().items():
            assert torch.equal(module.state_dict()[key], value.float()), (name, key)


def _assert_clean_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr)
    err = result.stderr.strip()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_other_pipeline_class_is_refused(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}), "utf-8")
    result = run_cli("svd", "--from", str(tmp_path), "--out", str(tmp_path / "x"))
    _assert_clean_error(result, "StableDiffusionPipeline, not a StableVideoDiffusionPipeline")
    assert not (tmp_path / "x").exists()


def test_checkpoint_checks_name_the_problem(svd_tiny, tmp_path):
    """A missing config field, an unsupported scheduler, missing weights (checked in-process)."""
    ckpt = tmp_path / "ckpt"
    svd_tiny.pipe.save_pretrained(ckpt)
    checkpoint.check_configs(ckpt)  # complete: no error
    assert checkpoint.weights_variant(ckpt) is None

    def edit(rel, change):
        file = ckpt / rel
        data = json.loads(file.read_text("utf-8"))
        saved = dict(data)
        change(data)
        file.write_text(json.dumps(data), "utf-8")
        return lambda: file.write_text(json.dumps(saved), "utf-8")

    restore = edit("unet/config.json", lambda d: d.pop("num_frames"))
    with pytest.raises(ExportError, match=r"'num_frames' is missing from .*unet/config\.json"):
        checkpoint.check_configs(ckpt)
    restore()
    restore = edit("feature_extractor/preprocessor_config.json", lambda d: d.pop("image_std"))
    with pytest.raises(ExportError, match=r"'image_std' is missing"):
        checkpoint.check_configs(ckpt)
    restore()
    edit("scheduler/scheduler_config.json", lambda d: d.update(_class_name="DDIMScheduler"))
    with pytest.raises(ExportError, match="names a DDIMScheduler; only the EulerDiscreteScheduler"):
        checkpoint.check_configs(ckpt)
    for weights in (ckpt / "vae").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ExportError, match=r"no weights .* in .*vae"):
        checkpoint.weights_variant(ckpt)


def test_bench_default_folder():
    args = cli.parse(["svd", "--size", "bench"])
    assert args.out == cli.REPO_ROOT / ".cache" / "models" / "svd-bench" and not args.reference
    assert cli.parse(["audioldm2", "--size", "bench"]).out.name == "audioldm2-bench"
    with pytest.raises(ExportError, match="--out is required"):
        cli.parse(["svd", "--tiny"])
