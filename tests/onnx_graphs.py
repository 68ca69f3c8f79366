"""Small float32 ONNX models for tests: a list of nodes, one input, one output, float32 weights."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save_model(path, nodes: list, input_shape: list[int], output_shape: list[int], weights: dict[str, np.ndarray],
               name: str = "model") -> None:
    """Write an opset-13 model reading `x` of `input_shape` and writing `y` of `output_shape`; `weights` are its
    initializers (stored as float32)."""
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
