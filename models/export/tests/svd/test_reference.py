"""The committed SVD reference (made by diffusers' pipeline) against the committed ONNX graphs.

The graphs are driven the way models/README.md tells the TypeScript runtime to drive them, from the
recorded inputs, with diffusers' own `EulerDiscreteScheduler.step` and `_resize_with_antialiasing`
for the arithmetic between them. If every recorded intermediate is reproduced, the fixture is
self-consistent and the README recipe is complete: a runtime that matches it matches diffusers.
"""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import EulerDiscreteScheduler
from diffusers.pipelines.stable_video_diffusion import pipeline_stable_video_diffusion as svd_module

from ..helpers import rel_error
from .helpers import COMMITTED, REFERENCE, session

MANIFEST = json.loads((COMMITTED / "manifest.json").read_text("utf-8"))
CONFIG = MANIFEST["config"]
CASES = sorted(p.name for p in REFERENCE.iterdir() if p.name.startswith("case"))


class Graphs:
    def __init__(self):
        self.sessions = {name: session(COMMITTED / c["file"]) for name, c in MANIFEST["components"].items()}

    def __call__(self, name, **feed):
        return self.sessions[name].run(None, feed)[0]


@pytest.fixture(scope="module")
def graphs():
    return Graphs()


def _load(case):
    info = json.loads((REFERENCE / case / "case.json").read_text("utf-8"))
    arrays = {name: np.load(REFERENCE / case / f"{name}.npy") for name in info["files"] if name != "image.png"}
    for name, array in arrays.items():
        meta = info["files"][name]
        assert list(array.shape) == meta["shape"] and str(array.dtype) == meta["dtype"], name
    return info, arrays


