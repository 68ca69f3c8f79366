"""Tuning measured on the emulated board: a short search on one small conv kernel, then the record at compile time."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvm_pipeline.board.boards import load_board
from tvm_pipeline.board.runner import QemuRunner, RunError
from tvm_pipeline.compiler import CompileOptions, compile_model
from tvm_pipeline.evaluate import evaluate
from tvm_pipeline.tuning.measure import run_kernel
from tvm_pipeline.tuning.model import model_kernels
from tvm_pipeline.tuning.records import load_record, save_record
from tvm_pipeline.tuning.rule import RecordRule
from tvm_pipeline.tuning.tuner import KernelTuner, apply_tuned
from tvm_pipeline import tuning_adapter, tvm_adapter

TRIALS = 8


def _conv_relu_onnx(path, cin=4, cout=8, hw=12):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "conv_relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, hw, hw])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def _numpy_conv_relu(x, w, b):
    """NCHW 3x3 conv, stride 1, pad 1, + bias, ReLU, in float64."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    height, width = x.shape[2:]
    out = np.zeros((1, w.shape[0], height, width))
    for ky in range(3):
        for kx in range(3):
            out += np.einsum("nchw,fc->nfhw", padded[:, :, ky : ky + height, kx : kx + width], w[:, :, ky, kx])
    return np.maximum(out + b.reshape(1, -1, 1, 1), 0)


class _FaultOnce(QemuRunner):
    """Runs on QEMU, but the second run (the first candidate) reports a fault, as a broken schedule would."""

    def __init__(self) -> None:
        super().__init__(timeout_s=20.0)
        self.calls = 0

    def run(self, firmware):
        self.calls += 1
        if self.calls == 2:
            raise RunError("firmware on board stm32f746 faulted: FAULT: HardFault (injected)")
        return super().run(firmware)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuning")
    model = root / "conv.onnx"
    _conv_relu_onnx(model)
    board = load_board("stm32f746")
    ((tir_name, func, budget),) = model_kernels(model, board)
    tuner = KernelTuner(func, tir_name, board, runner=_FaultOnce(), workers=2, workspace_budget=1024,
                        stack_budget=None)
    tuner.stack_budget += 128  # a few more bytes of stack than the untuned kernel: an unrolled loop's spills
    record = tuner.tune(TRIALS)
    records = root / "records"
    save_record(records, record)
    return {"root": root, "model": model, "board": board, "func": func, "tuner": tuner, "record": record,
            "records": records, "budget": budget}


def test_search_measures_every_candidate_and_records_failures(tuned):
    record, tuner = tuned["record"], tuned["tuner"]
    assert record.trials == TRIALS and len(tuner.trials) == TRIALS
    assert any("injected" in f["reason"] for f in record.failed)  # the faulting candidate is failed, search went on
    assert record.tuned_instructions <= record.untuned_instructions
    assert tuned["budget"] == 0  # one conv: input and output fill the whole arena


def test_tuned_kernel_matches_numpy_and_is_not_slower(tuned):
    record, tuner, func = tuned["record"], tuned["tuner"], tuned["func"]
    sch = tvm_adapter.new_schedule(func)
    if record.trace is not None:
        apply_tuned(sch, record.trace)
    kernel = tvm_adapter.lower_to_c(tvm_adapter.scheduled_func(sch), tuner.symbol)
    assert kernel.workspace_bytes <= tuner.workspace_budget
    run = run_kernel(kernel, tuner.inputs, tuned["board"], QemuRunner(), tuned["root"] / "check")
    x, w, b = tuner.inputs
    ref = _numpy_conv_relu(x.reshape(1, 4, 12, 12), w.reshape(8, 4, 3, 3), b)
    assert np.max(np.abs(run.output - ref.reshape(-1))) <= 1e-5 * np.max(np.abs(ref))
    assert run.instructions == record.tuned_instructions <= tuner.baseline.instructions


def test_record_is_found_by_the_compile_time_rule(tuned):
    record = tuned["record"]
    rule = RecordRule(tuned["records"], "stm32f746")
    sch = tvm_adapter.new_schedule(tuned["func"])
    assert tuning_adapter.kernel_key(tvm_adapter.scheduled_func(sch)) == record.key
    assert rule(sch, record.tir_name) == (record.trace is not None)
    assert load_record(tuned["records"], "stm32f746", "c", record.key) == record


def test_compile_with_records_keeps_outputs_and_arena(tuned):
    root = tuned["root"]
    plain = compile_model(tuned["model"], root / "plain", CompileOptions(tuning=root / "no-records"))
    with_records = compile_model(tuned["model"], root / "tuned", CompileOptions(tuning=tuned["records"]))
    assert with_records.arena.layout.arena_bytes <= plain.arena.layout.arena_bytes
    x = np.random.default_rng(1).standard_normal((1, 4, 12, 12)).astype(np.float32)
    for folder in (root / "plain", root / "tuned"):
        assert evaluate(folder, None, x).max_rel_error <= 1e-5
    notes = json.loads((root / "tuned" / "model.json").read_text())["notes"]
    if tuned["record"].trace is not None:
        assert any("tuned schedules" in n for n in notes)
