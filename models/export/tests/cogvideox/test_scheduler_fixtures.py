"""tests/fixtures/cogvideox_ddim/ (for the TypeScript scheduler) is what its script makes, and the pure
step form documented for the runtime reproduces diffusers' `CogVideoXDDIMScheduler.step` on it."""

from __future__ import annotations

import json

import numpy as np

from models.export import fixtures_cogvideox_ddim

from .helpers import DDIM_FIXTURES


def test_fixtures_are_reproducible(tmp_path):
    fixtures_cogvideox_ddim.main(["--out", str(tmp_path)])
    got = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    want = sorted(p.relative_to(DDIM_FIXTURES) for p in DDIM_FIXTURES.rglob("*") if p.is_file())
    assert got == want and len(want) > 6 * 4
    for rel in want:
        if rel.suffix == ".npy":
            a, b = np.load(tmp_path / rel), np.load(DDIM_FIXTURES / rel)
            assert a.dtype == b.dtype and a.shape == b.shape, rel
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=0, err_msg=str(rel))
        else:
            assert json.loads((tmp_path / rel).read_text()) == json.loads((DDIM_FIXTURES / rel).read_text()), rel


def test_pure_step_form_matches_fixtures():
    """x' = a·x + b·x0 with x0 = √ᾱ_t·x − √(1−ᾱ_t)·v, a = √((1−ᾱ_p)/(1−ᾱ_t)), b = √ᾱ_p − √ᾱ_t·a,
    t_prev = t − 1000 // T (ᾱ_p = final_alpha_cumprod when t_prev < 0), coefficients in float64."""
    cases = sorted(p for p in DDIM_FIXTURES.iterdir() if p.is_dir())
    assert {p.name for p in cases} == {f"{m}_T{t}" for m in ("2b", "5b") for t in (50, 30, 7)}
    quirk = False
    for case in cases:
        info = json.loads((case / "case.json").read_text())
        config = json.loads((case / "config.json").read_text())
        alphas = np.load(case / "alphas_cumprod.npy")
        timesteps = np.load(case / "timesteps.npy")
        assert alphas.dtype == np.float64 and alphas[-1] == 0.0  # zero terminal SNR
        assert config["_class_name"] == "CogVideoXDDIMScheduler" and config["snr_shift_scale"] in (1.0, 3.0)
        for i, t_prev in zip(info["indices"], info["prevTimesteps"]):
            t = int(timesteps[i])
            assert t_prev == t - 1000 // info["T"]
            quirk |= i + 1 < len(timesteps) and t_prev != timesteps[i + 1]
            a_t = alphas[t]
            a_p = alphas[t_prev] if t_prev >= 0 else info["final_alpha_cumprod"]
            a = np.sqrt((1 - a_p) / (1 - a_t))
            b = np.sqrt(a_p) - np.sqrt(a_t) * a
            v = np.load(case / f"step_{i}_v.npy")
            x = np.load(case / f"step_{i}_x.npy")
            # coefficients rounded to float32 before each multiply (torch's float64 scalar on a float32
            # tensor), float32 arithmetic in diffusers' order: bit-exact
            f = np.float32
            x0 = f(np.sqrt(a_t)) * x - f(np.sqrt(1 - a_t)) * v
            got = f(a) * x + f(b) * x0
            np.testing.assert_array_equal(got, np.load(case / f"step_{i}_prev.npy"), err_msg=f"{case.name} {i}")
    assert quirk, "no fixture step where t - 1000 // T is not the next timestep"
