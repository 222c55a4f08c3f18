"""Stable Video Diffusion (`stabilityai/stable-video-diffusion-img2vid[-xt]` and random-weight tiny/bench sizes)."""


def quiet_clip_processor_fallback() -> None:
    """Resolve `transformers.CLIPImageProcessor` once with transformers' warnings off.

    Without torchvision (not in requirements.txt), transformers v5 answers the name diffusers'
    SVD pipeline module imports with `CLIPImageProcessorPil` and warns on stderr. That backend is the
    right one here: the pipeline only asks it to normalise a tensor. Silencing the notice keeps the
    CLI's output to its own lines. Called before diffusers' SVD module is first imported; not at
    package import, so that refusing a bad checkpoint needs neither torch nor transformers.
    """
    import transformers
    from transformers.utils import logging

    saved = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        transformers.CLIPImageProcessor  # noqa: B018 - the lookup is what installs the fallback
    finally:
        logging.set_verbosity(saved)
