"""`nn.Module` wrappers that give each CogVideoX component the plain tensor signature of its ONNX graph.

Each wrapper takes positional tensors in the order of the input names in models/README.md and
returns one tensor. They call the pipeline's own modules and add nothing but what the pipeline does
around them.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..tracing import eager_attention


class TextEncoder(nn.Module):
    """`T5EncoderModel(input_ids).last_hidden_state`, without an attention mask.

    `CogVideoXPipeline._get_t5_prompt_embeds` calls `text_encoder(text_input_ids)[0]` with no mask, so
    the padding tokens are attended to; the graph reproduces exactly that.
    """

    def __init__(self, t5):
        super().__init__()
        self.t5 = t5

    def forward(self, input_ids):
        with eager_attention(self.t5.config):
            return self.t5(input_ids=input_ids).last_hidden_state


class Transformer(nn.Module):
    """`CogVideoXTransformer3DModel(hidden_states, encoder_hidden_states, timestep)` → v-prediction (2b),
    for one latent shape (F', h, w).

    diffusers adds an absolute 3-D sin-cos table: the stored buffer when the input has the config's
    sample size, otherwise one recomputed inside `forward`. The recomputed table is written with
    `tensor.data.copy_`, which the tracer does not see: traced as is, a graph for any other shape would
    add zeros. So the table for this shape is computed here, eagerly, by the same diffusers method, and
    presented to `forward` as the stored buffer of a model whose sample size is this shape. The values
    are the ones diffusers computes; they become a constant of the graph, which is therefore valid for
    this (F', h, w) only.
    """

    def __init__(self, transformer, latent_frames: int, latent_height: int, latent_width: int):
        super().__init__()
        self.transformer = transformer
        embed = transformer.patch_embed
        # sample_frames counts frames before temporal compression
        self.sample = (latent_height, latent_width, (latent_frames - 1) * embed.temporal_compression_ratio + 1)
        with torch.no_grad():
            self.table = embed._get_positional_embeddings(*self.sample)

    def forward(self, hidden_states, encoder_hidden_states, timestep):
        with _sample_size(self.transformer.patch_embed, self.sample, self.table):
            return self.transformer(
                hidden_states=hidden_states,
                encoder_hidden_states=encoder_hidden_states,
                timestep=timestep,
                return_dict=False,
            )[0]


@contextlib.contextmanager
def _sample_size(embed, sample: tuple[int, int, int], table: torch.Tensor):
    saved = embed.sample_height, embed.sample_width, embed.sample_frames, embed.pos_embedding
    embed.sample_height, embed.sample_width, embed.sample_frames = sample
    embed.pos_embedding = table
    try:
        yield
    finally:
        embed.sample_height, embed.sample_width, embed.sample_frames, embed.pos_embedding = saved


class RotaryTransformer(nn.Module):
    """The 5b transformer: as `Transformer`, plus the rotary tables `image_rotary_emb = (freqs_cos, freqs_sin)`.

    With rotary embeddings there is no position table inside the model, so nothing in the graph
    depends on the video shape except through the inputs.
    """

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer

    def forward(self, hidden_states, encoder_hidden_states, timestep, freqs_cos, freqs_sin):
        return self.transformer(
            hidden_states=hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            timestep=timestep,
            image_rotary_emb=(freqs_cos, freqs_sin),
            return_dict=False,
        )[0]


class VaeDecoder(nn.Module):
    """`vae.decode(z).sample`: diffusers' frame-batched causal decode, unrolled for one latent shape.

    The caller permutes the latents to [1, C, F', h, w] and multiplies them by 1 / scaling_factor, as
    `CogVideoXPipeline.decode_latents` does. The frame batches ((0,1,2),(3,4),... for odd F',
    (0,1),(2,3),... for even F') and the causal-conv caches passed between them are traced into the graph.
    """

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        return self.vae.decode(z).sample


@contextlib.contextmanager
def float32_patch_conv(transformer, active: bool = True):
    """Compute the patch embedding's Conv2d in float32 while a bf16 transformer is traced.

    ONNX's Conv has no bfloat16 type before opset 22 (the exporter writes opset 17), while every other
    op of the transformer does. The conv's inputs and weights are cast to float32 and its output back
    to bfloat16; PyTorch's bf16 convolution also accumulates in float32, so the two differ only in
    summation order. Restored afterwards.
    """
    conv = transformer.patch_embed.proj
    if not active or not isinstance(conv, nn.Conv2d):
        yield
        return

    def forward(x):
        bias = None if conv.bias is None else conv.bias.float()
        return F.conv2d(x.float(), conv.weight.float(), bias, conv.stride, conv.padding).to(x.dtype)

    conv.forward = forward
    try:
        yield
    finally:
        del conv.forward
