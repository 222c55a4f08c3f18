"""Writing a CogVideoX model folder: ONNX components, the T5 tokenizer, manifest.json, optional reference/."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from ..folders import check_out, versions
from ..onnx_io import EXTERNAL_DATA_THRESHOLD, describe, export_component, replace_dir
from . import components, reference
from .wrappers import float32_patch_conv

FAMILY = "cogvideox"
# diffusers' defaults for CogVideoXPipeline.__call__ (steps 50, guidance 6) and the fps of its example's
# export_to_video; warmup is ParaStep's (13 for CogVideoX-2b in the authors' run script).
REAL_DEFAULTS = {"steps": 50, "guidance": 6.0, "warmup": 13, "fps": 8}
TOKENIZER_DIR = "tokenizer"


def export(
    pipe,
    out: Path,
    *,
    source: dict,
    defaults: dict,
    dtype: str = "fp32",
    extra_shapes: list[components.Shape] = (),
    cases: tuple[reference.Case, ...] = (),
    tiles: bool = False,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
    log=print,
) -> dict:
    """Write the folder `out` for `pipe` (a float32 CogVideoXPipeline) and return its manifest.

    Shapes exported: the default video, every shape a decoding reference case uses (a latent-only case
    needs only the rotary transformer, which takes any shape), and `extra_shapes`. With `tiles`, the
    tile decoders for diffusers' tiled decode with the VAE's tile sizes and overlaps (manifest
    `vaeTiling`; a case with `tiled` needs it). The folder is built next to `out` and moved into place
    at the end. The reference runs before any dtype conversion.
    """
    out = Path(out)
    check_out(out)
    shapes = _shapes(pipe, extra_shapes, cases)
    if any(case.tiled for case in cases) and not tiles:
        raise ValueError("a tiled reference case needs the tile decoders (tiles=True)")
    out.parent.mkdir(parents=True, exist_ok=True)
    timings = {}
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        build = Path(tmp) / out.name
        build.mkdir()
        tokenizers = {"t5": save_tokenizer(pipe, build)}
        if cases:
            start = time.perf_counter()
            infos = reference.write(pipe, build / "reference", cases)
            timings["reference"] = time.perf_counter() - start
            for info in infos:
                log(f"  reference {info['name']}: {info['frames']} frames {info['height']}x{info['width']}, {info['steps']} steps")
        _convert(pipe, dtype)
        described = {}
        with float32_patch_conv(pipe.transformer, dtype == "bf16"):
            for comp in components.build(pipe, shapes, dtype, tiles):
                start = time.perf_counter()
                path = export_component(comp, build, external_data_threshold)
                timings[comp.name] = time.perf_counter() - start
                described[comp.name] = {"file": comp.file, **describe(path)}
                size = sum(p.stat().st_size for p in build.glob(comp.file + "*"))
                log(f"  {comp.file}: {size / 1e6:.2f} MB in {timings[comp.name]:.1f} s")
        default = components.default_shape(pipe)
        manifest = {
            "format": "parastep-model",
            "formatVersion": 1,
            "name": out.name,
            "family": FAMILY,
            "dtype": dtype,
            "source": source,
            "components": described,
            "shapes": [shape_entry(pipe, s, tiles) for s in shapes],
            **({"vaeTiling": components.vae_tiling(pipe.vae)} if tiles else {}),
            "scheduler": json.loads(pipe.scheduler.to_json_string()),
            "tokenizers": tokenizers,
            "config": config_numbers(pipe),
            "defaults": {**defaults, "frames": default.frames, "height": default.height, "width": default.width},
            "versions": versions(),
        }
        (build / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        replace_dir(build, out)
    log("  times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return manifest


def _shapes(pipe, extra: list[components.Shape], cases) -> list[components.Shape]:
    """Distinct latent shapes, default first; each in its canonical form (frames = frames decoded)."""
    wanted = [components.default_shape(pipe)]
    for case in cases:
        if case.decode:
            wanted.append(reference.case_shape(pipe, case))
        elif not components.uses_rope(pipe):
            raise ValueError(f"reference case {case.name}: a latent-only case needs the rotary transformer")
    wanted += list(extra)
    shapes, seen = [], set()
    for shape in wanted:
        shape.check()
        if shape.key not in seen:
            seen.add(shape.key)
            shapes.append(shape.canonical())
    return shapes


def _convert(pipe, dtype: str) -> None:
    """Cast the modules the way `components.build` documents: T5 stays float32; bf16 keeps the VAE in float32."""
    if dtype == "fp32":
        return
    from diffusers.utils import logging as diffusers_logging

    target = components.TORCH_DTYPES[dtype]
    # diffusers warns on every `.to(dtype)` of a model, even when (as here) no module must stay float32
    saved = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        pipe.transformer.to(target)
        if dtype == "fp16":
            pipe.vae.to(target)
    finally:
        diffusers_logging.set_verbosity(saved)


def shape_entry(pipe, shape: components.Shape, tiles: bool = False) -> dict:
    """One entry of the manifest's `shapes`: the video it makes and the graphs that make it."""
    entry = {
        "frames": shape.output_frames,
        "height": shape.height,
        "width": shape.width,
        "latentFrames": shape.latent_frames,
        "latentHeight": shape.latent_height,
        "latentWidth": shape.latent_width,
        "videoTokens": shape.video_tokens,
        "transformer": components.transformer_name(pipe, shape),
        "vaeDecoder": components.vae_decoder_name(shape),
    }
    if tiles:
        entry["vaeTileDecoder"] = components.vae_tile_decoder_name(shape.latent_frames)
    return entry


def save_tokenizer(pipe, build: Path) -> dict:
    """tokenizer.json + tokenizer_config.json, without the padding/truncation state of the last call."""
    tok = pipe.tokenizer
    tok.backend_tokenizer.no_truncation()
    tok.backend_tokenizer.no_padding()
    tok.save_pretrained(build / TOKENIZER_DIR)
    return {"dir": TOKENIZER_DIR, "modelMaxLength": int(tok.model_max_length), "padTokenId": int(tok.pad_token_id)}


def config_numbers(pipe) -> dict:
    """The numbers the runtime needs, named after the diffusers config fields they come from."""
    tr = pipe.transformer.config
    vae = pipe.vae.config
    return {
        "vaeScaleFactorSpatial": int(pipe.vae_scale_factor_spatial),
        "vaeScaleFactorTemporal": int(pipe.vae_scale_factor_temporal),
        "vaeScalingFactor": float(vae.scaling_factor),
        "latentChannels": int(tr.in_channels),
        "patchSize": int(tr.patch_size),
        "maxTextSeqLength": int(tr.max_text_seq_length),
        "textEmbedDim": int(tr.text_embed_dim),
        "useRotaryPositionalEmbeddings": int(bool(tr.use_rotary_positional_embeddings)),
        "attentionHeadDim": int(tr.attention_head_dim),
        "numAttentionHeads": int(tr.num_attention_heads),
        "sampleFrames": int(tr.sample_frames),
        "sampleHeight": int(tr.sample_height),
        "sampleWidth": int(tr.sample_width),
    }

