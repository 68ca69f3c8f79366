"""reorder-bottleneck: which IR it rewrites (and which it leaves alone), its numerics, and the memory it saves.

Numerics: every build must match onnxruntime within 1e-5 (max relative error), and the reordered build must equal
the `--disable-pass reorder-bottleneck` build within 1e-5 (the projection's summation order changes).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, numpy_helper
from onnx import helper as oh

from schedules.bottleneck import KERNEL_PREFIX, BottleneckSpec, Tiling, apply, kernel, scratch_bytes
from tvm_pipeline import tvm_adapter
from tvm_pipeline.board.boards import load_board
from tvm_pipeline.compiler import CompileOptions, compile_model
from tvm_pipeline.evaluate import evaluate, random_input
from tvm_pipeline.models.export import relative_error
from tvm_pipeline.passes import reorder_bottleneck

TOLERANCE = 1e-5
OFF = frozenset({"reorder-bottleneck"})


def block_model(cin=4, hidden=12, cout=4, size=8, k=3, stride=1, act="relu6", skip=True, batch_norm=False,
                groups=None, dw_is_also_an_output=False) -> onnx.ModelProto:
    """One inverted residual as ONNX: Conv 1x1 -> act -> Conv KxK (groups) -> act -> Conv 1x1 (-> Add x)."""
    rng = np.random.default_rng(0)
    groups = groups or hidden
    inits, nodes = [], []

    def const(name, *shape, positive=False):
        value = rng.random(shape) + 0.5 if positive else rng.standard_normal(shape) * 0.5
        inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv(x, out, cin_, cout_, k_, **attrs):
        g = attrs.get("group", 1)
        if batch_norm:
            nodes.append(oh.make_node("Conv", [x, const(out + "_w", cout_, cin_ // g, k_, k_)], [out + "_c"],
                                      kernel_shape=[k_, k_], **attrs))
            stats = [const(out + s, cout_, positive=s == "_var") for s in ("_gamma", "_beta", "_mean", "_var")]
            nodes.append(oh.make_node("BatchNormalization", [out + "_c", *stats], [out], epsilon=1e-3))
        else:
            nodes.append(oh.make_node("Conv", [x, const(out + "_w", cout_, cin_ // g, k_, k_), const(out + "_b", cout_)],
                                      [out], kernel_shape=[k_, k_], **attrs))

    def activation(x, out):
        if act == "relu":
            nodes.append(oh.make_node("Relu", [x], [out]))
        else:
            inits.extend(numpy_helper.from_array(np.array(v, np.float32), f"{out}_{n}") for n, v in (("lo", 0), ("hi", 6)))
            nodes.append(oh.make_node("Clip", [x, f"{out}_lo", f"{out}_hi"], [out]))

    conv("x", "e", cin, hidden, 1)
    activation("e", "e_act")
    conv("e_act", "d", hidden, hidden, k, group=groups, strides=[stride, stride], pads=[k // 2] * 4)
    activation("d", "d_act")
    conv("d_act", "p", hidden, cout, 1)
    if skip:
        nodes.append(oh.make_node("Add", ["x", "p"], ["y"]))
    out_size = (size + 2 * (k // 2) - k) // stride + 1
    outputs = [oh.make_tensor_value_info("y" if skip else "p", TensorProto.FLOAT, [1, cout, out_size, out_size])]
    if dw_is_also_an_output:
        outputs.append(oh.make_tensor_value_info("d_act", TensorProto.FLOAT, [1, hidden, out_size, out_size]))
    graph = oh.make_graph(nodes, "block", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, size, size])],
                          outputs, inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def imported(model: onnx.ModelProto) -> tvm.IRModule:
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return tvm_adapter.import_onnx(model, {"x": tuple(shape)})


def run_pass(mod: tvm.IRModule) -> tuple[tvm.IRModule, list[str]]:
    notes: list[str] = []
    return reorder_bottleneck.run(mod, notes), notes


# --- IR before / after ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_norm", [False, True], ids=["bn-folded", "bn-unfolded"])
def test_block_becomes_one_call_tir(batch_norm):
    after, notes = run_pass(imported(block_model(batch_norm=batch_norm)))
    (op,) = tvm_adapter.dataflow_ops(after).ops  # conv, adds, max/min pairs, batch norms and the skip-add: all gone
    assert op.op == "call_tir" and op.attrs["func"].startswith(KERNEL_PREFIX)
    assert op.args[0] == "x" and op.type.shape == (1, 4, 8, 8)
    assert [a.shape for a in op.args[1:]] == [(12, 4), (12,), (12, 3, 3), (12,), (4, 12), (4,)]
    (note,) = notes
    assert "expand 4->12, depthwise 3x3/1, project ->4, skip-add" in note


def test_depthwise_output_read_twice_is_left_alone():
    before = imported(block_model(dw_is_also_an_output=True))
    after, notes = run_pass(before)
    tvm.ir.assert_structural_equal(after, before)
    (note,) = notes
    assert "left unchanged" in note and "2 users" in note


def test_grouped_conv_that_is_not_depthwise_is_left_alone():
    before = imported(block_model(groups=2))
    after, notes = run_pass(before)
    tvm.ir.assert_structural_equal(after, before)
    (note,) = notes
    assert "left unchanged: not a square depthwise conv (groups=2" in note


# --- numerics: host builds against onnxruntime and against the build without the pass ----------------------------

def assert_same_as_without_pass(on_dir, off_dir, board=None, seed=0):
    x = random_input(on_dir, seed)
    on, off = evaluate(on_dir, board, x), evaluate(off_dir, None, x)
    assert on.max_rel_error <= TOLERANCE and off.max_rel_error <= TOLERANCE
    assert relative_error(np.array(on.output), np.array(off.output)) <= TOLERANCE
    return json.loads((on_dir / "model.json").read_text())["notes"]


@pytest.mark.parametrize("name, blocks", [("inverted_residual", 1), ("mbv2_tiny", 4)])
def test_zoo_model_equals_the_build_without_the_pass(compiled, name, blocks):
    """mbv2_tiny: stride 1 and 2, with and without skip, K = 3 and 5, ReLU and ReLU6, and a block without expansion."""
    notes = assert_same_as_without_pass(compiled(name), compiled(name, disabled_passes=OFF))
    assert sum("one channel-by-channel kernel" in n for n in notes) == blocks


def test_unfolded_batch_norm_k7_stride2_relu_equals_the_build_without_the_pass(tmp_path):
    path = tmp_path / "block.onnx"
    onnx.save(block_model(cin=6, hidden=24, cout=8, size=12, k=7, stride=2, act="relu", skip=False, batch_norm=True),
              path)
    on, off = tmp_path / "on", tmp_path / "off"
    compile_model(path, on)
    compile_model(path, off, CompileOptions(disabled_passes=OFF))
    notes = assert_same_as_without_pass(on, off)
    assert any("depthwise 7x7/2" in n for n in notes)


def test_board_run_equals_the_build_without_the_pass(compiled):
    assert_same_as_without_pass(compiled("mbv2_tiny"), compiled("mbv2_tiny", disabled_passes=OFF),
                                board=load_board("stm32f746"), seed=2)


# --- memory -------------------------------------------------------------------------------------------------------

def test_arena_is_well_below_the_build_without_the_pass(compiled):
    def arena(out):
        return json.loads((out / "memory.json").read_text())["arena_bytes"]

    assert arena(compiled("mbv2_tiny")) <= 0.6 * arena(compiled("mbv2_tiny", disabled_passes=OFF))


def lowered(spec: BottleneckSpec, tiling: Tiling = Tiling()):
    sch = tvm_adapter.new_schedule(kernel(spec))
    apply(sch, tiling)
    return tvm_adapter.scheduled_func(sch), tvm_adapter.lower_to_c(tvm_adapter.scheduled_func(sch), "k")


def spec_with(hidden: int, stride: int = 1, padding=(1, 1, 1, 1)) -> BottleneckSpec:
    return BottleneckSpec(8, hidden, 8, 16, 16, 3, stride, padding, (0.0, 6.0), (0.0, None), stride == 1)


def run_kernel(func, args: list[np.ndarray], out_shape) -> np.ndarray:
    """The scheduled kernel built for the host CPU by TVM (LLVM), run once."""
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(out_shape, np.float32))
    lib["main"](*map(tvm.runtime.tensor, args), out)
    return out.numpy()


def numpy_bottleneck(spec: BottleneckSpec, x, w_e, b_e, w_d, b_d, w_p, b_p) -> np.ndarray:
    e = np.clip(np.einsum("ci,iyx->cyx", w_e, x[0]) + b_e[:, None, None], *spec.expand_act)
    top, left, bottom, right = spec.padding
    e = np.pad(e, ((0, 0), (top, bottom), (left, right)))
    s, ho, wo = spec.stride, spec.out_height, spec.out_width
    d = sum(w_d[:, i, j, None, None] * e[:, i:i + s * ho:s, j:j + s * wo:s] for i in range(spec.kernel)
            for j in range(spec.kernel))
    d = np.clip(d + b_d[:, None, None], *spec.dw_act)
    return (np.einsum("oc,cyx->oyx", w_p, d) + b_p[:, None, None] + (x[0] if spec.skip else 0))[None]


@pytest.mark.parametrize("stride, padding, rows", [(1, (1, 1, 1, 1), None), (2, (0, 0, 1, 1), None),
                                                   (2, (0, 0, 0, 0), None), (2, (1, 1, 1, 1), 2), (1, (1, 1, 1, 1), 3)])
def test_kernel_matches_numpy(stride, padding, rows):
    """Any padding (asymmetric, none), either stride, whole-plane or row-tiled schedule (the knob tuning will vary)."""
    spec = spec_with(24, stride, padding)
    func, _ = lowered(spec, Tiling(rows))
    rng = np.random.default_rng(0)
    args = [rng.standard_normal([int(d) for d in p.ty.shape]).astype(np.float32) for p in func.params[:-1]]
    got = run_kernel(func, args, (1, 8, spec.out_height, spec.out_width))
    assert relative_error(got, numpy_bottleneck(spec, *args)) <= TOLERANCE


def test_scratch_is_a_padded_plane_per_channel_of_a_step_whatever_the_expansion_width():
    plane = 18 * 18 * 4
    assert lowered(spec_with(16))[1].workspace_bytes == 2 * plane == scratch_bytes(spec_with(16))  # 2 channels a step
    assert lowered(spec_with(256))[1].workspace_bytes == 2 * plane
    assert lowered(spec_with(256), Tiling(channels=1))[1].workspace_bytes == plane
    assert lowered(spec_with(15), Tiling(channels=2))[1].workspace_bytes == plane  # 2 does not divide 15


def test_row_tiling_shrinks_scratch_to_the_rows_a_tile_reads():
    """2 output rows at stride 2 read 5 padded rows of each of the step's 2 expanded channels."""
    whole, tiled = lowered(spec_with(24, stride=2))[1], lowered(spec_with(24, stride=2), Tiling(rows=2))[1]
    assert tiled.workspace_bytes <= 2 * 5 * 18 * 4 < whole.workspace_bytes


