"""Exact placement as a mixed-integer program (scipy.optimize.milp, HiGHS), seeded by a heuristic.

Model, in units of g = gcd of the aligned sizes (so all coefficients are small integers):
    minimize   A
    subject to x_i + s_i <= A                                  for every buffer i
               x_i + s_i <= x_j + M * z_ij                     for every conflicting pair i < j
               x_j + s_j <= x_i + M * (1 - z_ij)               (z_ij = 0: i below j; z_ij = 1: j below i)
               0 <= x_i,  lower bound <= A <= U,  z_ij binary,  M = U = the seed's arena - 1
and, for every maximal set C of buffers live at one step and every i in C (stacking cuts, which make
the LP relaxation far tighter than big-M alone: the members of C below i are disjoint, and so are those
above it):
               x_i >= sum of s_j over j in C below i,    x_i + s_i + sum of s_j over j in C above i <= A
Capping A one unit below the seed makes every feasible point a strict improvement: "infeasible" proves
the seed optimal. Mirroring a placement (x -> A - x - s) flips every z, so z of the first pair is fixed
at 0. The solver's offsets are turned back into exact aligned offsets by first fit in increasing
solver offset, which never places a buffer higher than the solver did (see greedy.py).
"""

import math
from dataclasses import dataclass
from functools import reduce

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult, milp
from scipy.sparse import coo_array

from tvm_pipeline.planner.buffers import Problem
from tvm_pipeline.planner.greedy import first_fit

PAIRS_PER_SECOND = 100  # above this many conflicting pairs per second of time limit, the MILP is skipped


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


def _solve(problem: Problem, unit: int, cap: int, low: int, time_limit_s: float) -> OptimizeResult:
    """Solve the model above with A <= cap (in units); variables are x_0..x_{n-1}, A, z_0..z_{p-1}."""
    n, pairs = len(problem.sizes), problem.pairs
    variables = n + 1 + len(pairs)
    lower_bounds, upper_bounds = np.zeros(variables), np.ones(variables)
    upper_bounds[:n] = np.maximum(cap - np.array(problem.sizes) // unit, 0)
    lower_bounds[n], upper_bounds[n] = min(low, cap), cap
    if pairs:
        upper_bounds[n + 1] = 0  # mirror symmetry
    integrality = np.zeros(variables)
    integrality[n + 1 :] = 1
    objective = np.zeros(variables)
    objective[n] = 1.0
    return milp(
        objective,
        constraints=_constraints(problem, unit, cap),
        bounds=Bounds(lower_bounds, upper_bounds),
        integrality=integrality,
        options={"time_limit": time_limit_s, "disp": False},
    )


def _constraints(problem: Problem, unit: int, cap: int) -> LinearConstraint:
    """The model's rows, each `sum of terms <= bound`, over x_0..x_{n-1}, A (column n), z_0..z_{p-1}."""
    n = len(problem.sizes)
    sizes = [size // unit for size in problem.sizes]
    pair_var = {pair: n + 1 + k for k, pair in enumerate(problem.pairs)}
    rows, cols, values, upper = [], [], [], []

    def add_row(terms: list[tuple[int, int]], bound: int) -> None:
        for col, value in terms:
            rows.append(len(upper))
            cols.append(col)
            values.append(value)
        upper.append(bound)

    for i in range(n):
        add_row([(i, 1), (n, -1)], -sizes[i])
    for (i, j), z in pair_var.items():
        add_row([(i, 1), (j, -1), (z, -cap)], -sizes[i])
        add_row([(j, 1), (i, -1), (z, cap)], cap - sizes[j])
    for clique in problem.cliques:
        for i in clique:
            # "j below i" is 1 - z for a pair (j, i) and z for a pair (i, j)
            earlier = [(pair_var[j, i], sizes[j]) for j in clique if j < i]
            later = [(pair_var[i, j], sizes[j]) for j in clique if j > i]
            earlier_bytes, later_bytes = sum(s for _, s in earlier), sum(s for _, s in later)
            below = [(z, -s) for z, s in earlier] + later  # sum over j below i = earlier_bytes + these terms
            add_row([(i, -1), *below], -earlier_bytes)
            above = [(z, -s) for z, s in below]  # sum over j above i = later_bytes + these terms
            add_row([(i, 1), (n, -1), *above], -sizes[i] - later_bytes)
    matrix = coo_array((np.array(values, dtype=float), (rows, cols)), shape=(len(upper), n + 1 + len(pair_var)))
    return LinearConstraint(matrix.tocsr(), -np.inf, np.array(upper, dtype=float))
