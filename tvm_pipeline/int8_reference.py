"""A NumPy run of an int8 model with exactly the integer arithmetic the generated C performs.

The model is imported as for compilation and the fold-qdq pass plans its folds; then each fold runs through its
`int8_ops` NumPy definition instead of a generated kernel. Tests compare the board's output with this bit for bit
(a mismatch is a code generation bug), and with onnxruntime within 1 LSB (a difference there is arithmetic: see
docs/int8.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from tvm_pipeline import tvm_adapter
from tvm_pipeline.errors import UserError
from tvm_pipeline.int8_ops import Fold, apply_views


def _int8_graph(model: onnx.ModelProto) -> tuple[tvm_adapter.DataflowView, dict[str, Fold], str]:
    from tvm_pipeline.frontend.onnx_loader import input_specs
    from tvm_pipeline.passes import fold_qdq

    (spec,) = input_specs(model)
    mod = tvm_adapter.import_onnx(model, {spec.name: spec.shape})
    view = tvm_adapter.dataflow_ops(mod)
    folds, _ = fold_qdq.plan(view)
    return view, {f.var: f for f in folds}, tvm_adapter.dataflow_output(mod)


def run_reference(model: onnx.ModelProto | str | Path, x: np.ndarray) -> np.ndarray:
    """The model's output for input `x`, computed with the folded integer arithmetic in NumPy.

    Raises UserError when the output depends on an op that stayed in float (nothing integer to compare with).
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    view, folds, output = _int8_graph(model)
    producer = {op.var: op for op in view.ops}
    values: dict[str, np.ndarray] = {view.inputs[0]: np.asarray(x).reshape(view.types[view.inputs[0]].shape)}

    def value(var: str) -> np.ndarray:
        if var in values:
            return values[var]
        if var in folds:
            fold = folds[var]
            result = fold.reference(*(value(s.var) for s in fold.sources))
        else:
            op = producer[var]
            if op.op == "relax.permute_dims":
                result = apply_views(value(op.args[0]), (("permute_dims", tuple(op.attrs["axes"])),))
            elif op.op == "relax.reshape":
                result = value(op.args[0]).reshape(op.type.shape)
            elif op.op == "relax.strided_slice":  # an int8 slice read by more than one kernel (patch tunnels)
                from tvm_pipeline.passes.qdq_values import view_of
                result = apply_views(value(op.args[0]), (view_of(op),))
            else:
                raise UserError(f"{var} = {op.op}(...) is not integer: the int8 reference cannot run this model")
        values[var] = result
        return result

    return value(output)
