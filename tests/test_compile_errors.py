"""What a user sees when the model, the input or the board is wrong: one clear message, no partial output."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvm_pipeline.cli import main as tvmp
from tvm_pipeline.compiler import CompileOptions, compile_model
from tvm_pipeline.errors import UserError


def _conv_model(path, channels: int, size: int, extra_node=None, out_shape=None) -> None:
    w = numpy_helper.from_array(np.ones((channels, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv0", pads=[1, 1, 1, 1])]
    out = "y"
    out_shape = out_shape or ["batch", channels, size, size]
    if extra_node is not None:
        nodes.append(extra_node)
        out = extra_node.output[0]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_unsupported_op_is_named_with_its_node(tmp_path):
    model = tmp_path / "m.onnx"
    _conv_model(model, 4, 8, helper.make_node("Det", ["y"], ["z"], name="weird_node"), out_shape=["batch", 4])
    with pytest.raises(UserError, match=r"Det \(node 'weird_node', index 1\)"):
        compile_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_file_is_reported(tmp_path):
    model = tmp_path / "m.onnx"
    _conv_model(model, 4, 8)
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="m.onnx"):
        compile_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(UserError, match="not found"):
        compile_model(tmp_path / "nope.onnx", tmp_path / "out")


def test_model_too_big_for_the_board_says_bytes_needed_and_available(tmp_path):
    model = tmp_path / "big.onnx"
    _conv_model(model, 64, 64)  # a 64x64x64 float map is 1 MiB
    with pytest.raises(UserError, match=r"needs [\d,]+ B .* has 327,680 B"):
        compile_model(model, tmp_path / "out", CompileOptions(board="stm32f746"))
    assert not (tmp_path / "out").exists()


def test_failed_compile_keeps_the_previous_output(tmp_path):
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    _conv_model(good, 4, 8)
    bad.write_bytes(b"not a model")
    compile_model(good, tmp_path / "out")
    before = (tmp_path / "out" / "model.c").read_bytes()
    with pytest.raises(UserError):
        compile_model(bad, tmp_path / "out")
    assert (tmp_path / "out" / "model.c").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_dynamic_batch_is_fixed_and_other_dynamic_dims_are_refused(tmp_path):
    model = tmp_path / "m.onnx"
    _conv_model(model, 4, 8)
    compile_model(model, tmp_path / "out")  # symbolic "batch" becomes 1
    proto = onnx.load(str(model))
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    onnx.save(proto, str(model))
    with pytest.raises(UserError, match=r"dynamic dimension 2 .*--input-shape x:1,3,1,8"):
        compile_model(model, tmp_path / "out2")
    compile_model(model, tmp_path / "out3", CompileOptions(input_shapes={"x": (1, 3, 8, 8)}))


def test_cli_prints_a_message_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    assert tvmp(["compile", str(bad), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "tvmp compile: error:" in err and "Traceback" not in err


def test_unknown_board_lists_the_boards(tmp_path):
    model = tmp_path / "m.onnx"
    _conv_model(model, 4, 8)
    with pytest.raises(UserError, match="stm32f746"):
        compile_model(model, tmp_path / "out", CompileOptions(board="esp32"))
