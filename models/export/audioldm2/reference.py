"""Golden outputs from diffusers' own `AudioLDM2Pipeline.__call__`, for the TypeScript parity tests.

Nothing here re-implements the pipeline: the pipeline runs as diffusers wrote it, on the very
modules that were exported, and hooks record what flows between its components. Initial latents are
injected through `latents=` (drawn from a seeded torch generator and stored), so the TypeScript side
needs no port of torch's random number generator.

Layout of `reference/<case>/` (all `.npy`, float32 or int64; batch-2 arrays are in the pipeline's
classifier-free-guidance order, `[negative, prompt]`):
- clap_input_ids, clap_attention_mask            [2, clap_len]  (clap_len = CLAP model_max_length)
- t5_input_ids, t5_attention_mask                [2, L]         (L = the prompt's T5 length)
- clap_text_embeds                               [2, clap_dim]
- t5_last_hidden_state                           [2, L, t5_dim]
- projection_hidden_states, projection_attention_mask   [2, L + 5, lm_dim], [2, L + 5]
- gpt2_generated                                 [2, max_new_tokens, lm_dim]
- latents_initial                                [1, C, frames, W]
- timesteps (int64) [steps]; alphas_cumprod [num_train_timesteps]; final_alpha_cumprod [1]
- unet_timestep_step0 (int64) [1]; unet_out_step0 [2, C, frames, W] (pre-guidance)
- latents_steps                                  [steps, 1, C, frames, W] (after each scheduler step)
- latents_final                                  [1, C, frames, W] (last step, before 1/scaling_factor)
- mel                                            [1, 1, mel_frames, mel_bins]
- waveform                                       [1, samples] (cropped, as the pipeline returns it)
plus `case.json` (inputs and every file's shape). `reference/tokens.json` holds tokenizer parity cases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ..folders import save_arrays
from . import scoring

STEPS = 20
GUIDANCE = 3.5


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    prompt: str
    negative_prompt: str
    seed: int
    duration: float | None  # None: the pipeline's default (unet.sample_size * vae_scale_factor * 0.01 s)
    description: str


CASES = (
    Case(
        "case1",
        "A hammer hitting a wooden surface",
        "low quality, distorted",
        seed=0,
        duration=None,
        description="default duration; latent frames = unet.sample_size (a multiple of 8)",
    ),
    Case(
        "case2",
        "café ☕ rain on a tin roof, soft thunder",
        "music",
        seed=1234,
        duration=1.0,
        description="non-ASCII prompt; 1.0 s gives 100 mel frames and 25 latent frames (not a multiple of 8)",
    ),
)

# Tokenizer parity strings: empty, short, long enough to be truncated by both tokenizers,
# accents/emoji/CJK, runs of whitespace, punctuation.
TOKEN_TEXTS = (
    "",
    "dog",
    "A hammer hitting a wooden surface",
    " ".join(
        ["A long recording of a busy train station at rush hour, with announcements echoing,"]
        + ["people talking, footsteps on tiles, trains braking and doors beeping"] * 6
        + ["while a street musician plays a violin near the exit."]
    ),
    "café ☕ rain",
    "Crème brûlée, naïve façade, piñata — über 😀🎵!",
    "日本語の音声、雨の音",
    "  multiple   spaces\tand\ttabs\n newline  ",
    "Punctuation: hello, world! (yes?) [no]; 'single' \"double\" ... --- 3.14 #1 @home 50% a/b",
    "UPPER lower MiXeD 1234567890",
)
# (prompt, negative prompt) pairs for the negative-prompt rule: the negative's T5 ids are padded, or
# truncated, to the prompt's T5 length.
TOKEN_PAIRS = (
    ("A hammer hitting a wooden surface", ""),
    ("dog", "Low quality, noisy, distorted audio with static and hum"),
    ("café ☕ rain", "café"),
    (TOKEN_TEXTS[3], "Low quality"),
    ("", "music"),
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
            original = getattr(owner, attr)
            setattr(owner, attr, make(original))
            patched.append((owner, attr))

        def wrap_method(key, pick):
            def make(original):
                def wrapper(*args, **kwargs):
                    out = original(*args, **kwargs)
                    self.calls[key].append(pick(args, kwargs, out))
                    return out

                return wrapper

            return make

        # CLAP: the pipeline calls get_text_features (not forward); its text tower sees the token ids.
        handles.append(
            pipe.text_encoder.text_model.register_forward_pre_hook(
                lambda m, a, kw: self.calls["clap_in"].append((_arg(a, kw, 0, "input_ids"), kw["attention_mask"])),
                with_kwargs=True,
            )
        )
        patch(pipe.text_encoder, "get_text_features", wrap_method("clap_out", lambda a, kw, out: _pooled(out)))
        handles.append(
            pipe.text_encoder_2.register_forward_hook(
                lambda m, a, kw, out: self.calls["t5"].append((_arg(a, kw, 0, "input_ids"), kw["attention_mask"], out[0])),
                with_kwargs=True,
            )
        )
        handles.append(
            pipe.projection_model.register_forward_hook(
                lambda m, a, out: self.calls["projection"].append((out.hidden_states, out.attention_mask))
            )
        )
        patch(pipe, "generate_language_model", wrap_method("gpt2", lambda a, kw, out: out))
        handles.append(
            pipe.unet.register_forward_hook(
                lambda m, a, kw, out: self.calls["unet"].append((a[0], a[1], out[0])), with_kwargs=True
            )
        )
        patch(pipe.scheduler, "step", wrap_method("step", lambda a, kw, out: out.prev_sample))
        patch(pipe.vae, "decode", wrap_method("vae", lambda a, kw, out: (a[0], out.sample)))
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            for owner, attr in patched:
                delattr(owner, attr)  # drops the instance attribute, exposing the class method again


def _arg(args, kwargs, index, name):
    return kwargs[name] if name in kwargs else args[index]


def _pooled(out):
    # transformers v5 returns BaseModelOutputWithPooling, v4 a tensor; diffusers handles both the same way.
    return out.pooler_output if hasattr(out, "pooler_output") else out


def _np(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return t.numpy().astype(np.int64 if not t.is_floating_point() else np.float32)


def _expect(recorder: Recorder, key: str, count: int) -> list:
    got = recorder.calls[key]
    if len(got) != count:
        raise RuntimeError(f"reference: expected {count} '{key}' calls from the pipeline, saw {len(got)}")
    return got


def default_duration(pipe) -> float:
    """diffusers' default `audio_length_in_s`, computed as in `AudioLDM2Pipeline.__call__`."""
    factor = np.prod(pipe.vocoder.config.upsample_rates) / pipe.vocoder.config.sampling_rate
    return float(pipe.unet.config.sample_size * pipe.vae_scale_factor * factor)


