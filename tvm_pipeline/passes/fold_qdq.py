"""Fold `quantize(act(op(dequantize(x), dequantize(w)) + b))` chains into integer kernels.

Before (a QDQ model as TVM imports it; ReLU6 is a max/min call_tir pair, the bias a reshaped dequantize):

    xf = dequantize(x, sx, zx);  wf = dequantize(W_int8, sw[c], 0)
    c  = conv2d(xf, wf);  c = add(c, reshape(dequantize(B_int32, sx*sw[c], 0)));  c = relu(c)
    y  = quantize(c, sy, zy)                                                    # int8

After:

    y = call_tir(int8_conv2d, (x, W_int8, B', M, S))    # int32 accumulation, y = clamp(round(acc*M[c]>>S[c]) + zy)

The same for matmul/Gemm (+ bias), add (both inputs rescaled onto one shift), average pooling / spatial mean,
max pooling (the integers' window maximum), softmax (an exp table, see int8_ops.QSoftmax), concat (each input
rescaled onto the output's parameters) and pure layout changes (`quantize(reshape(dequantize(x)))` with equal parameters is `reshape(x)` on int8). A transpose or reshape of an int8 input read only by the kernel is
absorbed into the kernel's indexing. Only the quantize is rebound, so a chain that does not match stays as it was
(in float) and is named in the notes with the reason; the last note lists every float op left in the graph.
Activations may be int8 or uint8 (and mixed: each kernel reads and writes its tensors' own types); weights are int8.
The arithmetic is defined, and checked against NumPy, in tvm_pipeline/int8_ops.py. Option `arithmetic="tflite"`
(what compile_model picks for a .tflite model) uses TFLite's own fixed-point steps instead: Q31 requantization for
conv/matmul/rescale (Requant "tflite"), QAddTFLite, QAvgPoolTFLite, so the model equals TFLM, not onnxruntime.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import tvm

from schedules import int8 as int8_kernels
from tvm_pipeline import tvm_adapter
from tvm_pipeline.errors import UserError
from tvm_pipeline.int8_ops import (ACTIVATION_DTYPES, Fold, QAdd, QAddTFLite, QAvgPool, QAvgPoolTFLite, QConcat,
                                   QConv2d, QMatMul, QMaxPool, QRescale, QSoftmax, Requant, Source, activation_range)
from tvm_pipeline.passes.qdq_values import (VIEW_OPS, Graph, NoMatch, activation, bias_in_acc_units, per_channel,
                                            quantized_constant, scalar, to_int32, view_of)
from tvm_pipeline.tvm_adapter import DataflowOp, DataflowView, KernelCall

NAME = "fold-qdq"

#: Whose rounding the integer kernels follow (docs/int8.md): onnxruntime's (one rounding, half to even) or TFLite
#: Micro's reference kernels' (Q31 fixed-point steps, half away from zero; conv/matmul/rescale, Add, AveragePool).
ARITHMETICS = ("onnxruntime", "tflite")

#: The arithmetic that makes a model of each source format bit-exact with its own runtime.
ARITHMETIC_OF_FORMAT = {"onnx": "onnxruntime", "tflite": "tflite"}
#: What the note of a run that folded something says (the compiler records the arithmetic only then).
FOLDED = "-> integer kernels"


def _split_bias(graph: Graph, op: DataflowOp) -> tuple[DataflowOp | None, object]:
    """`add(core, bias)` with a constant bias -> (core op, bias); else (op, None)."""
    if op.op != "relax.add":
        return op, None
    for core_arg, bias_arg in ((op.args[0], op.args[1]), (op.args[1], op.args[0])):
        core = graph.op(core_arg)
        if core is not None and core.op in ("relax.nn.conv2d", "relax.matmul") and (
                isinstance(bias_arg, np.ndarray) or _is_constant(graph, bias_arg)):
            return core, bias_arg
    return op, None


def _is_constant(graph: Graph, value) -> bool:
    try:
        quantized_constant(graph, value)
        return True
    except NoMatch:
        return False


def _int8_weight(weight: np.ndarray, zero_point: np.ndarray, what: str) -> np.ndarray:
    if zero_point.any():
        raise NoMatch(f"{what} weights have a non-zero zero point (only symmetric weights fold)")
    if weight.dtype != np.int8:
        raise NoMatch(f"{what} weights are {weight.dtype}, not int8")
    return weight


def _requant(scale: np.ndarray, real: np.ndarray, zy: int, lo: int, hi: int, dtype: str, arithmetic: str) -> Requant:
    """onnxruntime's requantization by the float32 `scale`, or TFLite's by the double `real` (each derived from
    the float32 scales the way that runtime does)."""
    if arithmetic == "tflite":
        return Requant.from_tflite_scale(real, zy, lo, hi, dtype)
    return Requant.from_scale(scale, zy, lo, hi, dtype)


def _conv2d(graph, op, bias, sy, zy, lo, hi, dtype, arithmetic) -> Fold:
    a = op.attrs
    if (a["data_layout"], a["kernel_layout"], a["out_layout"]) != ("NCHW", "OIHW", "NCHW"):
        raise NoMatch("conv2d layout is not NCHW/OIHW")
    source, sx, zx = activation(graph, op.args[0])
    weight, wscale, wzero = quantized_constant(graph, op.args[1])
    weight = _int8_weight(weight, wzero, "conv2d")
    sw = per_channel(wscale, 0, "the weight scale").astype(np.float32)
    acc_scale = (np.float32(sx) * sw).astype(np.float32)
    bias = bias_in_acc_units(graph, bias, acc_scale) if bias is not None else np.zeros(weight.shape[0], np.int64)
    bias = bias - zx * weight.astype(np.int64).sum(axis=(1, 2, 3))
    real = np.float64(np.float32(sx)) * sw.astype(np.float64) / np.float64(np.float32(sy))  # TFLite: in double
    requant = _requant(acc_scale / np.float32(sy), real, zy, lo, hi, dtype, arithmetic)
    conv = QConv2d(weight, to_int32(bias, "conv2d bias"), zx, tuple(a["strides"]), tuple(a["padding"]),
                   tuple(a["dilation"]), int(a["groups"]), requant)
    return Fold("", conv, (source,))


def _pooled_activation(graph: Graph, var: str) -> tuple[Source, float, int, int]:
    """`activation`, or (source, sx, zx, H*W) for `flatten(mean_HW(dequantize(x)))` (a pool nothing quantized)."""
    op = graph.op(var)
    while op is not None and op.op == "relax.reshape":
        op = graph.op(op.args[0])
    if op is not None and op.op == "relax.mean" and graph.single_use(op.var):
        shape = graph.view.types[op.args[0]].shape
        if len(shape) == 4 and sorted(d % 4 for d in op.attrs["axis"]) == [2, 3]:
            source, sx, zx = activation(graph, op.args[0])
            return source, sx, zx, shape[2] * shape[3]
    return (*activation(graph, var), 1)


def _matmul(graph, op, bias, sy, zy, lo, hi, dtype, arithmetic) -> Fold:
    source, sx, zx, count = _pooled_activation(graph, op.args[0])
    if len(graph.view.types[op.var].shape) != 2:
        raise NoMatch("matmul is not 2-D")
    weight, wscale, wzero = quantized_constant(graph, op.args[1])
    weight = _int8_weight(weight, wzero, "matmul")
    if weight.ndim != 2:
        raise NoMatch("matmul weight is not 2-D")
    sw = per_channel(wscale, 1, "the weight scale").astype(np.float32)
    acc_scale = (np.float32(sx) * sw).astype(np.float32)
    bias = bias_in_acc_units(graph, bias, acc_scale, count) if bias is not None else np.zeros(weight.shape[1], np.int64)
    bias = bias - zx * count * weight.astype(np.int64).sum(axis=0)
    if count > 1 or arithmetic != "tflite":  # a pool inside the matmul: no TFLite op has one
        requant = Requant.from_scale(acc_scale / np.float32(np.float32(sy) * np.float32(count)), zy, lo, hi, dtype)
    else:  # TFLite's FULLY_CONNECTED: the product sx * sw in float32, divided by sy in double
        requant = Requant.from_tflite_scale(acc_scale.astype(np.float64) / np.float64(np.float32(sy)), zy, lo, hi,
                                            dtype)
    matmul = QMatMul(np.ascontiguousarray(weight.T), to_int32(bias, "matmul bias"), requant, count > 1)
    return Fold("", matmul, (source,))


def _match(graph: Graph, quant: DataflowOp, arithmetic: str) -> Fold:
    """The fold computing the integer result of `quant`, or NoMatch saying why there is none."""
    if quant.type is None or quant.type.dtype not in ACTIVATION_DTYPES:
        raise NoMatch("it produces neither int8 nor uint8")
    dtype = quant.type.dtype
    sy = float(np.float32(scalar(quant.args[1], "the output scale")))
    zy = int(scalar(quant.args[2], "the output zero point"))
    var, real_lo, real_hi, out_views = quant.args[0], -np.inf, np.inf, ()
    while (op := graph.op(var)) is not None:  # fused activations (relu, Clip's max/min pair, clip) and layouts
        if op.op in VIEW_OPS and op.type is not None:  # elementwise activations commute with layout changes
            out_views = (view_of(op),) + out_views
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
        raise NoMatch(f"its input {var} is a graph input (quantizing a float input needs float)")
    lo, hi = activation_range(sy, zy, real_lo, real_hi, dtype)
    fold = _core(graph, op, sy, zy, lo, hi, dtype, arithmetic)
    return Fold(quant.var, fold.op, fold.sources, out_views)


def _core(graph: Graph, op: DataflowOp, sy: float, zy: int, lo: int, hi: int, dtype: str, arithmetic: str) -> Fold:
    """The fold of the op under a quantize's activations and layout changes; `dtype`: what it stores."""
    core, bias = _split_bias(graph, op)
    if core.op == "relax.nn.conv2d":
        return _conv2d(graph, core, bias, sy, zy, lo, hi, dtype, arithmetic)
    if core.op == "relax.matmul":
        return _matmul(graph, core, bias, sy, zy, lo, hi, dtype, arithmetic)
    if core.op == "relax.add":
        (sa, sa_s, za), (sb, sb_s, zb) = (activation(graph, a) for a in core.args)
        if sa.var == sb.var and sa.views != sb.views:  # one buffer read two ways: keep the views materialized,
            (sa, _, _), (sb, _, _) = (activation(graph, a, absorb_views=False) for a in core.args)  # in-place safe
        if graph.view.types[core.args[0]].shape != graph.view.types[core.args[1]].shape:
            raise NoMatch("add with broadcasting")
        kind = QAddTFLite if arithmetic == "tflite" else QAdd
        try:
            add = kind.from_scales(sa_s, za, sb_s, zb, sy, zy, lo, hi, dtype)
        except ValueError as why:
            raise NoMatch(str(why)) from None
        return _fuse_residual(graph, core, Fold("", add, (sa, sb)))
    if core.op in ("relax.nn.avg_pool2d", "relax.mean"):
        return _pool(graph, core, sy, zy, lo, hi, dtype, arithmetic)
    if core.op == "relax.nn.max_pool2d":
        return _max_pool(graph, core, sy, zy, lo, hi, dtype)
    if core.op == "relax.nn.softmax":
        source, sx, _ = activation(graph, core.args[0])
        shape = graph.view.types[core.var].shape
        if core.attrs["axis"] not in (-1, len(shape) - 1):
            raise NoMatch("softmax is not over the last axis")
        return Fold("", QSoftmax.from_scales(sx, sy, zy, lo, hi, shape[-1], dtype), (source,))
    if core.op == "relax.concat":
        inputs = [activation(graph, a) for a in core.args]
        rank = len(graph.view.types[core.var].shape)
        axis = int(core.attrs["axis"]) % rank
        return Fold("", QConcat.from_scales(axis, [(s, z) for _, s, z in inputs], sy, zy, lo, hi, dtype),
                    tuple(source for source, _, _ in inputs))
    if core.op == "relax.dequantize":
        source, sx, zx = activation(graph, core.var)
        if _same_parameters(graph, source, sx, zx, sy, zy, lo, hi, dtype):
            return Fold("", None, (source,))  # quantize(dequantize(x)) with the same parameters: x
        real = np.float64(np.float32(sx)) / np.float64(np.float32(sy))  # TFLite's QUANTIZE (int8 -> int8): in double
        requant = _requant(np.float32(sx) / np.float32(sy), real, zy, lo, hi, dtype, arithmetic)
        return Fold("", QRescale(zx, requant), (source,))
    raise NoMatch(f"no integer kernel for {core.op}")