def test_cases_cover_what_they_should():
    assert CASES == ["case1", "case2"]
    (i1, a1), (i2, a2) = _load("case1"), _load("case2")
    defaults = MANIFEST["defaults"]
    for key in ("steps", "width", "height", "fps", "motionBucketId", "noiseAugStrength", "minGuidance", "maxGuidance", "decodeChunk"):
        assert i1[key] == defaults[key], key  # case 1 is the tiny model's default run
    assert i1["numFrames"] == defaults["frames"] == CONFIG["unetNumFrames"]
    for key in ("width", "height", "numFrames", "steps", "seed", "decodeChunk", "fps", "motionBucketId", "noiseAugStrength"):
        assert i1[key] != i2[key], key
    assert i1["decodeChunkLengths"] == [2, 1] and i2["decodeChunkLengths"] == [i2["numFrames"]]
    assert i1["numFrames"] % i1["decodeChunk"] != 0  # a partial last chunk
    for info, a in ((i1, a1), (i2, a2)):
        F, H, W = info["numFrames"], info["height"], info["width"]
        s = CONFIG["vaeScaleFactor"]
        assert a["frames_uint8"].shape == (F, H, W, 3) and a["frames_uint8"].dtype == np.uint8
        assert a["latents_steps"].shape == (info["steps"], 1, F, 4, H // s, W // s)
        assert info["batchOrder"] == ["uncond", "cond"]
        assert 0 < a["frames_uint8"].mean() < 255 and np.ptp(a["frames_uint8"]) > 100  # not saturated


@pytest.mark.parametrize("case", CASES)
def test_noise_is_diffusers_own_draw_order(case):
    """Both injected draws are what `generator=torch.Generator().manual_seed(seed)` gives, in the
    pipeline's order: augmentation noise first, then the initial latents."""
    info, a = _load(case)
    gen = torch.Generator().manual_seed(info["seed"])
    np.testing.assert_array_equal(a["aug_noise"], torch.randn(a["aug_noise"].shape, generator=gen).numpy())
    np.testing.assert_array_equal(a["latents_noise"], torch.randn(a["latents_noise"].shape, generator=gen).numpy())
    np.testing.assert_array_equal(a["latents_initial"], (torch.from_numpy(a["latents_noise"]) * a["init_noise_sigma"][0]).numpy())


@pytest.mark.parametrize("case", CASES)
def test_preprocessing(graphs, case):
    """README steps 1-4 from image.png alone: CLIP pixels, the VAE image, the encoders, the time ids."""
    info, a = _load(case)
    png = np.asarray(PIL.Image.open(REFERENCE / case / "image.png"))
    assert png.shape[2] == 3 and png.dtype == np.uint8
    np.testing.assert_array_equal(a["input_image"], (png.astype(np.float32) / 255).transpose(2, 0, 1)[None])
    # 1. CLIP: 2x - 1, diffusers' resize, (x + 1) / 2, normalise with the manifest's mean/std
    resized = svd_module._resize_with_antialiasing(torch.from_numpy(a["input_image"]) * 2 - 1, (224, 224))
    mean = np.array(CONFIG["clipImageMean"], dtype=np.float32)[:, None, None]
    std = np.array(CONFIG["clipImageStd"], dtype=np.float32)[:, None, None]
    pixels = ((resized.numpy() + 1) / 2 - mean) / std
    assert rel_error(pixels, a["clip_pixel_values"]) <= 1e-6
    assert rel_error(graphs("image_encoder", pixel_values=a["clip_pixel_values"]), a["image_embeds"]) <= 1e-5
    # 3. VAE: Lanczos to W×H (a copy when the PNG already is W×H), / 255, 2x - 1, plus the augmentation
    image = PIL.Image.open(REFERENCE / case / "image.png")
    same_size = image.size == (info["width"], info["height"])
    assert same_size == (case == "case1")
    vae = np.asarray(image.resize((info["width"], info["height"]), PIL.Image.LANCZOS)).astype(np.float32) / 255
    np.testing.assert_array_equal(a["vae_image"], vae.transpose(2, 0, 1)[None] * 2 - 1)
    augmented = a["vae_image"] + np.float32(info["noiseAugStrength"]) * a["aug_noise"]
    np.testing.assert_array_equal(augmented, a["vae_encoder_image"])
    assert rel_error(graphs("vae_encoder", image=a["vae_encoder_image"]), a["image_latent"]) <= 1e-5
    # 2. and 4.: the UNet's conditioning
    np.testing.assert_array_equal(a["unet_encoder_hidden_states"], np.stack([np.zeros_like(a["image_embeds"]), a["image_embeds"]]))
    row = np.array([info["fps"] - 1, info["motionBucketId"], info["noiseAugStrength"]], dtype=np.float32)
    np.testing.assert_array_equal(a["added_time_ids"], np.stack([row, row]))
    np.testing.assert_allclose(a["guidance"], np.linspace(info["minGuidance"], info["maxGuidance"], info["numFrames"]), rtol=1e-6)


def _scheduler(info, a):
    scheduler = EulerDiscreteScheduler.from_config(MANIFEST["scheduler"])
    scheduler.set_timesteps(info["steps"])
    np.testing.assert_array_equal(scheduler.sigmas.numpy(), a["sigmas"])
    np.testing.assert_array_equal(scheduler.timesteps.numpy(), a["timesteps"])
    assert float(scheduler.init_noise_sigma) == float(a["init_noise_sigma"][0]) == info["initNoiseSigma"]
    return scheduler


def _unet_step(graphs, a, scheduler, info, latents, i):
    """One denoising step as README step 6 describes it, with diffusers' scheduler for the update."""
    sigma = a["sigmas"][i]
    x_in = np.concatenate([latents, latents]) / np.sqrt(sigma**2 + 1)
    image_latents = np.concatenate([np.zeros_like(a["image_latent"]), a["image_latent"]])
    sample = np.concatenate([x_in, np.repeat(image_latents[:, None], latents.shape[1], axis=1)], axis=2)
    t = a["timesteps"][i]
    v = graphs(
        "unet",
        sample=sample.astype(np.float32),
        timestep=np.array([t, t], dtype=np.float32),
        encoder_hidden_states=a["unet_encoder_hidden_states"],
        added_time_ids=a["added_time_ids"],
    )
    uncond, cond = np.split(v, 2)
    guided = uncond + a["guidance"][None, :, None, None, None] * (cond - uncond)
    scheduler._step_index = i  # diffusers' hidden step counter: these steps are not always called in order
    prev = scheduler.step(torch.from_numpy(guided), torch.tensor(t), torch.from_numpy(latents)).prev_sample.numpy()
    return sample, v, guided, prev


@pytest.mark.parametrize("case", CASES)
def test_denoising(graphs, case):
    info, a = _load(case)
    scheduler = _scheduler(info, a)
    assert a["unet_timestep_step0"][0] == a["timesteps"][0]
    sample, v, guided, _ = _unet_step(graphs, a, scheduler, info, a["latents_initial"], 0)
    assert rel_error(sample, a["unet_sample_step0"]) <= 1e-6
    assert rel_error(v, a["unet_out_step0"]) <= 1e-5
    assert rel_error(guided, a["guided_step0"]) <= 1e-5
    # every step from the recorded previous latents: per-step agreement
    previous = a["latents_initial"]
    for i in range(info["steps"]):
        _, _, _, prev = _unet_step(graphs, a, scheduler, info, previous, i)
        assert rel_error(prev, a["latents_steps"][i]) <= 1e-5, i
        previous = a["latents_steps"][i]
    np.testing.assert_array_equal(a["latents_steps"][-1], a["latents_final"])
    # free-running from the initial latents, as a sampler would
    latents = a["latents_initial"]
    for i in range(info["steps"]):
        latents = _unet_step(graphs, a, scheduler, info, latents, i)[3]
    assert rel_error(latents, a["latents_final"]) <= 1e-4


@pytest.mark.parametrize("case", CASES)
def test_euler_closed_form(case):
    """README step 6's update in plain numpy (what a pure-function TypeScript port computes) against
    diffusers' EulerDiscreteScheduler, on the recorded guided v of step 0."""
    info, a = _load(case)
    scheduler = _scheduler(info, a)
    x, v = a["latents_initial"].astype(np.float64), a["guided_step0"].astype(np.float64)
    sigma, nxt = float(a["sigmas"][0]), float(a["sigmas"][1])
    x0 = -sigma / np.sqrt(sigma**2 + 1) * v + x / (sigma**2 + 1)
    mine = x + (nxt - sigma) * (x - x0) / sigma
    want = scheduler.step(torch.from_numpy(a["guided_step0"]), torch.tensor(a["timesteps"][0]), torch.from_numpy(a["latents_initial"])).prev_sample.numpy()
    np.testing.assert_array_equal(want, a["latents_steps"][0])
    assert rel_error(mine, want) <= 1e-5
    assert a["sigmas"][-1] == 0  # so the last step lands on x0


@pytest.mark.parametrize("case", CASES)
def test_decoding(graphs, case):
    info, a = _load(case)
    latents = a["latents_final"] / np.float32(CONFIG["vaeScalingFactor"])
    chunk = info["decodeChunk"]
    parts = [graphs("vae_decoder", latents=latents[:, i : i + chunk]) for i in range(0, info["numFrames"], chunk)]
    assert [p.shape[0] for p in parts] == info["decodeChunkLengths"]
    frames = np.concatenate(parts)
    assert rel_error(frames, a["frames_decoded"]) <= 1e-5
    # the bytes diffusers returns, from the recorded float frames (float32 arithmetic, as diffusers)
    x = np.clip(a["frames_decoded"] * np.float32(0.5) + np.float32(0.5), 0, 1).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal((x * 255).round().astype(np.uint8), a["frames_uint8"])


def test_resize_fixtures():
    """reference/resize: diffusers' `_resize_with_antialiasing` alone, with the kernel and sigma the
    README formula gives."""
    info = json.loads((REFERENCE / "resize" / "resize.json").read_text("utf-8"))
    kernels = set()
    for entry in info["cases"]:
        x = np.load(REFERENCE / "resize" / entry["input"])
        assert list(x.shape) == entry["inputShape"]
        y = svd_module._resize_with_antialiasing(torch.from_numpy(x), tuple(entry["size"])).numpy()
        np.testing.assert_array_equal(y, np.load(REFERENCE / "resize" / entry["output"]))
        for axis in range(2):
            factor = entry["inputShape"][2 + axis] / entry["size"][axis]
            sigma = max((factor - 1) / 2, 0.001)
            kernel = int(max(4 * sigma, 3))
            kernel += 1 - kernel % 2
            assert entry["sigma"][axis] == pytest.approx(sigma) and entry["kernelSize"][axis] == kernel
            kernels.add(kernel)
    assert {3, 5, 7, 13, 15} <= kernels


def test_injection_equals_seeded_pipeline(svd_tiny):
    """Calling diffusers' pipeline with the seeded generator (no injection) on the same weights gives
    the committed frames: the reference is the pipeline's ordinary seeded output."""
    info, a = _load("case2")
    with torch.no_grad():
        frames = svd_tiny.pipe(
            PIL.Image.open(REFERENCE / "case2" / "image.png"),
            generator=torch.Generator().manual_seed(info["seed"]),
            output_type="np",
            **info["arguments"],
        ).frames[0]
    got = svd_tiny.pipe.video_processor.numpy_to_pil(frames)
    diff = np.abs(np.stack([np.asarray(im) for im in got]).astype(int) - a["frames_uint8"])
    assert diff.max() <= 1 and diff.mean() < 0.01  # equal up to rounding at a .5 boundary on another CPU
