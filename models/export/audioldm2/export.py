"""Writing an AudioLDM2 model folder: ONNX components, tokenizers, manifest.json, optional reference/."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..folders import check_out, versions
from ..onnx_io import EXTERNAL_DATA_THRESHOLD, describe, export_component, replace_dir
from . import components, reference, scoring

FAMILY = "audioldm2"
# diffusers' own defaults for AudioLDM2Pipeline.__call__ (steps, guidance); warmup is ParaStep's.
REAL_DEFAULTS = {"steps": 200, "guidance": 3.5, "warmup": 5}
TOKENIZER_DIRS = {"clap": "tokenizer", "t5": "tokenizer_2"}


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
    """Write the folder `out` for `pipe` (a float32 AudioLDM2Pipeline) and return its manifest.

    The folder is built next to `out` and moved into place at the end, so a failed export leaves any
    previous folder untouched. The reference is diffusers' pipeline in the exported dtype: for fp16
    it runs after the conversion, as `AudioLDM2Pipeline` in float16 (latents, guidance and the DDIM
    step in float16 too), which is what an fp16 folder is compared with.
    """
    out = Path(out)
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    timings = {}
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        build = Path(tmp) / out.name
        build.mkdir()
        tokenizers = save_tokenizers(pipe, build)
        torch_dtype = {"fp32": torch.float32, "fp16": torch.float16}[dtype]
        if torch_dtype != torch.float32:
            for module in pipe.components.values():
                if isinstance(module, torch.nn.Module):
                    module.to(torch_dtype)
        if with_reference:
            start = time.perf_counter()
            infos = reference.write(pipe, build / "reference")
            timings["reference"] = time.perf_counter() - start
            for info in infos:
                log(f"  reference {info['name']}: {info['latentFrames']} latent frames, {info['duration']} s")
        described = {}
        for comp in components.build(pipe, torch_dtype):
            start = time.perf_counter()
            path = export_component(comp, build, external_data_threshold)
            timings[comp.name] = time.perf_counter() - start
            described[comp.name] = {"file": comp.file, **describe(path)}
            size = sum(p.stat().st_size for p in build.glob(comp.file + "*"))
            log(f"  {comp.file}: {size / 1e6:.2f} MB in {timings[comp.name]:.1f} s")
        clap_features = scoring.write(pipe, build)
        manifest = {
            "format": "parastep-model",
            "formatVersion": 1,
            "name": out.name,
            "family": FAMILY,
            "dtype": dtype,
            "source": source,
            "components": described,
            "scheduler": json.loads(pipe.scheduler.to_json_string()),
            "tokenizers": tokenizers,
            "config": config_numbers(pipe),
            "clapFeatures": clap_features,
            "defaults": {**defaults, "duration": reference.default_duration(pipe)},
            "versions": versions(),
        }
        (build / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        replace_dir(build, out)
    log("  times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return manifest


def save_tokenizers(pipe, build: Path) -> dict:
    """Write tokenizer.json + tokenizer_config.json for both tokenizers; return the manifest entries.

    transformers leaves the padding/truncation of the last call set on the Rust tokenizer, and
    `save_pretrained` would write it into tokenizer.json; both are cleared so the files hold only the
    tokenization itself, and the manifest's limits say how to pad and truncate.
    """
    entries = {}
    for key, tok in (("clap", pipe.tokenizer), ("t5", pipe.tokenizer_2)):
        tok.backend_tokenizer.no_truncation()
        tok.backend_tokenizer.no_padding()
        tok.save_pretrained(build / TOKENIZER_DIRS[key])
        entries[key] = {
            "dir": TOKENIZER_DIRS[key],
            "modelMaxLength": int(tok.model_max_length),
            "padTokenId": int(tok.pad_token_id),
        }
    return entries


def config_numbers(pipe) -> dict:
    """The numbers the runtime needs, named after the diffusers/transformers config fields they come from."""
    vocoder = pipe.vocoder.config
    return {
        "sampleRate": int(vocoder.sampling_rate),
        "vaeScaleFactor": int(pipe.vae_scale_factor),
        "vaeScalingFactor": float(pipe.vae.config.scaling_factor),
        "latentChannels": int(pipe.unet.config.in_channels),
        "melBins": int(vocoder.model_in_dim),
        "vocoderUpsampleFactor": float(np.prod(vocoder.upsample_rates) / vocoder.sampling_rate),
        "unetSampleSize": int(pipe.unet.config.sample_size),
        "maxNewTokens": int(pipe.language_model.config.max_new_tokens),
        "languageModelDim": int(pipe.language_model.config.n_embd),
    }
