"""Shared fixtures of the CogVideoX exporter tests: fresh exports of both tiny sizes, with their pipelines."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


def _export(tmp_path_factory, size: str, *extra: str) -> SimpleNamespace:
    """`cogvideox --size <size>` (reference included) through the CLI's own load and export steps."""
    from models.export import cli

    out = tmp_path_factory.mktemp(size) / f"cogvideox-{size}"
    args = cli.parse(["cogvideox", "--size", size, "--out", str(out), *extra])
    pipe, source, defaults = cli.load_pipeline(args, log=lambda *_: None)
    manifest = cli.export_pipeline(pipe, args, source, defaults, log=lambda *_: None)
    return SimpleNamespace(dir=out, manifest=manifest, pipe=pipe)


@pytest.fixture(scope="session")
def cog_tiny(tmp_path_factory):
    """The 2b-like tiny model (seed 0) as the committed folder was made: shapes F' = 3 and 4, reference/."""
    return _export(tmp_path_factory, "tiny")


@pytest.fixture(scope="session")
def cog_tiny_5b(tmp_path_factory):
    """The 5b-like tiny model (seed 0): one rotary transformer graph, reference/ with rope/."""
    return _export(tmp_path_factory, "tiny-5b")