def _same_quantization(graph: Graph, source: Source, sx: float, zx: int, sy: float, zy: int, dtype: str) -> bool:
    """Whether the output is quantized as the source is: same float32 scale, zero point and integer type."""
    return (np.float32(sx), zx, graph.dtype(source.var)) == (np.float32(sy), zy, dtype)


def _same_parameters(graph: Graph, source: Source, sx: float, zx: int, sy: float, zy: int, lo: int, hi: int,
                     dtype: str) -> bool:
    """Whether quantizing with (sy, zy, lo, hi, dtype) gives back the source's own integers (nothing clamped)."""
    info = np.iinfo(dtype)
    return _same_quantization(graph, source, sx, zx, sy, zy, dtype) and (lo, hi) == (info.min, info.max)


def _fuse_residual(graph: Graph, add_op: DataflowOp, add: Fold) -> Fold:
    """add(conv, skip) -> conv with the add in its epilogue, when the conv's int8 output feeds only this add.

    The conv's own fold is then dead (dead-code elimination drops it) and the result may overwrite `skip` in place.
    """
    for side, (source, dequantized) in enumerate(zip(add.sources, add_op.args)):
        conv = graph.folds.get(source.var)
        skip = add.sources[1 - side]
        if (conv is not None and isinstance(conv.op, QConv2d) and conv.op.residual is None and not conv.out_views
                and not source.views and graph.single_use(source.var) and graph.single_use(dequantized)
                and skip.var not in {s.var for s in conv.sources}):  # one buffer as two params breaks in-place
            residual = add.op if side == 0 else add.op.swapped()
            op = QConv2d(**{**conv.op.__dict__, "residual": residual})
            graph.merged.add(source.var)
            return Fold("", op, (*conv.sources, skip))
    return add


