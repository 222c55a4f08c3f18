"""Exporter from diffusers pipelines to parastep model folders (ONNX components + manifest.json).

Run from the repository root: `python -m models.export audioldm2 --tiny --out models/audioldm2-tiny`.
"""
