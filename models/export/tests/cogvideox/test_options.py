"""Export options for cogvideox: fp16 and bf16 graphs, external data, determinism of a re-export."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from models.export import cli
from models.export.cogvideox import components, configs
from models.export.onnx_io import describe, export_component

from ..helpers import rel_error, session


def _export(out, *extra):
    args = cli.parse(["cogvideox", "--size", "tiny-5b", "--no-reference", "--out", str(out), *extra])
    return cli.run(args, log=lambda *_: None)


def _transformer_inputs(pipe, batch=2):
    shape = components.default_shape(pipe)
    cos, sin = components.rotary_tables(pipe, shape)
    gen = torch.Generator().manual_seed(3)
    cfg = pipe.transformer.config
    hidden = torch.randn(batch, shape.latent_frames, cfg.in_channels, shape.latent_height, shape.latent_width, generator=gen)
    text = torch.randn(batch, cfg.max_text_seq_length, cfg.text_embed_dim, generator=gen)
    return hidden, text, torch.tensor([801, 101][:batch]), cos, sin


def _torch_transformer(pipe, hidden, text, t, cos, sin):
    with torch.no_grad():
        return pipe.transformer(
            hidden_states=hidden, encoder_hidden_states=text, timestep=t, image_rotary_emb=(cos, sin)
        ).sample.float().numpy()


def _dtypes(manifest):
    return {name: {t["name"]: t["dtype"] for t in e["inputs"] + e["outputs"]} for name, e in manifest["components"].items()}


def test_fp16_export(tmp_path, cog_tiny_5b):
    out = tmp_path / "tiny-5b-fp16"
    manifest = _export(out, "--dtype", "fp16")
    assert manifest["dtype"] == "fp16"
    types = _dtypes(manifest)
    assert types["text_encoder"] == {"input_ids": "int64", "last_hidden_state": "float32"}
    assert types["transformer"] == {
        "hidden_states": "float16", "encoder_hidden_states": "float16", "timestep": "int64",
        "freqs_cos": "float32", "freqs_sin": "float32", "sample": "float16",
    }
    assert types["vae_decoder_f3_h4_w6"] == {"z": "float16", "frames": "float16"}
    for entry in manifest["components"].values():
        assert {"inputs": entry["inputs"], "outputs": entry["outputs"]} == describe(out / entry["file"])
    pipe = cog_tiny_5b.pipe  # float32 modules, same weights
    hidden, text, t, cos, sin = _transformer_inputs(pipe)
    got = session(out / "transformer.onnx").run(
        None,
        {"hidden_states": hidden.half().numpy(), "encoder_hidden_states": text.half().numpy(), "timestep": t.numpy(),
         "freqs_cos": cos.numpy(), "freqs_sin": sin.numpy()},
    )[0]
    assert got.dtype == np.float16
    assert rel_error(got, _torch_transformer(pipe, hidden, text, t, cos, sin)) < 2e-2
    z = torch.randn(1, 4, 3, 4, 6, generator=torch.Generator().manual_seed(4))
    frames = session(out / "vae_decoder_f3_h4_w6.onnx").run(None, {"z": z.half().numpy()})[0]
    with torch.no_grad():
        assert rel_error(frames, pipe.vae.decode(z).sample.numpy()) < 2e-2


def test_bf16_export(tmp_path, cog_tiny_5b):
    """bf16: the transformer only. onnxruntime's CPU provider cannot load it; ONNX's own reference
    evaluator runs it and agrees with PyTorch's bf16 transformer."""
    from onnx.reference import ReferenceEvaluator
    import ml_dtypes

    out = tmp_path / "tiny-5b-bf16"
    manifest = _export(out, "--dtype", "bf16")
    assert manifest["dtype"] == "bf16"
    types = _dtypes(manifest)
    assert types["transformer"] == {
        "hidden_states": "bfloat16", "encoder_hidden_states": "bfloat16", "timestep": "int64",
        "freqs_cos": "float32", "freqs_sin": "float32", "sample": "bfloat16",
    }
    assert types["vae_decoder_f3_h4_w6"] == {"z": "float32", "frames": "float32"}
    assert types["text_encoder"]["last_hidden_state"] == "float32"
    with pytest.raises(Exception, match="(?i)not.?implemented|could not find an implementation"):
        ort.InferenceSession(str(out / "transformer.onnx"), providers=["CPUExecutionProvider"])
    pipe = cog_tiny_5b.pipe
    hidden, text, t, cos, sin = _transformer_inputs(pipe)
    bf = lambda x: x.numpy().astype(ml_dtypes.bfloat16)  # noqa: E731
    got = ReferenceEvaluator(str(out / "transformer.onnx")).run(
        None, {"hidden_states": bf(hidden), "encoder_hidden_states": bf(text), "timestep": t.numpy(),
               "freqs_cos": cos.numpy(), "freqs_sin": sin.numpy()},
    )[0]
    assert got.dtype == ml_dtypes.bfloat16
    got = got.astype(np.float32)
    bf16 = configs.build_pipeline(configs.TINY_5B, 0)
    bf16.transformer.to(torch.bfloat16)
    want = _torch_transformer(bf16, hidden.bfloat16(), text.bfloat16(), t, cos, sin)
    assert rel_error(got, want) < 2e-2
    assert rel_error(got, _torch_transformer(pipe, hidden, text, t, cos, sin)) < 5e-2
    # the float32 VAE decoder of a bf16 folder is the fp32 one
    z = np.random.default_rng(0).standard_normal((1, 4, 3, 4, 6), dtype=np.float32)
    assert rel_error(
        session(out / "vae_decoder_f3_h4_w6.onnx").run(None, {"z": z})[0],
        session(cog_tiny_5b.dir / "vae_decoder_f3_h4_w6.onnx").run(None, {"z": z})[0],
    ) <= 1e-6