def _pool(graph, op, sy, zy, lo, hi, dtype, arithmetic) -> Fold:
    source, sx, zx = activation(graph, op.args[0])
    in_shape, out_shape = graph.view.types[op.args[0]].shape, graph.view.types[op.var].shape
    a = op.attrs
    if op.op == "relax.mean":
        if len(in_shape) != 4 or sorted(d % 4 for d in a["axis"]) != [2, 3]:
            raise NoMatch("mean is not over the spatial axes of an NCHW tensor")
        kernel, strides = tuple(in_shape[2:]), (1, 1)
    else:
        if any(a["padding"]) or a["ceil_mode"] or a["layout"] != "NCHW" or tuple(a["dilation"]) != (1, 1):
            raise NoMatch("average pooling with padding, ceil mode, dilation or a non-NCHW layout")
        kernel, strides = tuple(a["pool_size"]), tuple(a["strides"])
        if arithmetic == "tflite" and _same_quantization(graph, source, sx, zx, sy, zy, dtype):
            # TFLite's AVERAGE_POOL_2D (its parameters are the input's): the raw integers' mean, half away from 0
            return Fold("", QAvgPoolTFLite(kernel, strides, tuple(out_shape), lo, hi, dtype), (source,))
    count = kernel[0] * kernel[1]
    scale = np.float32(sx) / (np.float32(sy) * np.float32(count))
    requant = Requant.from_scale(scale, zy, lo, hi, dtype)
    return Fold("", QAvgPool(kernel, strides, zx, tuple(out_shape), requant), (source,))


