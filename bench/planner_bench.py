"""Benchmark the arena planner on real ONNX models: arena bytes per algorithm against the lower bound.

For every .onnx file (default: the MLPerf Tiny models in shared/models/mlperf-tiny, plus a synthetic
MobileNetV2 1.0 at 224x224, the largest model the planner targets), build the planner's OpGraph from the
ONNX graph (batch fixed to 1, tensor sizes from onnx.shape_inference, nodes
whose inputs are all constants folded away, elementwise and reshape ops allowed to run in place), search
the execution order, plan with each algorithm and print one table row per model.

    .venv/bin/python bench/planner_bench.py [MODEL.onnx ...] [--timeline]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from tvm_pipeline.planner import ALGORITHMS, OpGraph, OpNode, best_order, format_timeline, liveness, plan_buffers
from tvm_pipeline.planner.buffers import Problem
from tvm_pipeline.planner.greedy import linear_offsets
from tvm_pipeline.data.mlperf import models_dir

MODELS = models_dir()
ALIGNMENT = 16
IN_PLACE_OPS = {"Relu", "Clip", "Sigmoid", "Tanh", "Add", "Sub", "Mul", "QuantizeLinear", "DequantizeLinear",
                "Reshape", "Flatten", "Squeeze", "Unsqueeze"}  # fmt: skip
MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1))  # (expansion, channels, repeats, first stride)  # fmt: skip


def op_graph(model: onnx.ModelProto) -> OpGraph:
    """The planner's view of an ONNX model: activation tensors, their bytes, and the nodes in file order."""
    for value in list(model.graph.input) + list(model.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_value = 1
    graph = shape_inference.infer_shapes(model, strict_mode=True).graph
    constants = {tensor.name for tensor in graph.initializer} | {""}
    values = {value.name: value for value in list(graph.value_info) + list(graph.input) + list(graph.output)}
    nodes, sizes = [], {}
    for index, node in enumerate(graph.node):
        if all(name in constants for name in node.input):
            constants.update(node.output)
            continue
        inputs = tuple(name for name in node.input if name not in constants)
        for name in inputs + tuple(node.output):
            sizes[name] = _bytes(values[name])
        pairs = ((inputs[0], node.output[0]),) if node.op_type in IN_PLACE_OPS else ()
        nodes.append(OpNode(node.name or f"{node.op_type}_{index}", inputs, tuple(node.output), inplace=pairs))
    graph_inputs = tuple(value.name for value in graph.input if value.name not in constants)
    return OpGraph(tuple(nodes), sizes, graph_inputs, tuple(value.name for value in graph.output))


def _bytes(value: onnx.ValueInfoProto) -> int:
    """Bytes of a tensor with a fully known static shape."""
    tensor_type = value.type.tensor_type
    count = 1
    for dim in tensor_type.shape.dim:
        count *= dim.dim_value
    return count * helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).itemsize


def mobilenet_v2(resolution: int = 224, classes: int = 1000) -> onnx.ModelProto:
    """A MobileNetV2 1.0 with zero weights (NCHW float32): only its shapes matter to the planner."""
    nodes: list[onnx.NodeProto] = []
    weights = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("zero", 0.0), ("six", 6.0))]

    def conv(x: str, cin: int, cout: int, kernel: int, stride: int, group: int = 1, relu: bool = True) -> str:
        name = f"conv{len(weights)}"
        weights.append(numpy_helper.from_array(np.zeros((cout, cin // group, kernel, kernel), np.float32), name + "_w"))
        nodes.append(helper.make_node("Conv", [x, name + "_w"], [name], kernel_shape=[kernel] * 2,
                                      strides=[stride] * 2, pads=[kernel // 2] * 4, group=group))  # fmt: skip
        if relu:
            nodes.append(helper.make_node("Clip", [name, "zero", "six"], [name + "_relu6"]))
        return name + "_relu6" if relu else name

    x, cin = conv("input", 3, 32, 3, 2), 32
    for expansion, channels, repeats, first_stride in MOBILENET_V2_BLOCKS:
        for repeat in range(repeats):
            stride, hidden = first_stride if repeat == 0 else 1, cin * expansion
            h = conv(x, cin, hidden, 1, 1) if expansion != 1 else x
            h = conv(conv(h, hidden, hidden, 3, stride, group=hidden), hidden, channels, 1, 1, relu=False)
            if stride == 1 and cin == channels:
                nodes.append(helper.make_node("Add", [x, h], [h + "_add"]))
                h += "_add"
            x, cin = h, channels
    weights.append(numpy_helper.from_array(np.zeros((1280, classes), np.float32), "fc_w"))
    nodes += [helper.make_node("GlobalAveragePool", [conv(x, cin, 1280, 1, 1)], ["pool"]),
              helper.make_node("Flatten", ["pool"], ["flat"]), helper.make_node("MatMul", ["flat", "fc_w"], ["logits"])]  # fmt: skip
    graph = helper.make_graph(nodes, "mobilenet_v2", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT,
                              [1, 3, resolution, resolution])], [helper.make_tensor_value_info("logits",
                              onnx.TensorProto.FLOAT, [1, classes])], weights)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def bench(name: str, model: onnx.ModelProto, show_timeline: bool) -> list[str]:
    """One table row for `model` (and its timeline when asked)."""
    graph = op_graph(model)
    start = time.perf_counter()
    order = best_order(graph)
    buffers, _ = liveness(graph, order)
    plan = plan_buffers(buffers, ALIGNMENT)
    seconds = time.perf_counter() - start
    file_bound = plan_buffers(liveness(graph, range(len(graph.nodes)))[0], ALIGNMENT).lower_bound_bytes
    arenas = [plan_buffers(buffers, ALIGNMENT, name).arena_bytes for name in ALGORITHMS]
    problem = Problem.from_buffers(buffers, ALIGNMENT)
    if show_timeline:
        print(f"== {name}\n{format_timeline(plan, buffers)}\n")
    return [name, str(len(graph.nodes)), str(len(buffers)), str(problem.arena(linear_offsets(problem))),
            str(file_bound), str(plan.lower_bound_bytes), *map(str, arenas), str(plan.arena_bytes),
            f"{plan.arena_bytes / plan.lower_bound_bytes:.3f}", plan.algorithm, f"{seconds:.2f}"]  # fmt: skip


def main() -> None:
    """Print the benchmark table for the models given (default: every .onnx under MODELS)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, help="ONNX files (default: the MLPerf Tiny models)")
    parser.add_argument("--timeline", action="store_true", help="print each model's arena timeline too")
    arguments = parser.parse_args()
    models = [(path.stem, onnx.load(path)) for path in arguments.models or sorted(MODELS.glob("*.onnx"))]
    if not arguments.models:
        models.append(("mobilenet_v2_224 (synthetic)", mobilenet_v2()))
    header = ["model", "nodes", "buffers", "no reuse", "LB file", "LB best", *ALGORITHMS, "auto", "auto/LB",
              "kept", "plan s"]  # fmt: skip
    rows = [header] + [bench(name, model, arguments.timeline) for name, model in models]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for number, row in enumerate(rows):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
        if number == 0:
            print("  ".join("-" * width for width in widths))
    print(f"bytes, alignment {ALIGNMENT}; LB = lower bound (most bytes live at once) for the file's / the searched order;"
          " milp = seeded by the best heuristic, skipped when that reaches LB; plan s = order search + auto placement")  # fmt: skip


if __name__ == "__main__":
    main()
