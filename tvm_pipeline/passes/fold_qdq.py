"""Fold `quantize(act(op(dequantize(x), dequantize(w)) + b))` chains into integer kernels.

Before (a QDQ model as TVM imports it; ReLU6 is a max/min call_tir pair, the bias a reshaped dequantize):

    xf = dequantize(x, sx, zx);  wf = dequantize(W_int8, sw[c], 0)
    c  = conv2d(xf, wf);  c = add(c, reshape(dequantize(B_int32, sx*sw[c], 0)));  c = relu(c)
    y  = quantize(c, sy, zy)                                                    # int8

After:

    y = call_tir(int8_conv2d, (x, W_int8, B', M, S))    # int32 accumulation, y = clamp(round(acc*M[c]>>S[c]) + zy)

The same for matmul/Gemm (+ bias), add (both inputs rescaled onto one shift), average pooling / spatial mean,
softmax (an exp table, see int8_ops.QSoftmax) and pure layout changes (`quantize(reshape(dequantize(x)))` with
equal parameters is `reshape(x)` on int8). A transpose or reshape of an int8 input read only by the kernel is
absorbed into the kernel's indexing. Only the quantize is rebound, so a chain that does not match stays as it was
(in float) and is named in the notes with the reason; the last note lists every float op left in the graph.
The arithmetic is defined, and checked against NumPy, in tvm_pipeline/int8_ops.py.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import tvm

from schedules import int8 as int8_kernels
from tvm_pipeline import tvm_adapter
from tvm_pipeline.int8_ops import (Fold, QAdd, QAvgPool, QConv2d, QMatMul, QRescale, QSoftmax, Requant, Source,
                                   activation_range)
from tvm_pipeline.tvm_adapter import DataflowOp, DataflowView, KernelCall

NAME = "fold-qdq"
_VIEW_OPS = ("relax.reshape", "relax.permute_dims", "relax.strided_slice")
_INT32 = np.iinfo(np.int32)


class _NoMatch(Exception):
    """Why a quantize is left in float (the message goes into the notes)."""


class _Graph:
    def __init__(self, view: DataflowView) -> None:
        self.view = view
        self.producer = {op.var: op for op in view.ops}
        self.aliases: dict[str, Source] = {}  # identity folds: var == source seen through its views

    def op(self, var) -> DataflowOp | None:
        return self.producer.get(var) if isinstance(var, str) else None

    def single_use(self, var: str) -> bool:
        return self.view.users.get(var, 0) == 1


def _view_of(op: DataflowOp) -> tuple[str, tuple]:
    if op.op == "relax.permute_dims":
        return "permute_dims", tuple(op.attrs["axes"])
    if op.op == "relax.strided_slice":  # (axes, begins, ends, strides), each as a tuple
        return "strided_slice", tuple(tuple(np.atleast_1d(np.asarray(a)).tolist()) for a in op.args[1:5])
    return "reshape", tuple(op.type.shape)


def _absorb(graph: _Graph, var: str) -> Source:
    """`var` as a kernel input, reading through int8 transposes/reshapes only it consumes."""
    views: tuple = ()
    while graph.single_use(var):
        if var in graph.aliases:
            source = graph.aliases[var]
            var, views = source.var, source.views + views
            continue
        op = graph.op(var)
        if op is None or op.op not in _VIEW_OPS or op.type is None or op.type.dtype != "int8":
            break
        var, views = op.args[0], (_view_of(op),) + views
    return Source(var, views)


def _scalar(value, what: str) -> np.generic:
    if not isinstance(value, np.ndarray) or value.size != 1:
        raise _NoMatch(f"{what} is not a per-tensor constant")
    return value.reshape(()).item()


def _activation(graph: _Graph, var: str, absorb: bool = True) -> tuple[Source, float, int]:
    """(int8 source, scale, zero point) of a float var that is `views(dequantize(x))` of an int8 activation."""
    op = graph.op(var)
    if op is not None and op.op in _VIEW_OPS:
        source, scale, zero_point = _activation(graph, op.args[0], absorb)
        return Source(source.var, source.views + (_view_of(op),)), scale, zero_point
    if op is None or op.op != "relax.dequantize" or not isinstance(op.args[0], str):
        raise _NoMatch(f"input {var} is not a dequantized int8 tensor ({op.op if op else 'graph input'})")
    if graph.view.types.get(op.args[0]) is None or graph.view.types[op.args[0]].dtype != "int8":
        raise _NoMatch(f"input {var} dequantizes a non-int8 tensor")
    scale = np.float32(_scalar(op.args[1], f"the scale of {var}"))
    source = _absorb(graph, op.args[0]) if absorb else Source(op.args[0])
    return source, float(scale), int(_scalar(op.args[2], f"the zero point of {var}"))


def _quantized_constant(graph: _Graph, value) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(integers, scale, zero point), all of the constant's full shape, for `views(dequantize(const))`."""
    op = graph.op(value)
    if op is not None and op.op in _VIEW_OPS:
        arrays = _quantized_constant(graph, op.args[0])
        kind, shape = _view_of(op)
        return tuple(np.transpose(a, shape) if kind == "permute_dims" else a.reshape(shape) for a in arrays)
    if op is None or op.op != "relax.dequantize":
        raise _NoMatch(f"weight {value if isinstance(value, str) else 'constant'} is not a dequantized constant")
    integers, scale, zero_point = op.args
    if isinstance(integers, str):  # a QAT export quantizes float weights in the graph: quantize(const)
        quant = graph.op(integers)
        if quant is None or quant.op != "relax.quantize" or not isinstance(quant.args[0], np.ndarray):
            raise _NoMatch(f"weight {value} is not a constant")
        integers = _quantize_numpy(quant.args[0], quant.args[1], quant.args[2], quant.attrs["axis"])
    if not all(isinstance(a, np.ndarray) for a in (scale, zero_point)):
        raise _NoMatch(f"weight {value} has non-constant quantization parameters")
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


