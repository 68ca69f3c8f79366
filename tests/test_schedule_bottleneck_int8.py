"""The int8 reordered bottleneck's schedule (schedules/bottleneck_int8.apply): 4 expanded channels a step, the
projection and the pixel-by-pixel expansion as 4-long dot products (tvm_adapter.dsp), the depthwise 3 or 2 pixels a
pass. Run on the emulated boards (the
SMLAD helpers on the M7, their plain-C fallbacks on the M0) against the unscheduled kernel built by TVM for the host:
integer sums in another order, so the outputs must be equal bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import s_tir

from schedules import bottleneck_int8
from schedules.bottleneck_int8 import Int8BottleneckSpec
from tvm_pipeline.board.boards import load_board
from tvm_pipeline.board.runner import QemuRunner
from tvm_pipeline.tuning.measure import build_kernel, run_kernel


def _spec(in_dtype: str, cin: int, hidden: int, stride: int, width: int) -> Int8BottleneckSpec:
    lo, hi = (0, 255) if in_dtype == "uint8" else (-128, 127)
    requant = (lo + 3, lo, hi, in_dtype, "onnxruntime")
    return Int8BottleneckSpec(in_channels=cin, expand_channels=hidden, out_channels=8, height=7, width=width, kernel=3,
                              stride=stride, padding=(1, 1, 1, 1), dw_input_zero_point=lo + 3, expand_requant=requant,
                              dw_requant=requant, proj_requant=requant, residual=None, in_dtype=in_dtype)


def _constants(func: tvm.tirx.PrimFunc, rng: np.random.Generator) -> list[np.ndarray]:
    """Random x and constants for every parameter but the output, in their order: weights, biases, multipliers in
    [2^30, 2^31) and shifts that bring the accumulators back to 8 bits."""
    values = []
    for param in func.params[:-1]:
        shape, dtype, name = [int(d) for d in param.ty.shape], str(param.ty.dtype.dtype), param.name
        if name.startswith("m_"):
            values.append(rng.integers(1 << 30, 1 << 31, shape).astype(dtype))
        elif name.startswith("s_"):
            values.append(rng.integers(37, 41, shape).astype(dtype))
        elif name.startswith("b_"):
            values.append(rng.integers(-3000, 3000, shape).astype(dtype))
        else:
            info = np.iinfo(dtype)
            values.append(rng.integers(max(info.min, -127), info.max, shape, endpoint=True).astype(dtype))
    return values


def _host_reference(func: tvm.tirx.PrimFunc, inputs: list[np.ndarray]) -> np.ndarray:
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target="llvm")
    out = func.params[-1].ty
    result = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], str(out.dtype.dtype)))
    lib["main"](*map(tvm.runtime.tensor, inputs), result)
    return result.numpy()


@pytest.mark.parametrize("in_dtype, cin, hidden, stride, width, compact, helpers", [
    ("int8", 8, 16, 1, 6, False, ("tvmp_dot4_s8(", "tvmp_dot4_strided_s8(")),  # both products SMLAD; 3 pixels
    ("uint8", 8, 12, 2, 8, False, ("tvmp_dot4_u8(", "tvmp_dot4_strided_u8(")),  # uint8, a strided depthwise; 2 pixels
    ("int8", 6, 16, 1, 5, False, ("tvmp_dot4_s8(",)),  # C_in not a multiple of 4: scalar expansion; a pixel a pass
    ("int8", 8, 10, 1, 6, False, ()),  # hidden not a multiple of 4: 1 channel a step, scalar
    ("int8", 8, 16, 1, 6, True, ("tvmp_dot4_strided_s8(",)),   # compact: 2 channels a step, scalar projection
])
@pytest.mark.parametrize("board", ["stm32f746", "cortex-m0"])
def test_scheduled_kernel_equals_the_unscheduled_one(in_dtype, cin, hidden, stride, width, compact, helpers, board,
                                                     tmp_path: Path) -> None:
    func = bottleneck_int8.kernel(_spec(in_dtype, cin, hidden, stride, width))
    inputs = _constants(func, np.random.default_rng(cin * hidden + stride + width))
    expected = _host_reference(func, inputs)
    assert len(np.unique(expected)) > 20  # requantized into a spread of values, not a constant
    sch = s_tir.Schedule(func)
    bottleneck_int8.apply(sch, compact)
    build = build_kernel(sch.mod["main"], "tvmp_bottleneck", "c", load_board(board))
    source = build.kernel.source.split("void tvmp_bottleneck(")[-1]
    assert all(helper in source for helper in helpers) and ("tvmp_dot4_s8(" in source) == ("tvmp_dot4_s8(" in helpers)
    estimate = bottleneck_int8.scratch_bytes(bottleneck_int8.spec_of(func))  # what the passes budget
    assert build.kernel.workspace_bytes < estimate if compact else build.kernel.workspace_bytes <= estimate
    run = run_kernel(build, inputs, load_board(board), QemuRunner(), tmp_path)
    assert np.array_equal(np.asarray(run.output).reshape(expected.shape), expected)
