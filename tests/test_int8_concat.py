"""int8 Concat: `quantize(concat(dequantize(a_1), ..., dequantize(a_n)))` folds into one QConcat kernel; each input
is rescaled onto the output's parameters (a copy where they are equal); bit-exact with the NumPy reference."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tvm_pipeline import tvm_adapter
from tvm_pipeline.board.boards import load_board
from tvm_pipeline.compiler import CompileOptions, compile_model
from tvm_pipeline.evaluate import INT_WITHIN_1LSB, evaluate, random_input
from tvm_pipeline.int8_ops import QConcat, QRescale, Requant
from tvm_pipeline.int8_reference import run_reference
from tvm_pipeline.passes import fold_qdq


def _concat_model() -> onnx.ModelProto:
    """xq -> (xq as is, rescaled b, c on the output's parameters) -> Concat(axis=1) -> QuantizeLinear -> yq."""
    inits = {"sx": np.float32(0.05), "zx": np.int8(-3), "sb": np.float32(0.023), "zb": np.int8(11),
             "sy": np.float32(0.07), "zy": np.int8(5)}
    dq, q = "DequantizeLinear", "QuantizeLinear"
    nodes = [helper.make_node(dq, ["xq", "sx", "zx"], ["xf"]),
             helper.make_node(q, ["xf", "sb", "zb"], ["bq"]), helper.make_node(q, ["xf", "sy", "zy"], ["cq"]),
             helper.make_node(dq, ["xq", "sx", "zx"], ["af"]), helper.make_node(dq, ["bq", "sb", "zb"], ["bf"]),
             helper.make_node(dq, ["cq", "sy", "zy"], ["cf"]),
             helper.make_node("Concat", ["af", "bf", "cf"], ["y"], axis=1), helper.make_node(q, ["y", "sy", "zy"], ["yq"])]
    graph = helper.make_graph(nodes, "concat", [helper.make_tensor_value_info("xq", TensorProto.INT8, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("yq", TensorProto.INT8, [1, 9, 8, 8])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_qconcat_reference_rescales_each_input_and_copies_equal_parameters():
    op = QConcat.from_scales(1, [(0.05, -3), (0.07, 5)], 0.07, 5, -128, 127)
    assert op.requants[1] is None and op.requants[0] == Requant.from_scale(np.float32(0.05) / np.float32(0.07), 5,
                                                                          -128, 127)
    a = np.arange(-128, 128, dtype=np.int8).reshape(1, 4, 8, 8)
    b = np.arange(127, -129, -1, dtype=np.int8).reshape(1, 4, 8, 8)[:, :2]
    y = op.reference(a, b)
    assert y.shape == (1, 6, 8, 8) and y.dtype == np.int8
    assert np.array_equal(y[:, :4], QRescale(-3, op.requants[0]).reference(a)) and np.array_equal(y[:, 4:], b)


def test_concat_of_differently_quantized_inputs_folds_exactly(tmp_path):
    model = _concat_model()
    mod = tvm_adapter.import_onnx(model, {"xq": (1, 3, 8, 8)})
    folds, notes = fold_qdq.plan(tvm_adapter.dataflow_ops(mod))
    (concat,) = [f for f in folds if isinstance(f.op, QConcat)]
    assert notes == [] and concat.op.axis == 1 and len(concat.sources) == 3
    assert [r is None for r in concat.op.requants] == [False, False, True]
    onnx.save(model, tmp_path / "concat.onnx")
    out = tmp_path / "out"
    compile_model(tmp_path / "concat.onnx", out)
    notes = json.loads((out / "model.json").read_text())["notes"]
    assert "fold-qdq: integer only, no float op left" in notes and any("concat 1" in n for n in notes)
    for seed in range(3):
        x = random_input(out, seed)
        result = evaluate(out, None, x)
        expected = run_reference(out / "reference.onnx", x).reshape(-1)
        assert np.array_equal(np.asarray(result.output, dtype=np.int64), expected.astype(np.int64)), "not bit-exact"
        assert result.within_tolerance(0.0) and result.over_1lsb_fraction <= 1 - INT_WITHIN_1LSB


def test_int8_tunnel_net_head_concat_is_integer_and_exact(int8_onnx, tmp_path):
    out = tmp_path / "tunnel"
    compile_model(int8_onnx("tunnel_tiny"), out, CompileOptions(board="stm32f746"))
    notes = json.loads((out / "model.json").read_text())["notes"]
    assert "fold-qdq: integer only, no float op left" in notes and any("concat 1" in n for n in notes)
    x = random_input(out, seed=3)
    expected = run_reference(out / "reference.onnx", x).reshape(-1).astype(np.int64)
    for board in (None, load_board("stm32f746")):
        result = evaluate(out, board, x)
        assert np.array_equal(np.asarray(result.output, dtype=np.int64), expected), "not bit-exact"
        assert result.within_tolerance(0.0) and result.argmax_match
