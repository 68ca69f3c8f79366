"""In-place depthwise convolution (schedules/depthwise_inplace.py, tvm_adapter/plane_inplace.py, planner merges).

A small float model and its int8 quantization, with depthwise convs of stride 1 and 2 and kernels 3 and 5, compiled
with `inplace_depthwise` on and off: the host outputs are identical, float within 1e-5 (relative) of onnxruntime,
int8 bit-exact with the NumPy integer reference and within the 1-LSB rule of onnxruntime (docs/int8.md); the arena
shrinks. Planner cases: the output takes the input's offset only when the input dies there, and verify_tensors
rejects any other overlap.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tvm_pipeline.board.boards import load_board
from tvm_pipeline.compiler import CompileOptions, compile_model
from tvm_pipeline.errors import InternalError
from tvm_pipeline.evaluate import evaluate, random_input
from tvm_pipeline.int8_reference import run_reference
from tvm_pipeline.models.export import export_onnx
from tvm_pipeline.planner import OpGraph, OpNode, liveness, verify_tensors
from tvm_pipeline.quantize import quantize_model

FLOAT_TOLERANCE = 1e-5
SHAPE = (1, 3, 16, 16)
#: (kernel, stride) of the depthwise convs of `_Net`, in order
DEPTHWISE = ((3, 1), (5, 2), (3, 2), (5, 1))


class _Net(nn.Module):
    """stem -> dw 3x3/1 (ReLU6) -> dw 5x5/2 -> 1x1 -> dw 3x3/2 -> dw 5x5/1 (no activation)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.ModuleList(nn.Conv2d(8, 8, k, stride=s, padding=k // 2, groups=8) for k, s in DEPTHWISE)
        self.pw = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.clamp(self.dw[0](x), 0, 6)
        x = torch.relu(self.pw(torch.relu(self.dw[1](x))))
        return self.dw[3](torch.relu(self.dw[2](x)))


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """`builds(dtype) -> (on, off)`: the model (float32 or int8) compiled with in-place depthwise on and off."""
    root = tmp_path_factory.mktemp("inplace-dw")
    torch.manual_seed(0)
    source = root / "dw.onnx"
    export_onnx(_Net(), SHAPE, source)
    calibration = root / "calibration.npy"
    np.save(calibration, np.random.default_rng(1).standard_normal((16, *SHAPE[1:])).astype(np.float32))
    models = {"float32": source, "int8": quantize_model(source, calibration, root / "dw.int8.onnx").path}
    cache: dict[str, tuple[Path, Path]] = {}

    def get(dtype: str) -> tuple[Path, Path]:
        if dtype not in cache:
            on, off = root / f"{dtype}-on", root / f"{dtype}-off"
            for out, inplace in ((on, True), (off, False)):
                options = CompileOptions(disabled_passes=frozenset({"patch-stage"}), inplace_depthwise=inplace)
                compile_model(models[dtype], out, options)
            cache[dtype] = on, off
        return cache[dtype]

    return get


def _memory(out: Path) -> dict:
    return json.loads((out / "memory.json").read_text())


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_host_output_equals_the_plain_build_and_the_reference(builds, dtype):
    on, off = builds(dtype)
    for seed in range(2):
        x = random_input(on, seed)
        got, plain = evaluate(on, None, x), evaluate(off, None, x)
        assert np.array_equal(np.asarray(got.output), np.asarray(plain.output)), "in-place build differs from plain"
        if dtype == "int8":
            expected = run_reference(on / "reference.onnx", x).reshape(-1).astype(np.int64)
            assert np.array_equal(np.asarray(got.output, dtype=np.int64), expected), "not bit-exact"
        assert got.within_tolerance(FLOAT_TOLERANCE), got.to_json()


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_stride_1_outputs_take_their_inputs_offset_and_the_arena_shrinks(builds, dtype):
    on, off = builds(dtype)
    merged = [b for b in _memory(on)["buffers"] if len(b["tensors"]) > 1]
    # the two stride-1 depthwise convs write over their inputs; a stride-2 one would keep its input's bytes for
    # the output's whole life, which does not lower this model's peak, so the planner does not merge it
    assert len(merged) == 2, merged
    assert all(len(b["tensors"]) == 1 for b in _memory(off)["buffers"])
    assert _memory(on)["arena_bytes"] < _memory(off)["arena_bytes"]
    scratch = [b for b in _memory(on)["buffers"] if b["kind"] == "scratch"]
    assert scratch and all(b["size"] <= 16 * 16 * 4 for b in scratch)  # at most one input plane each


def test_int8_board_run_equals_the_host_build(builds):
    on, off = builds("int8")
    x = random_input(on, 3)
    board = evaluate(on, load_board("stm32f746"), x)
    assert np.array_equal(np.asarray(board.output), np.asarray(evaluate(off, None, x).output))
    assert board.peak_sram_bytes is not None and board.max_abs_diff_lsb <= 1


def _chain(extra_reader: bool, sizes: dict[str, int]) -> OpGraph:
    """x -> [dw] -> y -> [pw] -> z, the depthwise may write y over x; optionally x is also read by the last node."""
    nodes = (OpNode("dw", ("x",), ("y",), scratch=16, inplace=(("x", "y"),)),
             OpNode("pw", ("y", "x") if extra_reader else ("y",), ("z",)))
    return OpGraph(nodes, sizes, ("x",), ("z",))


def test_planner_merges_only_when_the_input_dies_at_the_depthwise():
    sizes = {"x": 400, "y": 400, "z": 300}
    _, storage_of = liveness(_chain(False, sizes), [0, 1])
    assert storage_of["y"] == "x"
    verify_tensors(_chain(False, sizes), [0, 1], {"x": 0, "y": 0, "z": 400})
    graph = _chain(True, sizes)
    _, storage_of = liveness(graph, [0, 1])
    assert storage_of["y"] == "y"  # x is read again by pw: no merge
    with pytest.raises(InternalError, match="tensors x and y overlap"):
        verify_tensors(graph, [0, 1], {"x": 0, "y": 0, "z": 800})


def test_verify_rejects_an_output_larger_than_its_input_or_off_its_offset():
    graph = _chain(False, {"x": 400, "y": 404, "z": 300})
    with pytest.raises(InternalError, match="not an in-place output"):
        verify_tensors(graph, [0, 1], {"x": 0, "y": 0, "z": 416})
    graph = _chain(False, {"x": 400, "y": 400, "z": 300})
    with pytest.raises(InternalError, match="overlap"):
        verify_tensors(graph, [0, 1], {"x": 0, "y": 16, "z": 416})


@pytest.mark.parametrize("z, merged", [(300, False), (50, True)])
def test_a_smaller_output_merges_only_where_it_lowers_the_peak(z, merged):
    # merged, x's 400 B stay until pw has run: peak max(400, 400 + z); not merged: max(500, 100 + z)
    graph = _chain(False, {"x": 400, "y": 100, "z": z})
    buffers, storage_of = liveness(graph, [0, 1])
    assert (storage_of["y"] == "x") == merged
    if merged:
        assert next(b for b in buffers if b.name == "x").size == 400
        verify_tensors(graph, [0, 1], {"x": 0, "y": 0, "z": 400})
