"""ONNX and TFLite -> Relax: TVM's importers, and the NHWC -> NCHW relayout of TFLite graphs."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import tvm
from tvm import ir, relax

from tvm_pipeline.tvm_adapter.tflite_qdq import sink_permutes, tflite_idioms


def import_onnx(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> tvm.IRModule:
    """Import an ONNX model into Relax with fixed input shapes; weights become Relax constants."""
    from tvm.relax.frontend.onnx import from_onnx

    dtypes = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).name for i in model.graph.input}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Renaming name")  # ONNX names like "input.1" are not C names
        return from_onnx(model, shape_dict={k: list(v) for k, v in shapes.items()},
                         dtype_dict={k: dtypes[k] for k in shapes}, keep_params_in_input=False)


def onnx_supported_ops(opset: int) -> set[str]:
    """ONNX op types TVM's Relax frontend can convert."""
    from tvm.relax.frontend.onnx import onnx_frontend

    return set(onnx_frontend._get_convert_map().keys())


def import_tflite(model, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str]) -> tvm.IRModule:
    """Import a parsed TFLite model (`tflite.Model`) into Relax with fixed input shapes; weights become constants.

    int8 models import as QDQ fake-quant (`R.quantize`/`R.dequantize` around float ops), as ONNX QDQ models do; the
    frontend's own int8 idioms (a clip after quantize, an average pool of raw integers) become QDQ chains too.
    """
    from tvm.relax.frontend.tflite import from_tflite

    mod = from_tflite(model, shape_dict={k: tuple(v) for k, v in shapes.items()}, dtype_dict=dict(dtypes))
    # The frontend also attaches every weight as a "params" attribute; they are constants in the body already.
    mod["main"] = tflite_idioms(mod["main"].without_attr("params"))
    return mod


_BROADCAST_OPS = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum", "relax.minimum")


@relax.expr_functor.mutator
class _ConstantsToFullRank(relax.PyExprMutator):
    """`add(x, C)` with C of lower rank than x -> `add(x, reshape(C) to x's rank)`: ConvertLayout can permute it.

    A dequantized constant (an int8 model's bias) is reshaped the same way, as a `reshape` fold-qdq reads through.
    """

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not (isinstance(call.op, ir.Op) and call.op.name in _BROADCAST_OPS):
            return call
        args = list(call.args)
        for i, (arg, other) in enumerate(((args[0], args[1]), (args[1], args[0]))):
            if not (isinstance(other.ty, relax.TensorType) and other.ty.ndim > arg.ty.ndim):
                continue
            shape = (1,) * (other.ty.ndim - arg.ty.ndim) + tuple(int(d) for d in arg.ty.shape)
            if isinstance(arg, ir.Constant):
                args[i] = relax.const(arg.value.numpy().reshape(shape))
            elif self._is_dequantized_constant(arg):
                args[i] = self.builder_.emit(relax.op.reshape(arg, shape))
        return relax.Call(call.op, args, call.attrs)

    def _is_dequantized_constant(self, arg: relax.Expr) -> bool:
        value = self.lookup_binding(arg) if isinstance(arg, relax.Var) else None
        return (isinstance(value, relax.Call) and isinstance(value.op, ir.Op) and value.op.name == "relax.dequantize"
                and isinstance(value.args[0], ir.Constant))


@relax.expr_functor.mutator
class _FoldConstantPermutes(relax.PyExprMutator):
    """`permute_dims(C)` -> the permuted constant (ConvertLayout's weight relayouts); nothing else is folded."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if isinstance(call.op, ir.Op) and call.op.name == "relax.permute_dims" and isinstance(call.args[0], ir.Constant):
            value = call.args[0].value.numpy()
            axes = call.attrs.axes
            return relax.const(np.ascontiguousarray(value.transpose(None if axes is None else [int(a) for a in axes])))
        return call


def nhwc_to_nchw(mod: tvm.IRModule) -> tvm.IRModule:
    """Relayout a channels-last model (TFLite) to NCHW/OIHW, the layout of the ONNX graphs our passes match.

    ConvertLayout makes every conv2d NCHW and carries the layout through elementwise ops and pooling, so a model
    ends with one `permute_dims` after its input and one before its first reshape, as tf2onnx's graphs do. Ops
    ConvertLayout does not know (quantize, dequantize) keep a `permute_dims` on each side; `sink_permutes` moves
    those through (and relays out a pooling they reach) until they cancel (tflite_qdq.py). Weight relayouts are
    folded into the constants.
    Updates `mod` (a freshly imported module) in place and returns the result.
    """
    mod["main"] = _ConstantsToFullRank().visit_expr(mod["main"])
    mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NCHW", "OIHW"]})(mod)
    mod["main"] = _FoldConstantPermutes().visit_expr(sink_permutes(mod["main"]))
    # CanonicalizeBindings puts the folded weights back into the conv2d calls (`w = C; conv2d(x, w)` -> `conv2d(x, C)`)
    return tvm.transform.Sequential([relax.transform.CanonicalizeBindings(),
                                     relax.transform.DeadCodeElimination()])(mod)


def tflite_supported_ops() -> tuple[set[str], set[str]]:
    """TFLite builtin operator names TVM's Relax frontend converts, and those it converts in quantized form."""
    from tvm.relax.frontend.tflite.tflite_frontend import OperatorConverter

    converter = OperatorConverter(None, None, None, None)  # only reads its tables; no model needed
    markers = {"DELEGATE", "PLACEHOLDER_FOR_GREATER_OP_CODES"}  # entries that only raise "not a tensor operator"
    return set(converter.convert_map) - markers, set(OperatorConverter._SUPPORTED_QUANTIZED_OPS)


# --- Relax dataflow as data, and kernel substitution (used by graph passes such as reorder-bottleneck) ---------------

#: Relax ops whose all-constant calls `dataflow_ops` evaluates with numpy (bias reshapes, ONNX Clip's bounds).
