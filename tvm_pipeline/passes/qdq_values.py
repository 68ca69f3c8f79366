"""How fold-qdq reads quantized values out of the dataflow view (no rewriting here).

- `activation(graph, var)`: a float var that is `views(dequantize(x))` of an int8 or uint8 tensor -> (Source, scale,
  zero point); integer transposes/reshapes/slices that only the kernel reads are absorbed into the Source.
- `quantized_constant(graph, var)`: `views(dequantize(W))` (or `dequantize(quantize(W_float))`, a QAT export) ->
  the integers with their scale and zero point broadcast to the constant's full shape.
- `bias(...)`: a conv/matmul bias in accumulator units; `per_channel`, `scalar`, `to_int32`: checked reads.
A pattern that does not fit raises NoMatch with the reason the notes print.
"""

from __future__ import annotations

import numpy as np

from tvm_pipeline.int8_ops import ACTIVATION_DTYPES, Fold, Source, apply_views
from tvm_pipeline.tvm_adapter import DataflowOp, DataflowView

VIEW_OPS = ("relax.reshape", "relax.permute_dims", "relax.strided_slice")
_INT32 = np.iinfo(np.int32)


class NoMatch(Exception):
    """Why a quantize is left in float (the message goes into the notes)."""


class Graph:
    def __init__(self, view: DataflowView) -> None:
        self.view = view
        self.producer = {op.var: op for op in view.ops}
        self.aliases: dict[str, Source] = {}  # identity folds: var == source seen through its views
        self.folds: dict[str, Fold] = {}  # the folds planned so far, by the var they compute
        self.merged: set[str] = set()  # fold vars another fold computes internally (a conv fused into its add)

    def op(self, var) -> DataflowOp | None:
        return self.producer.get(var) if isinstance(var, str) else None

    def single_use(self, var: str) -> bool:
        return self.view.users.get(var, 0) == 1

    def dtype(self, var: str) -> str:
        """The element type of a tensor of the graph."""
        return self.view.types[var].dtype


def view_of(op: DataflowOp) -> tuple[str, tuple]:
    if op.op == "relax.permute_dims":
        return "permute_dims", tuple(op.attrs["axes"])
    if op.op == "relax.strided_slice":  # (axes, begins, ends, strides), each as a tuple
        return "strided_slice", tuple(tuple(np.atleast_1d(np.asarray(a)).tolist()) for a in op.args[1:5])
    return "reshape", tuple(op.type.shape)


def absorb(graph: Graph, var: str) -> Source:
    """`var` as a kernel input, reading through int8 transposes/reshapes only it consumes."""
    views: tuple = ()
    while graph.single_use(var):
        if var in graph.aliases:
            source = graph.aliases[var]
            var, views = source.var, source.views + views
            continue
        op = graph.op(var)
        if op is None or op.op not in VIEW_OPS or op.type is None or op.type.dtype not in ACTIVATION_DTYPES:
            break
        var, views = op.args[0], (view_of(op),) + views
    return Source(var, views)


def scalar(value, what: str) -> np.generic:
    if not isinstance(value, np.ndarray) or value.size != 1:
        raise NoMatch(f"{what} is not a per-tensor constant")
    return value.reshape(()).item()


def activation(graph: Graph, var: str, absorb_views: bool = True) -> tuple[Source, float, int]:
    """(source, scale, zero point) of a float var that is `views(dequantize(x))` of an int8/uint8 activation."""
    op = graph.op(var)
    if op is not None and op.op in VIEW_OPS:
        source, scale, zero_point = activation(graph, op.args[0], absorb_views)
        return Source(source.var, source.views + (view_of(op),)), scale, zero_point
    if op is None or op.op != "relax.dequantize" or not isinstance(op.args[0], str):
        raise NoMatch(f"input {var} is not a dequantized integer tensor ({op.op if op else 'graph input'})")
    if graph.view.types.get(op.args[0]) is None or graph.view.types[op.args[0]].dtype not in ACTIVATION_DTYPES:
        raise NoMatch(f"input {var} dequantizes a tensor that is neither int8 nor uint8")
    scale = np.float32(scalar(op.args[1], f"the scale of {var}"))
    source = absorb(graph, op.args[0]) if absorb_views else Source(op.args[0])
    return source, float(scale), int(scalar(op.args[2], f"the zero point of {var}"))


