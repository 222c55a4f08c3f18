"""Fixtures for the Stable Video Diffusion tests: a fresh tiny export (reference included) and its pipeline."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """PyTorch single-threaded while these tests run (the tiny models are latency-bound; on a shared
    2-core host two threads are several times slower), restored afterwards for the other tests."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="session")
def svd_tiny(tmp_path_factory):
    """`python -m models.export svd --tiny` (seed 0, reference included) through the CLI's own load
    and export steps, and the float32 pipeline it exported."""
    from models.export import cli

    out = tmp_path_factory.mktemp("svd") / "svd-tiny"  # the committed folder's name: the manifest records it
    args = cli.parse(["svd", "--tiny", "--out", str(out)])
    assert args.reference
    pipe, source, defaults = cli.load_pipeline(args, log=lambda *_: None)
    manifest = cli.export_pipeline(pipe, args, source, defaults, log=lambda *_: None)
    return SimpleNamespace(dir=out, manifest=manifest, pipe=pipe)
