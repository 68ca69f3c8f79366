"""fold-qdq: QDQ chains become integer kernels; what cannot fold stays (in float) and is named in the notes."""

from __future__ import annotations

import numpy as np
import onnx
import tvm
from onnx import TensorProto, helper, numpy_helper

from tvm_pipeline import tvm_adapter
from tvm_pipeline.frontend.qdq_io import integer_io
from tvm_pipeline.int8_ops import QConv2d
from tvm_pipeline.passes import PIPELINE, fold_qdq


def _qdq_model(core: str = "conv", float_io: bool = False) -> onnx.ModelProto:
    """x -> DequantizeLinear -> Conv(+bias) -> Relu | MaxPool | Sigmoid -> QuantizeLinear -> y (int8 I/O unless
    float_io)."""
    rng = np.random.default_rng(0)
    inits = {"sx": np.float32(0.05), "zx": np.int8(-3), "sy": np.float32(0.1), "zy": np.int8(-128),
             "w": rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8), "sw": np.full(4, 0.01, np.float32),
             "zw": np.zeros(4, np.int8), "b": np.arange(4, dtype=np.int32) * 100,
             "sb": np.full(4, np.float32(0.05) * np.float32(0.01), np.float32), "zb": np.zeros(4, np.int32)}
    nodes = [helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xf"])]
    if core == "conv":
        nodes += [helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wf"], axis=0),
                  helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["bf"], axis=0),
                  helper.make_node("Conv", ["xf", "wf", "bf"], ["cf"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", ["cf"], ["af"])]
        out_shape = [1, 4, 8, 8]
    elif core == "maxpool":
        nodes += [helper.make_node("MaxPool", ["xf"], ["af"], kernel_shape=[2, 2], strides=[2, 2])]
        out_shape = [1, 3, 4, 4]
    else:
        nodes += [helper.make_node("Sigmoid", ["xf"], ["af"])]
        out_shape = [1, 3, 8, 8]
    nodes.append(helper.make_node("QuantizeLinear", ["af", "sy", "zy"], ["yq"]))
    if float_io:
        nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]), *nodes,
                 helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"])]
        io = (TensorProto.FLOAT, "x", "y")
    else:
        io = (TensorProto.INT8, "xq", "yq")
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info(io[1], io[0], [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(io[2], io[0], out_shape)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _import(model: onnx.ModelProto) -> tvm.IRModule:
    name = model.graph.input[0].name
    return tvm_adapter.import_onnx(model, {name: (1, 3, 8, 8)})


def test_fold_qdq_runs_first_in_the_pipeline():
    assert PIPELINE[0].name == fold_qdq.NAME


def test_conv_bias_relu_chain_becomes_one_integer_kernel():
    before = tvm_adapter.dataflow_ops(_import(_qdq_model()))
    assert {"relax.quantize", "relax.dequantize", "relax.nn.conv2d", "relax.nn.relu"} <= {op.op for op in before.ops}
    notes: list[str] = []
    after = tvm_adapter.dataflow_ops(fold_qdq.run(_import(_qdq_model()), notes))
    # After: y = call_tir(int8_conv2d, (xq, W_int8, bias, multiplier, shift)); nothing else is left.
    (call,) = after.ops
    assert call.op == "call_tir" and call.args[0] == "xq" and call.type.dtype == "int8"
    weight, bias, multiplier, shift = call.args[1:]
    assert weight.dtype == np.int8 and bias.dtype == np.int32 and multiplier.dtype == np.int32
    assert notes == [f"{fold_qdq.NAME}: 1 quantize chains -> integer kernels (conv2d 1)",
                     f"{fold_qdq.NAME}: integer only, no float op left"]


def test_folded_parameters_fold_zero_point_bias_and_relu():
    (fold,), notes = fold_qdq.plan(tvm_adapter.dataflow_ops(_import(_qdq_model())))
    assert notes == [] and isinstance(fold.op, QConv2d)
    conv = fold.op
    w = conv.weight.astype(np.int64)
    assert conv.input_zero_point == -3 and conv.padding == (1, 1, 1, 1)
    assert np.array_equal(conv.bias, np.arange(4) * 100 + 3 * w.sum(axis=(1, 2, 3)))  # b - zx * sum(w)
    assert (conv.requant.zero_point, conv.requant.lo, conv.requant.hi) == (-128, -128, 127)  # ReLU: zp = qmin


def test_maxpool_chain_becomes_one_integer_kernel():
    notes: list[str] = []
    (call,) = tvm_adapter.dataflow_ops(fold_qdq.run(_import(_qdq_model("maxpool")), notes)).ops
    assert call.op == "call_tir" and call.args[0] == "xq" and call.type.dtype == "int8"
    assert [a.tolist() for a in call.args[1:]] == [[1], [1]]  # rescale by sx / sy = 0.05 / 0.1 = 1 * 2^-1
    assert notes == [f"{fold_qdq.NAME}: 1 quantize chains -> integer kernels (maxpool 1)",
                     f"{fold_qdq.NAME}: integer only, no float op left"]


def test_unfoldable_chain_is_kept_in_float_and_reported():
    notes: list[str] = []
    after = fold_qdq.run(_import(_qdq_model("sigmoid")), notes)
    assert any("kept gv = quantize(...) in float: no integer kernel for relax.sigmoid" in n for n in notes)
    assert any(n.startswith(f"{fold_qdq.NAME}: float ops left: dequantize") and "sigmoid" in n for n in notes)
    assert "relax.quantize" in {op.op for op in tvm_adapter.dataflow_ops(after).ops}


def test_float_model_is_left_unchanged(zoo_onnx):
    model = onnx.load(str(zoo_onnx("conv_stack")))
    before = tvm_adapter.import_onnx(model, {"input": (1, 3, 16, 16)})
    notes: list[str] = []
    after = fold_qdq.run(before, notes)
    tvm.ir.assert_structural_equal(after, before)
    assert notes == []


def test_float_io_of_a_qdq_model_becomes_int8():
    model, notes = integer_io(_qdq_model(float_io=True))
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.INT8]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.INT8]
    assert [n.op_type for n in model.graph.node][0] == "DequantizeLinear"
    assert notes[0].startswith("input x: int8, real value = 0.05 * (x - -3)")
    assert notes[1].startswith("output y: int8, real value = 0.1 * (y - -128)")
    onnx.checker.check_model(model)
    unchanged, none = integer_io(_qdq_model())
    assert none == [] and unchanged.SerializeToString() == _qdq_model().SerializeToString()


def _residual_model(skip_is_conv_input: bool) -> onnx.ModelProto:
    """xq -> conv1 -> Q(h) -> conv2 -> Q(c) -> add(c, skip) -> Q; skip is xq (a residual block) or h (conv2's input)."""
    rng = np.random.default_rng(1)
    inits = {"s": np.float32(0.05), "z": np.int8(-3), "sw": np.full(3, 0.01, np.float32), "zw": np.zeros(3, np.int8),
             "w1": rng.integers(-127, 128, (3, 3, 3, 3)).astype(np.int8),
             "w2": rng.integers(-127, 128, (3, 3, 1, 1)).astype(np.int8)}
    dq, q = "DequantizeLinear", "QuantizeLinear"
    skip = "hq" if skip_is_conv_input else "xq"
    nodes = [helper.make_node(dq, ["xq", "s", "z"], ["xf"]), helper.make_node(dq, ["w1", "sw", "zw"], ["w1f"], axis=0),
             helper.make_node("Conv", ["xf", "w1f"], ["h"], pads=[1, 1, 1, 1]), helper.make_node(q, ["h", "s", "z"], ["hq"]),
             helper.make_node(dq, ["hq", "s", "z"], ["hf"]), helper.make_node(dq, ["w2", "sw", "zw"], ["w2f"], axis=0),
             helper.make_node("Conv", ["hf", "w2f"], ["c"]), helper.make_node(q, ["c", "s", "z"], ["cq"]),
             helper.make_node(dq, ["cq", "s", "z"], ["cf"]), helper.make_node(dq, [skip, "s", "z"], ["skipf"]),
             helper.make_node("Add", ["cf", "skipf"], ["y"]), helper.make_node(q, ["y", "s", "z"], ["yq"])]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("xq", TensorProto.INT8, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("yq", TensorProto.INT8, [1, 3, 8, 8])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_residual_add_is_fused_into_the_conv_epilogue():
    folds, _ = fold_qdq.plan(tvm_adapter.dataflow_ops(_import(_residual_model(skip_is_conv_input=False))))
    conv1, fused = folds
    assert fused.op.residual is not None and [s.var for s in fused.sources] == [conv1.var, "xq"]


def test_residual_add_is_not_fused_when_the_skip_is_the_conv_input():
    """The kernel would get one buffer as two parameters, and in-place reuse of the skip would corrupt the conv."""
    folds, _ = fold_qdq.plan(tvm_adapter.dataflow_ops(_import(_residual_model(skip_is_conv_input=True))))
    assert [type(f.op).__name__ for f in folds] == ["QConv2d", "QConv2d", "QAdd"]
    assert all(f.op.residual is None for f in folds[:2])
