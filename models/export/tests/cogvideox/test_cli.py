"""The command line for cogvideox: the committed folders are what it makes, a checkpoint directory, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.export import cli
from models.export.cogvideox import checkpoint, components, configs
from models.export.errors import ExportError

from ..helpers import rel_error, run_cli, session
from ..test_cli import _weights
from .helpers import TINY, TINY_5B, manifest


def _compare_reference(got_dir, want_dir, tol):
    """Same files, same integers (token ids, timesteps, uint8 video), floats within `tol` relative error."""
    got_files = sorted(p.relative_to(got_dir) for p in got_dir.rglob("*") if p.is_file())
    want_files = sorted(p.relative_to(want_dir) for p in want_dir.rglob("*") if p.is_file())
    assert got_files == want_files
    for rel in want_files:
        if rel.suffix == ".npy":
            got, want = np.load(got_dir / rel), np.load(want_dir / rel)
            assert got.dtype == want.dtype and got.shape == want.shape, rel
            if want.dtype.kind != "f" or not want.any():  # a table of zeros (sin at position 0) must stay zeros
                np.testing.assert_array_equal(got, want, err_msg=str(rel))
            else:
                assert rel_error(got, want) <= tol, rel
        else:
            assert json.loads((got_dir / rel).read_text("utf-8")) == json.loads((want_dir / rel).read_text("utf-8")), rel


@pytest.mark.parametrize("size", ["tiny", "tiny-5b"])
def test_tiny_reproduces_committed_folder(size, cog_tiny, cog_tiny_5b):
    """The committed folders are exactly what the exporter makes now (same seed, same versions)."""
    fresh = {"tiny": cog_tiny, "tiny-5b": cog_tiny_5b}[size].dir
    committed = {"tiny": TINY, "tiny-5b": TINY_5B}[size]
    assert manifest(fresh) == manifest(committed)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (fresh / "tokenizer" / name).read_bytes() == (committed / "tokenizer" / name).read_bytes()
    for graph in sorted(committed.glob("*.onnx")):
        (got_w, got_ops), (want_w, want_ops) = _weights(fresh / graph.name), _weights(graph)
        assert got_ops == want_ops, graph.name
        assert got_w.keys() == want_w.keys(), graph.name
        for name, want in want_w.items():
            np.testing.assert_allclose(got_w[name], want, rtol=1e-6, atol=1e-7, err_msg=f"{graph.name}:{name}")
    # float results may differ in the last bits between CPUs; ints (token ids, timesteps, video) may not
    _compare_reference(fresh / "reference", committed / "reference", tol=1e-4)


def test_committed_folders_are_small():
    for folder, limit in ((TINY, 5), (TINY_5B, 2)):
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        assert size < limit * 1e6, f"{folder.name} is {size / 1e6:.2f} MB"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """The tiny-5b pipeline saved as a diffusers checkpoint directory (what THUDM's repos hold)."""
    root = tmp_path_factory.mktemp("ckpt") / "cogvideox-5b-like"
    configs.build_pipeline(configs.TINY_5B, 0).save_pretrained(root)
    return root


def test_checkpoint_directory(ckpt, tmp_path, cog_tiny_5b):
    """--from <dir> with an extra shape: the graphs are byte for byte those of a fresh tiny-5b export, the
    new shape's VAE graph (F' = 1: one frame) matches diffusers, and the reference run is diffusers' on
    the same weights."""
    out = tmp_path / "from-dir"
    result = run_cli("cogvideox", "--from", str(ckpt), "--out", str(out), "--reference", "--frames", "1", "--height", "16", "--width", "32")
    assert result.returncode == 0, result.stderr
    m = manifest(out)
    committed = manifest(TINY_5B)
    assert m["source"] == {"from": str(ckpt), "tiny": False, "size": None, "seed": None}
    assert m["defaults"] == {"steps": 50, "guidance": 6.0, "warmup": 13, "fps": 8, "frames": 9, "height": 32, "width": 48}
    assert m["config"] == committed["config"] and m["scheduler"] == committed["scheduler"]
    assert [s["vaeDecoder"] for s in m["shapes"]] == ["vae_decoder_f3_h4_w6", "vae_decoder_f1_h2_w4"]
    assert m["shapes"][1]["frames"] == 1 and m["shapes"][1]["transformer"] == "transformer"
    for name, entry in committed["components"].items():
        assert m["components"][name] == entry
        # determinism: the same weights, saved and loaded, export to the same bytes as the fresh tiny-5b
        assert (out / entry["file"]).read_bytes() == (cog_tiny_5b.dir / entry["file"]).read_bytes(), name
    z = np.random.default_rng(0).standard_normal((1, 4, 1, 2, 4), dtype=np.float32)
    got = session(out / "vae_decoder_f1_h2_w4.onnx").run(None, {"z": z})[0]
    with torch.no_grad():
        want = cog_tiny_5b.pipe.vae.decode(torch.from_numpy(z)).sample.numpy()
    assert got.shape == want.shape == (1, 3, 1, 16, 32) and rel_error(got, want) <= 1e-4
    # the default-shape reference case starts like the committed case1 (same prompt, seed and weights)
    info = json.loads((out / "reference" / "case1" / "case.json").read_text("utf-8"))
    assert info["steps"] == 3
    for name in ("input_ids", "prompt_embeds", "latents_initial", "freqs_cos", "transformer_out_step0"):
        got, want = np.load(out / "reference" / "case1" / f"{name}.npy"), np.load(TINY_5B / "reference" / "case1" / f"{name}.npy")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)


