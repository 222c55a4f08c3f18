"""What `python -m models.export cogvideox ...` does, behind the family interface cli.py calls."""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from ..errors import ExportError

SIZES = ("tiny", "tiny-5b", "bench")
# bf16: the transformer only (text encoder and VAE stay float32); ONNX Runtime's CPU provider cannot run it.
DTYPES = ("fp32", "fp16", "bf16")


def check_args(args: argparse.Namespace) -> None:
    for name in ("frames", "height", "width"):
        for value in getattr(args, name) or ():
            if value < 1:
                raise ExportError(f"--{name} {value}: must be positive")


def load_pipeline(args: argparse.Namespace, log=print):
    """The float32 pipeline to export, with the manifest's `source` and `defaults` entries."""
    from . import checkpoint, configs, export

    if args.source is not None:
        log(f"loading {args.source}")
        pipe = checkpoint.load(args.source)
        return pipe, {"from": args.source, "tiny": False, "size": None, "seed": None}, dict(export.REAL_DEFAULTS)
    size = configs.SIZES[args.size]
    log(f"building random {size.name} CogVideoX (seed {args.seed})")
    pipe = configs.build_pipeline(size, args.seed)
    source = {"from": None, "tiny": size.name.startswith("tiny"), "size": size.name, "seed": args.seed}
    return pipe, source, dict(size.defaults)


def extra_shapes(pipe, args: argparse.Namespace) -> list:
    """Every (frames, height, width) combination of --frames/--height/--width, unset ones at the model's default."""
    from . import components

    if not (args.frames or args.height or args.width):
        return []
    default = components.default_shape(pipe)
    combos = itertools.product(args.frames or [default.frames], args.height or [default.height], args.width or [default.width])
    shapes = [components.model_shape(pipe, f, h, w) for f, h, w in combos]
    for shape in shapes:
        shape.check()
    return shapes


def export_pipeline(pipe, args: argparse.Namespace, source: dict, defaults: dict, log=print) -> dict:
    """Write `args.out` for a loaded pipeline, with the options in `args`."""
    from . import configs, export, reference

    cases = reference.cases_for(source["size"]) if args.reference else ()
    # A checkpoint's VAE keeps diffusers' tile sizes (half its sample size); a random size sets its own or none.
    tiles = source["from"] is not None or configs.SIZES[source["size"]].vae_tiling is not None
    return export.export(
        pipe,
        args.out,
        source=source,
        defaults=defaults,
        dtype=args.dtype,
        extra_shapes=extra_shapes(pipe, args),
        cases=cases,
        tiles=tiles,
        log=log,
    )


def after_export(args: argparse.Namespace, log=print) -> None:
    """`--size bench`: time the transformer and write transformer_latency.json beside the graphs."""
    if args.size != "bench":
        return
    from . import bench

    timing = bench.transformer_latency(args.out)
    (Path(args.out) / "transformer_latency.json").write_text(json.dumps(timing, indent=2) + "\n", encoding="utf-8")
    log(f"transformer batch 2, 1 thread: median {timing['medianMs']} ms (min {timing['minMs']}, p90 {timing['p90Ms']})")