def test_external_data(tmp_path, cog_tiny):
    """Above the threshold a graph is written as `<file>` + one `<file>.data`, loadable from its path."""
    pipe = cog_tiny.pipe
    comp = next(c for c in components.build(pipe, [components.default_shape(pipe)]) if c.name.startswith("transformer"))
    path = export_component(comp, tmp_path, external_data_threshold=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [comp.file, comp.file + ".data"]
    got = session(path).run(None, {spec.name: x.numpy() for spec, x in zip(comp.inputs, comp.example)})[0]
    with torch.no_grad():
        want = pipe.transformer(
            hidden_states=comp.example[0], encoder_hidden_states=comp.example[1], timestep=comp.example[2]
        ).sample.numpy()
    assert rel_error(got, want) <= 1e-4


def test_same_seed_same_graphs(tmp_path, cog_tiny):
    """Two exports of the same weights give byte-identical graphs (the VAE decoders are compared the same
    way in test_cli.test_checkpoint_directory)."""
    pipe = cog_tiny.pipe
    for comp in components.build(pipe, [components.default_shape(pipe)])[:2]:  # text_encoder, transformer
        path = export_component(comp, tmp_path)
        assert path.read_bytes() == (cog_tiny.dir / comp.file).read_bytes(), comp.file


def test_other_seed_other_weights(cog_tiny):
    pipe = configs.build_pipeline(configs.TINY, 1)
    shape = components.default_shape(pipe)
    for comp in components.build(pipe, [shape])[:2]:  # text_encoder and transformer (cheap to export)
        ours = onnx.load(str(cog_tiny.dir / comp.file))
        w0 = {i.name: numpy_helper.to_array(i) for i in ours.graph.initializer}
        for name, p in comp.module.named_parameters():
            key = next((k for k in w0 if k.endswith(name.split(".", 1)[1])), None)
            if key is not None and w0[key].shape == tuple(p.shape) and p.numel() > 8:
                assert not np.array_equal(w0[key], p.detach().numpy()), f"{comp.name}:{name} is the seed-0 weight"
                break
        else:
            raise AssertionError(f"{comp.name}: no weight to compare")