def run_case(pipe, case: Case, out_dir: Path) -> dict:
    """Run the pipeline on `case`, write its arrays and case.json, and return the case.json dict."""
    shape = (
        1,
        pipe.unet.config.in_channels,
        _latent_frames(pipe, case.duration),
        pipe.vocoder.config.model_in_dim // pipe.vae_scale_factor,
    )
    # Drawn in float32, then in the pipeline's dtype: prepare_latents keeps given latents' dtype,
    # and an fp16 UNet needs fp16 ones (latents_initial then holds the fp16 values).
    dtype = pipe.unet.dtype
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(case.seed), dtype=torch.float32).to(dtype)
    recorder = Recorder()
    with recorder.attached(pipe), torch.no_grad():
        audio = pipe(
            case.prompt,
            negative_prompt=case.negative_prompt,
            audio_length_in_s=case.duration,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            latents=latents.clone(),
            output_type="np",
        ).audios

    (clap_p, clap_n) = _expect(recorder, "clap_in", 2)
    (emb_p, emb_n) = _expect(recorder, "clap_out", 2)
    (t5_p, t5_n) = _expect(recorder, "t5", 2)
    (proj_p, proj_n) = _expect(recorder, "projection", 2)
    (gen_p, gen_n) = _expect(recorder, "gpt2", 2)
    unet_calls = _expect(recorder, "unet", STEPS)
    steps = _expect(recorder, "step", STEPS)
    ((vae_in, mel),) = _expect(recorder, "vae", 1)
    sample0, t0, noise0 = unet_calls[0]
    if not torch.equal(sample0, torch.cat([latents, latents])):
        raise RuntimeError("reference: the UNet's first input is not the injected latents")

    sched = pipe.scheduler
    arrays = {
        "clap_input_ids": torch.cat([clap_n[0], clap_p[0]]),
        "clap_attention_mask": torch.cat([clap_n[1], clap_p[1]]),
        "t5_input_ids": torch.cat([t5_n[0], t5_p[0]]),
        "t5_attention_mask": torch.cat([t5_n[1], t5_p[1]]),
        "clap_text_embeds": torch.cat([emb_n, emb_p]),
        "t5_last_hidden_state": torch.cat([t5_n[2], t5_p[2]]),
        "projection_hidden_states": torch.cat([proj_n[0], proj_p[0]]),
        "projection_attention_mask": torch.cat([proj_n[1], proj_p[1]]),
        "gpt2_generated": torch.cat([gen_n, gen_p]),
        "latents_initial": latents,
        "timesteps": sched.timesteps.to(torch.int64),
        "alphas_cumprod": sched.alphas_cumprod.to(torch.float32),
        "final_alpha_cumprod": torch.as_tensor(sched.final_alpha_cumprod, dtype=torch.float32).reshape(1),
        "unet_timestep_step0": torch.as_tensor(t0).to(torch.int64).reshape(1),
        "unet_out_step0": noise0,
        "latents_steps": torch.stack(steps),
        "latents_final": steps[-1],
        "mel": mel,
        "waveform": torch.from_numpy(audio),
    }
    rtol = 1e-6 if dtype == torch.float32 else 2e-3  # fp16: the scaling rounds twice
    if not torch.allclose((vae_in * pipe.vae.config.scaling_factor).float(), steps[-1].float(), rtol=rtol, atol=0):
        raise RuntimeError("reference: the VAE input is not the last step's latents / scaling_factor")
    files = save_arrays(out_dir, arrays, _np)
    duration = case.duration if case.duration is not None else default_duration(pipe)
    info = {
        "name": case.name,
        "description": case.description,
        "prompt": case.prompt,
        "negativePrompt": case.negative_prompt,
        "steps": STEPS,
        "guidance": GUIDANCE,
        "eta": 0.0,
        "duration": duration,
        "durationArgument": case.duration,
        "seed": case.seed,
        "latentsFrom": "torch.randn(shape, generator=torch.Generator().manual_seed(seed))"
        + ("" if dtype == torch.float32 else f".to({dtype})")
        + " == latents_initial",
        "batchOrder": ["negative", "prompt"],
        "melFrames": int(mel.shape[2]),
        "latentFrames": shape[2],
        "originalWaveformLength": int(duration * pipe.vocoder.config.sampling_rate),
        "files": files,
    }
    (out_dir / "case.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return info


def _latent_frames(pipe, duration: float | None) -> int:
    """Latent frames for `duration`, following `__call__`: mel height rounded up to the VAE factor."""
    factor = np.prod(pipe.vocoder.config.upsample_rates) / pipe.vocoder.config.sampling_rate
    seconds = duration if duration is not None else default_duration(pipe)
    height = int(seconds / factor)
    if height % pipe.vae_scale_factor != 0:
        height = int(np.ceil(height / pipe.vae_scale_factor)) * pipe.vae_scale_factor
    return height // pipe.vae_scale_factor


def token_fixtures(pipe) -> dict:
    """Token ids and masks exactly as `encode_prompt` feeds them to CLAP and T5, for TOKEN_TEXTS and TOKEN_PAIRS.

    Each text is encoded by the pipeline's own `encode_prompt` (with guidance, so the negative rule
    applies too); the ids are recorded on their way into the text encoders.
    """
    def ids(pair):
        return {"inputIds": pair[0][0].tolist(), "attentionMask": pair[1][0].tolist()}

    entries = []
    pairs = [(text, "") for text in TOKEN_TEXTS] + [p for p in TOKEN_PAIRS if p[1] != ""]
    for prompt, negative in pairs:
        recorder = Recorder()
        with recorder.attached(pipe), torch.no_grad():
            pipe.encode_prompt(
                prompt, device=torch.device("cpu"), num_waveforms_per_prompt=1, do_classifier_free_guidance=True,
                negative_prompt=negative,
            )
        clap = _expect(recorder, "clap_in", 2)
        t5 = _expect(recorder, "t5", 2)
        entries.append(
            {
                "prompt": prompt,
                "negativePrompt": negative,
                "clap": ids(clap[0]),
                "t5": ids(t5[0]),
                "negativeClap": ids(clap[1]),
                "negativeT5": ids(t5[1]),
            }
        )
    return {
        "about": (
            "Token ids and attention masks as diffusers' AudioLDM2Pipeline.encode_prompt passes them to the text "
            "encoders. CLAP: padding='max_length', max_length=model_max_length, truncation=True. T5 prompt: "
            "padding=True (longest), truncation at model_max_length. Negative prompt: CLAP as above; T5 "
            "padding='max_length' with max_length = the prompt's T5 length, truncation=True."
        ),
        "tokenizers": {
            "clap": {"dir": "tokenizer", "modelMaxLength": pipe.tokenizer.model_max_length, "padTokenId": pipe.tokenizer.pad_token_id},
            "t5": {"dir": "tokenizer_2", "modelMaxLength": pipe.tokenizer_2.model_max_length, "padTokenId": pipe.tokenizer_2.pad_token_id},
        },
        "cases": entries,
    }


@dataclasses.dataclass(frozen=True)
class WaveformsCase:
    name: str
    prompt: str
    negative_prompt: str
    seed: int
    waveforms: int
    description: str


# num_waveforms_per_prompt > 1: K latents denoised as one batch, then ranked by score_waveforms.
WAVEFORMS_CASES = (
    WaveformsCase(
        "waveforms3",
        "A hammer hitting a wooden surface",
        "low quality, distorted",
        seed=7,
        waveforms=3,
        description="num_waveforms_per_prompt=3 at the default duration: batch 3 in the UNet, ranked by CLAP",
    ),
)


class _FeatureExtractorProbe:
    """Stands in for the pipeline's feature extractor to record what `score_waveforms` gives it."""

    def __init__(self, inner, calls: list):
        self._inner = inner
        self._calls = calls

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __call__(self, raw_speech, *args, **kwargs):
        out = self._inner(raw_speech, *args, **kwargs)
        self._calls.append((np.stack([np.asarray(a) for a in raw_speech]), out.input_features))
        return out


def run_waveforms_case(pipe, case: WaveformsCase, out_dir: Path) -> dict:
    """Run the pipeline with `num_waveforms_per_prompt=K`; write what the ranking saw and chose.

    Layout of `reference/<case>/` besides case.json (K waveforms, S CLAP tokens of the prompt):
    - latents_initial [K, C, frames, W]; latents_final [K, C, frames, W] (last DDIM step)
    - waveforms_unranked [K, samples]: the vocoder's output cropped, in batch order
    - clap_resampled [K, up * samples]: librosa.resample's output, the feature extractor's input
    - clap_input_features [K, 1, clap_frames, clap_mel_bins]: as passed to ClapModel (float32)
    - clap_score_input_ids, clap_score_attention_mask [1, S] (int64)
    - clap_score_text_embeds [1, clap_dim]; clap_audio_embeds [K, clap_dim] (both L2-normalised)
    - logits_per_text [1, K]: the scores; ranking (int64) [K]: batch indices, best first
    - waveform [K, samples]: what the pipeline returns (ranked)
    """
    from diffusers.utils import is_librosa_available

    if not is_librosa_available():
        scoring._librosa()  # raises the ExportError that says to install it
    K = case.waveforms
    shape = (
        K,
        pipe.unet.config.in_channels,
        _latent_frames(pipe, None),
        pipe.vocoder.config.model_in_dim // pipe.vae_scale_factor,
    )
    dtype = pipe.unet.dtype
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(case.seed), dtype=torch.float32).to(dtype)
    recorder = Recorder()
    vocoder_out, clap_calls, features = [], [], []
    hooks = [
        pipe.vocoder.register_forward_hook(lambda m, a, out: vocoder_out.append(out)),
        pipe.text_encoder.register_forward_hook(lambda m, a, kw, out: clap_calls.append((kw, out)), with_kwargs=True),
    ]
    probe = _FeatureExtractorProbe(pipe.feature_extractor, features)
    inner = pipe.feature_extractor
    object.__setattr__(pipe, "feature_extractor", probe)  # not a registered module change
    try:
        with recorder.attached(pipe), torch.no_grad():
            audio = pipe(
                case.prompt,
                negative_prompt=case.negative_prompt,
                num_inference_steps=STEPS,
                guidance_scale=GUIDANCE,
                num_waveforms_per_prompt=K,
                latents=latents.clone(),
                output_type="np",
            ).audios
    finally:
        object.__setattr__(pipe, "feature_extractor", inner)
        for h in hooks:
            h.remove()
    steps = _expect(recorder, "step", STEPS)
    if len(vocoder_out) != 1 or len(clap_calls) != 1 or len(features) != 1:
        raise RuntimeError("reference: expected one vocoder call, one CLAP scoring call and one feature extraction")
    length = int(default_duration(pipe) * pipe.vocoder.config.sampling_rate)
    unranked = vocoder_out[0][:, :length]
    kwargs, out = clap_calls[0]
    scores = out.logits_per_text
    ranking = torch.argsort(scores, dim=1, descending=True)[0]
    if not np.array_equal(audio, unranked[ranking].numpy()):
        raise RuntimeError("reference: the returned audio is not the unranked waveforms in score order")
    resampled, input_features = features[0]
    arrays = {
        "latents_initial": latents,
        "latents_final": steps[-1],
        "waveforms_unranked": unranked,
        "clap_resampled": torch.from_numpy(resampled),
        "clap_input_features": kwargs["input_features"],
        "clap_score_input_ids": kwargs["input_ids"],
        "clap_score_attention_mask": kwargs["attention_mask"],
        "clap_score_text_embeds": out.text_embeds,
        "clap_audio_embeds": out.audio_embeds,
        "logits_per_text": scores,
        "ranking": ranking,
        "waveform": torch.from_numpy(audio),
    }
    files = save_arrays(out_dir, arrays, _np)
    info = {
        "name": case.name,
        "description": case.description,
        "prompt": case.prompt,
        "negativePrompt": case.negative_prompt,
        "steps": STEPS,
        "guidance": GUIDANCE,
        "eta": 0.0,
        "waveforms": K,
        "duration": default_duration(pipe),
        "seed": case.seed,
        "latentsFrom": "torch.randn(shape, generator=torch.Generator().manual_seed(seed)) == latents_initial",
        "batchOrder": ["negative x K", "prompt x K"],
        "latentFrames": shape[2],
        "originalWaveformLength": length,
        "ranking": [int(v) for v in ranking],
        "files": files,
    }
    (out_dir / "case.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return info


def write(pipe, ref_dir: Path) -> list[dict]:
    """All reference cases plus tokens.json under `ref_dir`."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # The truncation warnings for the long prompt are expected.
    saved = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    try:
        infos = [run_case(pipe, case, ref_dir / case.name) for case in CASES]
        infos += [run_waveforms_case(pipe, case, ref_dir / case.name) for case in WAVEFORMS_CASES]
        tokens = token_fixtures(pipe)
    finally:
        diffusers_logging.set_verbosity(saved[0])
        transformers_logging.set_verbosity(saved[1])
    (ref_dir / "tokens.json").write_text(json.dumps(tokens, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return infos
