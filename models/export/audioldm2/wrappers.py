"""`nn.Module` wrappers that give each AudioLDM2 component the plain tensor signature of its ONNX graph.

Each wrapper takes positional tensors in the order of the input names in models/README.md and
returns tensors only, so no dict or dataclass crosses the graph boundary. They call the pipeline's
own modules and add nothing but what the pipeline does around them.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..tracing import always_forward_upsample_size, eager_attention


class ClapText(nn.Module):
    """`normalize(text_projection(text_model(ids, mask).pooler_output))`.

    Written out instead of calling `get_text_features`, whose return type changed between
    transformers v4 (tensor) and v5 (`BaseModelOutputWithPooling`); both normalise the same way.
    """

    def __init__(self, clap):
        super().__init__()
        self.text_model = clap.text_model
        self.text_projection = clap.text_projection

    def forward(self, input_ids, attention_mask):
        with eager_attention(self.text_model.config):
            pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return F.normalize(self.text_projection(pooled), dim=-1)


class ClapAudio(nn.Module):
    """CLAP's audio branch as `ClapModel.forward` computes `audio_embeds` for `logits_per_text`:
    `audio_projection(audio_model(input_features).pooler_output)`, divided by its L2 norm.

    `input_features` is the feature extractor's log-mel `[batch, 1, frames, mel_bins]` of an unfused
    checkpoint (`is_longer` only matters with `enable_fusion`, and diffusers' `score_waveforms` does
    not pass it).
    """

    def __init__(self, clap):
        super().__init__()
        self.audio_model = clap.audio_model
        self.audio_projection = clap.audio_projection

    def forward(self, input_features):
        pooled = self.audio_model(input_features=input_features).pooler_output
        embeds = self.audio_projection(pooled)
        return embeds / embeds.norm(p=2, dim=-1, keepdim=True)


class T5Encoder(nn.Module):
    """`T5EncoderModel(ids, mask).last_hidden_state`."""

    def __init__(self, t5):
        super().__init__()
        self.t5 = t5

    def forward(self, input_ids, attention_mask):
        with eager_attention(self.t5.config):
            return self.t5(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class Projection(nn.Module):
    """`AudioLDM2ProjectionModel` → (hidden_states, attention_mask)."""

    def __init__(self, projection):
        super().__init__()
        self.projection = projection

    def forward(self, clap, clap_mask, t5, t5_mask):
        out = self.projection(
            hidden_states=clap, hidden_states_1=t5, attention_mask=clap_mask, attention_mask_1=t5_mask
        )
        return out.hidden_states, out.attention_mask


class Gpt2(nn.Module):
    """GPT2 trunk over the whole sequence, without a KV cache: `last_hidden_state` (after `ln_f`).

    The pipeline's cached loop uses positions `arange(S)` and a causal, padding-masked attention, so
    running the full prefix each step gives the same last-position state.
    """

    def __init__(self, language_model):
        super().__init__()
        # GPT2LMHeadModel keeps the trunk in `.transformer`; a plain GPT2Model is the trunk itself.
        self.gpt2 = getattr(language_model, "transformer", language_model)

    def forward(self, inputs_embeds, attention_mask):
        with eager_attention(self.gpt2.config):
            out = self.gpt2(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state


class UNet(nn.Module):
    """The AudioLDM2 UNet with both cross-attention streams; `timestep` is int64 [batch].

    diffusers decides in Python whether to pass each up block the skip connection's size
    (`forward_upsample_size`: only when a latent side is not a multiple of 2**num_upsamplers). A
    traced graph would freeze that choice for the example shape, so during export the check is made
    to always fire: every up block then resizes to its skip's (dynamic) size, which is what diffusers
    computes for any length, and equals the plain 2x upsampling when the side is divisible.
    """

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, encoder_hidden_states_1, encoder_attention_mask_1):
        with always_forward_upsample_size(self.unet):
            return self.unet(
                sample,
                timestep,
                encoder_hidden_states=encoder_hidden_states,
                encoder_hidden_states_1=encoder_hidden_states_1,
                encoder_attention_mask_1=encoder_attention_mask_1,
                return_dict=False,
            )[0]


class VaeDecoder(nn.Module):
    """`vae.decode(latent).sample`; the caller divides by `scaling_factor` first, as the pipeline does."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent):
        return self.vae.decode(latent).sample


class Vocoder(nn.Module):
    """`SpeechT5HifiGan(mel)`: [batch, frames, mel_bins] → [batch, samples]."""

    def __init__(self, vocoder):
        super().__init__()
        self.vocoder = vocoder

    def forward(self, mel):
        return self.vocoder(mel)
