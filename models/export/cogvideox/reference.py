"""Golden outputs from diffusers' own `CogVideoXPipeline.__call__`, for the TypeScript parity tests.

Nothing here re-implements the pipeline: it runs as diffusers wrote it, on the very modules that are
exported, and hooks record what flows between its components. The initial latents are injected
through `latents=` (drawn from a seeded torch generator and stored), so the TypeScript side needs no
port of torch's random number generator.

Layout of `reference/<case>/` (`.npy`; batch-2 arrays are in the pipeline's classifier-free-guidance
order `[negative, prompt]`; without guidance the batch is 1, the prompt alone):
- input_ids (int64)              [B, L]          L = maxTextSeqLength; as the text encoder receives them
- prompt_embeds                  [B, L, D]       text encoder output (float32)
- timesteps (int64) [steps]; alphas_cumprod (float64) [1000], after the SNR shift and the zero-SNR
  rescale; final_alpha_cumprod (float64) [1]
- guidance_scales (float64)      [steps]         the scale used at each step (varies with use_dynamic_cfg)
- latents_initial                [1, F', C, h, w]
- freqs_cos, freqs_sin           [F'·(h/p)·(w/p), head_dim]   (rotary models only: the tables the
                                                 pipeline passed to the transformer)
- transformer_hidden_states_step0 [B, F', C, h, w] (= latents_initial repeated B times);
  transformer_timestep_step0 (int64) [B]; transformer_out_step0 [B, F', C, h, w] (pre-guidance v);
  the step-0 encoder_hidden_states are prompt_embeds
- latents_steps                  [steps, 1, F', C, h, w]  (after each scheduler step)
- latents_final                  [1, F', C, h, w]
and, for decoding cases:
- vae_z                          [1, C, F', h, w]  (permuted, times 1 / scaling_factor: the VAE input)
- frames                         [1, 3, F, H, W]   (VAE output, float, about [-1, 1])
- video (uint8)                  [F, H, W, 3]      (the PIL frames the pipeline returns, as arrays)
plus `case.json` (inputs, and every file's dtype and shape). A tiled case (`vaeTiling` in case.json:
the tile sizes and overlaps) runs the pipeline with `pipe.vae.enable_tiling(...)`, so `frames` and
`video` are diffusers' tiled decode (the tiles blended, `AutoencoderKLCogVideoX.tiled_decode`). `reference/tokens.json` holds tokenizer
parity cases; for rotary models `reference/rope/<shape>/` holds freqs_cos/freqs_sin at more shapes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ..audioldm2.reference import TOKEN_TEXTS
from ..folders import save_arrays
from . import components


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    prompt: str
    negative_prompt: str | None  # None: the pipeline's default ("")
    seed: int
    steps: int
    guidance: float
    description: str
    frames: int | None = None  # None: the pipeline's defaults (transformer sample size)
    height: int | None = None
    width: int | None = None
    dynamic_cfg: bool = False
    decode: bool = True  # False: output_type="latent" (no VAE graph needed for the shape)
    tiled: bool = False  # True: `pipe.vae.enable_tiling(...)` with the VAE's tile sizes (the model's `vaeTiling`)


LONG_PROMPT = " ".join(
    ["A slow cinematic drone shot over a misty mountain valley at sunrise, with a river winding"]
    + ["through dense pine forests, birds flying past the camera, and soft golden light"] * 3
    + ["while a small red train crosses an old stone bridge in the distance."]
)

TINY_CASES = (
    Case(
        "case1",
        "A panda playing a small guitar in a bamboo forest",
        None,
        seed=0,
        steps=20,
        guidance=6.0,
        description="the manifest defaults: default shape (odd F' = 3: one 3-frame VAE batch), 20 steps, guidance 6, "
        "default negative prompt",
    ),
    Case(
        "case2",
        LONG_PROMPT + " Café ☕, 4k!",
        "Low quality, blurry, distorted",
        seed=1234,
        steps=7,
        guidance=6.0,
        frames=16,
        description="even F' = 4 (VAE batches (0,1),(2,3) with the causal caches between them, 16 frames), 7 steps "
        "(1000 // 7 = 142: t - 142 is not the next timestep), prompt longer than the tokenizer's max length",
    ),
    Case(
        "case3",
        "A cat chasing a ball of yarn across the floor",
        "",
        seed=7,
        steps=8,
        guidance=6.0,
        dynamic_cfg=True,
        description="use_dynamic_cfg=True: diffusers' formula with the raw timestep (guidance_scales.npy)",
    ),
    Case(
        "case4",
        "Fireworks over a city skyline at night",
        None,
        seed=3,
        steps=4,
        guidance=1.0,
        description="guidance 1: no classifier-free guidance, transformer batch 1, no negative prompt encoded",
    ),
    Case(
        "case5",
        "Waves crashing against black rocks during a storm",
        None,
        seed=11,
        steps=4,
        guidance=6.0,
        frames=16,
        tiled=True,
        description="vae.enable_tiling() with the tiny tile sizes: 2 x 2 overlapping tiles of 3x4, 3x3, 2x4 and 2x3 "
        "latents, each decoded in diffusers' frame batches (even F' = 4: (0,1),(2,3) with the caches between), "
        "blended over 8 pixels (blend_v, blend_h) and cropped to 16 x 24",
    ),
)

TINY_5B_CASES = (
    Case(
        "case1",
        "A panda playing a small guitar in a bamboo forest",
        None,
        seed=0,
        steps=10,
        guidance=6.0,
        description="the manifest defaults: default shape (rotary positions are integers), 10 steps, guidance 6",
    ),
    Case(
        "case2",
        "A golden retriever running on a sunny beach at sunset",
        "Low quality",
        seed=5,
        steps=3,
        guidance=6.0,
        frames=13,
        height=32,
        width=64,
        decode=False,
        description="another shape through the one rotary transformer graph: F' = 4 at 32 x 64 (patch grid 2 x 4 "
        "against the sample grid 2 x 3: fractional rotary positions); 3 steps (t - 333 skips a timestep); "
        "output_type='latent' (this shape has no VAE graph)",
    ),
)

# A checkpoint (or the bench size): one short run at the default shape.
DEFAULT_CASES = (
    Case(
        "case1",
        "A panda playing a small guitar in a bamboo forest",
        None,
        seed=0,
        steps=3,
        guidance=6.0,
        description="default shape, 3 steps, guidance 6",
    ),
)

# Rotary tables at shapes beyond the cases', for the TypeScript recipe: (frames, height, width) in pixels.
ROPE_SHAPES = ((1, 16, 16), (9, 64, 32), (17, 48, 96), (13, 32, 64))


def cases_for(size: str | None) -> tuple[Case, ...]:
    return {"tiny": TINY_CASES, "tiny-5b": TINY_5B_CASES}.get(size or "", DEFAULT_CASES)


def case_shape(pipe, case: Case) -> components.Shape:
    default = components.default_shape(pipe)
    return components.model_shape(
        pipe, case.frames or default.frames, case.height or default.height, case.width or default.width
    )


class Recorder:
    """Forward hooks and method wrappers that record each component's inputs and outputs in call order."""

    def __init__(self):
        self.calls: dict[str, list] = defaultdict(list)

    @contextlib.contextmanager
    def attached(self, pipe):
        handles = []
        patched = []

        def patch(owner, attr, make):
            setattr(owner, attr, make(getattr(owner, attr)))
            patched.append((owner, attr))

        def on_text(module, args, kwargs, out):
            ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
            self.calls["text"].append((ids, out[0]))

        def on_transformer(module, args, kwargs, out):
            rotary = kwargs.get("image_rotary_emb")
            self.calls["transformer"].append((kwargs["hidden_states"], kwargs["timestep"], out[0], rotary))

        def wrap_step(original):
            def step(*args, **kwargs):
                out = original(*args, **kwargs)
                self.calls["step"].append((out[0], float(pipe.guidance_scale)))
                return out

            return step

        def wrap_decode(original):
            def decode(z, *args, **kwargs):
                out = original(z, *args, **kwargs)
                self.calls["vae"].append((z, out.sample))
                return out

            return decode

        handles.append(pipe.text_encoder.register_forward_hook(on_text, with_kwargs=True))
        handles.append(pipe.transformer.register_forward_hook(on_transformer, with_kwargs=True))
        patch(pipe.scheduler, "step", wrap_step)
        patch(pipe.vae, "decode", wrap_decode)
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            for owner, attr in patched:
                delattr(owner, attr)  # drops the instance attribute, exposing the class method again


