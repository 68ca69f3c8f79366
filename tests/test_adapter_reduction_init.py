"""`tvm_adapter.start_reduction_from`: a reduction that starts from a parameter (what `te.sum(init=...)` means; TVM
0.27's `te.create_prim_func` drops the init), and the int8 kernels that use it: a dense conv's sum starts from the
bias, so its epilogue adds no bias per output."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te

from schedules import int8 as int8_kernels
from tvm_pipeline import tvm_adapter
from tvm_pipeline.int8_ops import Fold, QConv2d, Requant, Source
from tvm_pipeline.tvm_adapter import TensorType


def _row_sums():
    a, b = te.placeholder((4, 8), "int32", name="a"), te.placeholder((4,), "int32", name="b")
    k = te.reduce_axis((0, 8), "k")
    return te.create_prim_func([a, b, te.compute((4,), lambda i: te.sum(a[i, k], axis=k), name="total")])


def test_the_reduction_starts_from_the_parameter():
    func = tvm_adapter.start_reduction_from(_row_sums(), "total", "b", 0)
    assert "total[v_i] = b[v_i]" in func.script()  # the init: was `total[v_i] = 0`
    host = tvm.compile(tvm.IRModule({"main": func}), target="llvm")  # run on the host (an independent compiler)
    rng = np.random.default_rng(0)
    a, b = rng.integers(-1000, 1000, (4, 8)).astype(np.int32), rng.integers(-1000, 1000, 4).astype(np.int32)
    out = tvm.runtime.empty((4,), "int32")
    host["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b), out)
    assert np.array_equal(out.numpy(), a.sum(axis=1) + b)
    with pytest.raises(ValueError, match="expected one reduction block 'nope'"):
        tvm_adapter.start_reduction_from(_row_sums(), "nope", "b", 0)


@pytest.mark.parametrize("groups", [1, 4])
def test_dense_convs_sum_from_the_bias_depthwise_ones_add_it(groups: int):
    rng = np.random.default_rng(1)
    conv = QConv2d(rng.integers(-127, 128, (4, 4 // groups, 3, 3)).astype(np.int8),
                   rng.integers(-5000, 5000, 4).astype(np.int32), -3, (1, 1), (1, 1, 1, 1), (1, 1), groups,
                   Requant.from_tflite_scale(rng.uniform(1e-4, 2e-3, 4), 7, -128, 127))
    func, _ = int8_kernels.kernel(Fold("y", conv, (Source("x"),)), [TensorType((1, 4, 6, 6), "int8")],
                                  TensorType((1, 4, 6, 6), "int8"))
    script = func.script()
    from_bias = "acc[v_b, v_o, v_i, v_j] = bias[v_o]" in script
    assert from_bias == (groups == 1) and ("+ bias[v_o]" in script) == (groups != 1)
