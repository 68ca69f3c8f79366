"""patch-stage: receptive-field arithmetic, the IR it writes (and when it writes none), its numerics, its search.

Numerics: with any combination of reorder-bottleneck and patch-stage, the output equals the build without either
pass within 1e-5 (max |a - b| / max |b|), and every build matches onnxruntime within 1e-5. The patched stage does the
same arithmetic per element as the unsplit one, so the host builds agree bit for bit in practice.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, numpy_helper
from onnx import helper as oh

from tvm_pipeline import tvm_adapter
from tvm_pipeline.board.boards import load_board
from tvm_pipeline.cli import main as tvmp
from tvm_pipeline.compiler import CompileOptions, compile_model
from tvm_pipeline.errors import UserError
from tvm_pipeline.evaluate import evaluate, random_input
from tvm_pipeline.models.export import relative_error
from tvm_pipeline.passes import patch_regions as pr
from tvm_pipeline.passes import patch_stage

TOLERANCE = 1e-5
REORDER, PATCH = "reorder-bottleneck", "patch-stage"
COMBINATIONS = {"none": {REORDER, PATCH}, "reorder": {PATCH}, "patch": {REORDER}, "both": set()}


def chain_model(specs, size=8, cin=3, first_op=None) -> onnx.ModelProto:
    """Conv (+ bias) -> Relu for each (cout, k, stride, dilation) in `specs`, after `first_op` (ONNX op type) if any."""
    rng = np.random.default_rng(0)
    inits, nodes, x, image = [], [], "x", size
    if first_op:
        nodes.append(oh.make_node(first_op, [x], ["f"], kernel_shape=[2, 2], strides=[1, 1]))
        x, size = "f", size - 1
    for i, (cout, k, stride, dilation) in enumerate(specs):
        inits += [numpy_helper.from_array(rng.standard_normal((cout, cin, k, k)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), f"b{i}")]
        pad = dilation * (k // 2)
        nodes += [oh.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[k, k], strides=[stride] * 2,
                               pads=[pad] * 4, dilations=[dilation] * 2),
                  oh.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x, cin, size = f"r{i}", cout, (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    value = oh.make_tensor_value_info
    graph = oh.make_graph(nodes, "chain", [value("x", TensorProto.FLOAT, [1, 3, image, image])],
                          [value(x, TensorProto.FLOAT, [1, cin, size, size])], inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def imported(model: onnx.ModelProto) -> tvm.IRModule:
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    return tvm_adapter.import_onnx(model, {"x": shape})


def run_pass(mod, **options):
    notes: list[str] = []
    return patch_stage.run(mod, notes, **options), notes


# --- receptive-field arithmetic --------------------------------------------------------------------------------------

def test_window_input_pads_only_on_the_image_border():
    conv = pr.Window((3, 3), (2, 2), (1, 1, 1, 1))
    top_left = pr.window_input(conv, (0, 2, 0, 2), (8, 8))  # out rows 0..1 read rows -1..3: one padded row
    assert top_left == pr.PatchInput((0, 4, 0, 4), (1, 1, 0, 0))
    bottom_right = pr.window_input(conv, (2, 4, 2, 4), (8, 8))  # out rows 2..3 read rows 3..7: no padding used
    assert bottom_right == pr.PatchInput((3, 8, 3, 8), (0, 0, 0, 0))
    same = pr.window_input(pr.Window((5, 5), (1, 1), (2, 2, 2, 2)), (3, 8, 0, 3), (8, 8))
    assert same == pr.PatchInput((1, 8, 0, 5), (0, 2, 2, 0))


def test_grid_covers_the_map_once_with_sizes_differing_by_one_at_most():
    patches = pr.grid((4, 5), 3, 2)
    assert patches == [(0, 1, 0, 2), (0, 1, 2, 5), (1, 2, 0, 2), (1, 2, 2, 5), (2, 4, 0, 2), (2, 4, 2, 5)]
    with pytest.raises(ValueError):
        pr.grid((4, 4), 5, 1)


# --- IR before / after -----------------------------------------------------------------------------------------------

def test_two_conv_stage_becomes_four_patches_placed_into_the_stage_output():
    """conv 3x3/1 -> relu -> conv 3x3/2 -> relu on 8x8, split after layer 1 as 2x2: per patch, a conv reading its
    image window in place (with border padding), bias, relu, a conv with the patch's border padding, bias, relu, and
    a place kernel; the last place kernel is bound to the stage's output variable."""
    before = imported(chain_model([(4, 3, 1, 1), (6, 3, 2, 1)]))
    out_var = tvm_adapter.dataflow_output(before)
    after, notes = run_pass(before, stage=1, grid=(2, 2))
    ops = tvm_adapter.dataflow_ops(after).ops
    kinds = [op.op if op.op != "call_tir" else op.attrs["func"].rstrip("0123456789") for op in ops]
    patch = ["patch_conv2d", "relax.add", "relax.nn.relu", "relax.nn.conv2d", "relax.add", "relax.nn.relu",
             "patch_place"]
    assert kinds == patch * 4
    convs = [op for op in ops if op.op == "relax.nn.conv2d"]
    assert [c.attrs["padding"] for c in convs] == [(1, 1, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 0, 0)]
    assert [ops[0].type.shape, convs[0].args[0], ops[0].var] == [(1, 4, 4, 4), ops[2].var, ops[0].var]
    assert [o.type.shape for o in ops if o.op == "relax.nn.relu"][1::2] == [(1, 6, 2, 2)] * 4
    assert ops[-1].var == out_var and ops[-1].type.shape == (1, 6, 4, 4)
    # layer 0 computes rows/cols 0..3 and 3..7 of its 8x8 map: 4x4 + 4x5 + 5x4 + 5x5 = 81 pixels instead of 64, each
    # 4 x (3 x 3 x 3) MACs; layer 1 computes exactly its 4x4 output
    assert "2x2 patches (as given)" in notes[-1] and f"{17 * 4 * 27:,} extra MACs" in notes[-1]


