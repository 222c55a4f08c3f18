"""What `python -m models.export audioldm2 ...` does, behind the family interface cli.py calls.

Every family module exposes the same names: SIZES, DTYPES, check_args, load_pipeline,
export_pipeline and after_export.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ExportError

SIZES = ("tiny", "bench", "base", "large", "music", "base-tiny", "large-tiny", "music-tiny")
DTYPES = ("fp32", "fp16")


def check_args(args: argparse.Namespace) -> None:
    """Reject the options that mean nothing for AudioLDM2."""
    if args.frames or args.height or args.width:
        raise ExportError("--frames/--height/--width are for video families; audioldm2 takes any duration")


def load_pipeline(args: argparse.Namespace, log=print):
    """The float32 pipeline to export, with the manifest's `source` and `defaults` entries."""
    from . import checkpoint, configs, export

    if args.source is not None:
        log(f"loading {args.source}")
        pipe = checkpoint.load(args.source)
        return pipe, {"from": args.source, "tiny": False, "size": None, "seed": None}, dict(export.REAL_DEFAULTS)
    size = configs.SIZES[args.size]
    log(f"building random {size.name} AudioLDM2 (seed {args.seed})")
    pipe = configs.build_pipeline(size, args.seed)
    source = {"from": None, "tiny": size.name == "tiny", "size": size.name, "seed": args.seed}
    return pipe, source, {k: v for k, v in size.defaults.items() if k != "duration"}


def export_pipeline(pipe, args: argparse.Namespace, source: dict, defaults: dict, log=print) -> dict:
    """Write `args.out` for a loaded pipeline, with the options in `args`."""
    from . import export

    return export.export(
        pipe, args.out, source=source, defaults=defaults, dtype=args.dtype, with_reference=args.reference, log=log
    )


def after_export(args: argparse.Namespace, log=print) -> None:
    """`--size bench`: time the UNet and write unet_latency.json beside the graphs."""
    if args.size != "bench":
        return
    from . import bench

    timing = bench.unet_latency(args.out)
    (Path(args.out) / "unet_latency.json").write_text(json.dumps(timing, indent=2) + "\n", encoding="utf-8")
    log(f"unet batch 2, 1 thread: median {timing['medianMs']} ms (min {timing['minMs']}, p90 {timing['p90Ms']})")
