"""Greedy placements: visit buffers in a fixed order, put each at the lowest offset that is free.

"Free" means: no already-placed buffer whose live range intersects this one's occupies any of its
bytes (the first-fit rule of TFLM's GreedyMemoryPlanner and of TVM USMP's greedy algorithms). The two
visiting orders are USMP's:
    greedy-by-size       largest first; ties: longer-lived first, then input order
    greedy-by-conflicts  most conflicting neighbours first; ties: larger first, then input order
Beside them, `linear_offsets` is the trivial baseline that gives every buffer its own bytes.

First fit in a good order is complete: placing the buffers in increasing order of any valid
placement's offsets gives every buffer an offset no higher than it had there, so some visiting order
reaches the optimum (hill-climbing and the MILP rely on this).
"""

from collections.abc import Sequence

from tvm_pipeline.planner.buffers import Problem


def first_fit(problem: Problem, order: Sequence[int], placed: Sequence[int] | None = None) -> list[int]:
    """Offsets from placing the buffers in `order`, each at the lowest offset free of its neighbours.

    `placed` holds offsets already fixed (-1 for a buffer not yet placed); by default none are.
    """
    sizes, neighbours = problem.sizes, problem.neighbours
    offsets = list(placed) if placed is not None else [-1] * len(sizes)
    for buffer in order:
        size = sizes[buffer]
        taken = sorted((offsets[n], offsets[n] + sizes[n]) for n in neighbours[buffer] if offsets[n] >= 0)
        at = 0
        for low, high in taken:
            if low >= at + size:
                break
            at = max(at, high)
        offsets[buffer] = at
    return offsets


def size_order(problem: Problem) -> list[int]:
    """Buffer indices, largest first (ties: longer-lived, then lower index)."""
    return sorted(range(len(problem.sizes)), key=lambda i: (-problem.sizes[i], -problem.lifetimes[i], i))


def conflict_order(problem: Problem) -> list[int]:
    """Buffer indices, most conflicts first (ties: larger, then lower index)."""
    return sorted(range(len(problem.sizes)), key=lambda i: (-len(problem.neighbours[i]), -problem.sizes[i], i))


def greedy_by_size(problem: Problem) -> list[int]:
    """USMP's greedy_by_size: first fit, largest buffer first."""
    return first_fit(problem, size_order(problem))


def greedy_by_conflicts(problem: Problem) -> list[int]:
    """USMP's greedy_by_conflicts: first fit, most-conflicting buffer first."""
    return first_fit(problem, conflict_order(problem))


def linear_offsets(problem: Problem) -> list[int]:
    """The no-reuse baseline: buffers laid end to end in input order."""
    offsets, at = [], 0
    for size in problem.sizes:
        offsets.append(at)
        at += size
    return offsets
