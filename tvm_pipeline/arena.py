"""Program -> arena layout: build the planner's op graph, choose the execution order, place every buffer.

The planner itself (tvm_pipeline/planner) is pure and knows nothing of programs; this module translates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tvm_pipeline.lowering.program import Program
from tvm_pipeline.planner import (Buffer, OpGraph, OpNode, Plan, best_order, liveness, plan_buffers,
                                  verify_tensors)


@dataclass(frozen=True)
class ArenaLayout:
    """Where each activation tensor and each step's scratch lives in the arena, and the call order."""

    arena_bytes: int
    tensor_offsets: dict[str, int]  # activation tensor -> byte offset
    scratch_offsets: dict[str, int]  # step name -> byte offset of its workspace
    order: list[int]  # indices into Program.steps


@dataclass(frozen=True)
class ArenaPlan:
    """The layout the C emitter needs plus everything a report shows."""

    layout: ArenaLayout
    plan: Plan
    buffers: list[Buffer]
    storage_of: dict[str, str]
    graph: OpGraph

    def to_json(self, program: Program) -> dict[str, Any]:
        """The content of memory.json."""
        order_names = [self.graph.nodes[i].name for i in self.layout.order]
        tensors_of: dict[str, list[str]] = {}
        for tensor, storage in self.storage_of.items():
            tensors_of.setdefault(storage, []).append(tensor)
        buffers = []
        for b in sorted(self.buffers, key=lambda b: (b.first, self.plan.offsets[b.name])):
            kind = "scratch" if b.name.endswith(".scratch") else "activation"
            if program.input in tensors_of.get(b.name, []):
                kind = "input"
            elif program.output in tensors_of.get(b.name, []):
                kind = "output"
            buffers.append({
                "name": b.name, "kind": kind, "size": b.size, "offset": self.plan.offsets[b.name],
                "first": b.first, "last": b.last, "tensors": sorted(tensors_of.get(b.name, [b.name])),
            })
        return {
            "arena_bytes": self.layout.arena_bytes,
            "lower_bound_bytes": self.plan.lower_bound_bytes,
            "planner": self.plan.algorithm,
            "planner_candidates": dict(self.plan.candidates),
            "optimal": self.plan.optimal,
            "planner_notes": list(self.plan.notes),
            "order": order_names,
            "buffers": buffers,
        }


def op_graph(program: Program) -> OpGraph:
    """The planner's view of a program: activation tensors read and written, scratch bytes, in-place pairs."""
    nodes = []
    for step in program.steps:
        if step.window is not None:
            nodes.append(OpNode(step.name, (), (step.output,)))
            continue
        kernel = program.kernels[step.kernel]
        inplace = tuple((step.args[i], step.output) for i in kernel.inplace_params if step.args[i] in step.inputs)
        nodes.append(OpNode(step.name, step.inputs, (step.output,), kernel.workspace_bytes, inplace))
    sizes = {name: t.nbytes for name, t in program.tensors.items()}
    graph_inputs = () if program.input_streamed else (program.input,)  # a streamed image is never in the arena
    return OpGraph(tuple(nodes), sizes, graph_inputs, (program.output,))


def plan_arena(program: Program, alignment: int, algorithm: str = "auto", reorder: bool = True) -> ArenaPlan:
    """Choose the execution order (peak-minimizing when `reorder`) and place every buffer in one arena."""
    graph = op_graph(program)
    order = best_order(graph) if reorder else list(range(len(graph.nodes)))
    buffers, storage_of = liveness(graph, order)
    plan = plan_buffers(buffers, alignment=alignment, algorithm=algorithm)
    tensor_offsets = {tensor: plan.offsets[storage] for tensor, storage in storage_of.items()}
    verify_tensors(graph, order, tensor_offsets)  # the in-place merges, checked against the graph itself
    scratch = {n.name: plan.offsets[f"{n.name}.scratch"] for n in graph.nodes if n.scratch}
    layout = ArenaLayout(plan.arena_bytes, tensor_offsets, scratch, list(order))
    return ArenaPlan(layout, plan, buffers, storage_of, graph)
