"""The im2col DSP schedule of int8 convs (schedules/int8_dsp.py): tensorized SMLAD dot products, checked exactly
against the NumPy integer reference on the emulated Cortex-M7, and its TIR before and after.

The helper's plain-C fallback (no __ARM_FEATURE_DSP) runs in every host build of an int8 model compiled for a DSP
board (e.g. test_pass_patch_stage_int8_stream's host builds, bit-identical to the unpatched build).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from schedules import default, int8_dsp, pattern_rules
from schedules import int8 as int8_kernels
from tvm_pipeline import tvm_adapter
from tvm_pipeline.board.boards import load_board
from tvm_pipeline.board.runner import QemuRunner
from tvm_pipeline.int8_ops import Fold, QAddTFLite, QConv2d, Requant, Source
from tvm_pipeline.tuning.measure import build_kernel, run_kernel
from tvm_pipeline.tvm_adapter import TensorType

BOARD = load_board("stm32f746")


def _conv(rng, cin: int, cout: int, k: int, stride: int = 1, padding=(1, 1, 1, 1), dilation: int = 1,
          dtype: str = "int8", tflite: bool = False, residual: bool = False) -> QConv2d:
    weight = rng.integers(-127, 128, (cout, cin, k, k)).astype(np.int8)
    reals = rng.uniform(2e-4, 2e-3, cout)
    lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
    zero_point = 3 if dtype == "uint8" else -5
    requant = (Requant.from_tflite_scale(reals, zero_point, lo, hi, dtype) if tflite
               else Requant.from_scale(reals, zero_point, lo, hi, dtype))
    add = QAddTFLite.from_scales(0.04, zero_point, 0.1, 4, 0.05, -128, -128, 127).swapped() if residual else None
    input_zero_point = 7 if dtype == "uint8" else -3
    return QConv2d(weight, rng.integers(-5000, 5000, cout).astype(np.int32), input_zero_point, (stride, stride),
                   padding, (dilation, dilation), 1, requant, add)


def _kernel(conv: QConv2d, x: np.ndarray, skip: np.ndarray | None):
    inputs = [x] if skip is None else [x, skip]
    reference = conv.reference(*inputs)
    sources = tuple(Source(f"x{i}") for i in range(len(inputs)))
    func, constants = int8_kernels.kernel(Fold("y", conv, sources), [TensorType(a.shape, str(a.dtype)) for a in inputs],
                                          TensorType(reference.shape, str(reference.dtype)))
    return func, [*inputs, *constants], reference


CASES = {  # name: (conv arguments, input shape (C, H, W))
    "3x3 pad 1, pixel pairs": (dict(cin=8, cout=8, k=3), (8, 8, 8)),
    "3x3 asymmetric pad, odd width: one pixel x 4 channels": (dict(cin=8, cout=8, k=3, padding=(1, 0, 0, 1)),
                                                               (8, 7, 8)),
    "1x1, odd pixel count": (dict(cin=12, cout=16, k=1, padding=(0, 0, 0, 0)), (12, 5, 5)),
    "3x3 stride 2, dilation 2, TFLite arithmetic": (dict(cin=4, cout=8, k=3, stride=2, dilation=2, tflite=True),
                                                    (4, 11, 12)),
    "uint8 activations": (dict(cin=4, cout=6, k=3, dtype="uint8"), (4, 6, 6)),
    "residual add in the epilogue": (dict(cin=8, cout=8, k=3, tflite=True, residual=True), (8, 6, 6)),
    "3 input channels (K = 27, padded to 28), stride 2": (dict(cin=3, cout=8, k=3, stride=2), (3, 9, 10)),
}


#: The cases whose K is a multiple of 4, where col may be widened to int16.
WIDENED = [name for name, (args, (c, _, _)) in CASES.items() if c * args["k"] ** 2 % 4 == 0]


@pytest.mark.parametrize("name, widen, pack, board", [
    *((n, None, False, "stm32f746") for n in CASES),
    *((n, w, False, "stm32f746") for n in WIDENED for w in int8_dsp.WIDEN),
    *((n, w, True, "stm32f746") for n in WIDENED for w in (None, *int8_dsp.WIDEN)),
    *((n, None, True, "stm32f746") for n in CASES if n not in WIDENED),  # K padded: the zero-tailed copy packed
    (WIDENED[0], "copy", False, "cortex-m0"), (WIDENED[0], "fill", True, "cortex-m0")])
def test_dsp_schedule_equals_the_numpy_reference_on_the_board(name, widen, pack, board, tmp_path):
    args, (c, h, w) = CASES[name]
    rng = np.random.default_rng(len(name))
    conv = _conv(rng, **args)
    dtype = args.get("dtype", "int8")
    x = rng.integers(*((0, 256) if dtype == "uint8" else (-128, 128)), (1, c, h, w)).astype(dtype)
    skip = None
    if conv.residual is not None:  # the skip input has the conv's output shape
        skip = rng.integers(-128, 128, replace(conv, residual=None).reference(x).shape).astype(np.int8)
    func, inputs, reference = _kernel(conv, x, skip)
    assert int8_dsp.applies(func)
    sch = tvm_adapter.new_schedule(func)
    int8_dsp.apply(sch, widen=widen, pack_weights=pack)
    constants = tuple(range(1 + (skip is not None), len(inputs)))  # weight, bias, multiplier, shift
    build = build_kernel(tvm_adapter.scheduled_func(sch), "conv", "c", load_board(board), constants)
    helper = f"tvmp_dot4_{'i16' if widen else {'int8': 's8', 'uint8': 'u8'}[dtype]}{'_w16' if pack else ''}("
    assert helper in build.kernel.source and "smlad" in build.kernel.source
    prepacked = build.kernel.prepack.params if build.kernel.prepack else ()
    assert (constants[0] in prepacked) == pack
    run = run_kernel(build, inputs, load_board(board), QemuRunner(timeout_s=60), tmp_path)  # packs the weight
    assert np.array_equal(run.output.reshape(reference.shape), reference)  # exact: integer sums in another order


def test_dsp_schedule_tir_before_and_after():
    rng = np.random.default_rng(0)
    conv = _conv(rng, cin=8, cout=8, k=3)
    func, _, _ = _kernel(conv, np.zeros((1, 8, 8, 8), np.int8), None)
    before = func.script()
    assert 'sblock("pad")' in before and "weight: T.Buffer((T.int64(8), T.int64(8), T.int64(3), T.int64(3))" in before
    assert "call_extern" not in before

    sch = tvm_adapter.new_schedule(func)
    int8_dsp.apply(sch)
    after = tvm_adapter.scheduled_func(sch).script()
    # weight read as (O, K) rows, padding folded into the im2col buffer, 4-long dot products tensorized
    assert "weight: T.Buffer((T.int64(8), T.int64(72))" in after and 'sblock("pad")' not in after
    assert 'sblock("pad_reindex_reindex")' in after and after.count('T.call_extern("int32", "tvmp_dot4_s8"') == 1
    lowered = tvm_adapter.lower_to_c(tvm_adapter.scheduled_func(sch), "conv")
    assert lowered.workspace_bytes == 2 * 72  # col: a pixel pair x K bytes, whatever the output channels

    plain = tvm_adapter.new_schedule(func)
    default.apply(plain)
    assert tvm_adapter.lower_to_c(tvm_adapter.scheduled_func(plain), "conv").workspace_bytes == 0


def test_dsp_schedule_takes_dense_convs_only():
    rng = np.random.default_rng(1)
    depthwise = replace(_conv(rng, cin=1, cout=8, k=3), groups=8)
    func, _, _ = _kernel(depthwise, np.zeros((1, 8, 8, 8), np.int8), None)
    assert not int8_dsp.applies(func)


def test_widened_col_holds_int16_pairs_in_smlad_order():
    func, _, _ = _kernel(_conv(np.random.default_rng(0), cin=8, cout=8, k=3), np.zeros((1, 8, 8, 8), np.int8), None)
    assert {"block": list(int8_dsp.BLOCK), "widen": "copy", "pack_weights": False} in int8_dsp.knob_space(func)
    sch = tvm_adapter.new_schedule(func)
    int8_dsp.apply(sch, widen="copy")
    after = tvm_adapter.scheduled_func(sch).script()
    assert after.count('T.call_extern("int32", "tvmp_dot4_i16"') == 1 and '"int16"' in after
    assert 'sblock("pad_reindex_global")' in after  # a 3x3 window: the int8 col is widened in a second pass
    lowered = tvm_adapter.lower_to_c(tvm_adapter.scheduled_func(sch), "conv")
    assert lowered.workspace_bytes == 2 * 72 + 2 * 2 * 72  # a pixel pair x K: col (int8), then widened (int16)
    padded, _, _ = _kernel(_conv(np.random.default_rng(1), cin=3, cout=8, k=3), np.zeros((1, 3, 8, 8), np.int8), None)
    padded_space = int8_dsp.knob_space(padded)  # K = 27: zero-padded, col stays int8; weights packed or not
    assert not any(k["widen"] for k in padded_space) and {k["pack_weights"] for k in padded_space} == {False, True}
    pointwise, _, _ = _kernel(_conv(np.random.default_rng(2), cin=8, cout=8, k=1, padding=(0, 0, 0, 0)),
                              np.zeros((1, 8, 4, 4), np.int8), None)
    assert {k["widen"] for k in int8_dsp.knob_space(pointwise)} == {None, "fill"}  # a 1x1 fill is a plain copy


def test_a_window_not_a_multiple_of_4_is_padded_with_zeros():
    """K = 3 * 3 * 3 = 27: col rows and a copy of the weight rows get a zero 28th byte (pad_einsum), the tail is
    written apart (decompose_padding) so col's fill keeps its (rc, ry, rx) loops."""
    func, _, _ = _kernel(_conv(np.random.default_rng(1), cin=3, cout=8, k=3), np.zeros((1, 3, 8, 8), np.int8), None)
    assert int8_dsp.applies(func)
    sch = tvm_adapter.new_schedule(func)
    int8_dsp.apply(sch)
    after = tvm_adapter.scheduled_func(sch).script()
    assert "weight_pad = T.sblock_alloc_buffer((T.int64(8), T.int64(28))" in after
    assert "_pad_const" in after and "T.grid(T.int64(3), T.int64(3), T.int64(3))" in after
    weight_copy = 8 * 28
    unpacked = tvm_adapter.lower_to_c(tvm_adapter.scheduled_func(sch), "conv", (1, 2, 3, 4))
    packed = tvm_adapter.new_schedule(func)
    int8_dsp.apply(packed, pack_weights=True)  # the zero-tailed copy is the prepack stage: made at compile time
    lowered = tvm_adapter.lower_to_c(tvm_adapter.scheduled_func(packed), "conv", (1, 2, 3, 4))
    assert unpacked.workspace_bytes - lowered.workspace_bytes == weight_copy
    assert lowered.params[1].nbytes == 2 * weight_copy and lowered.prepack.params == (1,)