def separable_stack(channels: list[int], size: int = 6) -> onnx.ModelProto:
    """MobileNetV1 blocks: dw 3x3 -> relu -> 1x1 (channels[i] -> channels[i + 1]) -> relu, repeated."""
    rng = np.random.default_rng(0)
    inits, nodes, x = [], [], "x"
    for i, (cin, cout) in enumerate(zip(channels, channels[1:])):
        for name, shape in ((f"dw{i}", (cin, 1, 3, 3)), (f"pw{i}", (cout, cin, 1, 1))):
            inits.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name))
        nodes += [oh.make_node("Conv", [x, f"dw{i}"], [f"d{i}"], kernel_shape=[3, 3], pads=[1] * 4, group=cin),
                  oh.make_node("Relu", [f"d{i}"], [f"da{i}"]),
                  oh.make_node("Conv", [f"da{i}", f"pw{i}"], [f"p{i}"], kernel_shape=[1, 1]),
                  oh.make_node("Relu", [f"p{i}"], [f"pa{i}"])]
        x = f"pa{i}"
    value = oh.make_tensor_value_info
    graph = oh.make_graph(nodes, "v1", [value("x", TensorProto.FLOAT, [1, channels[0], size, size])],
                          [value(x, TensorProto.FLOAT, [1, channels[-1], size, size])], inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_a_pointwise_conv_joins_one_block_only():
    """dw -> relu -> 1x1 -> relu -> dw -> ...: the middle 1x1 projects block 1, so block 2 has no expansion."""
    after, notes = run_pass(imported(separable_stack([16, 8, 4])))
    ops = tvm_adapter.dataflow_ops(after).ops
    assert [op.op for op in ops] == ["call_tir", "relax.nn.relu", "call_tir", "relax.nn.relu"]
    assert ops[2].args[0] == ops[1].var  # block 2 reads the activated output of block 1
    assert len(notes) == 2 and all("no expansion" in note for note in notes)


def test_block_that_would_not_save_memory_is_left_alone():
    """Without expansion and with C_out >= C, the unfused graph never holds more than x + output: keep it."""
    before = imported(separable_stack([8, 8]))
    after, notes = run_pass(before)
    tvm.ir.assert_structural_equal(after, before)
    (note,) = notes
    assert "would not lower the block's memory" in note
