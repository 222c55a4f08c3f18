"""Command line: `python -m models.export <family> (--from SRC | --tiny | --size NAME) [--out DIR] ...`.

Each family is a package with a `family` module exposing SIZES, DTYPES, check_args, load_pipeline,
export_pipeline and after_export; this file parses the common options and dispatches by name.

Bad input (unknown family, unreachable source, incomplete checkpoint config, bad flags) ends with
one `error: ...` line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

from .errors import ExportError

FAMILIES = ("audioldm2", "svd", "cogvideox")
REPO_ROOT = Path(__file__).resolve().parents[2]


def bench_out(family_name: str) -> Path:
    return REPO_ROOT / ".cache" / "models" / f"{family_name}-bench"


def family(name: str):
    """The `family` module of the package `name`."""
    return importlib.import_module(f".{name}.family", __package__)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage block too; one line is enough
        raise ExportError(f"{message} (see --help)")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers") from None
    return values


def parse(argv: list[str]) -> argparse.Namespace:
    p = _Parser(prog="python -m models.export", description="Export a diffusers pipeline to a parastep model folder.")
    p.add_argument("family", help="model family: " + ", ".join(FAMILIES))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from", dest="source", metavar="SRC", help="hub id (from the local HF cache) or checkpoint directory")
    src.add_argument("--tiny", action="store_const", const="tiny", dest="size", help="same as --size tiny")
    src.add_argument(
        "--size",
        help="random weights from built-in configs (audioldm2: tiny, bench, base, large, music and their -tiny copies; "
        "svd: tiny, bench; cogvideox: tiny, tiny-5b, bench)",
    )
    p.add_argument("--out", type=Path, help="model folder to write (default for --size bench: .cache/models/<family>-bench)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="float type (bf16: cogvideox only)")
    p.add_argument("--seed", type=int, default=0, help="weight seed for --tiny / --size (default 0)")
    p.add_argument(
        "--reference",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write reference/ from diffusers' pipeline (default: on for tiny sizes, off otherwise)",
    )
    video = p.add_argument_group("video families (every combination is exported besides the defaults)")
    video.add_argument("--frames", type=_int_list, metavar="N[,N...]", help="frame counts (default: the model's)")
    video.add_argument("--height", type=_int_list, metavar="H[,H...]", help="heights in pixels (default: the model's)")
    video.add_argument("--width", type=_int_list, metavar="W[,W...]", help="widths in pixels (default: the model's)")
    args = p.parse_args(argv)
    if args.family not in FAMILIES:
        raise ExportError(f"unknown model family '{args.family}' (known: {', '.join(FAMILIES)})")
    fam = family(args.family)
    if args.size is not None and args.size not in fam.SIZES:
        raise ExportError(f"--size {args.size}: unknown for {args.family} (known: {', '.join(fam.SIZES)})")
    if args.dtype not in fam.DTYPES:
        raise ExportError(f"--dtype {args.dtype}: not available for {args.family} (available: {', '.join(fam.DTYPES)})")
    fam.check_args(args)
    if args.out is None:
        if args.size != "bench":
            raise ExportError("--out is required (only --size bench has a default)")
        args.out = bench_out(args.family)
    if args.reference is None:
        args.reference = args.size is not None and args.size.startswith("tiny")
    return args


def load_pipeline(args: argparse.Namespace, log=print):
    """The float32 pipeline to export, with the manifest's `source` and `defaults` entries."""
    return family(args.family).load_pipeline(args, log)


def export_pipeline(pipe, args: argparse.Namespace, source: dict, defaults: dict, log=print) -> dict:
    """Write `args.out` for a loaded pipeline, with the options in `args`."""
    return family(args.family).export_pipeline(pipe, args, source, defaults, log)


def run(args: argparse.Namespace, log=print) -> dict:
    """Load or build the pipeline `args` describe, export it (then the family's bench step), return the manifest."""
    from .folders import check_out

    check_out(args.out)  # before a load that can take minutes; the export checks again
    start = time.perf_counter()
    pipe, source, defaults = load_pipeline(args, log)
    manifest = export_pipeline(pipe, args, source, defaults, log)
    log(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    family(args.family).after_export(args, log)
    return manifest


def main(argv: list[str] | None = None) -> int:
    # No Hub access exists here; this turns any accidental download into an immediate error.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        run(parse(sys.argv[1:] if argv is None else argv))
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
