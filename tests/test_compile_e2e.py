"""The spine end to end: zoo model -> ONNX -> TVM -> C -> emulated STM32F746, against onnxruntime.

Tolerance: max |board - onnxruntime| / max |onnxruntime| <= 1e-5 on a seeded random normal input.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tvm_pipeline.board.boards import load_board
from tvm_pipeline.evaluate import evaluate, random_input

TOLERANCE = 1e-5
MODELS = ["conv_stack", "inverted_residual", "pool_linear", "mbv2_tiny"]


@pytest.mark.parametrize("name", MODELS)
def test_board_output_matches_onnxruntime(compiled, name):
    out = compiled(name)
    result = evaluate(out, load_board("stm32f746"), random_input(out))
    assert result.max_rel_error <= TOLERANCE
    assert result.argmax_match


def test_board_figures_are_measured(compiled):
    """Arena from the ELF symbol equals the plan; peak = static + stack; every figure positive."""
    out = compiled("mbv2_tiny")
    memory = json.loads((out / "memory.json").read_text())
    result = evaluate(out, load_board("stm32f746"), random_input(out, seed=3))
    assert result.arena_bytes == memory["arena_bytes"]
    assert result.static_ram_bytes >= result.arena_bytes
    assert 0 < result.stack_peak_bytes < 8192
    assert result.peak_sram_bytes == result.static_ram_bytes + result.stack_peak_bytes
    assert result.flash_bytes > json.loads((out / "model.json").read_text())["weight_bytes"]
    assert result.instructions > 100_000


def test_host_build_is_bit_identical_to_board(compiled):
    """Same C, -ffp-contract=off on both: the x86 build and the Cortex-M7 build print the same bits."""
    out = compiled("mbv2_tiny")
    x = random_input(out, seed=1)
    board = evaluate(out, load_board("stm32f746"), x)
    host = evaluate(out, None, x)
    assert np.array_equal(np.float32(board.output), np.float32(host.output))


def test_every_board_runs_the_model(compiled):
    out = compiled("conv_stack")
    x = random_input(out)
    for board in ("stm32h743", "nrf52840", "generic-m7"):
        assert evaluate(out, load_board(board), x).max_rel_error <= TOLERANCE


def test_compiling_twice_gives_identical_files(zoo_onnx, tmp_path):
    from tvm_pipeline.compiler import compile_model

    a, b = tmp_path / "a", tmp_path / "b"
    compile_model(zoo_onnx("inverted_residual"), a)
    compile_model(zoo_onnx("inverted_residual"), b)
    for name in ("model.c", "model.h", "kernels.c", "kernels.h", "weights.c", "weights.h", "memory.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_no_kernel_keeps_a_full_feature_map_on_the_stack(compiled):
    """Big TVM-internal buffers live in the planned arena: the measured stack stays tiny for a 32x32 model."""
    out = compiled("mbv2_tiny")
    result = evaluate(out, load_board("stm32f746"), random_input(out))
    smallest_feature_map = 8 * 16 * 16 * 4
    assert result.stack_peak_bytes < smallest_feature_map


@pytest.mark.parametrize("planner", ["greedy-by-size", "greedy-by-conflicts", "hill-climb", "milp"])
def test_every_planner_gives_a_correct_board_run(compiled, planner):
    """A wrong offset would corrupt a live buffer and show up as wrong output."""
    out = compiled("mbv2_tiny", planner=planner)
    memory = json.loads((out / "memory.json").read_text())
    if planner == "milp":  # seeded by the heuristics; a heuristic placement already at the bound is kept
        assert memory["planner_notes"] and (memory["planner"] == "milp" or memory["optimal"])
    else:
        assert memory["planner"] == planner
    assert memory["arena_bytes"] >= memory["lower_bound_bytes"]
    result = evaluate(out, load_board("stm32f746"), random_input(out, seed=5))
    assert result.max_rel_error <= TOLERANCE
    assert result.arena_bytes == memory["arena_bytes"]


def test_constants_and_only_constants_are_read_only(compiled):
    """Every kernel parameter that each call passes a weight is `const T* restrict` (gcc then keeps what it derives
    from it in registers across the output's stores); activations never are (an output may overwrite its input)."""
    import re

    out = compiled("inverted_residual")
    kernels, model = (out / "kernels.c").read_text(), (out / "model.c").read_text()
    params = {m[1]: m[2].split(", ") for m in re.finditer(r"^void (tvmp_\w+)\((.*)\) \{$", kernels, re.M)}
    calls = re.findall(r"^\s*(tvmp_\w+)\((.*)\);$", model, re.M)
    assert calls and params
    for symbol, args in calls:
        for arg, param in zip(args.split(", "), params[symbol]):
            assert param.startswith("const ") == (" *)weight_" in arg), (symbol, arg, param)
            assert ("restrict" in param) == param.startswith("const "), param
