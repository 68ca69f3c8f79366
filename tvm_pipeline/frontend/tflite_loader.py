"""Read and validate a TensorFlow Lite flatbuffer before any conversion starts.

Like `onnx_loader`, every problem the user can fix is found here and reported at once: a missing, truncated or
foreign file, a dynamic dimension other than the batch, and every operator the compiler cannot convert (its builtin
code name or custom code, its index in the operator list, and the tensor it writes). TFLite tensors are NHWC;
input and output keep the model's own layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tflite
from tflite.BuiltinOperator import BuiltinOperator
from tflite.TensorType import TensorType

from tvm_pipeline import tvm_adapter
from tvm_pipeline.errors import UserError
from tvm_pipeline.frontend.onnx_loader import InputSpec

_BUILTIN_NAMES = {code: name for name, code in vars(BuiltinOperator).items() if not name.startswith("_")}
#: TFLite tensor types a graph input or output may have (the C harness supports these element types).
_DTYPES = {TensorType.FLOAT32: "float32", TensorType.INT8: "int8", TensorType.UINT8: "uint8",
           TensorType.INT16: "int16", TensorType.INT32: "int32"}
_TYPE_NAMES = {code: name for name, code in vars(TensorType).items() if not name.startswith("_")}


@dataclass(frozen=True)
class TFLiteModel:
    """A parsed .tflite file: the flatbuffer bytes (kept alive for the lazy reader) and its root table."""

    path: Path
    buffer: bytes
    model: tflite.Model

    @property
    def subgraph(self) -> tflite.SubGraph:
        return self.model.Subgraphs(0)


@dataclass(frozen=True)
class OutputSpec:
    """The graph output (its shape follows from the input's)."""

    name: str
    dtype: str


def load_tflite(path: Path) -> TFLiteModel:
    """Load a .tflite file and walk every table once, so a truncated or corrupt file fails here as a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    buffer = path.read_bytes()
    if len(buffer) < 8 or not tflite.Model.ModelBufferHasIdentifier(buffer, 0):
        raise UserError(f"{path} is not a TFLite flatbuffer (no 'TFL3' identifier; empty, truncated or another format)")
    try:
        model = tflite.Model.GetRootAsModel(buffer, 0)
        loaded = TFLiteModel(path, buffer, model)
        if model.SubgraphsLength() < 1:
            raise UserError(f"{path} holds no TFLite subgraph")
        subgraph = loaded.subgraph
        n_tensors, n_codes = subgraph.TensorsLength(), model.OperatorCodesLength()
        n_buffers = model.BuffersLength()
        for i in range(n_tensors):
            tensor = subgraph.Tensors(i)
            tensor.ShapeAsNumpy(), tensor.Name(), tensor.Quantization()  # read once: damaged offsets raise here
            if not 0 <= tensor.Buffer() < max(n_buffers, 1):
                raise ValueError(f"tensor {i} refers to buffer {tensor.Buffer()} of {n_buffers}")
        used = [subgraph.InputsAsNumpy(), subgraph.OutputsAsNumpy()]
        for i in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(i)
            if not 0 <= op.OpcodeIndex() < n_codes:
                raise ValueError(f"operator {i} has opcode index {op.OpcodeIndex()} of {n_codes}")
            used += [op.InputsAsNumpy(), op.OutputsAsNumpy()]
        for indices in used:
            if isinstance(indices, np.ndarray) and np.any((indices < -1) | (indices >= n_tensors)):
                raise ValueError(f"tensor index out of range (the subgraph has {n_tensors} tensors)")
    except UserError:
        raise
    except Exception as err:  # the flatbuffer reader raises struct/index errors on damaged input
        raise UserError(f"{path} is not a readable TFLite file (truncated or corrupt?): {err}") from None
    return loaded


def _op_name(loaded: TFLiteModel, op: tflite.Operator) -> str:
    code = loaded.model.OperatorCodes(op.OpcodeIndex())
    builtin = max(code.DeprecatedBuiltinCode(), code.BuiltinCode())  # schema >= 2.4 moved the code to an int32 field
    name = _BUILTIN_NAMES.get(builtin, f"builtin code {builtin}")
    if builtin == BuiltinOperator.CUSTOM:
        name = f"CUSTOM '{(code.CustomCode() or b'').decode(errors='replace')}'"
    return name


def _tensor_name(subgraph: tflite.SubGraph, index: int) -> str:
    return (subgraph.Tensors(index).Name() or b"").decode(errors="replace") or f"tensor {index}"


def _is_quantized(tensor: tflite.Tensor) -> bool:
    q = tensor.Quantization()
    return q is not None and q.ScaleLength() > 0


def check_supported_ops(loaded: TFLiteModel) -> None:
    """Raise one UserError listing every operator TVM's TFLite frontend cannot convert.

    Besides operators it lacks, TVM refuses quantized forms of some ops (e.g. PAD, TRANSPOSE on int8 tensors) and
    "dynamic range" quantization (int8 weights with float activations); those are listed with the reason.
    """
    supported, supported_quantized = tvm_adapter.tflite_supported_ops()
    subgraph = loaded.subgraph
    bad = []
    for index in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(index)
        name = _op_name(loaded, op)
        inputs = [subgraph.Tensors(t) for t in op.InputsAsNumpy() if t >= 0] if op.InputsLength() else []
        outputs = [subgraph.Tensors(t) for t in op.OutputsAsNumpy() if t >= 0] if op.OutputsLength() else []
        quantized_data = any(_is_quantized(t) for t in inputs[:1] + outputs)
        quantized_weights = any(_is_quantized(t) for t in inputs[1:])
        if name not in supported:
            reason = ""
        elif quantized_weights and not quantized_data:
            reason = ", dynamic-range quantized (int8 weights, float activations): use full integer quantization"
        elif (quantized_data or quantized_weights) and name not in supported_quantized:
            reason = ", quantized form not supported"
        else:
            continue
        target = _tensor_name(subgraph, op.Outputs(0)) if op.OutputsLength() else "no output"
        bad.append(f"  {name} (operator index {index}, output '{target}'{reason})")
    if bad:
        raise UserError("the model uses TFLite operators tvm-pipeline cannot compile:\n" + "\n".join(bad))


def _dtype(loaded: TFLiteModel, tensor: tflite.Tensor, role: str) -> str:
    if tensor.Type() not in _DTYPES:
        raise UserError(f"{loaded.path.name}: {role} '{tensor.Name().decode()}' has type "
                        f"{_TYPE_NAMES.get(tensor.Type(), tensor.Type())}; supported: "
                        f"{', '.join(sorted(_DTYPES.values()))}")
    return _DTYPES[tensor.Type()]


def input_specs(loaded: TFLiteModel, overrides: dict[str, tuple[int, ...]] | None = None) -> list[InputSpec]:
    """Graph inputs with every dimension fixed: a batch of -1 in the shape signature becomes 1 unless overridden."""
    overrides = dict(overrides or {})
    subgraph = loaded.subgraph
    specs = []
    for index in subgraph.InputsAsNumpy():
        tensor = subgraph.Tensors(index)
        name = _tensor_name(subgraph, index)
        declared = [int(d) for d in (tensor.ShapeSignatureAsNumpy() if tensor.ShapeSignatureLength()
                                     else tensor.ShapeAsNumpy())]
        if name in overrides:
            shape = tuple(overrides.pop(name))
            if len(shape) != len(declared) or any(d > 0 and d != s for d, s in zip(declared, shape)):
                raise UserError(f"--input-shape {name}:{','.join(map(str, shape))} does not fit the model's "
                                f"declared shape {_describe(declared)}")
        else:
            for axis, dim in enumerate(declared[1:], start=1):
                if dim <= 0:
                    example = ",".join(str(d) if d > 0 else "1" for d in declared)
                    raise UserError(f"input '{name}' has a dynamic dimension {axis}; give it a size with "
                                    f"--input-shape {name}:{example}")
            shape = tuple(d if d > 0 else 1 for d in declared)  # a symbolic batch: one sample at a time
        specs.append(InputSpec(name, shape, _dtype(loaded, tensor, "input")))
    if overrides:
        names = ", ".join(s.name for s in specs)
        raise UserError(f"--input-shape names unknown input(s) {', '.join(overrides)}; the model's inputs: {names}")
    if len(specs) != 1 or subgraph.OutputsLength() != 1:
        raise UserError(f"tvm-pipeline compiles models with one input and one output; this one has {len(specs)} "
                        f"input(s) and {subgraph.OutputsLength()} output(s)")
    return specs


def output_spec(loaded: TFLiteModel) -> OutputSpec:
    """The single graph output's name and element type."""
    subgraph = loaded.subgraph
    index = subgraph.Outputs(0)
    return OutputSpec(_tensor_name(subgraph, index), _dtype(loaded, subgraph.Tensors(index), "output"))


def _describe(dims: list[int]) -> str:
    return "[" + ",".join(str(d) if d > 0 else "?" for d in dims) + "]"