def _error_line(capsys, *argv) -> str:
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_bad_options(capsys, tmp_path):
    out = str(tmp_path / "x")
    assert "--size huge: unknown for cogvideox (known: tiny, tiny-5b, bench)" in _error_line(capsys, "cogvideox", "--size", "huge", "--out", out)
    assert "not a comma-separated list" in _error_line(capsys, "cogvideox", "--tiny", "--frames", "nine", "--out", out)
    assert "--height 40: must be a positive multiple of 16" in _error_line(capsys, "cogvideox", "--tiny", "--height", "40", "--out", out)
    assert "--frames 0: must be positive" in _error_line(capsys, "cogvideox", "--tiny", "--frames", "0", "--out", out)
    assert "--dtype bf16: not available for audioldm2" in _error_line(capsys, "audioldm2", "--tiny", "--dtype", "bf16", "--out", out)
    assert "video families" in _error_line(capsys, "audioldm2", "--tiny", "--frames", "9", "--out", out)
    assert not (tmp_path / "x").exists()


def _edit(root, rel, **changes):
    file = root / rel
    data = json.loads(file.read_text("utf-8"))
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    file.write_text(json.dumps(data), "utf-8")


@pytest.mark.parametrize(
    "rel,changes,message",
    [
        ("model_index.json", {"_class_name": "CogVideoXImageToVideoPipeline"}, "CogVideoXImageToVideoPipeline, not a CogVideoXPipeline"),
        ("vae/config.json", {"scaling_factor": None}, "field 'scaling_factor' is missing from"),
        ("scheduler/scheduler_config.json", {"_class_name": "CogVideoXDPMScheduler"}, "scheduler CogVideoXDPMScheduler is not supported"),
        ("transformer/config.json", {"patch_size_t": 2}, "CogVideoX 1.5 checkpoints are not supported"),
    ],
)
def test_checkpoint_checks_name_the_problem(ckpt, tmp_path, rel, changes, message):
    import shutil

    root = tmp_path / "ckpt"
    shutil.copytree(ckpt, root)
    checkpoint.check_configs(root)  # complete: no error
    _edit(root, rel, **changes)
    with pytest.raises(ExportError, match=message):
        checkpoint.check_configs(root)


def test_shapes_options_make_every_combination(ckpt):
    """--frames/--height/--width: every combination; shapes with one latent shape are exported once."""
    from models.export.cogvideox import export, family

    pipe = configs.build_pipeline(configs.TINY, 0)
    args = cli.parse(["cogvideox", "--tiny", "--out", "x", "--frames", "5,8,9", "--width", "48,64"])
    shapes = export._shapes(pipe, family.extra_shapes(pipe, args), ())
    assert [s.key for s in shapes] == ["f3_h4_w6", "f2_h4_w6", "f2_h4_w8", "f3_h4_w8"]
    assert [s.frames for s in shapes] == [9, 8, 8, 9]  # frames 5 and 8 both give F' = 2, decoded to 8 frames
    assert components.model_shape(pipe, 45, 480, 720).canonical().frames == 48  # ParaStep's CogVideoX setting
