"""Print a plan readably: an ASCII picture of the arena over time, a legend and a one-line summary.

    step | arena 0 .. 96 B, one column = 2 B
       0 | AAAAAAAAAAAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBBBBBBBBBB..........
       1 | CCCCCCCCCCCCCCCCCCCCCCCCCBBBBBBBBBBBBBBBBBBBBBBBBB..........
    A  @  0  32 B  live [0, 0]  x
    ...
    arena 96 B, lower bound 96 B (ratio 1.000), greedy-by-size, optimal
"""

from collections.abc import Sequence
from string import ascii_letters, digits

from tvm_pipeline.planner.buffers import Buffer
from tvm_pipeline.planner.plan import Plan

_SYMBOLS = ascii_letters[26:] + ascii_letters[:26] + digits


def summary_line(plan: Plan) -> str:
    """One line: arena bytes, lower bound, their ratio, the kept algorithm, and whether it is optimal."""
    ratio = f"{plan.arena_bytes / plan.lower_bound_bytes:.3f}" if plan.lower_bound_bytes else "n/a"
    optimal = ", optimal" if plan.optimal else ""
    return (
        f"arena {plan.arena_bytes} B, lower bound {plan.lower_bound_bytes} B (ratio {ratio}), {plan.algorithm}{optimal}"
    )


def format_timeline(plan: Plan, buffers: Sequence[Buffer], width: int = 60) -> str:
    """One row per step showing which buffer holds each part of the arena, a legend, then `summary_line`."""
    arena = max(plan.arena_bytes, 1)
    lines = [f"step | arena 0 .. {plan.arena_bytes} B, one column = {arena / width:.3g} B"]
    symbols = {buffer.name: _SYMBOLS[i % len(_SYMBOLS)] for i, buffer in enumerate(buffers)}
    last_step = max((buffer.last for buffer in buffers), default=-1)
    for step in range(last_step + 1):
        row = ["."] * width
        for buffer in buffers:
            if buffer.first <= step <= buffer.last:
                start = plan.offsets[buffer.name] * width // arena
                end = max(start + 1, -(-(plan.offsets[buffer.name] + buffer.size) * width // arena))
                row[start:end] = symbols[buffer.name] * (end - start)
        lines.append(f"{step:4d} | {''.join(row)}")
    offset_width = len(str(plan.arena_bytes))
    size_width = len(str(max((buffer.size for buffer in buffers), default=0)))
    for buffer in buffers:
        lines.append(
            f"{symbols[buffer.name]}  @ {plan.offsets[buffer.name]:>{offset_width}}  {buffer.size:>{size_width}} B  "
            f"live [{buffer.first}, {buffer.last}]  {buffer.name}"
        )
    lines.append(summary_line(plan))
    return "\n".join(lines)