def _per_channel(full: np.ndarray, axis: int, what: str) -> np.ndarray:
    moved = np.moveaxis(full, axis, 0).reshape(full.shape[axis], -1)
    if not np.all(moved == moved[:, :1]):
        raise _NoMatch(f"{what} varies along an axis other than the output channel")
    return moved[:, 0]


def _bias(graph: _Graph, value, acc_scale: np.ndarray, count: int = 1) -> np.ndarray:
    """The bias in units of acc_scale / count (sx * sw[c] / pooled elements); exact when it was quantized with
    scale sx * sw[c], as onnxruntime's quantizer and TFLite do; a float bias (QAT exports) is rounded."""
    channels = acc_scale.size
    if isinstance(value, np.ndarray):
        real = value.astype(np.float64).reshape(-1)
    else:
        integers, scale, zero_point = _quantized_constant(graph, value)
        integers, scale, zero_point = (a.reshape(-1) for a in (integers, scale, zero_point))
        if integers.size == channels and not zero_point.any() and np.array_equal(scale, acc_scale):
            return integers.astype(np.int64) * count
        real = (integers.astype(np.float64) - zero_point) * scale
    if real.size not in (1, channels):
        raise _NoMatch(f"bias has {real.size} values for {channels} channels")
    return np.rint(np.broadcast_to(real, (channels,)) * count / acc_scale.astype(np.float64)).astype(np.int64)


def _int32(values: np.ndarray, what: str) -> np.ndarray:
    if values.min() < _INT32.min or values.max() > _INT32.max:
        raise _NoMatch(f"{what} does not fit int32")
    return values.astype(np.int32)


def _split_bias(graph: _Graph, op: DataflowOp) -> tuple[DataflowOp | None, object]:
    """`add(core, bias)` with a constant bias -> (core op, bias); else (op, None)."""
    if op.op != "relax.add":
        return op, None
    for core_arg, bias_arg in ((op.args[0], op.args[1]), (op.args[1], op.args[0])):
        core = graph.op(core_arg)
        if core is not None and core.op in ("relax.nn.conv2d", "relax.matmul") and (
                isinstance(bias_arg, np.ndarray) or _is_constant(graph, bias_arg)):
            return core, bias_arg
    return op, None


def _is_constant(graph: _Graph, value) -> bool:
    try:
        _quantized_constant(graph, value)
        return True
    except _NoMatch:
        return False


def _conv2d(graph, op, bias, sy, zy, lo, hi) -> Fold:
    a = op.attrs
    if (a["data_layout"], a["kernel_layout"], a["out_layout"]) != ("NCHW", "OIHW", "NCHW"):
        raise _NoMatch("conv2d layout is not NCHW/OIHW")
    source, sx, zx = _activation(graph, op.args[0])
    weight, wscale, wzero = _quantized_constant(graph, op.args[1])
    if wzero.any():
        raise _NoMatch("conv2d weights have a non-zero zero point (only symmetric weights fold)")
    sw = _per_channel(wscale, 0, "the weight scale").astype(np.float32)
    acc_scale = (np.float32(sx) * sw).astype(np.float32)
    bias = _bias(graph, bias, acc_scale) if bias is not None else np.zeros(weight.shape[0], np.int64)
    bias = bias - zx * weight.astype(np.int64).sum(axis=(1, 2, 3))
    requant = Requant.from_scale(acc_scale / np.float32(sy), zy, lo, hi)
    conv = QConv2d(weight.astype(np.int8), _int32(bias, "conv2d bias"), zx, tuple(a["strides"]), tuple(a["padding"]),
                   tuple(a["dilation"]), int(a["groups"]), requant)
    return Fold("", conv, (source,))


