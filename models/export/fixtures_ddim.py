"""Write DDIM scheduler fixtures for the Deno tests in tests/schedulers/.

Standalone script: runs diffusers' own ``DDIMScheduler`` over a grid of configs and writes, for each
case, into ``tests/fixtures/ddim/<case>/``:

- ``config.json``       the scheduler config exactly as diffusers holds it (``_class_name`` included),
                        i.e. what a ``scheduler_config.json`` carries;
- ``case.json``         ``{"T": steps, "indices": [...], "shape": [...], "final_alpha_cumprod": ...}``;
- ``timesteps.npy``     int64 [T'], ``scheduler.timesteps`` after ``set_timesteps(T)``;
- ``alphas_cumprod.npy`` float32 [num_train_timesteps], ``scheduler.alphas_cumprod``;
- ``step_<i>_eps.npy``, ``step_<i>_x.npy``, ``step_<i>_prev.npy``  float32 [shape]: seeded random
  model output and sample, and ``scheduler.step(eps, timesteps[i], x, eta=0).prev_sample``,
  for i = 0, 1, T-1.

Usage (from the repository root)::

    /work/venvs/exp/bin/python models/export/fixtures_ddim.py [--out tests/fixtures/ddim]

Note on bit-exactness: torch computes the beta schedule with ``torch.linspace`` in float32, and the
CPU kernel's ``start + step * i`` is contracted to a fused multiply-add when torch runs its AVX2 or
AVX512 kernels (``torch.backends.cpu.get_cpu_capability()``), but not with ``ATEN_CPU_CAPABILITY=default``.
The two differ by one float32 ulp on some betas. The committed fixtures were made with the FMA
kernels; the TypeScript scheduler mirrors those. This script records the capability in case.json.

Versions used for the committed fixtures: diffusers 0.42.1, torch 2.9.1, numpy 2.4.6.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler

# The AudioLDM2 scheduler config (cvssp/audioldm2/scheduler/scheduler_config.json, research doc §4.2).
AUDIOLDM2 = dict(
    num_train_timesteps=1000,
    beta_start=0.0015,
    beta_end=0.0195,
    beta_schedule="scaled_linear",
    trained_betas=None,
    prediction_type="epsilon",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="leading",
    thresholding=False,
    rescale_betas_zero_snr=False,
)


def base(**over):
    """A fully explicit config (no reliance on diffusers defaults), with overrides."""
    cfg = dict(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        trained_betas=None,
        prediction_type="epsilon",
        clip_sample=False,
        clip_sample_range=1.0,
        set_alpha_to_one=True,
        steps_offset=0,
        timestep_spacing="leading",
        thresholding=False,
        rescale_betas_zero_snr=False,
    )
    cfg.update(over)
    return cfg


def trained_betas(n: int) -> list[float]:
    """A made-up but smooth schedule, to exercise the trained_betas path."""
    return [float(b) for b in np.linspace(0.0005, 0.05, n) ** 1.5]


# (case name, config, T). The grid covers each beta schedule, each spacing, each prediction type,
# steps_offset 0/1, set_alpha_to_one true/false, clip_sample on, rescale_betas_zero_snr on, the
# AudioLDM2 config at T = 200 and T = 50, small T, and trailing T = 16 (812.5 rounds to 812).
CASES: list[tuple[str, dict, int]] = [
    ("audioldm2_T200", AUDIOLDM2, 200),
    ("audioldm2_T50", AUDIOLDM2, 50),
    ("linear_leading_epsilon_T7", base(), 7),
    ("linear_leading_offset1_sample_T1", base(steps_offset=1, prediction_type="sample"), 1),
    (
        "scaled_linear_linspace_v_T7",
        base(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            timestep_spacing="linspace",
            prediction_type="v_prediction",
            set_alpha_to_one=False,
        ),
        7,
    ),
    (
        "scaled_linear_trailing_epsilon_T16",
        base(
            beta_schedule="scaled_linear",
            beta_start=0.0015,
            beta_end=0.0195,
            timestep_spacing="trailing",
            set_alpha_to_one=False,
        ),
        16,
    ),
    (
        "cosine_trailing_sample_T16",
        base(beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing", prediction_type="sample"),
        16,
    ),
    (
        "cosine_leading_offset1_v_T25",
        base(
            beta_schedule="squaredcos_cap_v2",
            steps_offset=1,
            prediction_type="v_prediction",
            set_alpha_to_one=False,
        ),
        25,
    ),
    ("linear_clip_sample_T10", base(clip_sample=True, clip_sample_range=1.5), 10),
    (
        "rescale_zero_snr_trailing_v_T12",
        base(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            rescale_betas_zero_snr=True,
            timestep_spacing="trailing",
            prediction_type="v_prediction",
        ),
        12,
    ),
    (
        "trained_betas_linspace_epsilon_T9",
        base(num_train_timesteps=64, trained_betas=trained_betas(64), timestep_spacing="linspace"),
        9,
    ),
]

SHAPE = (1, 2, 8, 8)  # [batch, channels, height, width]: 128 values, small on disk
SEED = 20240607


def write_case(out: Path, name: str, cfg: dict, T: int, rng: np.random.Generator) -> None:
    d = out / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)

    sched = DDIMScheduler(**cfg)
    sched.set_timesteps(T)
    config = {"_class_name": "DDIMScheduler"}
    config.update({k: v for k, v in dict(sched.config).items() if not k.startswith("_")})
    (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    timesteps = sched.timesteps.numpy().astype(np.int64)
    np.save(d / "timesteps.npy", timesteps)
    np.save(d / "alphas_cumprod.npy", sched.alphas_cumprod.numpy().astype(np.float32))

    indices = sorted({0, 1, T - 1} & set(range(T)))
    for i in indices:
        eps = rng.standard_normal(SHAPE, dtype=np.float32)
        x = rng.standard_normal(SHAPE, dtype=np.float32)
        out_t = sched.step(torch.from_numpy(eps), timesteps[i], torch.from_numpy(x), eta=0.0)
        prev = out_t.prev_sample.numpy().astype(np.float32)
        np.save(d / f"step_{i}_eps.npy", eps)
        np.save(d / f"step_{i}_x.npy", x)
        np.save(d / f"step_{i}_prev.npy", prev)

    case = {
        "T": T,
        "indices": indices,
        "shape": list(SHAPE),
        "final_alpha_cumprod": float(sched.final_alpha_cumprod),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "versions": {
            "diffusers": __import__("diffusers").__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
    }
    (d / "case.json").write_text(json.dumps(case, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/ddim"))
    args = ap.parse_args()
    rng = np.random.default_rng(SEED)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, cfg, T in CASES:
        write_case(args.out, name, cfg, T, rng)
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
