"""Exact placement as a mixed-integer program (scipy.optimize.milp, HiGHS), seeded by a heuristic.

Model, in units of g = gcd of the aligned sizes (so all coefficients are small integers):
    minimize   A
    subject to x_i + s_i <= A                                  for every buffer i
               x_i + s_i <= x_j + M * z_ij                     for every conflicting pair i < j
               x_j + s_j <= x_i + M * (1 - z_ij)               (z_ij = 0: i below j; z_ij = 1: j below i)
               0 <= x_i,  lower bound <= A <= U,  z_ij binary,  M = U = the seed's arena - 1
Capping A one unit below the seed makes every feasible point a strict improvement: "infeasible" proves
the seed optimal. Mirroring a placement (x -> A - x - s) flips every z, so z of the first pair is fixed
at 0. The solver's offsets are turned back into exact aligned offsets by first fit in increasing
solver offset, which never places a buffer higher than the solver did (see greedy.py).
"""

import math
from dataclasses import dataclass
from functools import reduce

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from tvm_pipeline.planner.buffers import Problem
from tvm_pipeline.planner.greedy import first_fit

PAIRS_PER_SECOND = 300  # above this many conflicting pairs per second of time limit, the MILP is skipped


@dataclass(frozen=True)
class MilpOutcome:
    """What the MILP achieved against its seed."""

    offsets: list[int] | None  # a placement smaller than the seed, or None when it found none
    arena: int | None  # the arena the MILP established (its own, or the seed's it proved optimal); None if neither
    proven_optimal: bool  # the kept placement (these offsets, else the seed) is optimal
    note: str  # one line for the plan's notes


def improve_by_milp(problem: Problem, seed_arena: int, lower_bound: int, time_limit_s: float) -> MilpOutcome:
    """Search for a placement smaller than `seed_arena`; prove the seed optimal when there is none."""
    if seed_arena <= lower_bound:
        return MilpOutcome(None, None, True, "milp skipped: the heuristic reached the lower bound")
    if len(problem.pairs) > PAIRS_PER_SECOND * time_limit_s:
        return MilpOutcome(
            None, None, False, f"milp skipped: {len(problem.pairs)} conflicting pairs is too many for {time_limit_s:g} s"
        )
    unit = reduce(math.gcd, problem.sizes)
    cap = (seed_arena - unit) // unit
    result = _solve(problem, unit, cap, -(-lower_bound // unit), time_limit_s)
    if result.x is None:
        if result.status == 2:
            return MilpOutcome(None, seed_arena, True, "milp proved the heuristic optimal")
        return MilpOutcome(None, None, False, f"milp found nothing better in {time_limit_s:g} s; kept the heuristic")
    solver_offsets = result.x[: len(problem.sizes)]
    order = sorted(range(len(problem.sizes)), key=lambda i: (solver_offsets[i], i))
    offsets = first_fit(problem, order)
    proven = result.status == 0
    note = "milp proved its placement optimal" if proven else f"milp improved on the heuristic in {time_limit_s:g} s"
    return MilpOutcome(offsets, problem.arena(offsets), proven, note)


def _solve(problem: Problem, unit: int, cap: int, low: int, time_limit_s: float):
    """Solve the model above with A <= cap (in units); variables are x_0..x_{n-1}, A, z_0..z_{p-1}."""
    n, pairs = len(problem.sizes), problem.pairs
    sizes = np.array(problem.sizes) // unit
    arena_var = n
    rows, cols, values, upper = [], [], [], []

    def add_row(terms: list[tuple[int, float]], bound: float) -> None:
        for col, value in terms:
            rows.append(len(upper))
            cols.append(col)
            values.append(value)
        upper.append(bound)

    for i in range(n):
        add_row([(i, 1.0), (arena_var, -1.0)], -sizes[i])
    for k, (i, j) in enumerate(pairs):
        z = n + 1 + k
        add_row([(i, 1.0), (j, -1.0), (z, -cap)], -sizes[i])
        add_row([(j, 1.0), (i, -1.0), (z, cap)], cap - sizes[j])
    variables = n + 1 + len(pairs)
    matrix = coo_array((values, (rows, cols)), shape=(len(upper), variables)).tocsr()
    lower_bounds = np.zeros(variables)
    upper_bounds = np.ones(variables)
    upper_bounds[:n] = np.maximum(cap - sizes, 0)
    lower_bounds[arena_var], upper_bounds[arena_var] = min(low, cap), cap
    if pairs:
        upper_bounds[n + 1] = 0  # mirror symmetry
    integrality = np.zeros(variables)
    integrality[n + 1 :] = 1
    objective = np.zeros(variables)
    objective[arena_var] = 1.0
    return milp(
        objective,
        constraints=LinearConstraint(matrix, -np.inf, np.array(upper, dtype=float)),
        bounds=Bounds(lower_bounds, upper_bounds),
        integrality=integrality,
        options={"time_limit": time_limit_s, "disp": False},
    )
