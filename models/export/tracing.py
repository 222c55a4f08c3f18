"""Context managers that make a module trace into a graph valid for every input shape and dtype.

Shared by the families: each one undoes a Python-level decision that `torch.onnx.export` would
otherwise freeze for the example inputs, and restores the module afterwards, so the live pipeline
(which the reference runs use) is unchanged.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def eager_attention(config):
    """Trace a transformers model with its plain-PyTorch ("eager") attention.

    With the default SDPA path, the TorchScript exporter turns an fp16 GPT2's attention into fp32
    ops fed by fp16 weights (an invalid graph); the eager path is written in ordinary ops that keep
    the model's dtype. In fp32 both paths agree to ~1e-7.
    """
    saved = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = saved


@contextlib.contextmanager
def always_forward_upsample_size(unet):
    """Make diffusers' UNets resize every up block to its skip connection's (dynamic) size.

    diffusers decides in Python whether to pass each up block the skip's size: only when a latent
    side is not a multiple of `2**num_upsamplers`. A trace would freeze that choice for the example
    shape. With `num_upsamplers` raised to 62 the divisor 2**62 exceeds any tensor side, so the
    remainder is the side itself, never 0, and the check always fires; resizing to the skip's size
    equals plain 2x upsampling whenever the side is divisible, so the graph matches diffusers at
    every size.
    """
    saved = unet.num_upsamplers
    unet.num_upsamplers = 62
    try:
        yield
    finally:
        unet.num_upsamplers = saved
