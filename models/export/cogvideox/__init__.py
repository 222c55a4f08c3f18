"""CogVideoX text-to-video (2b, 5b) → parastep model folders (`python -m models.export cogvideox ...`)."""
