"""Shared fixtures: a fresh tiny pipeline and its ONNX export; the error summary."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from .helpers import MAX_ERRORS  # noqa: E402


def pytest_terminal_summary(terminalreporter):
    if MAX_ERRORS:
        terminalreporter.section("ONNX vs PyTorch: max relative error per component")
        for name, err in sorted(MAX_ERRORS.items()):
            terminalreporter.write_line(f"{name:>18}: {err:.2e}")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny pipeline (seed 0) and its fp32 export, through the CLI's own load and export steps."""
    from models.export import cli

    out = tmp_path_factory.mktemp("tiny") / "audioldm2-tiny"
    args = cli.parse(["audioldm2", "--tiny", "--no-reference", "--out", str(out)])
    pipe, source, defaults = cli.load_pipeline(args, log=lambda *_: None)
    manifest = cli.export_pipeline(pipe, args, source, defaults, log=lambda *_: None)
    return SimpleNamespace(dir=out, manifest=manifest, pipe=pipe)
