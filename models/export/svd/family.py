"""What the command line calls for `svd`: load or build the pipeline, export it, time its UNet."""

from __future__ import annotations

import argparse
from pathlib import Path


def load(args: argparse.Namespace, log=print):
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
