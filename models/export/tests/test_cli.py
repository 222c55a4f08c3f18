"""The command line end to end: a from-scratch `--tiny` export, a checkpoint directory, and bad input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from models.export.onnx_io import describe

from .helpers import COMMITTED, rel_error, run_cli, session


def _weights(path):
    model = onnx.load(str(path))
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}, [n.op_type for n in model.graph.node]


def _compare_reference(got_dir, want_dir, tol):
    """Same files, same ints, floats within `tol` relative error."""
    got_files = sorted(p.relative_to(got_dir) for p in got_dir.rglob("*") if p.is_file())
    want_files = sorted(p.relative_to(want_dir) for p in want_dir.rglob("*") if p.is_file())
    assert got_files == want_files
    for rel in want_files:
        if rel.suffix == ".npy":
            got, want = np.load(got_dir / rel), np.load(want_dir / rel)
            assert got.dtype == want.dtype and got.shape == want.shape, rel
            if want.dtype == np.int64:
                np.testing.assert_array_equal(got, want, err_msg=str(rel))
            else:
                assert rel_error(got, want) <= tol, rel
        else:
            assert json.loads((got_dir / rel).read_text("utf-8")) == json.loads((want_dir / rel).read_text("utf-8")), rel


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """`python -m models.export audioldm2 --tiny` into an empty folder, reference included."""
    out = tmp_path_factory.mktemp("scratch") / "audioldm2-tiny"
    result = run_cli("audioldm2", "--tiny", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_tiny_from_scratch_reproduces_committed_folder(scratch):
    """The committed fixture is exactly what the exporter makes now (same seed, same versions)."""
    assert json.loads((scratch / "manifest.json").read_text("utf-8")) == json.loads(
        (COMMITTED / "manifest.json").read_text("utf-8")
    )
    for tok in ("tokenizer", "tokenizer_2"):
        for name in ("tokenizer.json", "tokenizer_config.json"):
            assert (scratch / tok / name).read_bytes() == (COMMITTED / tok / name).read_bytes()
    for graph in sorted(COMMITTED.glob("*.onnx")):
        (got_w, got_ops), (want_w, want_ops) = _weights(scratch / graph.name), _weights(graph)
        assert got_ops == want_ops, graph.name
        assert got_w.keys() == want_w.keys(), graph.name
        for name, want in want_w.items():
            np.testing.assert_allclose(got_w[name], want, rtol=1e-6, atol=1e-7, err_msg=f"{graph.name}:{name}")
    # float results may differ in the last bits between CPUs; ints (token ids, timesteps) may not
    _compare_reference(scratch / "reference", COMMITTED / "reference", tol=1e-4)


def test_committed_folder_is_small():
    size = sum(p.stat().st_size for p in COMMITTED.rglob("*") if p.is_file())
    assert size < 15 * 1024 * 1024, f"models/audioldm2-tiny is {size / 2**20:.1f} MiB"


def _hub_like_checkpoint(pipe, root):
    """Save `pipe` the way cvssp/audioldm2 is stored on the Hub: a GPT2Model language model and a
    CLAP config that says float64."""
    pipe.save_pretrained(root)
    pipe.language_model.transformer.save_pretrained(root / "language_model")
    index = json.loads((root / "model_index.json").read_text("utf-8"))
    index["language_model"] = ["transformers", "GPT2Model"]
    (root / "model_index.json").write_text(json.dumps(index), "utf-8")
    clap = json.loads((root / "text_encoder" / "config.json").read_text("utf-8"))
    clap.pop("dtype", None)
    clap["torch_dtype"] = "float64"
    (root / "text_encoder" / "config.json").write_text(json.dumps(clap), "utf-8")


def test_checkpoint_directory(tmp_path):
    """--from <dir>: a Hub-style checkpoint exports, and diffusers' pipeline on it reproduces the
    committed reference (same weights), which needs GPT2LMHeadModel and float32 loading."""
    from transformers import ClapModel, GPT2Model

    from models.export.audioldm2 import configs

    ckpt = tmp_path / "ckpt"
    _hub_like_checkpoint(configs.build_pipeline(configs.TINY, 0), ckpt)
    # the two hazards the loader has to handle are really present in this checkpoint
    assert ClapModel.from_pretrained(ckpt / "text_encoder").dtype == torch.float64
    assert not hasattr(GPT2Model, "_update_model_kwargs_for_generation")

    out = tmp_path / "from-dir"
    result = run_cli("audioldm2", "--from", str(ckpt), "--out", str(out), "--reference")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert manifest["source"]["from"] == str(ckpt) and manifest["dtype"] == "fp32"
    # --from writes the fp16 variant by default: every graph in fp16 under fp16/, its reference too
    variant = manifest["variants"]["fp16"]["components"]
    assert sorted(variant) == sorted(manifest["components"])
    for name, entry in variant.items():
        assert entry["file"] == "fp16/" + manifest["components"][name]["file"]
        assert {"inputs": entry["inputs"], "outputs": entry["outputs"]} == describe(out / entry["file"])
        assert all(io["dtype"] in ("float16", "int64") for io in entry["inputs"] + entry["outputs"]), entry
    assert (out / "fp16" / "reference" / "case1" / "latents_final.npy").is_file()
    assert manifest["defaults"]["steps"] == 200 and manifest["defaults"]["guidance"] == 3.5
    committed = json.loads((COMMITTED / "manifest.json").read_text("utf-8"))
    assert manifest["components"] == committed["components"]
    _compare_reference(out / "reference", COMMITTED / "reference", tol=1e-4)
    ids = np.load(COMMITTED / "reference" / "case1" / "clap_input_ids.npy")
    mask = np.load(COMMITTED / "reference" / "case1" / "clap_attention_mask.npy")
    got = session(out / "clap_text.onnx").run(None, {"input_ids": ids, "attention_mask": mask})[0]
    assert got.dtype == np.float32
    assert rel_error(got, np.load(COMMITTED / "reference" / "case1" / "clap_text_embeds.npy")) <= 1e-5


def _assert_clean_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr)
    err = result.stderr.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_unknown_family(tmp_path):
    _assert_clean_error(run_cli("stablediffusion9", "--tiny", "--out", str(tmp_path / "x")), "unknown model family", "stablediffusion9", "audioldm2")
    assert not (tmp_path / "x").exists()


def test_unreachable_hub_id(tmp_path):
    result = run_cli("audioldm2", "--from", "parastep-tests/no-such-model", "--out", str(tmp_path / "x"))
    _assert_clean_error(result, "parastep-tests/no-such-model", "HF_HUB_OFFLINE", "not a local directory")


def test_config_missing_field(tmp_path):
    from models.export.audioldm2 import configs

    ckpt = tmp_path / "ckpt"
    configs.build_pipeline(configs.TINY, 0).save_pretrained(ckpt)
    config_file = ckpt / "language_model" / "config.json"
    config = json.loads(config_file.read_text("utf-8"))
    del config["max_new_tokens"]
    config_file.write_text(json.dumps(config), "utf-8")
    result = run_cli("audioldm2", "--from", str(ckpt), "--out", str(tmp_path / "x"))
    _assert_clean_error(result, "'max_new_tokens'", str(config_file))
    assert not (tmp_path / "x").exists()


def test_refuses_to_replace_other_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model", "utf-8")
    _assert_clean_error(run_cli("audioldm2", "--tiny", "--out", str(tmp_path)), "manifest.json")
    assert (tmp_path / "notes.txt").exists()


def test_checkpoint_checks_name_the_problem(tmp_path):
    """The other checkpoint problems: a missing file, another pipeline class (checked in-process)."""
    from models.export.audioldm2 import checkpoint, configs
    from models.export.errors import ExportError

    ckpt = tmp_path / "ckpt"
    configs.build_pipeline(configs.TINY, 0).save_pretrained(ckpt)
    checkpoint.check_configs(ckpt)  # complete: no error
    (ckpt / "vae" / "config.json").unlink()
    with pytest.raises(ExportError, match=r"missing file .*vae/config\.json"):
        checkpoint.check_configs(ckpt)
    index = json.loads((ckpt / "model_index.json").read_text("utf-8"))
    index["_class_name"] = "StableDiffusionPipeline"
    (ckpt / "model_index.json").write_text(json.dumps(index), "utf-8")
    with pytest.raises(ExportError, match="StableDiffusionPipeline, not an AudioLDM2Pipeline"):
        checkpoint.check_configs(ckpt)
