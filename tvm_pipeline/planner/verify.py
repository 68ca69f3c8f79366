"""verify_plan: check a plan's invariants; run on every plan, not only in tests.

A plan is valid when every buffer has exactly one offset, each offset is a non-negative multiple of
the alignment, each aligned buffer fits below `arena_bytes`, the arena is at least the lower bound,
and no two buffers whose live ranges intersect share a byte (lifetime convention: buffers.py).
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tvm_pipeline.errors import InternalError
from tvm_pipeline.planner.buffers import Buffer, align_up, conflict_pairs

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
