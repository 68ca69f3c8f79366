"""The DSP schedule of int8 3-wide depthwise convs (schedules/depthwise_dsp.py): a window row under two pixels or one
pixel a call, checked exactly against the NumPy integer reference on the emulated Cortex-M7 (SMLAD) and Cortex-M0
(the helpers' plain C), its TIR after scheduling, the in-place property it keeps, and its settings as `tvmp tune`
measures them."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from schedules import depthwise_dsp, depthwise_inplace, pattern_rules, tunable_rules
from schedules import int8 as int8_kernels
from tvm_pipeline import tvm_adapter
from tvm_pipeline.board.boards import load_board
from tvm_pipeline.board.runner import QemuRunner
from tvm_pipeline.compiler import CompileOptions, fused_graph, lower_memory_first
from tvm_pipeline.frontend import load_model
from tvm_pipeline.int8_ops import Fold, QConv2d, Requant, Source
from tvm_pipeline.quantize import quantize_model
from tvm_pipeline.tuning.apply import lower_tuned
from tvm_pipeline.arena import plan_arena
from tvm_pipeline.lowering.lower import lower_program
from tvm_pipeline.tuning.measure import build_kernel, run_kernel
from tvm_pipeline.tuning.model import fixed_rules, model_kernels
from tvm_pipeline.tuning.records import SHIPPED_RECORDS_DIR
from tvm_pipeline.tvm_adapter import TensorType
from onnx_graphs import save_model


def _depthwise(rng, channels: int, strides=(1, 1), padding=(1, 1, 1, 1), dtype: str = "int8",
               tflite: bool = False) -> QConv2d:
    weight = rng.integers(-127, 128, (channels, 1, 3, 3)).astype(np.int8)
    reals = rng.uniform(2e-4, 2e-3, channels)
    lo, hi, zero_point = (0, 255, 3) if dtype == "uint8" else (-128, 127, -5)
    requant = (Requant.from_tflite_scale(reals, zero_point, lo, hi, dtype) if tflite
               else Requant.from_scale(reals, zero_point, lo, hi, dtype))
    return QConv2d(weight, rng.integers(-5000, 5000, channels).astype(np.int32), 7 if dtype == "uint8" else -3,
                   strides, padding, (1, 1), channels, requant, None)


def _kernel(conv: QConv2d, x: np.ndarray):
    reference = conv.reference(x)
    func, constants = int8_kernels.kernel(Fold("y", conv, (Source("x0"),)), [TensorType(x.shape, str(x.dtype))],
                                          TensorType(reference.shape, str(reference.dtype)))
    return func, [x, *constants], reference


CASES = {  # name: (_depthwise arguments, input (C, H, W), pixels a helper call, board)
    "pad 1, onnxruntime arithmetic": (dict(channels=6), (6, 8, 10), 2, "stm32f746"),
    "TFLite arithmetic, rows strided by 2": (dict(channels=4, strides=(2, 1), tflite=True), (4, 9, 6), 2, "stm32f746"),
    "asymmetric padding (TF SAME)": (dict(channels=3, padding=(0, 0, 1, 1)), (3, 7, 7), 2, "stm32f746"),
    "uint8 activations": (dict(channels=5, dtype="uint8"), (5, 6, 4), 2, "stm32f746"),
    "Cortex-M0: the helper's plain C": (dict(channels=4, tflite=True), (4, 6, 6), 2, "cortex-m0"),
    "single pixels: odd width": (dict(channels=4, tflite=True), (4, 6, 5), 1, "stm32f746"),
    "single pixels: columns strided by 2 (TF SAME)": (dict(channels=3, strides=(2, 2), padding=(0, 0, 1, 1)),
                                                      (3, 8, 8), 1, "stm32f746"),
    "single pixels: uint8, pairs would fit": (dict(channels=2, dtype="uint8"), (2, 5, 6), 1, "stm32f746"),
    "single pixels, Cortex-M0": (dict(channels=3, strides=(2, 2)), (3, 7, 7), 1, "cortex-m0"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_depthwise_dsp_equals_the_numpy_reference_on_the_board(name, tmp_path):
    args, (c, h, w), pixels, board = CASES[name]
    rng = np.random.default_rng(len(name))
    conv = _depthwise(rng, **args)
    dtype = args.get("dtype", "int8")
    x = rng.integers(*((0, 256) if dtype == "uint8" else (-128, 128)), (1, c, h, w)).astype(dtype)
    func, inputs, reference = _kernel(conv, x)
    assert depthwise_dsp.applies(func)
    sch = tvm_adapter.new_schedule(func)
    depthwise_dsp.apply(sch, pixels=pixels)
    build = build_kernel(tvm_adapter.scheduled_func(sch), "dw", "c", load_board(board))
    assert f"tvmp_row3x{pixels}_" in build.kernel.source
    run = run_kernel(build, inputs, load_board(board), QemuRunner(timeout_s=60), tmp_path)
    assert np.array_equal(run.output.reshape(reference.shape), reference)  # exact: integer sums in another order


def test_depthwise_dsp_tir_workspace_and_in_place():
    func, _, _ = _kernel(_depthwise(np.random.default_rng(0), 8), np.zeros((1, 8, 12, 12), np.int8))
    sch = tvm_adapter.new_schedule(func)
    depthwise_dsp.apply(sch)
    after = tvm_adapter.scheduled_func(sch).script()
    # the padded plane is filled under the channel loop, each window row of a pixel pair is one helper call
    assert after.count('T.call_extern("void", "tvmp_row3x2_s8"') == 1 and 'sblock("pad")' in after
    lowered = tvm_adapter.lower_to_c(tvm_adapter.scheduled_func(sch), "dw")
    assert lowered.workspace_bytes == (12 + 2) * (12 + 2) + 12  # one padded plane (196 B), 16-byte aligned
    assert lowered.inplace_params == (0,)  # the output may still be written over the input, plane by plane
    single = tvm_adapter.new_schedule(func)
    depthwise_dsp.apply(single, pixels=1)
    lowered = tvm_adapter.lower_to_c(tvm_adapter.scheduled_func(single), "dw")
    # rows one byte longer: the single-pixel helper's word load reads the byte after the last window
    assert lowered.workspace_bytes == 14 * (14 + 1) + 14 and "pad[208] = " in lowered.source  # 210 B, aligned
    assert lowered.inplace_params == (0,)


def test_depthwise_dsp_settings_and_defaults():
    """Pairs where they fit, else depthwise_inplace's scalar schedule, unless a record says otherwise; the rule and
    `tvmp tune` see every 3-wide depthwise conv."""
    rng = np.random.default_rng(1)
    odd, _, _ = _kernel(_depthwise(rng, 4), np.zeros((1, 4, 6, 7), np.int8))
    strided, _, _ = _kernel(_depthwise(rng, 4, strides=(2, 2)), np.zeros((1, 4, 8, 8), np.int8))
    even, _, _ = _kernel(_depthwise(rng, 4), np.zeros((1, 4, 6, 6), np.int8))
    assert depthwise_dsp.knob_space(even) == [{"pixels": 2}, {"pixels": 1}, {"pixels": 0}]
    for func in (odd, strided):
        assert depthwise_dsp.applies(func) and depthwise_dsp.knob_space(func) == [{"pixels": 0}, {"pixels": 1}]
        by_rule, scalar = tvm_adapter.new_schedule(func), tvm_adapter.new_schedule(func)
        assert depthwise_dsp.rule(by_rule, "dw") and depthwise_inplace.rule(scalar, "dw")
        assert tvm_adapter.lower_to_c(tvm_adapter.scheduled_func(by_rule), "dw").source == \
            tvm_adapter.lower_to_c(tvm_adapter.scheduled_func(scalar), "dw").source
        with pytest.raises(ValueError, match="pixels must be one of"):
            depthwise_dsp.apply(tvm_adapter.new_schedule(func), pixels=2)
    assert tunable_rules()["depthwise_dsp"] is depthwise_dsp
    assert depthwise_dsp.rule in pattern_rules(dsp=True) and depthwise_dsp.rule not in pattern_rules(dsp=False)
    rules = pattern_rules(dsp=True)
    assert rules.index(depthwise_dsp.rule) < rules.index(depthwise_inplace.rule)
    assert depthwise_dsp.Rule()(tvm_adapter.new_schedule(even), "dw")
    assert not depthwise_dsp.Rule(frozenset({"dw"}))(tvm_adapter.new_schedule(even), "dw")  # memory first


def _conv_dw_conv_onnx(path) -> None:
    """1 -> 8 channels (3x3), a 3x3 depthwise, 8 -> 1 (1x1), on 32x32: with the DSP schedule, the depthwise (its
    8,192 B tensor, in place, and its 34 x 34 B padded plane) is where the plan peaks."""
    rng = np.random.default_rng(0)
    weights = {"w1": rng.standard_normal((8, 1, 3, 3)), "w2": rng.standard_normal((8, 1, 3, 3)),
               "w3": rng.standard_normal((1, 8, 1, 1)) * 0.3}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=8),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["y"])]
    save_model(path, nodes, [1, 1, 32, 32], [1, 1, 32, 32], weights, "conv_dw_conv")


def test_a_depthwise_at_the_memory_peak_keeps_the_smaller_plane(tmp_path):
    """The DSP schedule's padded plane (34 x 34 B) is larger than depthwise_inplace's (32 x 32 B): where the
    depthwise is at the plan's peak, the compiler lowers it without the DSP schedule (compiler.lower_memory_first)."""
    _conv_dw_conv_onnx(tmp_path / "float.onnx")
    np.save(tmp_path / "calibration.npy", np.random.default_rng(1).standard_normal((4, 1, 32, 32)).astype(np.float32))
    model = quantize_model(tmp_path / "float.onnx", tmp_path / "calibration.npy", tmp_path / "int8.onnx",
                           samples=4).path
    options = CompileOptions(board="stm32f746", disabled_passes=frozenset({"patch-stage"}))
    fused = fused_graph(load_model(model, {}), options)[0]
    board = load_board("stm32f746")
    fast = lower_tuned(fused, board, pattern_rules(True, board.dsp), SHIPPED_RECORDS_DIR, "c", "auto")
    assert "tvmp_row3x2_s8(" in next(k.source for k in fast.program.kernels.values() if "row3x2" in k.source)
    chosen = lower_memory_first(fused, board, options)
    assert chosen.arena.layout.arena_bytes < fast.arena.layout.arena_bytes
    assert not any("tvmp_row3x2_s8(" in k.source for k in chosen.program.kernels.values())
    assert any("at the memory peak scheduled for less scratch" in n for n in chosen.notes)


def test_a_depthwise_written_in_place_has_its_storage_counted_once_in_its_tuning_budget(tmp_path):
    """`tvmp tune` may give the depthwise's padded plane (a setting of its schedule) the arena bytes free at its step:
    its input and output share one storage (in place), which the budget counts once."""
    _conv_dw_conv_onnx(tmp_path / "float.onnx")
    np.save(tmp_path / "calibration.npy", np.random.default_rng(1).standard_normal((4, 1, 32, 32)).astype(np.float32))
    model = quantize_model(tmp_path / "float.onnx", tmp_path / "calibration.npy", tmp_path / "int8.onnx",
                           samples=4).path
    board = load_board("stm32f746")
    kernels = model_kernels(model, board, disabled_passes=frozenset({"patch-stage"}))
    depthwise = next(k for k in kernels if k.rule == "depthwise_dsp")
    fused = fused_graph(load_model(model, {}), CompileOptions(disabled_passes=frozenset({"patch-stage"})))[0]
    arena = plan_arena(lower_program(fused, rules=fixed_rules(board)), board.buffer_alignment).layout.arena_bytes
    assert depthwise.workspace_budget == (arena - 8 * 32 * 32) // 16 * 16 > 0  # one 8,192 B storage live
