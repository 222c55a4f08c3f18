"""The committed reference (made by diffusers' pipeline) against the committed ONNX graphs.

If the ONNX components, driven the way the TypeScript runtime will drive them, reproduce every
recorded intermediate, then the fixture is self-consistent and sufficient: a runtime that matches
it matches diffusers. The scheduler arithmetic here is diffusers' own `DDIMScheduler.step`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from transformers import AutoTokenizer

from .helpers import COMMITTED, rel_error, session

REF = COMMITTED / "reference"
MANIFEST = json.loads((COMMITTED / "manifest.json").read_text("utf-8"))
CASES = sorted(p.name for p in REF.iterdir() if p.is_dir() and p.name.startswith("case"))
WAVEFORM_CASES = sorted(p.name for p in REF.iterdir() if p.is_dir() and p.name.startswith("waveforms"))


class Graphs:
    def __init__(self):
        self.sessions = {name: session(COMMITTED / c["file"]) for name, c in MANIFEST["components"].items()}

    def __call__(self, name, **feed):
        outs = self.sessions[name].run(None, feed)
        return outs[0] if len(outs) == 1 else outs


@pytest.fixture(scope="module")
def graphs():
    return Graphs()


def _load(case):
    info = json.loads((REF / case / "case.json").read_text("utf-8"))
    arrays = {name: np.load(REF / case / f"{name}.npy") for name in info["files"]}
    for name, meta in info["files"].items():
        assert list(arrays[name].shape) == meta["shape"] and str(arrays[name].dtype) == meta["dtype"], name
    return info, arrays


def test_cases_cover_what_they_should():
    assert CASES == ["case1", "case2"]
    info1, a1 = _load("case1")
    info2, a2 = _load("case2")
    cfg = MANIFEST["config"]
    assert info1["duration"] == MANIFEST["defaults"]["duration"] and info1["latentFrames"] == cfg["unetSampleSize"]
    assert info2["latentFrames"] % 8 != 0 and info2["duration"] != info1["duration"]
    assert info2["seed"] != info1["seed"] and any(ord(c) > 127 for c in info2["prompt"])
    for info, a in ((info1, a1), (info2, a2)):
        assert info["steps"] == 20 and info["guidance"] == 3.5
        gen = torch.Generator().manual_seed(info["seed"])
        np.testing.assert_array_equal(a["latents_initial"], torch.randn(a["latents_initial"].shape, generator=gen).numpy())
        assert a["waveform"].shape == (1, info["originalWaveformLength"])
        assert a["t5_attention_mask"][0].sum() < a["t5_attention_mask"].shape[1]  # the negative prompt is padded


@pytest.mark.parametrize("case", CASES)
def test_text_stages(graphs, case):
    _, a = _load(case)
    emb = graphs("clap_text", input_ids=a["clap_input_ids"], attention_mask=a["clap_attention_mask"])
    assert rel_error(emb, a["clap_text_embeds"]) <= 1e-5
    t5 = graphs("t5_encoder", input_ids=a["t5_input_ids"], attention_mask=a["t5_attention_mask"])
    assert rel_error(t5, a["t5_last_hidden_state"]) <= 1e-5
    hidden, mask = graphs(
        "projection",
        clap=a["clap_text_embeds"][:, None, :],
        clap_mask=np.ones((2, 1), dtype=np.int64),  # the pipeline replaces CLAP's mask with ones
        t5=a["t5_last_hidden_state"],
        t5_mask=a["t5_attention_mask"],
    )
    assert rel_error(hidden, a["projection_hidden_states"]) <= 1e-5
    np.testing.assert_array_equal(mask, a["projection_attention_mask"])
    embeds, mask = a["projection_hidden_states"], a["projection_attention_mask"]
    for _ in range(MANIFEST["config"]["maxNewTokens"]):
        last = graphs("gpt2", inputs_embeds=embeds, attention_mask=mask)[:, -1:]
        embeds = np.concatenate([embeds, last], axis=1)
        mask = np.concatenate([mask, np.ones((2, 1), dtype=np.int64)], axis=1)
    assert rel_error(embeds[:, -8:], a["gpt2_generated"]) <= 1e-5


def _unet(graphs, a, latents, t):
    return graphs(
        "unet",
        sample=np.concatenate([latents, latents]),
        timestep=np.array([t, t], dtype=np.int64),
        encoder_hidden_states=a["gpt2_generated"],
        encoder_hidden_states_1=a["t5_last_hidden_state"],
        encoder_attention_mask_1=a["t5_attention_mask"],
    )


@pytest.mark.parametrize("case", CASES)
def test_denoising_and_decoding(graphs, case):
    info, a = _load(case)
    scheduler = DDIMScheduler.from_config(MANIFEST["scheduler"])
    scheduler.set_timesteps(info["steps"])
    np.testing.assert_array_equal(scheduler.timesteps.numpy(), a["timesteps"])
    np.testing.assert_array_equal(scheduler.alphas_cumprod.numpy(), a["alphas_cumprod"])
    assert float(scheduler.final_alpha_cumprod) == float(a["final_alpha_cumprod"][0])
    assert a["unet_timestep_step0"][0] == a["timesteps"][0]
    noise0 = _unet(graphs, a, a["latents_initial"], a["timesteps"][0])
    assert rel_error(noise0, a["unet_out_step0"]) <= 1e-5

    def step(latents, t):
        uncond, cond = np.split(_unet(graphs, a, latents, t), 2)
        guided = uncond + info["guidance"] * (cond - uncond)
        return scheduler.step(torch.from_numpy(guided), int(t), torch.from_numpy(latents)).prev_sample.numpy()

    # each step from the recorded previous latents: per-step agreement
    previous = a["latents_initial"]
    for i, t in enumerate(a["timesteps"]):
        assert rel_error(step(previous, t), a["latents_steps"][i]) <= 1e-4, i
        previous = a["latents_steps"][i]
    np.testing.assert_array_equal(a["latents_steps"][-1], a["latents_final"])
    # free-running from the initial latents, as a sampler would
    latents = a["latents_initial"]
    for t in a["timesteps"]:
        latents = step(latents, t)
    assert rel_error(latents, a["latents_final"]) <= 1e-3
    mel = graphs("vae_decoder", latent=a["latents_final"] / MANIFEST["config"]["vaeScalingFactor"])
    assert rel_error(mel, a["mel"]) <= 1e-4
    wave = graphs("vocoder", mel=a["mel"][:, 0])[:, : info["originalWaveformLength"]]
    assert rel_error(wave, a["waveform"]) <= 1e-4


def test_tokens_fixture_matches_saved_tokenizers():
    """tokens.json (recorded inside encode_prompt) equals what the saved tokenizer files produce with
    the call arguments it documents, so the files alone are enough for a port."""
    tokens = json.loads((REF / "tokens.json").read_text("utf-8"))
    clap = AutoTokenizer.from_pretrained(COMMITTED / tokens["tokenizers"]["clap"]["dir"])
    t5 = AutoTokenizer.from_pretrained(COMMITTED / tokens["tokenizers"]["t5"]["dir"])
    assert tokens["tokenizers"]["clap"]["modelMaxLength"] == clap.model_max_length
    truncated_both = False
    for entry in tokens["cases"]:
        for text, clap_key, t5_key in ((entry["prompt"], "clap", "t5"), (entry["negativePrompt"], "negativeClap", "negativeT5")):
            c = clap(text, padding="max_length", max_length=clap.model_max_length, truncation=True)
            assert entry[clap_key] == {"inputIds": c.input_ids, "attentionMask": c.attention_mask}, text
        p = t5(entry["prompt"], padding=True, max_length=t5.model_max_length, truncation=True)
        assert entry["t5"] == {"inputIds": p.input_ids, "attentionMask": p.attention_mask}
        n = t5(entry["negativePrompt"], padding="max_length", max_length=len(p.input_ids), truncation=True)
        assert entry["negativeT5"] == {"inputIds": n.input_ids, "attentionMask": n.attention_mask}
        full_clap, full_t5 = clap(entry["prompt"]).input_ids, t5(entry["prompt"]).input_ids
        if len(full_clap) > clap.model_max_length and len(full_t5) > t5.model_max_length:
            truncated_both = True
            assert len(entry["clap"]["inputIds"]) == clap.model_max_length and 0 not in entry["clap"]["attentionMask"]
            assert len(entry["t5"]["inputIds"]) == t5.model_max_length
    assert truncated_both, "no prompt in tokens.json is long enough to be truncated by both tokenizers"
    texts = [e["prompt"] for e in tokens["cases"]]
    assert "" in texts and any("  " in t for t in texts) and any(ord(ch) > 0xFFFF for t in texts for ch in t)
    # the negative-prompt rule shows both ways: padded up to, and truncated down to, the prompt's T5 length
    neg_lengths = [(len(t5(e["negativePrompt"]).input_ids), len(e["t5"]["inputIds"])) for e in tokens["cases"]]
    assert any(n < p for n, p in neg_lengths) and any(n > p for n, p in neg_lengths)


def test_waveforms_case_covers_what_it_should():
    assert WAVEFORM_CASES == ["waveforms3"]
    info, a = _load("waveforms3")
    K = info["waveforms"]
    assert K == 3 and a["latents_initial"].shape[0] == K and a["waveform"].shape == (K, info["originalWaveformLength"])
    gen = torch.Generator().manual_seed(info["seed"])
    np.testing.assert_array_equal(a["latents_initial"], torch.randn(a["latents_initial"].shape, generator=gen).numpy())
    # the ranking is a permutation that is not the batch order, with scores far apart next to 1e-4
    assert sorted(a["ranking"].tolist()) == list(range(K)) and a["ranking"].tolist() != list(range(K))
    gaps = np.diff(np.sort(a["logits_per_text"][0]))
    assert gaps.min() > 1e-3
    np.testing.assert_array_equal(a["waveform"], a["waveforms_unranked"][a["ranking"]])


def test_waveforms_scoring(graphs):
    """The CLAP graphs reproduce diffusers' scores from its own features; the manifest's resampler and
    the feature extractor (transformers', from the manifest's settings) reproduce those features."""
    from transformers import ClapFeatureExtractor

    from models.export.audioldm2 import scoring

    info, a = _load("waveforms3")
    feats = MANIFEST["clapFeatures"]
    audio = graphs("clap_audio", input_features=a["clap_input_features"])
    assert rel_error(audio, a["clap_audio_embeds"]) <= 1e-5
    text = graphs("clap_text", input_ids=a["clap_score_input_ids"], attention_mask=a["clap_score_attention_mask"])
    assert rel_error(text, a["clap_score_text_embeds"]) <= 1e-5
    scores = text @ audio.T * np.float32(feats["logitScaleText"])
    np.testing.assert_allclose(scores, a["logits_per_text"], atol=1e-5)
    np.testing.assert_array_equal(np.argsort(-scores[0], kind="stable"), a["ranking"])
    res = feats["resampler"]
    taps = np.load(COMMITTED / res["file"])
    assert taps.shape == (res["taps"],)
    for k in range(info["waveforms"]):
        y = scoring.apply_resampler(a["waveforms_unranked"][k], taps, res["delay"], res["up"])
        assert np.abs(y - a["clap_resampled"][k]).max() <= 1e-5
    fe = ClapFeatureExtractor(
        feature_size=feats["featureSize"], sampling_rate=feats["samplingRate"], hop_length=feats["hopLength"],
        max_length_s=feats["maxSamples"] // feats["samplingRate"], fft_window_size=feats["fftWindowSize"],
        frequency_min=feats["frequencyMin"], frequency_max=feats["frequencyMax"],
        truncation=feats["truncation"], padding=feats["padding"],
    )
    got = fe(list(a["clap_resampled"]), sampling_rate=feats["samplingRate"], return_tensors="np").input_features
    np.testing.assert_array_equal(got.astype(np.float32), a["clap_input_features"])
