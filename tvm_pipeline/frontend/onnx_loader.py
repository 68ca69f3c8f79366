"""Read and validate an ONNX file before any conversion starts.

Every problem the user can fix is found here and reported at once: a missing, truncated or invalid file, a
dynamic dimension other than the batch, and every op the compiler cannot convert (type, node name and index).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import helper

from tvm_pipeline import tvm_adapter
from tvm_pipeline.errors import UserError


@dataclass(frozen=True)
class InputSpec:
    """One graph input with its shape fixed."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file; any defect becomes a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as err:  # protobuf raises several unrelated types for corrupt input
        raise UserError(f"{path} is not a readable ONNX file (truncated or corrupt?): {err}") from None
    if not model.graph.node:
        raise UserError(f"{path} holds no ONNX graph (empty or not an ONNX model)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise UserError(f"{path} is not a valid ONNX model: {str(err).splitlines()[0]}") from None
    return model


def _default_opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=1)


def check_supported_ops(model: onnx.ModelProto) -> None:
    """Raise one UserError listing every node whose op cannot be converted."""
    supported = tvm_adapter.onnx_supported_ops(_default_opset(model))
    bad = [
        f"  {node.op_type} (node '{node.name or '<unnamed>'}', index {i}{', domain ' + node.domain if node.domain else ''})"
        for i, node in enumerate(model.graph.node)
        if node.domain not in ("", "ai.onnx") or node.op_type not in supported
    ]
    if bad:
        raise UserError("the model uses ONNX ops tvm-pipeline cannot compile:\n" + "\n".join(bad))


def input_specs(model: onnx.ModelProto, overrides: dict[str, tuple[int, ...]] | None = None) -> list[InputSpec]:
    """Graph inputs with every dimension fixed: a symbolic batch becomes 1 unless `overrides` names a shape."""
    overrides = dict(overrides or {})
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for inp in model.graph.input:
        if inp.name in initializers:  # old exporters list weights as inputs too
            continue
        tensor_type = inp.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        if inp.name in overrides:
            shape = tuple(overrides.pop(inp.name))
            declared = tensor_type.shape.dim
            if len(shape) != len(declared) or any(
                d.HasField("dim_value") and d.dim_value != s for d, s in zip(declared, shape)
            ):
                raise UserError(f"--input-shape {inp.name}:{','.join(map(str, shape))} does not fit the model's "
                                f"declared shape {_describe(declared)}")
        else:
            shape = []
            for axis, dim in enumerate(tensor_type.shape.dim):
                if dim.HasField("dim_value") and dim.dim_value > 0:
                    shape.append(dim.dim_value)
                elif axis == 0:
                    shape.append(1)  # a symbolic batch: microcontrollers run one sample at a time
                else:
                    raise UserError(
                        f"input '{inp.name}' has a dynamic dimension {axis} ('{dim.dim_param or '?'}'); give it a "
                        f"size with --input-shape {inp.name}:{_example(tensor_type.shape.dim)}"
                    )
            shape = tuple(shape)
        specs.append(InputSpec(inp.name, shape, dtype))
    if overrides:
        names = ", ".join(s.name for s in specs)
        raise UserError(f"--input-shape names unknown input(s) {', '.join(overrides)}; the model's inputs: {names}")
    if len(specs) != 1 or len(model.graph.output) != 1:
        raise UserError(
            f"tvm-pipeline compiles models with one input and one output; this one has {len(specs)} input(s) and "
            f"{len(model.graph.output)} output(s)"
        )
    return specs


def _describe(dims) -> str:
    return "[" + ",".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims) + "]"


def _example(dims) -> str:
    return ",".join(str(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else "1" for d in dims)
