"""The C code generator's rounded high word: `(int32)((int64(a) * int64(b) + 2^31) >> 32)` (a TFLite rescale's
SaturatingRoundingDoublingHighMul, as schedules/int8.py writes it when the operand is bounded) is emitted as
`tvmp_smmulr(a, b)`: one SMMULR on a DSP core, plain C elsewhere. Checked on the emulated boards at int32's extremes
and at random against NumPy's int64 arithmetic (exact).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tvm import te, tirx

from tvm_pipeline.board.boards import load_board
from tvm_pipeline.board.runner import QemuRunner
from tvm_pipeline.tuning.measure import build_kernel, run_kernel

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def _high_words(n: int):
    a, b = (te.placeholder((n,), "int32", name=name) for name in ("a", "b"))
    out = te.compute((n,), lambda i: ((a[i].astype("int64") * b[i].astype("int64") + tirx.const(1 << 31, "int64"))
                                      >> tirx.const(32, "int64")).astype("int32"), name="out")
    return te.create_prim_func([a, b, out])


@pytest.mark.parametrize("board", ["stm32f746", "cortex-m0"])  # SMMULR, and the plain-C fallback (no DSP)
def test_rounded_high_word_is_one_helper_call_with_the_same_bits(board: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    edges = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX, 1 << 30, -(1 << 30)]
    a = np.array([*edges, *edges, *rng.integers(INT32_MIN, INT32_MAX, 46, endpoint=True)], np.int32)
    b = np.array([*edges, *edges[::-1], *rng.integers(INT32_MIN, INT32_MAX, 46, endpoint=True)], np.int32)
    build = build_kernel(_high_words(len(a)), "tvmp_high", "c", load_board(board))
    assert "tvmp_smmulr(" in build.kernel.source and "2147483648" not in build.kernel.source.split("tvmp_high(")[-1]
    run = run_kernel(build, [a, b], load_board(board), QemuRunner(), tmp_path)
    expected = (a.astype(np.int64) * b.astype(np.int64) + (1 << 31)) >> 32
    assert np.array_equal(np.asarray(run.output, np.int64), expected)
