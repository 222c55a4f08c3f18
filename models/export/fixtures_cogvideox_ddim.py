"""Write CogVideoXDDIMScheduler fixtures for the Deno scheduler tests.

Standalone script: runs diffusers' own ``CogVideoXDDIMScheduler`` with the real CogVideoX-2b and -5b
scheduler configs and writes, for each case, into ``tests/fixtures/cogvideox_ddim/<case>/``:

- ``config.json``          the scheduler config as diffusers holds it (``_class_name`` included);
- ``case.json``            ``{"T": steps, "indices": [...], "prevTimesteps": [...], "shape": [...],
                           "final_alpha_cumprod": ..., ...}``; ``prevTimesteps[k]`` is the
                           ``t - num_train_timesteps // T`` that ``step`` uses at ``indices[k]`` (it is not
                           the next timestep when T does not divide 1000);
- ``timesteps.npy``        int64 [T], ``scheduler.timesteps`` after ``set_timesteps(T)``;
- ``alphas_cumprod.npy``   float64 [1000], ``scheduler.alphas_cumprod`` after the SNR shift and the
                           zero-terminal-SNR rescale (diffusers keeps them in float64, and so does ``step``);
- ``step_<i>_v.npy``, ``step_<i>_x.npy``, ``step_<i>_prev.npy``  float32 [shape]: seeded random model
  output (v) and sample, and ``scheduler.step(v, timesteps[i], x).prev_sample``.

The sample shape is the transformer's layout, [batch, latent frames, channels, h, w].

Usage (from the repository root)::

    .venv/bin/python models/export/fixtures_cogvideox_ddim.py [--out tests/fixtures/cogvideox_ddim]

Versions used for the committed fixtures: diffusers 0.42.1, torch 2.9.1, numpy 2.4.6.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from diffusers import CogVideoXDDIMScheduler

# THUDM/CogVideoX-2b and -5b scheduler/scheduler_config.json (docs/reference/video-pipelines.md §3.2).
COGVIDEOX_2B = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    trained_betas=None,
    clip_sample=False,
    clip_sample_range=1.0,
    sample_max_value=1.0,
    set_alpha_to_one=True,
    steps_offset=0,
    prediction_type="v_prediction",
    timestep_spacing="trailing",
    rescale_betas_zero_snr=True,
    snr_shift_scale=3.0,
)
COGVIDEOX_5B = {**COGVIDEOX_2B, "snr_shift_scale": 1.0}

# 50: the default (divides 1000); 30 and 7: t_prev = t - 1000 // T differs from the next timestep.
CASES = [(f"{name}_T{T}", cfg, T) for name, cfg in (("2b", COGVIDEOX_2B), ("5b", COGVIDEOX_5B)) for T in (50, 30, 7)]

SHAPE = (1, 2, 2, 4, 4)  # [batch, latent frames, channels, h, w]: 64 values
SEED = 20260512


def step_indices(T: int) -> list[int]:
    """First (t = 999, alpha = 0), second, middle, the last two (t_prev < 0 on the last)."""
    return sorted({0, 1, T // 2, T - 2, T - 1} & set(range(T)))


def write_case(out: Path, name: str, cfg: dict, T: int, rng: np.random.Generator) -> None:
    d = out / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)

    sched = CogVideoXDDIMScheduler(**cfg)
    sched.set_timesteps(T)
    config = {"_class_name": "CogVideoXDDIMScheduler"}
    config.update({k: v for k, v in dict(sched.config).items() if not k.startswith("_")})
    (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    timesteps = sched.timesteps.numpy().astype(np.int64)
    np.save(d / "timesteps.npy", timesteps)
    np.save(d / "alphas_cumprod.npy", sched.alphas_cumprod.numpy().astype(np.float64))

    indices = step_indices(T)
    for i in indices:
        v = rng.standard_normal(SHAPE, dtype=np.float32)
        x = rng.standard_normal(SHAPE, dtype=np.float32)
        prev = sched.step(torch.from_numpy(v), timesteps[i], torch.from_numpy(x)).prev_sample.numpy()
        np.save(d / f"step_{i}_v.npy", v)
        np.save(d / f"step_{i}_x.npy", x)
        np.save(d / f"step_{i}_prev.npy", prev.astype(np.float32))

    case = {
        "T": T,
        "indices": indices,
        "prevTimesteps": [int(timesteps[i]) - cfg["num_train_timesteps"] // T for i in indices],
        "shape": list(SHAPE),
        "final_alpha_cumprod": float(sched.final_alpha_cumprod),
        "init_noise_sigma": float(sched.init_noise_sigma),
        "versions": {
            "diffusers": __import__("diffusers").__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
    }
    (d / "case.json").write_text(json.dumps(case, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/cogvideox_ddim"))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(SEED)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, cfg, T in CASES:
        write_case(args.out, name, cfg, T, rng)
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
