"""Tuning measured on the emulated board: a short search on one small conv kernel, then the record at compile time."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from onnx import helper

from tvm_pipeline import tuning_adapter, tvm_adapter
from tvm_pipeline.board.boards import load_board
from tvm_pipeline.board.runner import QemuRunner, RunError
from tvm_pipeline.compiler import CompileOptions, compile_model
from tvm_pipeline.evaluate import evaluate
from tvm_pipeline.tuning.measure import STACK_PAD_BYTES, build_kernel, run_kernel
from tvm_pipeline.tuning.model import model_kernels
from tvm_pipeline.tuning.records import load_record, save_record
from tvm_pipeline.tuning.rule import RecordRule
from tvm_pipeline.tuning.tuner import KernelTuner, apply_tuned, stacked_args_slots, untuned_func
from onnx_graphs import save_model


TRIALS = 8


def _conv_relu_onnx(path, cin=4, cout=8, hw=12):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    save_model(path, nodes, [1, cin, hw, hw], [1, cout, hw, hw], {"w": w, "b": b}, "conv_relu")


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


class _FaultThenHang(QemuRunner):
    """Runs on QEMU, but the first candidate reports a fault, as a broken schedule would, and the second really runs
    past a (tiny) time limit, as a hung one would."""

    def __init__(self) -> None:
        super().__init__(timeout_s=20.0)
        self.calls = 0

    def run(self, firmware):
        self.calls += 1
        if self.calls == 2:
            raise RunError("firmware on board stm32f746 faulted: FAULT: HardFault (injected)")
        if self.calls == 3:
            return QemuRunner(timeout_s=0.001).run(firmware)
        return super().run(firmware)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuning")
    model = root / "conv.onnx"
    _conv_relu_onnx(model)
    board = load_board("stm32f746")
    (kernel,) = model_kernels(model, board)
    tir_name, func, budget, read_only = kernel.tir_name, kernel.func, kernel.workspace_budget, kernel.read_only
    # Budgets given by the caller (tune_model derives them from the model): some scratch and some extra stack.
    tuner = KernelTuner(func, tir_name, board, runner=_FaultThenHang(), workers=1, workspace_budget=1024,
                        stack_budget=256, read_only=read_only)
    record = tuner.tune(TRIALS)
    records = root / "records"
    save_record(records, record)
    return {"root": root, "model": model, "board": board, "func": func, "tuner": tuner, "record": record,
            "records": records, "budget": budget}


def test_search_measures_every_candidate_and_records_failures(tuned):
    record, tuner = tuned["record"], tuned["tuner"]
    assert record.trials == TRIALS and len(tuner.trials) == TRIALS
    reasons = [f["reason"] for f in record.failed]
    assert any("injected" in r for r in reasons)  # the faulting candidate is failed, the search went on
    assert any("timed out" in r for r in reasons)  # so is the hung one
    assert record.tuned_instructions <= record.untuned_instructions
    assert tuned["budget"] == 0  # one conv: input and output fill the whole arena
    # measured as compiled: the weight and bias the model passes are const restrict in the kernel's C
    definition = next(line for line in tuner.untuned.source.splitlines() if line.endswith(") {"))
    assert tuner.read_only == (1, 2) and definition.count("const float* restrict ") == 2
    assert record.stack_bytes <= record.stack_budget == 256 and record.workspace_bytes <= 1024


def test_tuned_kernel_matches_numpy_and_is_not_slower(tuned):
    record, tuner, func = tuned["record"], tuned["tuner"], tuned["func"]
    if record.trace is None:  # no candidate beat the untuned schedule: the record keeps it
        kernel = untuned_func(func)
    else:
        sch = tvm_adapter.new_schedule(func)
        apply_tuned(sch, record.trace)
        kernel = tvm_adapter.scheduled_func(sch)
    build = build_kernel(kernel, tuner.symbol, "c", tuned["board"], tuner.read_only)
    assert build.workspace_bytes <= tuner.workspace_budget
    run = run_kernel(build, tuner.inputs, tuned["board"], QemuRunner(), tuned["root"] / "check")
    x, w, b = tuner.inputs
    ref = _numpy_conv_relu(x.reshape(1, 4, 12, 12), w.reshape(8, 4, 3, 3), b)
    assert np.max(np.abs(run.output - ref.reshape(-1))) <= 1e-5 * np.max(np.abs(ref))
    assert run.instructions == record.tuned_instructions <= tuner.baseline.run.instructions
    assert run.stack_bytes == record.stack_bytes


def test_kernel_stack_is_the_calls_own(tuned):
    """The measurement firmware's high-water mark is the call depth + the pad + the kernel's own stack."""
    run = tuned["tuner"].baseline.run
    assert 0 < run.stack_bytes < 256
    assert run.firmware_stack_peak_bytes == run.call_depth_bytes + STACK_PAD_BYTES + run.stack_bytes


def test_record_is_found_by_the_compile_time_rule(tuned):
    record = tuned["record"]
    rule = RecordRule(tuned["records"], "stm32f746", stack_allowance=10_000)
    sch = tvm_adapter.new_schedule(tuned["func"])
    assert tuning_adapter.kernel_key(tvm_adapter.scheduled_func(sch)) == record.key
    assert rule(sch, record.tir_name) == (record.trace is not None)
    assert load_record(tuned["records"], "stm32f746", "c", record.key) == record


def test_compile_refuses_records_deeper_than_the_model_pays_for(tuned, tmp_path):
    """Without a verified allowance the cap is the deepest untuned kernel: a deeper record is not applied."""
    record = tuned["record"]
    if record.trace is None:
        pytest.skip("the short search found nothing faster")
    deep = replace(record, stack_bytes=record.untuned_stack_bytes + 8)
    save_record(tmp_path / "records", deep)
    compile_model(tuned["model"], tmp_path / "out", CompileOptions(tuning=tmp_path / "records"))
    meta = json.loads((tmp_path / "out" / "model.json").read_text())
    (kernel,) = meta["tuning"]["kernels"]
    assert not kernel["applied"] and any("not used" in n for n in meta["notes"])


def test_stacked_argument_slots():
    assert [stacked_args_slots(n) for n in (3, 4, 5, 6, 7)] == [4, 4, 6, 6, 8]


def test_llvm_codegen_runs_on_the_board_within_tolerance(tuned, tmp_path):
    out = tmp_path / "llvm"
    compile_model(tuned["model"], out, CompileOptions(codegen="llvm", tuning=tmp_path / "no-records"))
    assert (out / "kernels.o").is_file() and not (out / "kernels.c").exists()
    x = np.random.default_rng(1).standard_normal((1, 4, 12, 12)).astype(np.float32)
    result = evaluate(out, tuned["board"], x)
    assert result.max_rel_error <= 1e-5  # fused multiply-adds: close to the reference, not bit-identical to C
    with pytest.raises(Exception, match="LLVM"):
        evaluate(out, None, x)  # the host cannot link a Cortex-M object