def _max_pool(graph, op, sy, zy, lo, hi, dtype) -> Fold:
    """The window maximum of the integers; rescaled (QRescale-style) only where the output's parameters differ."""
    source, sx, zx = activation(graph, op.args[0])
    a = op.attrs
    if a["layout"] != "NCHW" or a["out_layout"] != "NCHW":
        raise NoMatch("max pooling in a non-NCHW layout")
    in_shape, out_shape = graph.view.types[op.args[0]].shape, graph.view.types[op.var].shape
    for size, out, k, s, d, pad in zip(in_shape[2:], out_shape[2:], a["pool_size"], a["strides"], a["dilation"],
                                       a["padding"][:2]):
        if any(all(not 0 <= i * s - pad + r * d < size for r in range(k)) for i in range(out)):
            raise NoMatch("max pooling with a window that lies entirely in the padding")
    copy = _same_quantization(graph, source, sx, zx, sy, zy, dtype)
    requant = None if copy else Requant.from_scale(np.float32(sx) / np.float32(sy), zy, lo, hi, dtype)
    pool = QMaxPool(tuple(a["pool_size"]), tuple(a["strides"]), tuple(a["padding"]), tuple(a["dilation"]), zx,
                    tuple(out_shape), requant, lo, hi, dtype)
    return Fold("", pool, (source,))


