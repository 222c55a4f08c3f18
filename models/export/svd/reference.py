"""Golden outputs from diffusers' own `StableVideoDiffusionPipeline.__call__`, for the TypeScript parity tests.

Nothing here re-implements the pipeline: it runs as diffusers wrote it, on the very modules that
are exported, and hooks record what flows between its components. The two random draws the
pipeline makes, in its order (noise augmentation [1, 3, H, W] first, then the initial latents
[1, F, 4, h, w]), are injected by replacing the pipeline module's `randn_tensor`: both come from
`torch.Generator().manual_seed(seed)` in that order, which is exactly what diffusers draws when
called with that generator on the CPU, and both are stored, so the TypeScript side needs no port of
torch's random number generator. The run checks that the injected values reach the VAE encoder and
the UNet unchanged.

Layout of `reference/<case>/` (float32 unless stated; batch-2 arrays are in the pipeline's
classifier-free-guidance order `[uncond, cond]`, the uncond row having zero image embeddings and
zero image latents):
- image.png                       the input image (8-bit RGB); the pipeline opened it with PIL
- input_image                     [1, 3, H0, W0]  image.png / 255, as the pipeline saw it
- clip_pixel_values               [1, 3, 224, 224] CLIP input: `_resize_with_antialiasing(2x-1, 224)`,
                                  `(x+1)/2`, then `(x - clipImageMean) / clipImageStd`
- image_embeds                    [1, D]          image_encoder output
- vae_image                       [1, 3, H, W]    resized to W×H (PIL Lanczos) and mapped to [-1, 1]
- aug_noise                       [1, 3, H, W]    random draw 1
- vae_encoder_image               [1, 3, H, W]    vae_image + noiseAugStrength * aug_noise
- image_latent                    [1, 4, h, w]    vae_encoder output (`latent_dist.mode()`, unscaled)
- added_time_ids                  [2, 3]          [fps - 1, motionBucketId, noiseAugStrength] per row
- guidance                        [F]             per-frame guidance, linspace(min, max, F)
- sigmas                          [steps + 1]     scheduler sigmas (Karras, then 0)
- timesteps                       [steps]         0.25 * ln(sigma), what the UNet gets
- init_noise_sigma                [1]
- latents_noise                   [1, F, 4, h, w] random draw 2
- latents_initial                 [1, F, 4, h, w] latents_noise * init_noise_sigma
- unet_sample_step0               [2, F, 8, h, w] cat(c_in * [x; x], [0; image_latent] per frame, dim 2)
- unet_timestep_step0             [1]
- unet_encoder_hidden_states      [2, 1, D]       [0; image_embeds]
- unet_out_step0                  [2, F, 4, h, w] pre-guidance v-prediction
- guided_step0                    [1, F, 4, h, w] uncond + guidance * (cond - uncond)
- latents_steps                   [steps, 1, F, 4, h, w] after each scheduler step
- latents_final                   [1, F, 4, h, w]
- frames_decoded                  [F, 3, H, W]    vae_decoder outputs of every chunk, concatenated
                                  (input: latents_final / vaeScalingFactor, in chunks of decodeChunk)
- frames_uint8 (uint8)            [F, H, W, 3]    what the pipeline returns as PIL frames:
                                  round(clamp(x / 2 + 0.5, 0, 1) * 255)
plus `case.json` (the call's arguments, the values it used, every file's shape). `reference/resize/`
holds diffusers' `_resize_with_antialiasing` on its own at a few sizes (resize.json describes them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers.pipelines.stable_video_diffusion import pipeline_stable_video_diffusion as svd_module

from ..folders import save_arrays


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    image_size: tuple[int, int]  # (width, height) of the PNG
    pattern: int  # which synthetic picture
    seed: int
    steps: int
    arguments: dict  # extra keyword arguments of __call__ (height and width always given)
    height: int
    width: int
    description: str


CASES = (
    Case(
        "case1",
        image_size=(48, 32),
        pattern=0,
        seed=0,
        steps=10,
        height=32,
        width=48,
        arguments={"decode_chunk_size": 2},
        description=(
            "the tiny model's defaults (frames = unet.config.num_frames, fps/motion/augmentation/guidance at "
            "diffusers' defaults); the PNG is already W×H, so the VAE resize is a copy; 3 frames decoded in "
            "chunks of 2 + 1"
        ),
    ),
    Case(
        "case2",
        image_size=(61, 45),
        pattern=1,
        seed=1234,
        steps=6,
        height=40,
        width=32,
        arguments={
            "num_frames": 4,
            "fps": 10,
            "motion_bucket_id": 60,
            "noise_aug_strength": 0.1,
            "min_guidance_scale": 1.5,
            "max_guidance_scale": 2.5,
        },
        description=(
            "odd-sized landscape PNG into a portrait video (PIL Lanczos resize for the VAE, bicubic upsampling "
            "for CLIP); every conditioning number off its default; decode_chunk_size left at diffusers' "
            "default (all frames in one call)"
        ),
    ),
)

# `_resize_with_antialiasing` on its own: (name, input shape [B, 3, h, w], output size (h, w)), chosen
# so the blur kernels cover 3, 5, 7, 13 and 15 taps, an even size made odd, and upsampling (σ = 0.001).
RESIZE_CASES = (
    ("down_7x15", (1, 3, 36, 80), (8, 10)),
    ("up_and_down", (1, 3, 20, 24), (12, 30)),
    ("batch2_13x5", (2, 3, 50, 33), (7, 9)),
)


def synthetic_image(width: int, height: int, pattern: int) -> PIL.Image.Image:
    """A deterministic RGB picture with smooth gradients, a disc and fine stripes (so blurring shows)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    cx, cy = (0.35, 0.6) if pattern == 0 else (0.7, 0.4)
    disc = ((u - cx) ** 2 + (v - cy) ** 2) < 0.06
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (x * (0.4 + 0.1 * pattern) + y * 0.15))
    rgb = np.stack(
        [
            0.15 + 0.7 * u,
            0.2 + 0.6 * v * (1 - u) + 0.2 * stripes * (v > 0.5),
            0.8 - 0.5 * u * v + 0.15 * stripes * (u < 0.3),
        ],
        axis=-1,
    )
    rgb[disc] = [0.95, 0.85 - 0.3 * pattern, 0.1]
    return PIL.Image.fromarray(np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8))