def test_a_model_starting_with_an_op_it_cannot_split_is_left_unchanged():
    before = imported(chain_model([(4, 3, 1, 1)], first_op="MaxPool"))
    after, notes = run_pass(before)
    tvm.ir.assert_structural_equal(after, before)
    assert "(relax.nn.max_pool2d): the pass splits conv2d" in notes[0]
    assert notes[-1] == "patch-stage: left unchanged: no stage to split"


def test_dilated_conv_ends_the_stage_and_is_left_unchanged():
    before = imported(chain_model([(4, 3, 1, 1), (4, 3, 1, 2)]))
    after, notes = run_pass(before, stage=0, grid=(2, 2))
    assert "ends at" in notes[0] and "dilation" in notes[0] and "1: " not in notes[0].split(";")[0]
    ops = tvm_adapter.dataflow_ops(after).ops
    dilated = [op for op in ops if op.op == "relax.nn.conv2d" and op.attrs["dilation"] == (2, 2)]
    assert len(dilated) == 1 and dilated[0].type.shape == (1, 4, 8, 8)  # the dilated conv runs whole, as before


def test_a_split_point_a_skip_connection_crosses_is_refused(zoo_onnx):
    """Without reordering, an inverted residual's input is read by its skip-add: the expand and depthwise layers
    are no split points, and asking for one is a user error naming the valid ones."""
    from tvm_pipeline.frontend import load_model

    mod = load_model(zoo_onnx("inverted_residual"), {}).mod
    _, notes = run_pass(mod, stage=0, grid=(2, 2))
    assert "layers [1, 2] are not split points" in notes[0]
    with pytest.raises(UserError, match="--patch-stage 1: not a split point.*0: "):
        run_pass(mod, stage=1, grid=(2, 2))


def test_cli_refuses_patch_options_for_the_disabled_pass(zoo_onnx, tmp_path, capsys):
    code = tvmp(["compile", str(zoo_onnx("conv_stack")), "-o", str(tmp_path / "out"), "--patch-stage", "1",
                 "--disable-pass", PATCH])
    assert code == 2 and "--disable-pass patch-stage turns it off" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tvmp(["compile", str(zoo_onnx("conv_stack")), "-o", str(tmp_path / "o"), "--patch-grid", "4by4"])
    assert not (tmp_path / "out").exists()


# --- numerics: every combination of the two passes equals the build without them ------------------------------------

#: (model, reorder on?) -> (last layer of the stage, grid): the deepest split point, so every block is patched.
#: mbv2_tiny's stage then spans stride 1 and 2, skip and no skip, K = 3 and 5, ReLU and ReLU6, t = 1 and t > 1.
FORCED = {("conv_stack", True): (2, (3, 3)), ("conv_stack", False): (2, (3, 3)),
          ("inverted_residual", True): (1, (3, 3)), ("inverted_residual", False): (3, (3, 3)),
          ("mbv2_tiny", True): (4, (2, 2)), ("mbv2_tiny", False): (11, (2, 2))}


def build(compiled, name: str, combination: str):
    disabled = COMBINATIONS[combination]
    if PATCH in disabled:
        return compiled(name, disabled_passes=frozenset(disabled))
    stage, grid = FORCED[name, REORDER not in disabled]
    return compiled(name, disabled_passes=frozenset(disabled), patch_stage=stage, patch_grid=grid)


def assert_equal_to_no_pass_build(on_dir, off_dir, board=None, seed=0) -> list[str]:
    x = random_input(on_dir, seed)
    on, off = evaluate(on_dir, board, x), evaluate(off_dir, None, x)
    assert on.max_rel_error <= TOLERANCE and off.max_rel_error <= TOLERANCE
    assert relative_error(np.array(on.output), np.array(off.output)) <= TOLERANCE
    return json.loads((on_dir / "model.json").read_text())["notes"]


@pytest.mark.parametrize("combination", ["patch", "both"])
@pytest.mark.parametrize("name", ["conv_stack", "inverted_residual", "mbv2_tiny"])
def test_host_output_equals_the_build_without_passes(compiled, name, combination):
    notes = assert_equal_to_no_pass_build(build(compiled, name, combination), build(compiled, name, "none"))
    (patched,) = [n for n in notes if "patches (as given)" in n]
    assert "extra MACs" in patched


def test_board_output_equals_the_build_without_passes(compiled):
    assert_equal_to_no_pass_build(build(compiled, "mbv2_tiny", "both"), build(compiled, "mbv2_tiny", "none"),
                                  board=load_board("stm32f746"), seed=3)


# --- the search ------------------------------------------------------------------------------------------------------

def test_search_patches_a_stage_whose_output_is_small_and_halves_the_arena(tmp_path):
    """A 32-channel full-resolution conv, then a stride-2 one: patches keep the 32-channel map out of SRAM."""
    path = tmp_path / "wide.onnx"
    model = chain_model([(32, 3, 1, 1), (4, 3, 2, 1), (4, 3, 1, 1)], size=16)
    onnx.save(model, path)
    on, off = tmp_path / "on", tmp_path / "off"
    compile_model(path, on)
    compile_model(path, off, CompileOptions(disabled_passes=frozenset({PATCH})))
    notes = assert_equal_to_no_pass_build(on, off)
    (chosen,) = [n for n in notes if "patches (searched" in n]
    assert "layers 0..1" in chosen or "layers 0..2" in chosen

    def arena(out):
        return json.loads((out / "memory.json").read_text())["arena_bytes"]

    assert arena(on) <= 0.5 * arena(off)