def test_only_boards_with_the_dsp_extension_get_the_rule():
    assert load_board("stm32f746").dsp and load_board("nrf52840").dsp and not load_board("cortex-m0").dsp
    assert int8_dsp.rule in pattern_rules(dsp=True) and int8_dsp.rule not in pattern_rules()


def test_packed_weights_are_int16_pairs_rewritten_at_compile_time():
    rng = np.random.default_rng(3)
    conv = _conv(rng, cin=8, cout=4, k=1, padding=(0, 0, 0, 0))
    func, inputs, _ = _kernel(conv, np.zeros((1, 8, 3, 3), np.int8), None)
    packed_default = {"block": list(int8_dsp.BLOCK_SINGLE_PIXEL), "widen": None, "pack_weights": True}
    assert packed_default in int8_dsp.knob_space(func)
    sch = tvm_adapter.new_schedule(func)
    int8_dsp.apply(sch, pack_weights=True)
    after = tvm_adapter.scheduled_func(sch).script()
    # the copy to int16 pairs is a marked stage at the top level; the dot products read the copy
    assert after.count("meta_schedule.layout_rewrite_preproc") == 1
    assert after.count('T.call_extern("int32", "tvmp_dot4_s8_w16"') == 1
    lowered = tvm_adapter.lower_to_c(tvm_adapter.scheduled_func(sch), "conv", (1, 2, 3, 4))
    weight = lowered.params[1]
    assert (weight.dtype, weight.nbytes, lowered.workspace_bytes) == ("int16", 2 * conv.weight.size, 0)
    # (o, k) -> (o, k // 4, k % 2, k % 4 // 2): each 4 of k stored (w0, w2, w1, w3) as int16, SMLAD's pairs
    expected = conv.weight.reshape(4, 2, 2, 2).transpose(0, 1, 3, 2).astype(np.int16)
    assert lowered.prepack.params == (1,) and np.array_equal(lowered.prepack.apply(inputs)[1], expected)
    # lowering the kernel again (lower_tuned does, with and without records) reuses the stage's host build
    again = tvm_adapter.lower_to_c(tvm_adapter.scheduled_func(sch), "conv", (1, 2, 3, 4))
    assert again.prepack._module is lowered.prepack._module  # noqa: SLF001
    with pytest.raises(ValueError, match="prepacked parameter must be passed a constant"):
        tvm_adapter.lower_to_c(tvm_adapter.scheduled_func(sch), "conv")  # a weight the model computes: no rewrite
