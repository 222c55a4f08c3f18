"""Export options: fp16 graphs, and external data for graphs over protobuf's 2 GiB limit."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from models.export import cli
from models.export.audioldm2 import components, configs
from models.export.errors import ExportError
from models.export.onnx_io import describe, export_component

from .helpers import rel_error, session


def test_fp16_export(tmp_path, tiny):
    out = tmp_path / "tiny-fp16"
    args = cli.parse(["audioldm2", "--tiny", "--no-reference", "--dtype", "fp16", "--out", str(out)])
    manifest = cli.run(args, log=lambda *_: None)
    assert manifest["dtype"] == "fp16"
    assert json.loads((out / "manifest.json").read_text("utf-8")) == manifest
    for entry in manifest["components"].values():
        for spec in entry["inputs"] + entry["outputs"]:
            assert spec["dtype"] in ("float16", "int64"), (entry["file"], spec)
        assert {"inputs": entry["inputs"], "outputs": entry["outputs"]} == describe(out / entry["file"])
    # fp16 UNet and vocoder against the fp32 PyTorch modules, with fp16-sized tolerance
    rng = np.random.default_rng(0)
    cfg = manifest["config"]
    sample = rng.standard_normal((2, cfg["latentChannels"], 25, cfg["melBins"] // cfg["vaeScaleFactor"])).astype(np.float32)
    gpt = rng.standard_normal((2, cfg["maxNewTokens"], cfg["languageModelDim"])).astype(np.float32)
    t5 = rng.standard_normal((2, 6, tiny.pipe.text_encoder_2.config.d_model)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0, 0], [1] * 6], dtype=np.int64)
    got = session(out / "unet.onnx").run(
        None,
        {
            "sample": sample.astype(np.float16),
            "timestep": np.array([801, 101], dtype=np.int64),
            "encoder_hidden_states": gpt.astype(np.float16),
            "encoder_hidden_states_1": t5.astype(np.float16),
            "encoder_attention_mask_1": mask,
        },
    )[0]
    assert got.dtype == np.float16
    with torch.no_grad():
        want = tiny.pipe.unet(
            torch.from_numpy(sample), torch.tensor([801, 101]), encoder_hidden_states=torch.from_numpy(gpt),
            encoder_hidden_states_1=torch.from_numpy(t5), encoder_attention_mask_1=torch.from_numpy(mask),
        ).sample.numpy()
    assert rel_error(got, want) < 2e-2


def test_external_data(tmp_path):
    """Above the threshold a graph is written as `<file>` + one `<file>.data`, loadable from its path."""
    pipe = configs.build_pipeline(configs.TINY, 0)
    unet = next(c for c in components.build(pipe) if c.name == "unet")
    path = export_component(unet, tmp_path, external_data_threshold=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet.onnx", "unet.onnx.data"]
    weight_bytes = sum(p.numel() * 4 for p in pipe.unet.parameters())
    assert (tmp_path / "unet.onnx.data").stat().st_size >= 0.9 * weight_bytes
    assert path.stat().st_size < 0.5 * weight_bytes
    got = session(path).run(None, {spec.name: x.numpy() for spec, x in zip(unet.inputs, unet.example)})[0]
    with torch.no_grad():
        want = unet.module(*unet.example).numpy()
    assert rel_error(got, want) <= 1e-4


def test_dtype_lists():
    """`--dtype`: one float type, or fp32,fp16; --from defaults to both, random sizes to fp32."""
    parse = lambda *a: cli.parse(["audioldm2", "--tiny", "--out", "x", *a])  # noqa: E731
    assert parse().dtypes == ["fp32"] and parse().dtype == "fp32"
    assert parse("--dtype", "fp16").dtypes == ["fp16"]
    both = parse("--dtype", "fp32,fp16")
    assert both.dtypes == ["fp32", "fp16"] and both.dtype == "fp32"
    for bad, message in (
        ("fp16,fp32", "give one float type, or fp32,fp16"),
        ("fp32,fp16,fp16", "give one float type, or fp32,fp16"),
        ("bf16", "--dtype bf16: not available for audioldm2"),
        ("fp32,", "--dtype : not available for audioldm2"),
    ):
        with pytest.raises(ExportError, match=re.escape(message)):
            parse("--dtype", bad)
