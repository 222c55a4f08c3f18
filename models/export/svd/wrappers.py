"""`nn.Module` wrappers that give each SVD component the plain tensor signature of its ONNX graph.

Each wrapper takes positional tensors in the order of the input names in models/README.md and
returns one tensor. They call the pipeline's own modules the way `StableVideoDiffusionPipeline`
does and add nothing else; what the pipeline does around them (CLIP preprocessing, noise
augmentation, c_in scaling, the CFG batch, guidance, the scaling factor) stays in the runtime.
"""

from __future__ import annotations

from torch import nn

from ..tracing import always_forward_upsample_size, eager_attention


class ImageEncoder(nn.Module):
    """`CLIPVisionModelWithProjection(pixel_values).image_embeds` on already preprocessed pixels."""

    def __init__(self, image_encoder):
        super().__init__()
        self.image_encoder = image_encoder

    def forward(self, pixel_values):
        with eager_attention(self.image_encoder.config):
            return self.image_encoder(pixel_values).image_embeds


class VaeEncoder(nn.Module):
    """`vae.encode(image).latent_dist.mode()`: the posterior mean, not multiplied by `scaling_factor`."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, image):
        return self.vae.encode(image).latent_dist.mode()


class UNet(nn.Module):
    """`UNetSpatioTemporalConditionModel` with a timestep per batch row (the pipeline passes one scalar,
    which the UNet expands to the batch; a [batch] tensor takes the same path).

    Up blocks always resize to their skip connection's size (`always_forward_upsample_size`), so the
    graph matches diffusers at latent sizes that are not multiples of 2**num_upsamplers too.
    """

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids):
        with always_forward_upsample_size(self.unet):
            return self.unet(
                sample,
                timestep,
                encoder_hidden_states=encoder_hidden_states,
                added_time_ids=added_time_ids,
                return_dict=False,
            )[0]


class VaeDecoder(nn.Module):
    """One decode chunk, as `decode_latents` makes it: [1, frames, 4, h, w] → [frames, 3, H, W].

    The frame count comes from the input's shape (not a Python int), so it stays a dynamic axis. The
    caller divides by `scaling_factor` first, as the pipeline does.
    """

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latents):
        return self.vae.decode(latents.flatten(0, 1), num_frames=latents.shape[1]).sample
