"""verify_plan, verify_tensors: check a plan's invariants; run on every plan, not only in tests.

A plan is valid when every buffer has exactly one offset, each offset is a non-negative multiple of
the alignment, each aligned buffer fits below `arena_bytes`, the arena is at least the lower bound,
and no two buffers whose live ranges intersect share a byte (lifetime convention: buffers.py).

verify_tensors checks the same per activation tensor, from the graph's own live ranges, so it also checks the
in-place merges: two tensors live at one step may share bytes only when one is an in-place output that starts at
the offset of an input of its node that the node may overwrite, that dies there, and that is no smaller.
"""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from tvm_pipeline.errors import InternalError
from tvm_pipeline.planner.buffers import Buffer, align_up, conflict_pairs
from tvm_pipeline.planner.graph import OpGraph, live_ranges

if TYPE_CHECKING:
    from tvm_pipeline.planner.plan import Plan


def verify_plan(plan: "Plan", buffers: Sequence[Buffer], alignment: int) -> None:
    """Raise InternalError describing the first broken invariant of `plan` for `buffers`."""
    names = {buffer.name for buffer in buffers}
    if set(plan.offsets) != names:
        missing, extra = sorted(names - set(plan.offsets)), sorted(set(plan.offsets) - names)
        raise InternalError(f"plan offsets do not match the buffers: missing {missing}, unknown {extra}")
    if plan.arena_bytes < plan.lower_bound_bytes:
        raise InternalError(f"arena {plan.arena_bytes} B is below the lower bound {plan.lower_bound_bytes} B")
    for buffer in buffers:
        offset = plan.offsets[buffer.name]
        if offset < 0 or offset % alignment:
            raise InternalError(f"buffer {buffer.name} at offset {offset} is not {alignment}-byte aligned")
        if offset + align_up(buffer.size, alignment) > plan.arena_bytes:
            raise InternalError(
                f"buffer {buffer.name} [{offset}, {offset + buffer.size}) ends past the arena ({plan.arena_bytes} B)"
            )
    for i, j in conflict_pairs(buffers):
        a, b = buffers[i], buffers[j]
        start_a, start_b = plan.offsets[a.name], plan.offsets[b.name]
        if start_a < start_b + b.size and start_b < start_a + a.size:
            raise InternalError(
                f"buffers {a.name} and {b.name} overlap: {a.name} at [{start_a}, {start_a + a.size}) "
                f"live [{a.first}, {a.last}], {b.name} at [{start_b}, {start_b + b.size}) live [{b.first}, {b.last}]"
            )


def verify_tensors(graph: OpGraph, order: Sequence[int], offsets: Mapping[str, int]) -> None:
    """Raise InternalError unless no two activation tensors live at one step share a byte, in-place pairs aside.

    `offsets`: arena offset of every activation tensor (the layout model_run uses).
    """
    first, last = live_ranges(graph, order)
    if set(offsets) != set(first):
        raise InternalError(f"tensor offsets do not match the graph: {sorted(set(first) ^ set(offsets))}")
    tensors = [Buffer(t, graph.sizes[t], first[t], last[t]) for t in first]
    allowed = {(source, target, step) for step, index in enumerate(order)
               for source, target in graph.nodes[index].inplace}
    for i, j in conflict_pairs(tensors):
        a, b = sorted((tensors[i], tensors[j]), key=lambda t: (t.first, t.name))  # a is written first
        if a.first == b.first and (b.name, a.name, a.first) in allowed:
            a, b = b, a  # both written at step 0: a model input and the in-place output of the first step
        start_a, start_b = offsets[a.name], offsets[b.name]
        if not (start_a < start_b + b.size and start_b < start_a + a.size):
            continue
        in_place = (a.name, b.name, b.first) in allowed and a.last == b.first and a.name not in graph.graph_outputs
        if not (in_place and start_a == start_b and b.size <= a.size):
            raise InternalError(
                f"tensors {a.name} and {b.name} overlap: {a.name} at [{start_a}, {start_a + a.size}) live [{a.first}, "
                f"{a.last}], {b.name} at [{start_b}, {start_b + b.size}) live [{b.first}, {b.last}], and {b.name} is "
                f"not an in-place output over {a.name} dying at step {b.first}"
            )
