"""Command line: `python -m models.export <family> (--from SRC | --tiny | --size NAME) [--out DIR] ...`.

Each family is a package with a `family` module exposing SIZES, DTYPES, check_args, load_pipeline,
export_pipeline and after_export; this file parses the common options and dispatches by name.

Bad input (unknown family, unreachable source, incomplete checkpoint config, bad flags) ends with
one `error: ...` line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import importlib
import json
import os
import sys
import tempfile
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
    p.add_argument(
        "--dtype",
        metavar="TYPE[,fp16]",
        help="float type of the graphs: fp32, fp16 or bf16 (cogvideox only); 'fp32,fp16' also writes every graph "
        "in fp16 under fp16/ as the folder's fp16 variant, which parastep runs on CUDA by default "
        "(default: fp32,fp16 with --from, fp32 otherwise)",
    )
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
    args.dtypes = _dtypes(args, fam)
    args.dtype = args.dtypes[0]
    fam.check_args(args)
    if args.out is None:
        if args.size != "bench":
            raise ExportError("--out is required (only --size bench has a default)")
        args.out = bench_out(args.family)
    if args.reference is None:
        args.reference = args.size is not None and args.size.startswith("tiny")
    return args


def _dtypes(args: argparse.Namespace, fam) -> list[str]:
    """`--dtype` as a list: the folder's own float type, then at most one variant (fp16)."""
    if args.dtype is None:
        return ["fp32", "fp16"] if args.source is not None and "fp16" in fam.DTYPES else ["fp32"]
    dtypes = args.dtype.split(",")
    for dtype in dtypes:
        if dtype not in fam.DTYPES:
            raise ExportError(f"--dtype {dtype}: not available for {args.family} (available: {', '.join(fam.DTYPES)})")
    if len(dtypes) > 1 and dtypes != ["fp32", "fp16"]:
        raise ExportError(f"--dtype {args.dtype}: give one float type, or fp32,fp16 (an fp32 folder with an fp16 variant)")
    return dtypes


# What a variant never restates: its type and graphs are given apart (src/models/manifest.ts agrees).
_VARIANT_FIXED = ("format", "formatVersion", "name", "family", "dtype", "components", "variants")


def _same_graph(a: Path, b: Path, file_a: str, file_b: str) -> bool:
    """Whether `a/file_a` and `b/file_b` hold the same bytes, external data included (sizes first: a
    converted graph differs in size, so only a graph left as it was is read)."""
    pairs = [(a / file_a, b / file_b), (a / (file_a + ".data"), b / (file_b + ".data"))]

    def size(f: Path) -> int:
        return f.stat().st_size if f.exists() else -1

    def digest(f: Path) -> str:
        return hashlib.sha256(f.read_bytes()).hexdigest() if f.exists() else ""

    return all(size(x) == size(y) for x, y in pairs) and all(digest(x) == digest(y) for x, y in pairs)


def load_pipeline(args: argparse.Namespace, log=print):
    """The float32 pipeline to export, with the manifest's `source` and `defaults` entries."""
    return family(args.family).load_pipeline(args, log)


def export_pipeline(pipe, args: argparse.Namespace, source: dict, defaults: dict, log=print) -> dict:
    """Write `args.out` for a loaded pipeline, with the options in `args` (`args.dtypes`: see `--dtype`)."""
    fam = family(args.family)
    dtypes = getattr(args, "dtypes", [args.dtype])
    if len(dtypes) == 1:
        return fam.export_pipeline(pipe, args, source, defaults, log)
    return _export_with_variants(fam, pipe, args, dtypes, source, defaults, log)


def _export_with_variants(fam, pipe, args, dtypes: list[str], source: dict, defaults: dict, log) -> dict:
    """The folder in `dtypes[0]`, plus each other float type's graphs (and reference/) under `<dtype>/`.

    Each type is a whole export of its own (the first converts nothing, the later ones convert the
    pipeline in place, so the float32 one goes first); the later ones keep only their graphs and
    the top-level fields whose values differ (e.g. AudioLDM2's CLAP logit scale, read from fp16
    weights), named in the manifest's `variants`. The folder is built beside `args.out` and moved into place at the
    end, so a failed export leaves any previous folder untouched.
    """
    from .folders import check_out
    from .onnx_io import replace_dir

    out = Path(args.out)
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        exports = {}
        for dtype in dtypes:
            one = argparse.Namespace(**{**vars(args), "dtype": dtype, "dtypes": [dtype], "out": Path(tmp) / dtype / out.name})
            log(f"  exporting the {dtype} graphs")
            exports[dtype] = (one.out, fam.export_pipeline(pipe, one, source, defaults, log))
        build, manifest = exports[dtypes[0]]
        manifest["variants"] = {}
        for dtype in dtypes[1:]:
            folder, variant = exports[dtype]
            (build / dtype).mkdir()
            replaced = {}
            for name, spec in variant["components"].items():
                if _same_graph(folder, build, spec["file"], manifest["components"][name]["file"]):
                    continue  # a graph the conversion left as it was (e.g. a text encoder kept in fp32)
                for path in folder.glob(glob.escape(spec["file"]) + "*"):  # the graph and its .data
                    os.replace(path, build / dtype / path.name)
                replaced[name] = {**spec, "file": f"{dtype}/{spec['file']}"}
            if (folder / "reference").is_dir():
                os.replace(folder / "reference", build / dtype / "reference")
            fields = {k: v for k, v in variant.items() if k not in _VARIANT_FIXED and manifest.get(k) != v}
            manifest["variants"][dtype] = {"components": replaced, **({"fields": fields} if fields else {})}
        (build / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        replace_dir(build, out)
    return manifest


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
