"""Exporting one `nn.Module` to one ONNX file, and describing a graph's inputs and outputs.

The exporter uses PyTorch's TorchScript-based path (`torch.onnx.export(..., dynamo=False)`):
- with `dynamo=True` (torch 2.9), torch.export turns shape checks inside diffusers and transformers
  into guards that contradict the dynamic dims (T5/GPT2 specialise batch != 1, the UNet's upsampler
  bounds the frame count), and it writes opset 18 and then down-converts to 17;
- the traced graphs keep every declared axis dynamic, which the tests check by running each graph
  at several shapes against PyTorch.
Tracing freezes Python-level decisions for the example inputs, so callers trace with inputs that take
the general branch (masks with padding, see wrappers.UNet for the upsample size).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

OPSET = 17
# protobuf cannot serialise a message over 2 GiB; above this many weight bytes a graph is written
# with its tensors in one `<file>.data` beside it.
EXTERNAL_DATA_THRESHOLD = 1_900_000_000

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool",
}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, dtype name, and dims (ints, or strings for symbolic dims)."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]

    def as_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}


@dataclasses.dataclass
class Component:
    """One ONNX graph to write: the module, its tensor contract, and example inputs for tracing."""

    name: str
    module: torch.nn.Module
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    example: tuple[torch.Tensor, ...]

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"


def export_component(
    component: Component, out_dir: Path, external_data_threshold: int = EXTERNAL_DATA_THRESHOLD
) -> Path:
    """Trace `component` to `out_dir/<name>.onnx`, fix its declared dims, and check its inputs.

    Raises RuntimeError when the written graph's inputs differ from the contract (the TorchScript
    exporter silently drops inputs the traced code never reads).
    """
    path = out_dir / component.file
    dynamic_axes = {
        t.name: {axis: dim for axis, dim in enumerate(t.dims) if isinstance(dim, str)}
        for t in component.inputs + component.outputs
    }
    weight_bytes = sum(p.numel() * p.element_size() for p in component.module.parameters())
    # Export into a scratch folder: a large model comes out of torch as one file per tensor.
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        raw = Path(scratch) / component.file
        with torch.no_grad(), warnings.catch_warnings():
            # Each TracerWarning marks a Python branch frozen for the example shapes; the ones in these
            # models were reviewed (see README) and the tests run every graph at other shapes.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # Advanced indexing in transformers' mask builders uses arange indices, never negative ones.
            warnings.filterwarnings("ignore", message="Exporting aten::index operator")
            # dynamo=False is a deliberate choice (module docstring), so its deprecation notices are noise.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
            # A reversed (step -1) Slice of a constant, as F.pad's ONNX conversion writes for the VAE
            # encoder's asymmetric padding, is left to run in the graph instead of being folded.
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1 can be constant folded")
            torch.onnx.export(
                component.module.eval(),
                component.example,
                str(raw),
                input_names=[t.name for t in component.inputs],
                output_names=[t.name for t in component.outputs],
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        model = onnx.load(str(raw))
        _check_inputs(model, component)
        _declare_dims(model, component)
        for stale in (path, path.with_name(path.name + ".data")):
            stale.unlink(missing_ok=True)
        if weight_bytes > external_data_threshold:
            onnx.save_model(
                model,
                str(path),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=path.name + ".data",
                size_threshold=1024,
            )
            onnx.checker.check_model(str(path))
        else:
            onnx.checker.check_model(model, full_check=True)
            onnx.save_model(model, str(path))
    return path


def _check_inputs(model: onnx.ModelProto, component: Component) -> None:
    initializers = {i.name for i in model.graph.initializer}
    got = [i.name for i in model.graph.input if i.name not in initializers]
    want = [t.name for t in component.inputs]
    if got != want:
        missing = sorted(set(want) - set(got))
        raise RuntimeError(f"{component.file}: graph inputs {got} differ from the contract {want} (pruned: {missing})")


def _declare_dims(model: onnx.ModelProto, component: Component) -> None:
    """Write the contract's dims into the graph's inputs and outputs.

    The TorchScript exporter names only the dynamic axes it was given; output dims it could not
    infer come out as generated names (e.g. `Divtext_embeds_dim_1`). The tests check that the
    graphs really produce these dims.
    """
    by_name = {t.name: t for t in component.inputs + component.outputs}
    for value in list(model.graph.input) + list(model.graph.output):
        spec = by_name.get(value.name)
        if spec is None:
            continue
        shape = value.type.tensor_type.shape
        if len(shape.dim) != len(spec.dims):
            raise RuntimeError(f"{component.file}: {value.name} has rank {len(shape.dim)}, contract says {spec.dims}")
        for dim, want in zip(shape.dim, spec.dims):
            if isinstance(want, str):
                dim.dim_param = want
            else:
                if dim.HasField("dim_value") and dim.dim_value != want:
                    raise RuntimeError(f"{component.file}: {value.name} dims {shape} differ from {spec.dims}")
                dim.dim_value = want


def describe(path: Path) -> dict:
    """`{"inputs": [...], "outputs": [...]}` as read from the graph file itself, for the manifest."""
    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}

    def spec(value) -> dict:
        tensor = value.type.tensor_type
        dims = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in tensor.shape.dim]
        return TensorSpec(value.name, _ONNX_DTYPES[tensor.elem_type], tuple(dims)).as_json()

    return {
        "inputs": [spec(v) for v in model.graph.input if v.name not in initializers],
        "outputs": [spec(v) for v in model.graph.output],
    }


def replace_dir(src: Path, dst: Path) -> None:
    """Move a finished build into place, replacing what was there."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