def _pooled_activation(graph: _Graph, var: str) -> tuple[Source, float, int, int]:
    """`_activation`, or (source, sx, zx, H*W) for `flatten(mean_HW(dequantize(x)))` (a pool nothing quantized)."""
    op = graph.op(var)
    while op is not None and op.op == "relax.reshape":
        op = graph.op(op.args[0])
    if op is not None and op.op == "relax.mean" and graph.single_use(op.var):
        shape = graph.view.types[op.args[0]].shape
        if len(shape) == 4 and sorted(d % 4 for d in op.attrs["axis"]) == [2, 3]:
            source, sx, zx = _activation(graph, op.args[0])
            return source, sx, zx, shape[2] * shape[3]
    return (*_activation(graph, var), 1)


def _matmul(graph, op, bias, sy, zy, lo, hi) -> Fold:
    source, sx, zx, count = _pooled_activation(graph, op.args[0])
    if len(graph.view.types[op.var].shape) != 2:
        raise _NoMatch("matmul is not 2-D")
    weight, wscale, wzero = _quantized_constant(graph, op.args[1])
    if wzero.any() or weight.ndim != 2:
        raise _NoMatch("matmul weight is not a 2-D symmetric int8 constant")
    sw = _per_channel(wscale, 1, "the weight scale").astype(np.float32)
    acc_scale = (np.float32(sx) * sw).astype(np.float32)
    bias = _bias(graph, bias, acc_scale, count) if bias is not None else np.zeros(weight.shape[1], np.int64)
    bias = bias - zx * count * weight.astype(np.int64).sum(axis=0)
    requant = Requant.from_scale(acc_scale / np.float32(np.float32(sy) * np.float32(count)), zy, lo, hi)
    matmul = QMatMul(np.ascontiguousarray(weight.T.astype(np.int8)), _int32(bias, "matmul bias"), requant, count > 1)
    return Fold("", matmul, (source,))


def _match(graph: _Graph, quant: DataflowOp) -> Fold:
    """The fold computing the int8 result of `quant`, or _NoMatch saying why there is none."""
    if quant.type is None or quant.type.dtype != "int8":
        raise _NoMatch("it does not produce int8")
    sy = float(np.float32(_scalar(quant.args[1], "the output scale")))
    zy = int(_scalar(quant.args[2], "the output zero point"))
    var, real_lo, real_hi, out_views = quant.args[0], -np.inf, np.inf, ()
    while (op := graph.op(var)) is not None:  # fused activations (relu, Clip's max/min pair, clip) and layouts
        if op.op in _VIEW_OPS and op.type is not None:  # elementwise activations commute with layout changes
            out_views = (_view_of(op),) + out_views
        elif op.op == "relax.nn.relu":
            real_lo = max(real_lo, 0.0)
        elif op.op in ("tir.maximum", "tir.minimum", "relax.clip") and all(
                isinstance(a, (np.ndarray, float, int)) for a in op.args[1:]):
            bounds = [float(np.asarray(a).reshape(())) for a in op.args[1:]]
            if op.op == "relax.clip":
                real_lo, real_hi = max(real_lo, bounds[0]), min(real_hi, bounds[1])
            elif op.op == "tir.maximum":
                real_lo = max(real_lo, bounds[0])
            else:
                real_hi = min(real_hi, bounds[0])
        else:
            break
        var = op.args[0]
    if op is None:
        raise _NoMatch(f"its input {var} is a graph input (quantizing a float input needs float)")
    lo, hi = activation_range(sy, zy, real_lo, real_hi)
    fold = _core(graph, op, sy, zy, lo, hi)
    return Fold(quant.var, fold.op, fold.sources, out_views)


