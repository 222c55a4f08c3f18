"""Re-exporting with the same seed gives the same folder; another seed gives other weights."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from models.export import cli

from .helpers import session


def _export(out, seed):
    args = cli.parse(["audioldm2", "--tiny", "--no-reference", "--seed", str(seed), "--out", str(out)])
    return cli.run(args, log=lambda *_: None)


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _feed(entry, rng):
    sizes = {"batch": 2, "sequence": 6, "positions": 11, "frames": 9, "mel_frames": 36}
    feed = {}
    for spec in entry["inputs"]:
        shape = [sizes[d] if isinstance(d, str) else d for d in spec["dims"]]
        if spec["dtype"] == "int64":
            feed[spec["name"]] = rng.integers(1, 30, shape) if spec["name"] in ("input_ids", "timestep") else np.ones(shape, np.int64)
        else:
            feed[spec["name"]] = rng.standard_normal(shape).astype(np.float32)
    return feed


def test_same_seed_same_folder(tiny, tmp_path):
    again = tmp_path / tiny.dir.name  # same folder name: the manifest records it
    manifest = _export(again, seed=0)
    assert manifest == tiny.manifest
    first, second = _files(tiny.dir), _files(again)
    assert first.keys() == second.keys()
    for rel in first:
        assert first[rel] == second[rel], f"{rel} differs between two exports with the same seed"
    for name, entry in manifest["components"].items():
        feed = _feed(entry, np.random.default_rng(0))
        out1 = session(tiny.dir / entry["file"]).run(None, feed)
        out2 = session(again / entry["file"]).run(None, feed)
        for a, b in zip(out1, out2):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_other_seed_other_weights(tiny, tmp_path):
    other = tmp_path / tiny.dir.name
    _export(other, seed=1)
    for entry in tiny.manifest["components"].values():
        w0 = [numpy_helper.to_array(i) for i in onnx.load(str(tiny.dir / entry["file"])).graph.initializer]
        w1 = [numpy_helper.to_array(i) for i in onnx.load(str(other / entry["file"])).graph.initializer]
        assert len(w0) == len(w1)
        # at least one weight tensor changes in every component (LayerNorm ones/zeros do not)
        assert any(a.shape == b.shape and not np.array_equal(a, b) for a, b in zip(w0, w1)), entry["file"]
