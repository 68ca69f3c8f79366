"""patch-stage on int8 models and with `--input-mode stream`.

int8: the patched stage runs the same integer arithmetic per element as the unsplit one, so the host and board
builds are bit-identical to the `--disable-pass patch-stage` build and to the NumPy integer reference, and satisfy
the int8 rule vs onnxruntime (>= 99.9 % of elements within 1 LSB, same argmax; docs/int8.md).
Stream: a plain CNN streams through the image windows of its patches; its output equals the RAM-mode build within
1e-5 (max |a - b| / max |b|), and the measured peak SRAM is lower (the image is never whole in SRAM).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from onnx import helper as oh

from schedules.bottleneck_int8 import ConvInfo
from test_pass_patch_stage import chain_model
from tvm_pipeline import tvm_adapter
from tvm_pipeline.board.boards import load_board
from tvm_pipeline.compiler import CompileOptions, compile_model
from tvm_pipeline.errors import UserError
from tvm_pipeline.evaluate import evaluate, random_input
from tvm_pipeline.frontend import load_model
from tvm_pipeline.int8_ops import QAdd
from tvm_pipeline.int8_reference import run_reference
from tvm_pipeline.models.export import relative_error
from tvm_pipeline.passes import fold_qdq, patch_split, patch_stage, reorder_bottleneck_int8
from tvm_pipeline.passes.patch_ops import StageOp
from tvm_pipeline.quantize import quantize_model

PATCH = "patch-stage"
#: The deepest split point of `mbv2_like` (its last conv) as a 3x3 grid: corner, edge and interior patches.
STAGE, GRID = 6, (3, 3)


def mbv2_like(size: int = 24) -> onnx.ModelProto:
    """A small MobileNetV2-like float model whose int8 form has every op the int8 stage splits:

    stem conv 3x3/2 + ReLU6 -> a = x + conv3x3(x) (an int8 add: the conv reads the skip, so it is not fused) ->
    depthwise 3x3 + 1x1 projection with skip (t = 1: depthwise conv and conv+add kernels) -> inverted residual
    t = 4 with skip (reordered) -> inverted residual t = 4, stride 2 (reordered, no skip) -> 1x1 conv + ReLU ->
    global average pool -> Gemm (outside the stage).
    """
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def conv(x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: str | None = "relu6") -> str:
        i = len(nodes)
        inits.extend([numpy_helper.from_array((rng.standard_normal((cout, cin // groups, k, k)) * 0.4)
                                              .astype(np.float32), f"w{i}"),
                      numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), f"b{i}")])
        nodes.append(oh.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[k, k],
                                  strides=[stride] * 2, pads=[k // 2] * 4, group=groups))
        if act == "relu6":
            nodes.append(oh.make_node("Clip", [f"c{i}", "zero", "six"], [f"a{i}"]))
        elif act == "relu":
            nodes.append(oh.make_node("Relu", [f"c{i}"], [f"a{i}"]))
        return nodes[-1].output[0]

    def add(a: str, b: str) -> str:
        nodes.append(oh.make_node("Add", [a, b], [f"s{len(nodes)}"]))
        return nodes[-1].output[0]

    def inverted_residual(x: str, cin: int, cout: int, t: int, stride: int) -> str:
        hidden = conv(x, cin, cin * t, 1) if t > 1 else x
        y = conv(conv(hidden, cin * t, cin * t, 3, stride, groups=cin * t), cin * t, cout, 1, act=None)
        return add(y, x) if stride == 1 and cin == cout else y

    inits += [numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(np.float32(6), "six")]
    x = conv("x", 3, 8, 3, 2)
    x = add(conv(x, 8, 8, 3, act=None), x)
    x = inverted_residual(x, 8, 8, 1, 1)
    x = inverted_residual(x, 8, 8, 4, 1)
    x = inverted_residual(x, 8, 12, 4, 2)
    x = conv(x, 12, 16, 1, act="relu")
    inits += [numpy_helper.from_array(rng.standard_normal((16, 10)).astype(np.float32), "fc_w"),
              numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fc_b")]
    nodes += [oh.make_node("GlobalAveragePool", [x], ["pool"]), oh.make_node("Flatten", ["pool"], ["flat"]),
              oh.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"])]
    value = oh.make_tensor_value_info
    graph = oh.make_graph(nodes, "mbv2_like", [value("x", TensorProto.FLOAT, [1, 3, size, size])],
                          [value("y", TensorProto.FLOAT, [1, 10])], inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> Path:
    """`mbv2_like` quantized by `quantize_model` (16 random-normal calibration samples)."""
    root = tmp_path_factory.mktemp("patch-int8")
    model = mbv2_like()
    onnx.save(model, root / "float.onnx")
    np.save(root / "calibration.npy", np.random.default_rng(1).standard_normal((16, 3, 24, 24)).astype(np.float32))
    return quantize_model(root / "float.onnx", root / "calibration.npy", root / "int8.onnx").path


@pytest.fixture(scope="module")
def int8_builds(int8_model, tmp_path_factory) -> tuple[Path, Path]:
    """(patched at STAGE as GRID, unpatched) builds of the int8 model."""
    root = tmp_path_factory.mktemp("patch-int8-builds")
    on, off = root / "on", root / "off"
    compile_model(int8_model, on, CompileOptions(patch_stage=STAGE, patch_grid=GRID))
    compile_model(int8_model, off, CompileOptions(disabled_passes=frozenset({PATCH})))
    return on, off


def _int8_module(path: Path):
    notes: list[str] = []
    return reorder_bottleneck_int8.run(fold_qdq.run(load_model(path, {}).mod, notes), notes)


# --- int8: the IR -----------------------------------------------------------------------------------------------------

def _kind(s: StageOp) -> str:
    if s.spec is not None:
        return "bottleneck+skip" if s.spec.skip else "bottleneck"
    op = s.fold.op
    if isinstance(op, QAdd):
        return "add"
    return f"conv{op.weight.shape[2]}{'dw' if op.groups > 1 else ''}{'+add' if op.residual else ''}"


def test_int8_stage_spans_convs_adds_and_reordered_bottlenecks(int8_model):
    mod = _int8_module(int8_model)
    view = tvm_adapter.dataflow_ops(mod)
    stages, layers, why = patch_split.stages(view, mod)
    kinds = [_kind(s) for s in max(stages, key=lambda s: s.layer).ops]
    assert kinds == ["conv3", "conv3", "add", "conv3dw", "conv1+add", "bottleneck+skip", "bottleneck", "conv1"]
    # layer 2 (the depthwise conv) is no split point: the skip-add after it reads the block input
    assert [s.layer for s in stages] == [0, 1, 3, 4, 5, 6] and layers == 7
    assert why.endswith("the pass splits int8 convs, reordered int8 bottlenecks and int8 adds only")


def test_int8_patch_convs_pad_only_at_the_image_border_and_read_the_image_in_place(int8_model):
    mod = _int8_module(int8_model)
    after = patch_stage.run(mod, [], stage=1, grid=(2, 2))
    ops = tvm_adapter.dataflow_ops(after).ops
    convs = [op for op in ops if op.attrs.get("func", "").startswith("int8_conv2d") and "_p" in op.var]  # patches
    paddings = [ConvInfo.of(after[op.attrs["func"]]).padding for op in convs]
    # stem 3x3/2 pad 1 (only top/left are read at a 24 -> 12 map), then the 3x3/1 pad 1 conv, per 2x2 patch
    assert paddings == [(1, 1, 0, 0), (1, 1, 0, 0), (1, 0, 0, 0), (1, 0, 0, 1), (0, 1, 0, 0), (0, 1, 1, 0),
                        (0, 0, 0, 0), (0, 0, 1, 1)]
    # the stem reads its image window through a view, with no copy; the add reads its skip through a slice
    assert [op.args[0] for op in convs[::2]] == ["x"] * 4
    slices = [op.args[0] for op in ops if op.op == "relax.strided_slice"]
    assert "x" not in slices and len(slices) == 4


# --- int8: numerics --------------------------------------------------------------------------------------------------

def test_int8_patched_host_build_is_bit_identical_to_the_unpatched_one(int8_builds):
    on, off = int8_builds
    notes = json.loads((on / "model.json").read_text())["notes"]
    assert any(f"layers 0..{STAGE}" in n and "3x3 patches (as given)" in n for n in notes), notes
    x = random_input(on, 0)
    patched, whole = evaluate(on, None, x), evaluate(off, None, x)
    expected = run_reference(on / "reference.onnx", x).reshape(-1).astype(np.int64)
    assert np.array_equal(np.asarray(patched.output, np.int64), np.asarray(whole.output, np.int64))
    assert np.array_equal(np.asarray(patched.output, np.int64), expected)
    assert patched.within_tolerance(0.0) and patched.argmax_match  # the 1-LSB rule vs onnxruntime


def test_int8_patched_board_build_is_bit_exact(int8_builds):
    on, _ = int8_builds
    x = random_input(on, 3)
    result = evaluate(on, load_board("stm32f746"), x)
    expected = run_reference(on / "reference.onnx", x).reshape(-1).astype(np.int64)
    assert np.array_equal(np.asarray(result.output, np.int64), expected)
    assert result.within_tolerance(0.0) and result.argmax_match


# --- stream ----------------------------------------------------------------------------------------------------------

def test_stream_float_plain_cnn_equals_the_ram_build_in_less_sram(tmp_path):
    """A 32-channel full-resolution conv, a stride-2 one and a third: streamed, its patches read image windows."""
    path = tmp_path / "wide.onnx"
    onnx.save(chain_model([(32, 3, 1, 1), (4, 3, 2, 1), (4, 3, 1, 1)], size=16), path)
    ram, stream = tmp_path / "ram", tmp_path / "stream"
    compile_model(path, ram)
    compile_model(path, stream, CompileOptions(input_mode="stream"))
    notes = json.loads((stream / "model.json").read_text())["notes"]
    assert any("patches (searched" in n and "unsplit cannot stream" in n for n in notes), notes
    assert any(n.startswith("stream-input: the input is read as") for n in notes), notes
    memory = json.loads((stream / "memory.json").read_text())
    assert not any(buf["kind"] == "input" for buf in memory["buffers"])
    board = load_board("stm32f746")
    x = random_input(ram, 2)
    a, b = evaluate(ram, board, x), evaluate(stream, board, x)
    assert b.input_mode == "stream" and b.max_rel_error <= 1e-5
    assert relative_error(np.array(b.output), np.array(a.output)) <= 1e-5
    assert b.peak_sram_bytes < a.peak_sram_bytes


def test_stream_of_a_plain_cnn_needs_patch_stage(tmp_path):
    path = tmp_path / "chain.onnx"
    onnx.save(chain_model([(4, 3, 1, 1), (4, 3, 2, 1)]), path)
    with pytest.raises(UserError, match="reads the whole input; use --input-mode ram.*patch-stage"):
        compile_model(path, tmp_path / "off", CompileOptions(input_mode="stream",
                                                              disabled_passes=frozenset({PATCH})))
    onnx.save(chain_model([(4, 3, 1, 1)], first_op="MaxPool"), path)
    with pytest.raises(UserError, match="--input-mode stream: .*cannot split.*max_pool2d"):
        compile_model(path, tmp_path / "maxpool", CompileOptions(input_mode="stream"))
    assert not (tmp_path / "off").exists() and not (tmp_path / "maxpool").exists()
