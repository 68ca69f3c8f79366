"""The C code generator's min/max: a max reduction whose loops LoopPartition split at the padding bounds.

Partitioning turns the border taps of `m = max(m, x[...])` into straight-line statements in one C scope, where TVM's
C printer would reuse the temporary it made for the first `m` (a stale maximum: wrong outputs, up to 255 LSB).
`tvm_adapter.codegen` emits min/max as calls to static inline helpers instead; this checks the output on the board.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tvm import s_tir, te, tirx

from schedules import default
from tvm_pipeline.board.boards import load_board
from tvm_pipeline.board.runner import QemuRunner
from tvm_pipeline.tuning.measure import build_kernel, kernel_inputs, run_kernel

SHAPE, K, STRIDE, PAD = (1, 3, 9, 9), 3, 2, 1


def _max_pool():
    x = te.placeholder(SHAPE, "int8", name="x")
    ry, rx = te.reduce_axis((0, K), "ry"), te.reduce_axis((0, K), "rx")
    size = (SHAPE[2] + 2 * PAD - K) // STRIDE + 1

    def tap(b, c, i, j):
        y, xx = i * STRIDE + ry - PAD, j * STRIDE + rx - PAD
        inside = tirx.all(*(tirx.likely(v) for v in (y >= 0, y < SHAPE[2], xx >= 0, xx < SHAPE[3])))
        return tirx.if_then_else(inside, x[b, c, y, xx], tirx.min_value("int8"))

    pooled = te.compute((1, SHAPE[1], size, size), lambda b, c, i, j: te.max(tap(b, c, i, j), axis=[ry, rx]),
                        name="max")
    out = te.compute(pooled.shape, lambda *i: tirx.min(pooled[i], tirx.const(100, "int8")), name="out")
    sch = s_tir.Schedule(te.create_prim_func([x, out]))
    default.apply(sch)
    return sch.mod["main"]


def _reference(x: np.ndarray) -> np.ndarray:
    padded = np.pad(x.astype(np.int32), ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD)), constant_values=-128)
    size = (SHAPE[2] + 2 * PAD - K) // STRIDE + 1
    windows = [[padded[0, :, i * STRIDE:i * STRIDE + K, j * STRIDE:j * STRIDE + K].max(axis=(1, 2))
                for j in range(size)] for i in range(size)]
    return np.minimum(np.transpose(np.array(windows), (2, 0, 1)), 100).reshape(-1)


def test_partitioned_max_pool_reads_the_running_maximum(tmp_path: Path) -> None:
    build = build_kernel(_max_pool(), "tvmp_pool", "c", load_board("stm32f746"))
    assert "tvmp_max_int8(" in build.kernel.source and "for (int32_t i = 0; i < 3;" in build.kernel.source
    inputs = kernel_inputs(build.kernel.params, seed=3)
    run = run_kernel(build, inputs, load_board("stm32f746"), QemuRunner(), tmp_path)
    assert np.array_equal(np.asarray(run.output, np.int32), _reference(inputs[0].reshape(SHAPE)))