class Recorder:
    """Hooks and method wrappers that record what the pipeline passes between its parts, in call order,
    and an injected `randn_tensor` that hands out the pre-drawn noise."""

    def __init__(self, draws: list[torch.Tensor]):
        self.calls: dict[str, list] = defaultdict(list)
        self.pending = list(draws)

    def _randn(self, shape, generator=None, device=None, dtype=None, layout=None):
        if not self.pending:
            raise RuntimeError("reference: the pipeline drew more random tensors than the two injected ones")
        draw = self.pending.pop(0)
        if tuple(shape) != tuple(draw.shape):
            raise RuntimeError(f"reference: the pipeline drew {tuple(shape)}, the injected draw is {tuple(draw.shape)}")
        self.calls["randn"].append(draw)
        return draw.clone().to(device=device, dtype=dtype)

    @contextlib.contextmanager
    def attached(self, pipe):
        handles, patched = [], []

        def patch(owner, attr, make):
            patched.append((owner, attr, getattr(owner, attr), attr in vars(owner)))
            setattr(owner, attr, make(getattr(owner, attr)))

        def record(key, pick):
            def make(original):
                def wrapper(*args, **kwargs):
                    out = original(*args, **kwargs)
                    self.calls[key].append(pick(args, kwargs, out))
                    return out

                return wrapper

            return make

        patch(svd_module, "randn_tensor", lambda original: self._randn)
        patch(pipe.video_processor, "numpy_to_pt", record("to_pt", lambda a, kw, out: out))
        patch(pipe.video_processor, "preprocess", record("vae_image", lambda a, kw, out: out))
        handles.append(
            pipe.image_encoder.register_forward_hook(
                lambda m, a, out: self.calls["clip"].append((a[0], out.image_embeds))
            )
        )
        patch(pipe.vae, "encode", record("vae_encode", lambda a, kw, out: (a[0], out.latent_dist.mode())))
        patch(pipe.scheduler, "scale_model_input", record("scale_in", lambda a, kw, out: (a[0], a[1], out)))
        handles.append(
            pipe.unet.register_forward_hook(
                lambda m, a, kw, out: self.calls["unet"].append(
                    (a[0], a[1], kw["encoder_hidden_states"], kw["added_time_ids"], out[0])
                ),
                with_kwargs=True,
            )
        )
        patch(pipe.scheduler, "step", record("step", lambda a, kw, out: (a[0], out.prev_sample)))
        patch(pipe.vae, "decode", record("vae_decode", lambda a, kw, out: (a[0], kw["num_frames"], out.sample)))
        patch(pipe, "decode_latents", record("decode_latents", lambda a, kw, out: out))
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            for owner, attr, original, own in reversed(patched):
                if own:
                    setattr(owner, attr, original)
                else:
                    delattr(owner, attr)  # drops the instance attribute, exposing the class method again


