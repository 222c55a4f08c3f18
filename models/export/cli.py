"""Command line: `python -m models.export <family> (--from SRC | --tiny | --size bench) [--out DIR] ...`.

Bad input (unknown family, unreachable source, incomplete checkpoint config, bad flags) ends with
one `error: ...` line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

from .errors import ExportError

# Each family is a subpackage whose `family` module has `load(args, log)`, `export(pipe, args, source,
# defaults, log)` and `bench(model_dir)`; see audioldm2/family.py.
FAMILIES = ("audioldm2", "svd")
REPO_ROOT = Path(__file__).resolve().parents[2]


def bench_out(family: str) -> Path:
    """Where `--size bench` writes when `--out` is absent (git-ignored)."""
    return REPO_ROOT / ".cache" / "models" / f"{family}-bench"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage block too; one line is enough
        raise ExportError(f"{message} (see --help)")


def parse(argv: list[str]) -> argparse.Namespace:
    p = _Parser(prog="python -m models.export", description="Export a diffusers pipeline to a parastep model folder.")
    p.add_argument("family", help="model family: " + ", ".join(FAMILIES))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from", dest="source", metavar="SRC", help="hub id (from the local HF cache) or checkpoint directory")
    src.add_argument("--tiny", action="store_const", const="tiny", dest="size", help="same as --size tiny")
    src.add_argument("--size", choices=("tiny", "bench"), help="random weights from built-in configs")
    p.add_argument("--out", type=Path, help="model folder to write (default for --size bench: .cache/models/<family>-bench)")
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32")
    p.add_argument("--seed", type=int, default=0, help="weight seed for --tiny / --size (default 0)")
    p.add_argument(
        "--reference",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write reference/ from diffusers' pipeline (default: on for --tiny, off otherwise)",
    )
    args = p.parse_args(argv)
    if args.family not in FAMILIES:
        raise ExportError(f"unknown model family '{args.family}' (known: {', '.join(FAMILIES)})")
    if args.out is None:
        if args.size != "bench":
            raise ExportError("--out is required (only --size bench has a default)")
        args.out = bench_out(args.family)
    if args.reference is None:
        args.reference = args.size == "tiny"
    return args


def _family(name: str):
    return importlib.import_module(f"{__package__}.{name}.family")


def load_pipeline(args: argparse.Namespace, log=print):
    """The float32 pipeline to export, with the manifest's `source` and `defaults` entries."""
    return _family(args.family).load(args, log)


def run(args: argparse.Namespace, log=print) -> dict:
    """Load or build the pipeline `args` describe, export it, and return the manifest."""
    from .folders import check_out

    check_out(args.out)  # before a load that can take minutes; the export checks again
    start = time.perf_counter()
    pipe, source, defaults = load_pipeline(args, log)
    manifest = export_pipeline(pipe, args, source, defaults, log)
    log(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    if args.size == "bench":
        timing = _family(args.family).bench(args.out)
        (Path(args.out) / "unet_latency.json").write_text(json.dumps(timing, indent=2) + "\n", encoding="utf-8")
        cpu = f", thread CPU time median {timing['cpuMedianMs']} ms" if "cpuMedianMs" in timing else ""
        log(f"unet batch 2, 1 thread: median {timing['medianMs']} ms (min {timing['minMs']}, p90 {timing['p90Ms']}){cpu}")
    return manifest


def export_pipeline(pipe, args: argparse.Namespace, source: dict, defaults: dict, log=print) -> dict:
    """Write `args.out` for a loaded pipeline, with the options in `args`."""
    return _family(args.family).export(pipe, args, source, defaults, log)


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
