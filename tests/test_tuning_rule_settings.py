"""Tuning the settings of a pattern rule: an int8 model's DSP convs (schedules/int8_dsp.py) get their register block
measured on the board by `tvmp tune` instead of a MetaSchedule search; the records are applied before the pattern
rules at compile time, never change the int8 outputs (bit-identical) nor raise the measured peak SRAM."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from onnx import helper

from schedules import int8_dsp, pattern_rules
from tvm_pipeline.board.boards import load_board
from tvm_pipeline.compiler import CompileOptions, compile_model, fused_graph
from tvm_pipeline.frontend import load_model
from tvm_pipeline.evaluate import evaluate
from tvm_pipeline.quantize import quantize_model
from tvm_pipeline.tuning.model import _Job, _measure, _shallower, format_records, model_kernels, tune_model
from tvm_pipeline.tuning.apply import lower_tuned
from tvm_pipeline.tuning.records import save_record
from onnx_graphs import save_model


TRIALS = 3
#: The convs as they are: patching this small model would only multiply its kernels.
NO_PATCHES = frozenset({"patch-stage"})
BOARD = load_board("stm32f746")


def _two_conv_onnx(path) -> None:
    """3x3 conv (3 -> 8) + ReLU + 1x1 conv (8 -> 8) on 12x12: rows of 12 pixels, so blocks of 1-4 pixels fit."""
    rng = np.random.default_rng(0)
    weights = {"w1": rng.standard_normal((8, 3, 3, 3)) * 0.3, "b1": rng.standard_normal(8) * 0.1,
               "w2": rng.standard_normal((8, 8, 1, 1)) * 0.3, "b2": rng.standard_normal(8) * 0.1}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"])]
    save_model(path, nodes, [1, 3, 12, 12], [1, 8, 12, 12], weights, "two_conv")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("rule-settings")
    _two_conv_onnx(root / "float.onnx")
    np.save(root / "calibration.npy", np.random.default_rng(1).standard_normal((4, 3, 12, 12)).astype(np.float32))
    model = quantize_model(root / "float.onnx", root / "calibration.npy", root / "int8.onnx", samples=4).path
    tuning = tune_model(model, BOARD.name, TRIALS, root / "records", workers=1, progress=False,
                        disabled_passes=NO_PATCHES)
    return {"root": root, "model": model, "tuning": tuning}


def test_dsp_convs_are_tuned_by_their_register_block(tuned):
    kernels = model_kernels(tuned["model"], BOARD, disabled_passes=NO_PATCHES)
    convs = [k for k in kernels if k.rule == "int8_dsp"]
    assert len(convs) == 2  # both convs: the schedule rule takes them, its settings are what is tuned
    records = {r.tir_name: r for r in tuned["tuning"].records}
    for kernel in convs:
        record = records[kernel.tir_name]
        assert record.rule == "int8_dsp" and record.trace is None and record.trials == TRIALS
        assert record.tuned_instructions <= record.untuned_instructions
        space = int8_dsp.knob_space(kernel.func)[:TRIALS]
        assert space[0] == {"block": list(int8_dsp.BLOCK), "widen": None, "pack_weights": False}  # measured too
        assert record.knobs is None or (record.knobs in space[1:]
                                        and record.tuned_instructions < record.untuned_instructions)
    assert "int8_dsp: " in format_records(tuned["tuning"].records)
    assert tuned["tuning"].allowance.verified


def test_records_keep_int8_outputs_bit_identical_and_peak_sram(tuned, tmp_path):
    """Compile with the records (and with a record forced to another block) and without: the same int8 output on
    the board, no more peak SRAM."""
    records = tuned["root"] / "records"
    forced = tmp_path / "forced"
    for record in tuned["tuning"].records:  # every conv with the (4, 1) block and prepacked weights
        if record.rule == "int8_dsp":
            save_record(forced, dataclasses.replace(record, knobs={"block": [4, 1], "pack_weights": True}))
    x = np.random.default_rng(3).integers(-128, 128, (1, 3, 12, 12)).astype(np.int8)  # the int8 model's input
    runs = {}
    for name, folder in (("untuned", tmp_path / "none"), ("tuned", records), ("forced", forced)):
        compile_model(tuned["model"], tmp_path / name, CompileOptions(tuning=folder, disabled_passes=NO_PATCHES))
        runs[name] = evaluate(tmp_path / name, BOARD, x)
    assert runs["tuned"].output == runs["untuned"].output == runs["forced"].output
    assert runs["tuned"].peak_sram_bytes <= runs["untuned"].peak_sram_bytes
    assert runs["tuned"].instructions <= runs["untuned"].instructions
    applied = [k for k in json.loads((tmp_path / "forced" / "model.json").read_text())["tuning"]["kernels"]
               if k["applied"]]
    assert len(applied) == 2  # the settings records were applied before the int8_dsp rule took the kernels
    # the 1x1 conv's 8 x 8 weights are stored as the kernel reads them: int16 pairs, rewritten at compile time
    assert "const int16_t weight_" in (tmp_path / "forced" / "weights.c").read_text()


def test_prepacked_weights_never_take_the_model_past_the_flash(tuned, tmp_path):
    forced = tmp_path / "forced"
    for record in tuned["tuning"].records:
        if record.rule == "int8_dsp":
            save_record(forced, dataclasses.replace(record, knobs={"block": [4, 1], "pack_weights": True}))
    fused = fused_graph(load_model(tuned["model"], {}), CompileOptions(disabled_passes=NO_PATCHES))[0]
    rules = pattern_rules(dsp=True)
    packed = lower_tuned(fused, BOARD, rules, forced, "c", "auto").program.weight_bytes
    untuned = lower_tuned(fused, BOARD, rules, tmp_path / "none", "c", "auto").program.weight_bytes
    # the 1x1's 64 int8 weights, now int16; the 3x3's 8 x 27, now int16 rows of 28 (the zero tail packed too)
    assert packed == untuned + 8 * 8 + (2 * 8 * 28 - 8 * 27)
    small = dataclasses.replace(BOARD, flash=dataclasses.replace(BOARD.flash, size=untuned))
    lowered = lower_tuned(fused, small, rules, forced, "c", "auto")
    assert lowered.program.weight_bytes == untuned and any("flash" in n for n in lowered.notes)


def test_the_deepest_kernel_is_tuned_again_for_a_shallower_stack(tuned, tmp_path):
    """Memory first (`model._shallower`): the kernel whose record is the model's deepest is searched again with the
    next kernel's depth as its stack budget, the untuned schedule's own depth no longer allowed; its new record is
    shallower or the old one stays; where nothing is that shallow, it is searched with its untuned depth."""
    kernels = {k.tir_name: k for k in model_kernels(tuned["model"], BOARD, disabled_passes=NO_PATCHES)}
    records = {r.key: r for r in tuned["tuning"].records if r.tir_name in kernels}
    deep = max(records.values(), key=lambda r: r.stack_bytes)
    other = min(records.values(), key=lambda r: r.stack_bytes)
    records[deep.key] = dataclasses.replace(deep, stack_bytes=other.stack_bytes + 64)  # the deepest, by far
    jobs = {name: _Job(k.func, name, BOARD.name, "c", TRIALS, 0, k.workspace_budget, 8, tmp_path, k.read_only, k.rule)
            for name, k in kernels.items()}
    baselines = {name: _measure(job, None) for name, job in jobs.items()}
    replaced = _shallower(records, jobs, baselines, 1, None)
    if replaced:  # a setting no deeper than the other kernel, and faster than untuned
        new = records[deep.key]
        assert replaced[0].key == deep.key and new.stack_bytes <= other.stack_bytes
        assert new.tuned_instructions < new.untuned_instructions
    else:  # none: the deepest record stays as it was
        assert records[deep.key].stack_bytes == other.stack_bytes + 64
    assert _shallower({deep.key: deep}, jobs, baselines, 1, None) == []  # one kernel: nothing to be shallower than
    # nothing as shallow as the next kernel (0 B): the kernel ends as deep as its untuned schedule, so it is tuned
    # again with that depth as its budget (the fastest setting no deeper, else the untuned schedule)
    untuned_depth = deep.untuned_stack_bytes
    records = {deep.key: dataclasses.replace(deep, stack_bytes=untuned_depth + 64),
               other.key: dataclasses.replace(other, stack_bytes=0)}
    assert _shallower(records, jobs, baselines, 1, None)
    new = records[deep.key]
    assert new.stack_budget == untuned_depth and new.stack_bytes <= untuned_depth
    assert new.tuned_instructions <= new.untuned_instructions
