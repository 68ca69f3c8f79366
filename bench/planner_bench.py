"""Benchmark the arena planner on real ONNX models: arena bytes per algorithm against the lower bound.

For every .onnx file (default: the MLPerf Tiny models in shared/models/mlperf-tiny), build the planner's
OpGraph straight from the ONNX graph (batch fixed to 1, tensor sizes from onnx.shape_inference, nodes
whose inputs are all constants folded away, elementwise and reshape ops allowed to run in place), search
the execution order, plan with each algorithm and print one table row per model.

    .venv/bin/python bench/planner_bench.py [MODEL.onnx ...] [--timeline]
"""

import argparse
import time
from pathlib import Path

import onnx
from onnx import helper, shape_inference

from tvm_pipeline.planner import ALGORITHMS, OpGraph, OpNode, best_order, format_timeline, liveness, plan_buffers
from tvm_pipeline.planner.buffers import Problem
from tvm_pipeline.planner.greedy import linear_offsets

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models" / "mlperf-tiny"
ALIGNMENT = 16
IN_PLACE_OPS = {"Relu", "Clip", "Sigmoid", "Tanh", "Add", "Sub", "Mul", "QuantizeLinear", "DequantizeLinear",
                "Reshape", "Flatten", "Squeeze", "Unsqueeze"}  # fmt: skip


def op_graph(path: Path) -> OpGraph:
    """The planner's view of an ONNX model: activation tensors, their bytes, and the nodes in file order."""
    model = onnx.load(path)
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


def bench(path: Path, show_timeline: bool) -> list[str]:
    """One table row for the model at `path` (and its timeline when asked)."""
    graph = op_graph(path)
    start = time.perf_counter()
    order = best_order(graph)
    buffers, _ = liveness(graph, order)
    plan = plan_buffers(buffers, ALIGNMENT)
    seconds = time.perf_counter() - start
    file_bound = plan_buffers(liveness(graph, range(len(graph.nodes)))[0], ALIGNMENT).lower_bound_bytes
    arenas = [plan_buffers(buffers, ALIGNMENT, name).arena_bytes for name in ALGORITHMS]
    problem = Problem.from_buffers(buffers, ALIGNMENT)
    if show_timeline:
        print(f"== {path.name}\n{format_timeline(plan, buffers)}\n")
    return [path.stem, str(len(graph.nodes)), str(len(buffers)), str(problem.arena(linear_offsets(problem))),
            str(file_bound), str(plan.lower_bound_bytes), *map(str, arenas), str(plan.arena_bytes),
            f"{plan.arena_bytes / plan.lower_bound_bytes:.3f}", plan.algorithm, f"{seconds:.2f}"]  # fmt: skip


def main() -> None:
    """Print the benchmark table for the models given (default: every .onnx under MODELS)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, help="ONNX files (default: the MLPerf Tiny models)")
    parser.add_argument("--timeline", action="store_true", help="print each model's arena timeline too")
    arguments = parser.parse_args()
    paths = arguments.models or sorted(MODELS.glob("*.onnx"))
    header = ["model", "nodes", "buffers", "no reuse", "LB file", "LB best", *ALGORITHMS, "auto", "auto/LB",
              "kept", "plan s"]  # fmt: skip
    rows = [header] + [bench(path, arguments.timeline) for path in paths]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for number, row in enumerate(rows):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
        if number == 0:
            print("  ".join("-" * width for width in widths))
    print(f"bytes, alignment {ALIGNMENT}; LB = lower bound (most bytes live at once) for the file's / the searched order;"
          " plan s = order search + auto placement")  # fmt: skip


if __name__ == "__main__":
    main()