def quantized_constant(graph: Graph, value) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(integers, scale, zero point), all of the constant's full shape, for `views(dequantize(const))`."""
    op = graph.op(value)
    if op is not None and op.op in VIEW_OPS:
        return tuple(apply_views(a, (view_of(op),)) for a in quantized_constant(graph, op.args[0]))
    if op is None or op.op != "relax.dequantize":
        raise NoMatch(f"weight {value if isinstance(value, str) else 'constant'} is not a dequantized constant")
    integers, scale, zero_point = op.args
    if isinstance(integers, str):  # a QAT export quantizes float weights in the graph: quantize(const)
        quant = graph.op(integers)
        if quant is None or quant.op != "relax.quantize" or not isinstance(quant.args[0], np.ndarray):
            raise NoMatch(f"weight {value} is not a constant")
        integers = _quantize_numpy(quant.args[0], quant.args[1], quant.args[2], quant.attrs["axis"])
    if not all(isinstance(a, np.ndarray) for a in (scale, zero_point)):
        raise NoMatch(f"weight {value} has non-constant quantization parameters")
    return integers, _expand(scale, integers.shape, op.attrs["axis"]), _expand(zero_point, integers.shape, op.attrs["axis"])


def _expand(param: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    if param.size == 1:
        return np.full(shape, param.reshape(()), dtype=param.dtype)
    index = [None] * len(shape)
    index[axis % len(shape)] = slice(None)
    return np.broadcast_to(param.reshape(-1)[tuple(index)], shape).copy()


def _quantize_numpy(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    info = np.iinfo(zero_point.dtype)
    q = np.rint(x.astype(np.float32) / _expand(scale, x.shape, axis)) + _expand(zero_point, x.shape, axis)
    return np.clip(q, info.min, info.max).astype(zero_point.dtype)


def per_channel(full: np.ndarray, axis: int, what: str) -> np.ndarray:
    moved = np.moveaxis(full, axis, 0).reshape(full.shape[axis], -1)
    if not np.all(moved == moved[:, :1]):
        raise NoMatch(f"{what} varies along an axis other than the output channel")
    return moved[:, 0]


def bias_in_acc_units(graph: Graph, value, acc_scale: np.ndarray, count: int = 1) -> np.ndarray:
    """The bias in units of acc_scale / count (sx * sw[c] / pooled elements); exact when it was quantized with
    scale sx * sw[c], as onnxruntime's quantizer and TFLite do; a float bias (QAT exports) is rounded."""
    channels = acc_scale.size
    if isinstance(value, np.ndarray):
        real = value.astype(np.float64).reshape(-1)
    else:
        integers, scale, zero_point = quantized_constant(graph, value)
        integers, scale, zero_point = (a.reshape(-1) for a in (integers, scale, zero_point))
        if integers.size == channels and not zero_point.any() and np.array_equal(scale, acc_scale):
            return integers.astype(np.int64) * count
        real = (integers.astype(np.float64) - zero_point) * scale
    if real.size not in (1, channels):
        raise NoMatch(f"bias has {real.size} values for {channels} channels")
    return np.rint(np.broadcast_to(real, (channels,)) * count / acc_scale.astype(np.float64)).astype(np.int64)


def to_int32(values: np.ndarray, what: str) -> np.ndarray:
    if values.min() < _INT32.min or values.max() > _INT32.max:
        raise NoMatch(f"{what} does not fit int32")
    return values.astype(np.int32)


