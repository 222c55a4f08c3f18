"""Write Euler scheduler fixtures for the Deno tests in tests/schedulers/euler_test.ts.

Standalone script: runs diffusers' own ``EulerDiscreteScheduler`` with Stable Video Diffusion's
scheduler config (``stabilityai/stable-video-diffusion-img2vid[-xt]/scheduler/scheduler_config.json``,
as the exporter writes it into a model's manifest) and writes, per case, into
``tests/fixtures/euler/<case>/``:

- ``config.json``        the config exactly as diffusers holds it (``_class_name`` included);
- ``case.json``          ``{"T", "indices", "shape", "init_noise_sigma", versions}``;
- ``sigmas.npy``         float32 [T + 1], ``scheduler.sigmas`` after ``set_timesteps(T)``;
- ``timesteps.npy``      float32 [T], ``scheduler.timesteps`` (0.25 ln sigma: what the UNet gets);
- ``step_<i>_v.npy``, ``step_<i>_x.npy``   float32 [shape]: a seeded model output (v) and sample;
- ``step_<i>_scaled.npy`` float32 [shape]: ``scale_model_input(x, timesteps[i])``;
- ``step_<i>_prev.npy``  float32 [shape]: ``step(v, timesteps[i], x).prev_sample``;

for i in ``indices``. diffusers' scheduler keeps a step counter, so each case walks the whole
schedule in order, calling ``scale_model_input`` and ``step`` once per index as the pipeline does,
and records the indices listed (every index for small T). The sample fed to step i is the previous
step's output (the first one is noise times ``init_noise_sigma``), so the values cover the range a
real run sees; the model output is fresh noise at each step.

Usage (from the repository root)::

    .venv/bin/python models/export/fixtures_euler.py [--out tests/fixtures/euler]

Versions used for the committed fixtures: diffusers 0.42.1, torch 2.9.1, numpy (see case.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler

# stabilityai/stable-video-diffusion-img2vid(-xt) scheduler_config.json (video-pipelines.md §3.1);
# final_sigmas_type is absent there and defaults to "zero".
SVD = dict(
    beta_end=0.012,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    clip_sample=False,
    interpolation_type="linear",
    num_train_timesteps=1000,
    prediction_type="v_prediction",
    set_alpha_to_one=False,
    sigma_max=700.0,
    sigma_min=0.002,
    skip_prk_steps=True,
    steps_offset=1,
    timestep_spacing="leading",
    timestep_type="continuous",
    trained_betas=None,
    use_karras_sigmas=True,
)

# (case name, config overrides, T): the real config at the pipeline's default (25) and the
# ParaStep authors' (50) step counts, small T, and a trailing-spacing variant (its
# init_noise_sigma is sigma_max itself).
CASES: list[tuple[str, dict, int]] = [
    ("svd_T25", {}, 25),
    ("svd_T50", {}, 50),
    ("svd_T3", {}, 3),
    ("svd_T1", {}, 1),
    ("svd_trailing_T7", {"timestep_spacing": "trailing"}, 7),
]

SHAPE = (1, 2, 4, 4, 6)  # [batch, frames, channels, h, w]
SEED = 20250611


def write_case(out: Path, name: str, overrides: dict, T: int, rng: np.random.Generator) -> None:
    d = out / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)

    # from_config, as loading scheduler_config.json does: the leftover DDIM keys are ignored.
    sched = EulerDiscreteScheduler.from_config({**SVD, **overrides})
    sched.set_timesteps(T)
    config = {"_class_name": "EulerDiscreteScheduler"}
    config.update({k: v for k, v in dict(sched.config).items() if not k.startswith("_")})
    (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    np.save(d / "sigmas.npy", sched.sigmas.numpy().astype(np.float32))
    np.save(d / "timesteps.npy", sched.timesteps.numpy().astype(np.float32))

    indices = list(range(T)) if T <= 7 else sorted({0, 1, T // 2, T - 2, T - 1})
    x = torch.from_numpy(rng.standard_normal(SHAPE, dtype=np.float32)) * sched.init_noise_sigma
    for i, t in enumerate(sched.timesteps):
        v = torch.from_numpy(rng.standard_normal(SHAPE, dtype=np.float32))
        scaled = sched.scale_model_input(x, t)
        prev = sched.step(v, t, x).prev_sample
        if i in indices:
            np.save(d / f"step_{i}_x.npy", x.numpy())
            np.save(d / f"step_{i}_v.npy", v.numpy())
            np.save(d / f"step_{i}_scaled.npy", scaled.numpy())
            np.save(d / f"step_{i}_prev.npy", prev.numpy())
        x = prev

    case = {
        "T": T,
        "indices": indices,
        "shape": list(SHAPE),
        "init_noise_sigma": float(sched.init_noise_sigma),
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
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/euler"))
    args = ap.parse_args()
    rng = np.random.default_rng(SEED)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, overrides, T in CASES:
        write_case(args.out, name, overrides, T, rng)
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