def _expect(recorder: Recorder, key: str, count: int) -> list:
    got = recorder.calls[key]
    if len(got) != count:
        raise RuntimeError(f"reference: expected {count} '{key}' calls from the pipeline, saw {len(got)}")
    return got


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise RuntimeError(f"reference: {what}")


def _float32(value) -> np.ndarray:
    """A reference array as saved: numpy arrays as they are, tensors in float32."""
    return value if isinstance(value, np.ndarray) else value.detach().cpu().to(torch.float32).numpy()


def run_case(pipe, case: Case, out_dir: Path) -> dict:
    """Run the pipeline on `case`, write its arrays, image.png and case.json; return the case.json dict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    synthetic_image(*case.image_size, case.pattern).save(out_dir / "image.png")
    image = PIL.Image.open(out_dir / "image.png")
    image.load()

    frames = case.arguments.get("num_frames", pipe.unet.config.num_frames)
    s = pipe.vae_scale_factor
    gen = torch.Generator().manual_seed(case.seed)
    aug_noise = torch.randn((1, 3, case.height, case.width), generator=gen, dtype=torch.float32)
    latents_noise = torch.randn((1, frames, 4, case.height // s, case.width // s), generator=gen, dtype=torch.float32)

    recorder = Recorder([aug_noise, latents_noise])
    with recorder.attached(pipe), torch.no_grad():
        returned = pipe(
            image,
            height=case.height,
            width=case.width,
            num_inference_steps=case.steps,
            output_type="np",
            **case.arguments,
        ).frames
    _check(not recorder.pending, "the pipeline drew fewer random tensors than the two injected ones")

    input_image, _ = _expect(recorder, "to_pt", 2)  # _encode_image's, then preprocess's (resized, in [0, 1])
    ((vae_image),) = _expect(recorder, "vae_image", 1)
    ((pixel_values, image_embeds),) = _expect(recorder, "clip", 1)
    ((vae_in, image_latent),) = _expect(recorder, "vae_encode", 1)
    scale_calls = _expect(recorder, "scale_in", case.steps)
    unet_calls = _expect(recorder, "unet", case.steps)
    steps = _expect(recorder, "step", case.steps)
    ((decoded_video),) = _expect(recorder, "decode_latents", 1)
    sched = pipe.scheduler
    strength = case.arguments.get("noise_aug_strength", 0.02)
    chunk = case.arguments.get("decode_chunk_size") or frames
    chunks = _expect(recorder, "vae_decode", -(-frames // chunk))

    # the injected noise reached the VAE encoder and the UNet unchanged
    _check(torch.equal(vae_in, vae_image + strength * aug_noise), "the VAE input is not vae_image + strength * aug_noise")
    latents_initial = latents_noise * sched.init_noise_sigma
    x_in, t0, scaled = scale_calls[0]
    _check(torch.equal(x_in, torch.cat([latents_initial, latents_initial])), "the first UNet latents are not the injected ones")
    sample0, unet_t0, ehs, time_ids, out0 = unet_calls[0]
    cond_latents = torch.cat([torch.zeros_like(image_latent), image_latent]).unsqueeze(1).repeat(1, frames, 1, 1, 1)
    _check(torch.equal(sample0, torch.cat([scaled, cond_latents], dim=2)), "the UNet sample is not [c_in x, image latents]")
    _check(torch.equal(ehs, torch.cat([torch.zeros_like(image_embeds), image_embeds]).unsqueeze(1)), "encoder_hidden_states")
    guided0, _ = steps[0]
    # the chunks are the final latents / scaling_factor, and decode_latents only concatenates them
    z = torch.cat([c[0] for c in chunks])
    _check(
        torch.allclose(z * pipe.vae.config.scaling_factor, steps[-1][1].flatten(0, 1), rtol=1e-6, atol=0),
        "the VAE decoder input is not the final latents / scaling_factor",
    )
    _check([c[1] for c in chunks] == [c[0].shape[0] for c in chunks], "num_frames differs from the chunk length")
    frames_decoded = torch.cat([c[2] for c in chunks])
    _check(torch.equal(decoded_video[0].permute(1, 0, 2, 3), frames_decoded), "decode_latents reordered the chunks")
    frames_uint8 = np.stack([np.asarray(im) for im in pipe.video_processor.numpy_to_pil(returned[0])])

    arrays = {
        "input_image": input_image,
        "clip_pixel_values": pixel_values,
        "image_embeds": image_embeds,
        "vae_image": vae_image,
        "aug_noise": aug_noise,
        "vae_encoder_image": vae_in,
        "image_latent": image_latent,
        "added_time_ids": time_ids,
        "guidance": pipe.guidance_scale.reshape(-1),
        "sigmas": sched.sigmas,
        "timesteps": sched.timesteps,
        "init_noise_sigma": torch.as_tensor(sched.init_noise_sigma, dtype=torch.float32).reshape(1),
        "latents_noise": latents_noise,
        "latents_initial": latents_initial,
        "unet_sample_step0": sample0,
        "unet_timestep_step0": torch.as_tensor(unet_t0).reshape(1),
        "unet_encoder_hidden_states": ehs,
        "unet_out_step0": out0,
        "guided_step0": guided0,
        "latents_steps": torch.stack([prev for _, prev in steps]),
        "latents_final": steps[-1][1],
        "frames_decoded": frames_decoded,
        "frames_uint8": frames_uint8,
    }
    files = {
        "image.png": {"width": image.width, "height": image.height, "mode": image.mode},
        **save_arrays(out_dir, arrays, _float32),
    }
    info = {
        "name": case.name,
        "description": case.description,
        "image": "image.png",
        "arguments": {"height": case.height, "width": case.width, "num_inference_steps": case.steps, **case.arguments},
        # the values the pipeline used, defaults included (names as in the manifest's `defaults`)
        "width": case.width,
        "height": case.height,
        "numFrames": frames,
        "steps": case.steps,
        "fps": case.arguments.get("fps", 7),
        "motionBucketId": case.arguments.get("motion_bucket_id", 127),
        "noiseAugStrength": strength,
        "minGuidance": case.arguments.get("min_guidance_scale", 1.0),
        "maxGuidance": case.arguments.get("max_guidance_scale", 3.0),
        "decodeChunk": chunk,
        "decodeChunkLengths": [int(c[0].shape[0]) for c in chunks],
        "seed": case.seed,
        "initNoiseSigma": float(sched.init_noise_sigma),
        "noise": (
            "g = torch.Generator().manual_seed(seed); aug_noise = torch.randn([1, 3, H, W], generator=g); "
            "latents_noise = torch.randn([1, F, 4, h, w], generator=g) (the pipeline's own order)"
        ),
        "batchOrder": ["uncond", "cond"],
        "files": files,
    }
    (out_dir / "case.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def resize_fixtures(out_dir: Path) -> dict:
    """diffusers' `_resize_with_antialiasing` on RESIZE_CASES, with the blur parameters it chose."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for k, (name, shape, size) in enumerate(RESIZE_CASES):
        x = torch.rand(shape, generator=torch.Generator().manual_seed(100 + k)) * 2 - 1
        seen = []
        original = svd_module._gaussian_blur2d
        svd_module._gaussian_blur2d = lambda inp, ks, sigma: seen.append((ks, sigma)) or original(inp, ks, sigma)
        try:
            y = svd_module._resize_with_antialiasing(x, size)
        finally:
            svd_module._gaussian_blur2d = original
        ((kernel, sigma),) = seen
        np.save(out_dir / f"{name}_input.npy", x.numpy())
        np.save(out_dir / f"{name}_output.npy", y.numpy())
        entries.append(
            {
                "name": name,
                "input": f"{name}_input.npy",
                "output": f"{name}_output.npy",
                "inputShape": list(shape),
                "size": list(size),
                "kernelSize": [int(kernel[0]), int(kernel[1])],
                "sigma": [float(sigma[0]), float(sigma[1])],
            }
        )
    info = {
        "about": (
            "diffusers' _resize_with_antialiasing(input, size) (pipeline_stable_video_diffusion.py): per axis "
            "sigma = max((in/out - 1) / 2, 0.001), kernel = int(max(4 sigma, 3)) made odd, separable Gaussian "
            "blur (horizontal, then vertical) with reflect padding, then bicubic interpolation with "
            "align_corners=True. Inputs are uniform in [-1, 1), as the pipeline passes 2x - 1."
        ),
        "cases": entries,
    }
    (out_dir / "resize.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def write(pipe, ref_dir: Path) -> list[dict]:
    """All reference cases plus the resize fixtures under `ref_dir`."""
    infos = [run_case(pipe, case, ref_dir / case.name) for case in CASES]
    resize_fixtures(ref_dir / "resize")
    return infos