def plan(view: DataflowView, arithmetic: str = "onnxruntime") -> tuple[list[Fold], list[str]]:
    """Every quantize that folds, as a Fold (in graph order), and one note per quantize that does not."""
    graph = Graph(view)
    folds, notes = [], []
    for op in view.ops:
        if op.op != "relax.quantize" or isinstance(op.args[0], np.ndarray):
            continue
        if graph.op(op.args[0]) is not None and graph.op(op.args[0]).op == "relax.quantize":
            continue
        try:
            fold = _match(graph, op, arithmetic)
        except NoMatch as why:
            notes.append(f"{NAME}: kept {op.var} = quantize(...) in float: {why}")
            continue
        folds.append(fold)
        graph.folds[fold.var] = fold
        if fold.op is None:
            source = fold.sources[0]
            graph.aliases[op.var] = Source(source.var, source.views + fold.out_views)
    return [f for f in folds if f.var not in graph.merged], notes


def _kind(fold: Fold) -> str:
    if isinstance(fold.op, QConv2d) and fold.op.residual is not None:
        return "conv2d+add"
    return "layout" if fold.op is None else type(fold.op).__name__[1:].lower()


def run(mod: tvm.IRModule, notes: list[str], arithmetic: str = "onnxruntime") -> tvm.IRModule:
    """The pass: rebind each foldable quantize to its integer kernel; note what stays in float.

    `arithmetic` (one of ARITHMETICS): whose rounding the kernels follow.
    """
    if arithmetic not in ARITHMETICS:
        raise UserError(f"unknown int8 arithmetic {arithmetic!r}; choose {' or '.join(ARITHMETICS)}")
    view = tvm_adapter.dataflow_ops(mod)
    if not any(op.op in ("relax.quantize", "relax.dequantize") for op in view.ops):
        return mod  # a float model
    folds, fold_notes = plan(view, arithmetic)
    calls = []
    for fold in folds:
        func, constants = int8_kernels.kernel(fold, [view.types[s.var] for s in fold.sources], view.types[fold.var])
        name = f"{int8_kernels.KERNEL_PREFIX}_{_kind(fold)}"
        calls.append(KernelCall(fold.var, func, name, (*(s.var for s in fold.sources), *constants)))
    mod = tvm_adapter.replace_with_kernels(mod, calls)
    counts = ", ".join(f"{k} {n}" for k, n in sorted(Counter(_kind(f) for f in folds).items()))
    notes.append(f"{NAME}: {len(folds)} quantize chains {FOLDED} ({counts})" if folds
                 else f"{NAME}: no quantize chain folded")
    if folds and arithmetic == "tflite":
        notes.append(f"{NAME}: TFLite's arithmetic (TFLM's: Q31 requantization, its Add and AveragePool rounding)")
    notes.extend(fold_notes)
    left = [f"{op.op.removeprefix('relax.')} ({op.var})" for op in tvm_adapter.dataflow_ops(mod).ops
            if op.type is not None and op.type.dtype.startswith("float")]
    notes.append(f"{NAME}: float ops left: {', '.join(left)}" if left else f"{NAME}: integer only, no float op left")
    return mod
