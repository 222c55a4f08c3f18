"""SVD export options: fp16 graphs, external data, and the bench latency record."""

from __future__ import annotations

import json

import numpy as np
import torch

from models.export import cli
from models.export.onnx_io import describe, export_component
from models.export.svd import bench, components

from ..helpers import rel_error
from .helpers import session


def test_fp16_export(tmp_path, svd_tiny):
    """Float inputs and outputs become float16, except the VAE encoder's: the tiny VAE (like the real
    ones) sets force_upcast, and diffusers encodes in float32 then. The pipeline stays float32."""
    out = tmp_path / "svd-tiny-fp16"
    args = cli.parse(["svd", "--tiny", "--no-reference", "--dtype", "fp16", "--out", str(out)])
    pipe, source, defaults = cli.load_pipeline(args, log=lambda *_: None)
    manifest = cli.export_pipeline(pipe, args, source, defaults, log=lambda *_: None)
    assert all(m.dtype == torch.float32 for m in (pipe.unet, pipe.vae, pipe.image_encoder))
    assert manifest["dtype"] == "fp16" and pipe.vae.config.force_upcast
    assert json.loads((out / "manifest.json").read_text("utf-8")) == manifest
    for name, entry in manifest["components"].items():
        want = "float32" if name == "vae_encoder" else "float16"
        assert {t["dtype"] for t in entry["inputs"] + entry["outputs"]} == {want}, name
        assert {"inputs": entry["inputs"], "outputs": entry["outputs"]} == describe(out / entry["file"])
    # against the float32 PyTorch modules (same seed), with fp16-sized tolerances
    ref = svd_tiny.pipe
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((2, 3, 8, 16, 24)).astype(np.float32)
    ehs = rng.standard_normal((2, 1, 32)).astype(np.float32)
    time_ids = np.array([[6, 127, 0.02], [6, 127, 0.02]], dtype=np.float32)
    t = np.array([1.2, -0.7], dtype=np.float32)
    got = session(out / "unet.onnx").run(
        None,
        {
            "sample": sample.astype(np.float16),
            "timestep": t.astype(np.float16),
            "encoder_hidden_states": ehs.astype(np.float16),
            "added_time_ids": time_ids.astype(np.float16),
        },
    )[0]
    assert got.dtype == np.float16
    with torch.no_grad():
        want = ref.unet(*(torch.from_numpy(x) for x in (sample, t, ehs, time_ids))).sample.numpy()
    assert rel_error(got, want) < 2e-2
    image = rng.uniform(-1, 1, (1, 3, 32, 48)).astype(np.float32)
    got = session(out / "vae_encoder.onnx").run(None, {"image": image})[0]
    with torch.no_grad():
        assert rel_error(got, ref.vae.encode(torch.from_numpy(image)).latent_dist.mode().numpy()) <= 1e-4
    latents = rng.standard_normal((1, 3, 4, 16, 24)).astype(np.float32)
    got = session(out / "vae_decoder.onnx").run(None, {"latents": latents.astype(np.float16)})[0]
    with torch.no_grad():
        want = ref.vae.decode(torch.from_numpy(latents[0]), num_frames=3).sample.numpy()
    assert got.dtype == np.float16 and rel_error(got, want) < 2e-2


def test_external_data(tmp_path, svd_tiny):
    """Above the threshold a graph is written as `<file>` + one `<file>.data` (real CLIP-H fp32 is 2.5 GB)."""
    comp = next(c for c in components.build(svd_tiny.pipe) if c.name == "image_encoder")
    path = export_component(comp, tmp_path, external_data_threshold=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image_encoder.onnx", "image_encoder.onnx.data"]
    weight_bytes = sum(p.numel() * 4 for p in svd_tiny.pipe.image_encoder.parameters())
    assert (tmp_path / "image_encoder.onnx.data").stat().st_size >= 0.9 * weight_bytes
    assert path.stat().st_size < 0.5 * weight_bytes
    got = session(path).run(None, {"pixel_values": comp.example[0].numpy()})[0]
    with torch.no_grad():
        want = svd_tiny.pipe.image_encoder(comp.example[0]).image_embeds.numpy()
    assert rel_error(got, want) <= 1e-5


def test_bench_record(svd_tiny):
    """The latency record `--size bench` writes (here on the tiny model, a few runs: no timing claim)."""
    record = bench.unet_latency(svd_tiny.dir, repeats=3, warmup=1)
    assert record["shape"]["sample"] == [2, 3, 8, 16, 24]  # batch 2 at the manifest's default size
    assert 0 < record["minMs"] <= record["medianMs"] <= record["p90Ms"] and record["cpuMedianMs"] > 0
    assert record["repeats"] == 3 and "intra_op_num_threads=1" in record["what"]
