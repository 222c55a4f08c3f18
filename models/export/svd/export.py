"""Writing a Stable Video Diffusion model folder: ONNX components, manifest.json, optional reference/."""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from pathlib import Path

import torch

from ..folders import check_out, versions
from ..onnx_io import EXTERNAL_DATA_THRESHOLD, describe, export_component, replace_dir
from . import components, reference

FAMILY = "svd"
# Frames per vae_decoder call for real checkpoints. diffusers' own default decodes all frames at once
# (14 or 25: 20-35 GiB of fp16 activations at 576×1024); 8 is the diffusers docstring example's and
# the ParaStep authors' choice (~11 GiB). The chunk size changes the pixels (the temporal convolutions
# see zero padding at chunk borders), so it is part of what a run means and the manifest states it.
REAL_DECODE_CHUNK = 8


def real_defaults(pipe) -> dict:
    """`__call__`'s own defaults for a real checkpoint (frames from the UNet's config); warmup is ParaStep's."""
    return {
        "steps": 25,
        "warmup": 5,
        "frames": int(pipe.unet.config.num_frames),
        "width": 1024,
        "height": 576,
        "fps": 7,
        "motionBucketId": 127,
        "noiseAugStrength": 0.02,
        "minGuidance": 1.0,
        "maxGuidance": 3.0,
        "decodeChunk": REAL_DECODE_CHUNK,
    }


@contextlib.contextmanager
def torch_threads(count: int):
    """Run torch with `count` intra-op threads, restoring the previous count afterwards.

    The export runs single-threaded: its reference cases and trace inputs are small, and on a
    shared 2-core host two torch threads made the tiny reference run 8× slower than one (the
    threads wait on each other); one thread also fixes the reduction order.
    """
    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def export(
    pipe,
    out: Path,
    *,
    source: dict,
    defaults: dict,
    dtype: str = "fp32",
    with_reference: bool = False,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
    log=print,
) -> dict:
    """Write the folder `out` for `pipe` (a float32 StableVideoDiffusionPipeline) and return its manifest.

    The folder is built next to `out` and moved into place at the end, so a failed export leaves any
    previous folder untouched. The reference run needs float32 weights, so it runs before an fp16
    conversion. In fp16 the VAE encoder stays float32 when `vae.config.force_upcast` is set (the
    real checkpoints set it), because the pipeline upcasts the VAE for encoding in that case.
    """
    out = Path(out)
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    timings = {}
    with torch_threads(1), tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        build = Path(tmp) / out.name
        build.mkdir()
        if with_reference:
            start = time.perf_counter()
            infos = reference.write(pipe, build / "reference")
            timings["reference"] = time.perf_counter() - start
            for info in infos:
                log(f"  reference {info['name']}: {info['numFrames']} frames at {info['width']}×{info['height']}")
        torch_dtype = {"fp32": torch.float32, "fp16": torch.float16}[dtype]
        encoder_dtype = torch.float32 if pipe.vae.config.force_upcast else torch_dtype
        modules = {k: m for k, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
        described = {}
        try:
            for comp in components.build(pipe, torch_dtype, encoder_dtype):
                # one VAE module serves both VAE graphs, and the encoder may stay float32
                want = encoder_dtype if comp.name == "vae_encoder" else torch_dtype
                module = pipe.vae if comp.name.startswith("vae_") else modules[comp.name]
                if module.dtype != want:
                    module.to(want)
                start = time.perf_counter()
                path = export_component(comp, build, external_data_threshold)
                timings[comp.name] = time.perf_counter() - start
                described[comp.name] = {"file": comp.file, **describe(path)}
                size = sum(p.stat().st_size for p in build.glob(comp.file + "*"))
                log(f"  {comp.file}: {size / 1e6:.2f} MB in {timings[comp.name]:.1f} s")
        finally:
            for module in modules.values():  # the caller's pipeline stays float32
                if module.dtype != torch.float32:
                    module.to(torch.float32)
        manifest = {
            "format": "parastep-model",
            "formatVersion": 1,
            "name": out.name,
            "family": FAMILY,
            "dtype": dtype,
            "source": source,
            "components": described,
            "scheduler": json.loads(pipe.scheduler.to_json_string()),
            "config": config_numbers(pipe),
            "defaults": defaults,
            "versions": versions(),
        }
        (build / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        replace_dir(build, out)
    log("  times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return manifest


def config_numbers(pipe) -> dict:
    """The numbers the runtime needs, named after the diffusers/transformers config fields they come from."""
    clip = pipe.image_encoder.config
    return {
        "vaeScaleFactor": int(pipe.vae_scale_factor),
        "vaeScalingFactor": float(pipe.vae.config.scaling_factor),
        "latentChannels": int(pipe.vae.config.latent_channels),
        "unetInChannels": int(pipe.unet.config.in_channels),
        "unetNumFrames": int(pipe.unet.config.num_frames),
        "imageEmbedDim": int(clip.projection_dim),
        "clipImageSize": int(clip.image_size),
        "clipImageMean": [float(x) for x in pipe.feature_extractor.image_mean],
        "clipImageStd": [float(x) for x in pipe.feature_extractor.image_std],
    }