@contextlib.contextmanager
def _tiling(vae, tiling: dict | None):
    """`vae.enable_tiling(...)` with the manifest's numbers for the duration (nothing when None)."""
    if tiling is None:
        yield
        return
    vae.enable_tiling(
        tile_sample_min_height=tiling["tileSampleMinHeight"],
        tile_sample_min_width=tiling["tileSampleMinWidth"],
        tile_overlap_factor_height=tiling["tileOverlapFactorHeight"],
        tile_overlap_factor_width=tiling["tileOverlapFactorWidth"],
    )
    try:
        yield
    finally:
        vae.disable_tiling()


def _expect(recorder: Recorder, key: str, count: int) -> list:
    got = recorder.calls[key]
    if len(got) != count:
        raise RuntimeError(f"reference: expected {count} '{key}' calls from the pipeline, saw {len(got)}")
    return got


def _np(t) -> np.ndarray:
    if isinstance(t, np.ndarray):
        return t
    t = t.detach().cpu()
    if t.dtype == torch.float64:
        return t.numpy()
    return t.numpy().astype(np.float32 if t.is_floating_point() else np.int64)


def run_case(pipe, case: Case, out_dir: Path) -> dict:
    """Run the pipeline on `case`, write its arrays and case.json, and return the case.json dict."""
    shape = case_shape(pipe, case)
    channels = pipe.transformer.config.in_channels
    latents = torch.randn(
        (1, shape.latent_frames, channels, shape.latent_height, shape.latent_width),
        generator=torch.Generator().manual_seed(case.seed),
        dtype=torch.float32,
    )
    cfg = case.guidance > 1.0
    recorder = Recorder()
    tiling = components.vae_tiling(pipe.vae) if case.tiled else None
    with recorder.attached(pipe), _tiling(pipe.vae, tiling), torch.no_grad():
        video = pipe(
            case.prompt,
            negative_prompt=case.negative_prompt,
            height=shape.height,
            width=shape.width,
            num_frames=shape.frames,
            num_inference_steps=case.steps,
            guidance_scale=case.guidance,
            use_dynamic_cfg=case.dynamic_cfg,
            latents=latents.clone(),
            output_type="pil" if case.decode else "latent",
            max_sequence_length=pipe.transformer.config.max_text_seq_length,
        ).frames

    texts = _expect(recorder, "text", 2 if cfg else 1)  # prompt first, then the negative prompt
    calls = _expect(recorder, "transformer", case.steps)
    steps = _expect(recorder, "step", case.steps)
    hidden0, t0, out0, rotary = calls[0]
    batch = 2 if cfg else 1
    if not torch.equal(hidden0, torch.cat([latents] * batch)):
        raise RuntimeError("reference: the transformer's first input is not the injected latents")
    order = [1, 0] if cfg else [0]  # [negative, prompt]
    sched = pipe.scheduler
    arrays = {
        "input_ids": torch.cat([texts[i][0] for i in order]),
        "prompt_embeds": torch.cat([texts[i][1] for i in order]),
        "timesteps": sched.timesteps.to(torch.int64),
        "alphas_cumprod": sched.alphas_cumprod.to(torch.float64),
        "final_alpha_cumprod": torch.as_tensor(sched.final_alpha_cumprod, dtype=torch.float64).reshape(1),
        "guidance_scales": np.array([g for _, g in steps], dtype=np.float64),
        "latents_initial": latents,
    }
    if rotary is not None:
        arrays["freqs_cos"], arrays["freqs_sin"] = rotary
    arrays.update(
        {
            "transformer_hidden_states_step0": hidden0,
            "transformer_timestep_step0": t0.to(torch.int64),
            "transformer_out_step0": out0,
            "latents_steps": torch.stack([s for s, _ in steps]),
            "latents_final": steps[-1][0],
        }
    )
    if case.decode:
        ((z, frames),) = _expect(recorder, "vae", 1)
        arrays["vae_z"] = z
        arrays["frames"] = frames
        arrays["video"] = np.stack([np.asarray(image) for image in video[0]])
        want_z = steps[-1][0].permute(0, 2, 1, 3, 4) * (1 / pipe.vae_scaling_factor_image)
        if not torch.equal(z, want_z):
            raise RuntimeError("reference: the VAE input is not the last step's latents, permuted and scaled")
    elif not torch.equal(video, steps[-1][0]):
        raise RuntimeError("reference: the latent output is not the last step's latents")

    files = save_arrays(out_dir, arrays, _np)
    info = {
        "name": case.name,
        "description": case.description,
        "prompt": case.prompt,
        "negativePrompt": "" if case.negative_prompt is None else case.negative_prompt,
        "negativePromptArgument": case.negative_prompt,
        "steps": case.steps,
        "guidance": case.guidance,
        "useDynamicCfg": case.dynamic_cfg,
        "eta": 0.0,
        "frames": shape.frames,
        "height": shape.height,
        "width": shape.width,
        "latentFrames": shape.latent_frames,
        "latentHeight": shape.latent_height,
        "latentWidth": shape.latent_width,
        "outputFrames": shape.output_frames if case.decode else None,
        "outputType": "pil" if case.decode else "latent",
        "maxSequenceLength": pipe.transformer.config.max_text_seq_length,
        "seed": case.seed,
        "latentsFrom": "torch.randn(shape, generator=torch.Generator().manual_seed(seed)) == latents_initial",
        "batchOrder": ["negative", "prompt"] if cfg else ["prompt"],
        **({"vaeTiling": tiling} if tiling is not None else {}),
        "files": files,
    }
    (out_dir / "case.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return info


def token_fixtures(pipe) -> dict:
    """Token ids exactly as `encode_prompt` feeds them to the text encoder, for TOKEN_TEXTS and a long prompt."""
    length = pipe.transformer.config.max_text_seq_length
    entries = []
    for text in TOKEN_TEXTS + (LONG_PROMPT,):
        recorder = Recorder()
        with recorder.attached(pipe), torch.no_grad():
            pipe.encode_prompt(
                text, negative_prompt=None, do_classifier_free_guidance=False, max_sequence_length=length,
                device=torch.device("cpu"),
            )
        ((ids, _),) = _expect(recorder, "text", 1)
        entries.append({"prompt": text, "inputIds": ids[0].tolist()})
    return {
        "about": (
            "Token ids as diffusers' CogVideoXPipeline._get_t5_prompt_embeds passes them to the text encoder: "
            "padding='max_length', max_length=maxTextSeqLength, truncation=True, add_special_tokens=True; "
            "no attention mask. The negative prompt (default '') is tokenized the same way."
        ),
        "tokenizer": {
            "dir": "tokenizer",
            "modelMaxLength": int(pipe.tokenizer.model_max_length),
            "padTokenId": int(pipe.tokenizer.pad_token_id),
            "maxLength": length,
        },
        "cases": entries,
    }


def rope_fixtures(pipe, ref_dir: Path, shapes: list[components.Shape]) -> dict:
    """freqs_cos/freqs_sin from the pipeline's own `_prepare_rotary_positional_embeddings` at `shapes`."""
    listing = []
    for shape in shapes:
        cos, sin = components.rotary_tables(pipe, shape)
        folder = ref_dir / "rope" / shape.key
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "freqs_cos.npy", _np(cos))
        np.save(folder / "freqs_sin.npy", _np(sin))
        listing.append(
            {
                "dir": f"rope/{shape.key}",
                "frames": shape.frames,
                "height": shape.height,
                "width": shape.width,
                "latentFrames": shape.latent_frames,
                "gridHeight": shape.latent_height // shape.patch,
                "gridWidth": shape.latent_width // shape.patch,
                "shape": list(cos.shape),
            }
        )
    info = {"about": "freqs_cos/freqs_sin [F' * gridHeight * gridWidth, attentionHeadDim] float32", "shapes": listing}
    (ref_dir / "rope" / "rope.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def write(pipe, ref_dir: Path, cases: tuple[Case, ...]) -> list[dict]:
    """Every case, tokens.json and (rotary models) rope/ under `ref_dir`."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # The truncation warning for the long prompt is expected.
    saved = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    try:
        infos = [run_case(pipe, case, ref_dir / case.name) for case in cases]
        tokens = token_fixtures(pipe)
        if components.uses_rope(pipe):
            rope_fixtures(pipe, ref_dir, [components.model_shape(pipe, *s) for s in ROPE_SHAPES])
    finally:
        diffusers_logging.set_verbosity(saved[0])
        transformers_logging.set_verbosity(saved[1])
    (ref_dir / "tokens.json").write_text(json.dumps(tokens, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return infos
