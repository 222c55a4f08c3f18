"""What the command line calls for `audioldm2`: load or build the pipeline, export it, time its UNet."""

from __future__ import annotations

import argparse
from pathlib import Path


def load(args: argparse.Namespace, log=print):
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


def export(pipe, args: argparse.Namespace, source: dict, defaults: dict, log=print) -> dict:
    """Write `args.out` for a loaded pipeline, with the options in `args`."""
    from . import export

    return export.export(
        pipe, args.out, source=source, defaults=defaults, dtype=args.dtype, with_reference=args.reference, log=log
    )


def bench(model_dir: Path) -> dict:
    """The UNet latency record written to `unet_latency.json` by `--size bench`."""
    from . import bench

    return bench.unet_latency(model_dir)
