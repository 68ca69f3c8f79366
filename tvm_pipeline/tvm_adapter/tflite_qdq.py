"""TFLite int8 graphs as TVM imports them -> the QDQ form fold-qdq reads, and `permute_dims` sunk through Q/DQ.

TVM's TFLite frontend writes an int8 model as QDQ fake-quant, like the ONNX frontend, except for two idioms:

    fused activation:  q = quantize(v, s, z);  clip(q, a, b)            (a ReLU is the clamp at the zero point)
    average pool:      astype(avg_pool2d(astype(q, "int32")), "int8")   (TFLite pools the raw integers)

`tflite_idioms` rewrites both into QDQ chains: `quantize(clip(v, (a - z) s, (b - z) s), s, z)` (or no clip where
[a, b] is the type's whole range: the quantize saturates already) and `quantize(avg_pool2d(dequantize(q, 1, 0)),
1, 0)` (input and output share their parameters in TFLite, so the raw integers with scale 1 give the same result).

ConvertLayout knows neither quantize nor dequantize, so after it each keeps its NHWC layout with a `permute_dims`
on either side: `conv(NCHW) -> permute -> quantize -> dequantize -> permute -> conv(NCHW)`. `sink_permutes` moves
each permute below the elementwise ops (quantize, dequantize, clip, astype, relu; a per-channel axis is remapped)
and the adds whose operands are permuted alike, where it meets its inverse and both vanish.
"""

from __future__ import annotations

import numpy as np
from tvm import ir, relax, tirx

#: Elementwise ops a permutation commutes with: u(permute_dims(x, p)) == permute_dims(u(x), p).
_ELEMENTWISE = ("relax.quantize", "relax.dequantize", "relax.clip", "relax.astype", "relax.nn.relu")
_QDQ = ("relax.quantize", "relax.dequantize")
#: Poolings ConvertLayout leaves NHWC when they read a dequantize (which it cannot relayout); this pass moves them.
_POOLS = ("relax.nn.avg_pool2d", "relax.nn.max_pool2d")
_TO_NHWC = [0, 2, 3, 1]


def _op_name(expr: relax.Expr) -> str:
    return expr.op.name if isinstance(expr, relax.Call) and isinstance(expr.op, ir.Op) else ""


def _dtype(expr: relax.Expr) -> str:
    return expr.ty.dtype.dtype if isinstance(expr.ty, relax.TensorType) else ""


def _scalar(expr: relax.Expr) -> float | None:
    """The value of a scalar constant: a one-element tensor, or a clip bound (FloatImm); None for anything else."""
    if isinstance(expr, (tirx.FloatImm, tirx.IntImm)):
        return expr.value
    if isinstance(expr, ir.GenericConst) and expr.value.numpy().size == 1:
        return expr.value.numpy().reshape(()).item()
    return None


class _Mutator(relax.PyExprMutator):
    def bound(self, expr: relax.Expr) -> relax.Expr:
        """The value a dataflow var is bound to, through `a = b` aliases (the expression itself when not bound)."""
        while isinstance(expr, relax.Var) and (value := self.lookup_binding(expr)) is not None:
            expr = value
        return expr


