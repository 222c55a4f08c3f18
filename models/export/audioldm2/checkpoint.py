"""Loading a real AudioLDM2 checkpoint (`--from <hub id or local dir>`) without network access.

Checks run before any weights are read, so bad input fails fast with one message:
- the source must be a local directory or a hub id already in the local Hugging Face cache
  (the exporter runs with HF_HUB_OFFLINE=1);
- every config field the exporter relies on must be present in the checkpoint's own JSON, because
  diffusers and transformers would otherwise fill in a class default silently (a missing
  `scaling_factor` becomes 0.18215, a missing `model_max_length` becomes 1e30, ...).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import checkpoints

# file (relative to the checkpoint root) → fields the export or the runtime needs from it
REQUIRED_FIELDS = {
    "model_index.json": (
        "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "projection_model",
        "language_model", "unet", "vae", "vocoder", "scheduler",
    ),
    "unet/config.json": ("sample_size", "in_channels", "block_out_channels", "cross_attention_dim"),
    "vae/config.json": ("block_out_channels", "latent_channels", "scaling_factor"),
    "vocoder/config.json": ("model_in_dim", "sampling_rate", "upsample_rates"),
    "language_model/config.json": ("n_embd", "max_new_tokens"),
    "text_encoder/config.json": ("projection_dim", "text_config"),
    "text_encoder_2/config.json": ("d_model",),
    "projection_model/config.json": ("text_encoder_dim", "text_encoder_1_dim", "langauge_model_dim"),
    "scheduler/scheduler_config.json": ("_class_name", "beta_start", "beta_end", "beta_schedule"),
    "tokenizer/tokenizer_config.json": ("model_max_length",),
    "tokenizer_2/tokenizer_config.json": ("model_max_length",),
}


def check_configs(root: Path) -> None:
    """Raise ExportError naming the first missing file or field."""
    checkpoints.check_configs(root, REQUIRED_FIELDS, "AudioLDM2Pipeline")


def load(source: str):
    """The checkpoint's `AudioLDM2Pipeline` in float32 on the CPU, in eval mode.

    Two deviations from a plain `from_pretrained`, both from the research notes:
    - the language model is loaded as `GPT2LMHeadModel` although cvssp's model_index.json says
      `GPT2Model`: the pipeline's generation loop needs GenerationMixin methods that `GPT2Model` lacks
      in transformers >= 4.50; the head is tied to `wte`, so no weights are missing;
    - dtype is forced to float32: the CLAP config says float64, and transformers v5 loads "auto".
    """
    from diffusers import AudioLDM2Pipeline
    from transformers import GPT2LMHeadModel

    root = checkpoints.resolve(source)
    check_configs(root)
    language_model = GPT2LMHeadModel.from_pretrained(root / "language_model", dtype=torch.float32)
    pipe = AudioLDM2Pipeline.from_pretrained(root, language_model=language_model, dtype=torch.float32)
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            module.to(torch.float32).eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe
