"""What `python -m models.export svd ...` does, behind the family interface cli.py calls (see
audioldm2/family.py): SIZES, DTYPES, check_args, load_pipeline, export_pipeline, after_export."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ExportError

SIZES = ("tiny", "bench")
DTYPES = ("fp32", "fp16")


def check_args(args: argparse.Namespace) -> None:
    """Reject the options that mean nothing for SVD: its graphs take any frame count and size."""
    if args.frames or args.height or args.width:
        raise ExportError("--frames/--height/--width: svd graphs take any frame count and size; give them to parastep gen")


def load_pipeline(args: argparse.Namespace, log=print):
    """The float32 pipeline to export, with the manifest's `source` and `defaults` entries."""
    from . import checkpoint, quiet_clip_processor_fallback

    if args.source is not None:
        log(f"loading {args.source}")
        pipe = checkpoint.load(args.source)
        from . import export

        return pipe, {"from": args.source, "tiny": False, "size": None, "seed": None}, export.real_defaults(pipe)
    quiet_clip_processor_fallback()
    from . import configs

    size = configs.SIZES[args.size]
    log(f"building random {size.name} Stable Video Diffusion (seed {args.seed})")
    pipe = configs.build_pipeline(size, args.seed)
    source = {"from": None, "tiny": size.name == "tiny", "size": size.name, "seed": args.seed}
    return pipe, source, dict(size.defaults)


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
    log(
        f"unet batch 2, 1 thread: median {timing['medianMs']} ms (min {timing['minMs']}, p90 {timing['p90Ms']}), "
        f"thread CPU time median {timing['cpuMedianMs']} ms"
    )
