"""plan_buffers: place every buffer in one static arena, keep the smallest placement, verify it.

Algorithms, by name (lifetime convention: buffers.py):
    greedy-by-size, greedy-by-conflicts   first fit in USMP's two visiting orders (greedy.py)
    hill-climb                            local search over the visiting order (hill_climb.py)
    milp                                  exact MILP seeded by the best heuristic (milp.py)
"auto" runs all four and keeps the smallest arena; "milp" runs the three heuristics first to seed it.
Every plan is checked by verify_plan before it is returned.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tvm_pipeline.planner.buffers import Buffer, Problem, lower_bound
from tvm_pipeline.planner.greedy import greedy_by_conflicts, greedy_by_size
from tvm_pipeline.planner.hill_climb import hill_climb
from tvm_pipeline.planner.milp import improve_by_milp
from tvm_pipeline.planner.verify import verify_plan

ALGORITHMS = ("greedy-by-size", "greedy-by-conflicts", "hill-climb", "milp")

_HEURISTICS: dict[str, Callable[[Problem, int], list[int]]] = {
    "greedy-by-size": lambda problem, bound: greedy_by_size(problem),
    "greedy-by-conflicts": lambda problem, bound: greedy_by_conflicts(problem),
    "hill-climb": hill_climb,
}


@dataclass(frozen=True)
class Plan:
    """Arena offsets for every buffer, and how they were found."""

    offsets: Mapping[str, int]  # storage name -> byte offset
    arena_bytes: int
    lower_bound_bytes: int
    algorithm: str  # the algorithm whose placement was kept
    candidates: Mapping[str, int]  # arena bytes per algorithm that produced a placement
    optimal: bool = False  # no smaller arena exists for these buffers (lower bound reached, or MILP proof)
    notes: tuple[str, ...] = field(default=())  # what the MILP did or why it was skipped


def plan_buffers(
    buffers: Sequence[Buffer], alignment: int = 16, algorithm: str = "auto", milp_time_limit_s: float = 5.0
) -> Plan:
    """Place `buffers` in one arena with `algorithm` (a name in ALGORITHMS, or "auto"); the plan is verified."""
    if algorithm != "auto" and algorithm not in ALGORITHMS:
        raise ValueError(f"unknown planner algorithm {algorithm!r}; choose one of: auto, {', '.join(ALGORITHMS)}")
    if alignment <= 0 or milp_time_limit_s <= 0:
        raise ValueError(f"alignment ({alignment}) and milp_time_limit_s ({milp_time_limit_s}) must be positive")
    problem = Problem.from_buffers(buffers, alignment)
    bound = lower_bound(buffers, alignment)
    names = [algorithm] if algorithm in _HEURISTICS else list(_HEURISTICS)
    placements = {name: _HEURISTICS[name](problem, bound) for name in names}
    candidates = {name: problem.arena(offsets) for name, offsets in placements.items()}
    kept = min(names, key=lambda name: candidates[name])  # ties keep the earlier name
    offsets = placements[kept]
    optimal = candidates[kept] <= bound
    notes: tuple[str, ...] = ()
    if algorithm in ("auto", "milp"):
        outcome = improve_by_milp(problem, candidates[kept], bound, milp_time_limit_s)
        notes, optimal = (outcome.note,), outcome.proven_optimal
        if outcome.arena is not None:
            candidates["milp"] = outcome.arena
        if outcome.offsets is not None:
            kept, offsets = "milp", outcome.offsets
    plan = Plan(
        offsets={buffer.name: offset for buffer, offset in zip(buffers, offsets)},
        arena_bytes=problem.arena(offsets),
        lower_bound_bytes=bound,
        algorithm=kept,
        candidates=candidates,
        optimal=optimal,
        notes=notes,
    )
    verify_plan(plan, buffers, alignment)
    return plan