def _core(graph: _Graph, op: DataflowOp, sy: float, zy: int, lo: int, hi: int) -> Fold:
    """The fold of the op under a quantize's activations and layout changes."""
    core, bias = _split_bias(graph, op)
    if core.op == "relax.nn.conv2d":
        return _conv2d(graph, core, bias, sy, zy, lo, hi)
    if core.op == "relax.matmul":
        return _matmul(graph, core, bias, sy, zy, lo, hi)
    if core.op == "relax.add":
        (sa, sa_s, za), (sb, sb_s, zb) = (_activation(graph, a) for a in core.args)
        if sa.var == sb.var and sa.views != sb.views:  # one buffer read two ways: keep the views materialized,
            (sa, _, _), (sb, _, _) = (_activation(graph, a, absorb=False) for a in core.args)  # in-place safe
        if graph.view.types[core.args[0]].shape != graph.view.types[core.args[1]].shape:
            raise _NoMatch("add with broadcasting")
        return Fold("", QAdd.from_scales(sa_s, za, sb_s, zb, sy, zy, lo, hi), (sa, sb))
    if core.op in ("relax.nn.avg_pool2d", "relax.mean"):
        return _pool(graph, core, sy, zy, lo, hi)
    if core.op == "relax.nn.softmax":
        source, sx, _ = _activation(graph, core.args[0])
        shape = graph.view.types[core.var].shape
        if core.attrs["axis"] not in (-1, len(shape) - 1):
            raise _NoMatch("softmax is not over the last axis")
        return Fold("", QSoftmax.from_scales(sx, sy, zy, lo, hi, shape[-1]), (source,))
    if core.op == "relax.dequantize":
        source, sx, zx = _activation(graph, core.var)
        if (np.float32(sx), zx, lo, hi) == (np.float32(sy), zy, -128, 127):
            return Fold("", None, (source,))  # quantize(dequantize(x)) with the same parameters: x
        scale = np.float32(sx) / np.float32(sy)
        return Fold("", QRescale(zx, Requant.from_scale(scale, zy, lo, hi)), (source,))
    raise _NoMatch(f"no integer kernel for {core.op}")


def _pool(graph, op, sy, zy, lo, hi) -> Fold:
    source, sx, zx = _activation(graph, op.args[0])
    in_shape, out_shape = graph.view.types[op.args[0]].shape, graph.view.types[op.var].shape
    a = op.attrs
    if op.op == "relax.mean":
        if len(in_shape) != 4 or sorted(d % 4 for d in a["axis"]) != [2, 3]:
            raise _NoMatch("mean is not over the spatial axes of an NCHW tensor")
        kernel, strides = tuple(in_shape[2:]), (1, 1)
    else:
        if any(a["padding"]) or a["ceil_mode"] or a["layout"] != "NCHW" or tuple(a["dilation"]) != (1, 1):
            raise _NoMatch("average pooling with padding, ceil mode, dilation or a non-NCHW layout")
        kernel, strides = tuple(a["pool_size"]), tuple(a["strides"])
    count = kernel[0] * kernel[1]
    scale = np.float32(sx) / (np.float32(sy) * np.float32(count))
    return Fold("", QAvgPool(kernel, strides, zx, tuple(out_shape), Requant.from_scale(scale, zy, lo, hi)), (source,))


def plan(view: DataflowView) -> tuple[list[Fold], list[str]]:
    """Every quantize that folds, as a Fold (in graph order), and one note per quantize that does not."""
    graph = _Graph(view)
    folds, notes = [], []
    for op in view.ops:
        if op.op != "relax.quantize" or isinstance(op.args[0], np.ndarray):
            continue
        if graph.op(op.args[0]) is not None and graph.op(op.args[0]).op == "relax.quantize":
            continue
        try:
            fold = _match(graph, op)
        except _NoMatch as why:
            notes.append(f"{NAME}: kept {op.var} = quantize(...) in float: {why}")
            continue
        folds.append(fold)
        if fold.op is None:
            source = fold.sources[0]
            graph.aliases[op.var] = Source(source.var, source.views + fold.out_views)
    return folds, notes


def _kind(fold: Fold) -> str:
    return "layout" if fold.op is None else type(fold.op).__name__[1:].lower()


def run(mod: tvm.IRModule, notes: list[str]) -> tvm.IRModule:
    """The pass: rebind each foldable quantize to its integer kernel; note what stays in float."""
    view = tvm_adapter.dataflow_ops(mod)
    if not any(op.op in ("relax.quantize", "relax.dequantize") for op in view.ops):
        return mod  # a float model
    folds, fold_notes = plan(view)
    calls = []
    for fold in folds:
        shapes = [view.types[s.var].shape for s in fold.sources]
        func, constants = int8_kernels.kernel(fold, shapes, view.types[fold.var].shape)
        name = f"{int8_kernels.KERNEL_PREFIX}_{_kind(fold)}"
        calls.append(KernelCall(fold.var, func, name, (*(s.var for s in fold.sources), *constants)))
    mod = tvm_adapter.replace_with_kernels(mod, calls)
    counts = ", ".join(f"{k} {n}" for k, n in sorted(Counter(_kind(f) for f in folds).items()))
    notes.append(f"{NAME}: {len(folds)} quantize chains -> integer kernels ({counts})" if folds
                 else f"{NAME}: no quantize chain folded")
    notes.extend(fold_notes)
    left = [f"{op.op.removeprefix('relax.')} ({op.var})" for op in tvm_adapter.dataflow_ops(mod).ops
            if op.type is not None and op.type.dtype.startswith("float")]
    notes.append(f"{NAME}: float ops left: {', '.join(left)}" if left else f"{NAME}: integer only, no float op left")
    return mod