@relax.expr_functor.mutator
class _TFLiteIdioms(_Mutator):
    """`clip(quantize(v))` -> `quantize(clip(v))`; the integer average pool -> dequantize, avg_pool2d, quantize."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        name = _op_name(call)
        if name == "relax.clip":
            return self._clip(call)
        if name == "relax.astype":
            return self._average_pool(call)
        return call

    def _clip(self, call: relax.Call) -> relax.Expr:
        quant = self.bound(call.args[0])
        lo, hi = (_scalar(a) for a in call.args[1:])
        if _op_name(quant) != "relax.quantize" or lo is None or hi is None:
            return call
        scale, zero_point = (_scalar(a) for a in quant.args[1:])
        info = np.iinfo(_dtype(call))
        if lo <= info.min and hi >= info.max:
            return call.args[0]
        if scale is None or zero_point is None:  # per-channel activation parameters: TFLite does not write them
            return call
        real = [float(np.float32((bound - zero_point) * np.float32(scale))) for bound in (lo, hi)]
        clipped = self.builder_.emit(relax.op.clip(quant.args[0], relax.prim_value(real[0]), relax.prim_value(real[1])))
        return relax.Call(quant.op, [clipped, *quant.args[1:]], quant.attrs)

    def _average_pool(self, call: relax.Call) -> relax.Expr:
        pool = self.bound(call.args[0])
        widen = self.bound(pool.args[0]) if _op_name(pool) == "relax.nn.avg_pool2d" else None
        if (widen is None or _op_name(widen) != "relax.astype" or _dtype(call) not in ("int8", "uint8")
                or _dtype(call) != _dtype(widen.args[0])):
            return call
        one, zero = relax.const(1.0, "float32"), relax.const(0, "int32")
        real = self.builder_.emit(relax.op.dequantize(widen.args[0], one, zero, axis=0))
        pooled = self.builder_.emit(relax.Call(pool.op, [real], pool.attrs))
        return relax.op.quantize(pooled, one, zero, axis=0, out_dtype=_dtype(call))


@relax.expr_functor.mutator
class _SinkPermutes(_Mutator):
    """`u(permute_dims(x, p))` -> `permute_dims(u(x), p)` for elementwise u, `add(permute_dims(a, p),
    permute_dims(b, p))` -> `permute_dims(add(a, b), p)`, an NHWC pool of an NCHW tensor -> the NCHW pool, and two
    permutes in a row -> one, or none."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        name = _op_name(call)
        if name == "relax.permute_dims" and (inner := self._permuted(call.args[0])) is not None:
            source, axes = inner
            composed = [axes[a] for a in self._axes(call)]
            return source if composed == sorted(composed) else relax.op.permute_dims(source, composed)
        if name in _ELEMENTWISE and (inner := self._permuted(call.args[0])) is not None:
            source, axes = inner
            attrs = call.attrs
            if name in _QDQ and _scalar(call.args[1]) is None:
                axis = axes[int(attrs.axis) % len(axes)]  # per-channel: the same channel axis of the source
                moved = getattr(relax.op, name.removeprefix("relax."))(
                    source, *call.args[1:], axis=axis, out_dtype=attrs.out_dtype)
            else:
                moved = relax.Call(call.op, [source, *call.args[1:]], attrs)
            return relax.op.permute_dims(self.builder_.emit(moved), axes)
        if name == "relax.add":
            a, b = (self._permuted(arg) for arg in call.args)
            if a is not None and b is not None and a[1] == b[1]:
                return relax.op.permute_dims(self.builder_.emit(relax.op.add(a[0], b[0])), a[1])
        if name in _POOLS and (inner := self._permuted(call.args[0])) is not None and inner[1] == _TO_NHWC:
            a = call.attrs
            if (a.layout, a.out_layout) == ("NHWC", "NHWC"):
                pool = getattr(relax.op.nn, name.removeprefix("relax.nn."))(
                    inner[0], a.pool_size, a.strides, a.padding, a.dilation, a.ceil_mode, a.count_include_pad,
                    layout="NCHW", out_layout="NCHW")
                return relax.op.permute_dims(self.builder_.emit(pool), _TO_NHWC)
        return call

    @staticmethod
    def _axes(call: relax.Call) -> list[int]:
        axes = call.attrs.axes
        return list(range(call.ty.ndim))[::-1] if axes is None else [int(a) for a in axes]

    def _permuted(self, expr: relax.Expr) -> tuple[relax.Expr, list[int]] | None:
        value = self.bound(expr)
        return (value.args[0], self._axes(value)) if _op_name(value) == "relax.permute_dims" else None


def tflite_idioms(func: relax.Function) -> relax.Function:
    """The TFLite frontend's fused-activation clip and integer average pool as QDQ chains (module docstring)."""
    return _TFLiteIdioms().visit_expr(func)


def sink_permutes(func: relax.Function) -> relax.Function:
    """Every `permute_dims` moved below elementwise ops and permuted-alike adds; inverse pairs cancelled."""
    return _SinkPermutes().visit_expr(func)
