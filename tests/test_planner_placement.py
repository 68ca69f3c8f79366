"""Arena placement: invariants on random buffer sets, known optima, verification, the timeline."""

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_pipeline.errors import InternalError
from tvm_pipeline.planner import ALGORITHMS, Buffer, Plan, format_timeline, lower_bound, plan_buffers, verify_plan
from tvm_pipeline.planner.buffers import Problem, align_up
from tvm_pipeline.planner.greedy import first_fit, linear_offsets
from tvm_pipeline.planner.milp import improve_by_milp

HEURISTICS = ALGORITHMS[:3]


@st.composite
def buffer_sets(draw, max_buffers: int = 24, max_size: int = 5000, steps: int = 20) -> list[Buffer]:
    """Random buffers with random sizes and live ranges."""
    count = draw(st.integers(0, max_buffers))
    buffers = []
    for index in range(count):
        first = draw(st.integers(0, steps))
        last = draw(st.integers(first, min(steps, first + draw(st.integers(0, steps)))))
        buffers.append(Buffer(f"b{index}", draw(st.integers(1, max_size)), first, last))
    return buffers


@st.composite
def tilings(draw, width: int = 64, steps: int = 8, depth: int = 4) -> list[Buffer]:
    """Buffers cut from a width x steps rectangle by random guillotine cuts: every step uses all `width` bytes."""
    pieces, cuts = [(0, width, 0, steps - 1)], draw(st.integers(1, 2**depth))
    for _ in range(cuts):
        low, high, first, last = pieces.pop(draw(st.integers(0, len(pieces) - 1)))
        if draw(st.booleans()) and high - low > 1:
            cut = draw(st.integers(low + 1, high - 1))
            pieces += [(low, cut, first, last), (cut, high, first, last)]
        elif last > first:
            cut = draw(st.integers(first, last - 1))
            pieces += [(low, high, first, cut), (low, high, cut + 1, last)]
        else:
            pieces.append((low, high, first, last))
    return [Buffer(f"t{i}", high - low, first, last) for i, (low, high, first, last) in enumerate(pieces)]


def optimum_by_brute_force(buffers: list[Buffer]) -> int:
    """Least arena over every first-fit visiting order (some order reaches the optimum; see greedy.py)."""
    problem = Problem.from_buffers(buffers, 1)
    return min(problem.arena(first_fit(problem, order)) for order in itertools.permutations(range(len(buffers))))


@settings(max_examples=150, deadline=None)
@given(buffer_sets(), st.sampled_from([1, 4, 16]))
def test_every_algorithm_gives_a_valid_plan_no_smaller_than_the_bound(buffers, alignment):
    arenas = {}
    for algorithm in (*ALGORITHMS, "auto"):
        plan = plan_buffers(buffers, alignment, algorithm, milp_time_limit_s=1.0)
        verify_plan(plan, buffers, alignment)  # plan_buffers verifies too; this also checks the test's view
        assert all(offset % alignment == 0 for offset in plan.offsets.values())
        assert plan.arena_bytes >= plan.lower_bound_bytes == lower_bound(buffers, alignment)
        arenas[algorithm] = plan.arena_bytes
    assert arenas["milp"] <= min(arenas[name] for name in HEURISTICS)
    assert arenas["auto"] == min(arenas.values())


@settings(max_examples=60, deadline=None)
@given(buffer_sets(max_buffers=6, max_size=12, steps=5))
def test_milp_finds_the_brute_force_optimum(buffers):
    problem = Problem.from_buffers(buffers, 1)
    seed = problem.arena(linear_offsets(problem))
    outcome = improve_by_milp(problem, seed, lower_bound(buffers, 1), time_limit_s=5.0)
    assert (outcome.arena if outcome.offsets is not None else seed) == optimum_by_brute_force(buffers)
    assert plan_buffers(buffers, 1, "milp").arena_bytes == optimum_by_brute_force(buffers)


@settings(max_examples=40, deadline=None)
@given(tilings())
def test_milp_packs_a_perfect_tiling(buffers):
    problem = Problem.from_buffers(buffers, 1)
    assert lower_bound(buffers, 1) == 64
    seed = problem.arena(linear_offsets(problem))
    outcome = improve_by_milp(problem, seed, 64, time_limit_s=5.0)
    assert outcome.proven_optimal and (outcome.arena if outcome.offsets is not None else seed) == 64


# Four buffers whose optimum (3 bytes, the lower bound) both greedy orders miss (they need 4):
#   step 0: D(2) C(1)   step 1: B(1) C(1)   step 2: B(1) C(1)   step 3: A(2) B(1)   step 4: A(2) B(1)
GREEDY_TRAP = [Buffer("A", 2, 3, 4), Buffer("B", 1, 1, 4), Buffer("C", 1, 0, 2), Buffer("D", 2, 0, 0)]


def test_greedy_misses_the_optimum_that_the_milp_finds():
    plan = plan_buffers(GREEDY_TRAP, alignment=1)
    assert plan.candidates["greedy-by-size"] == plan.candidates["greedy-by-conflicts"] == 4
    assert plan.arena_bytes == plan.lower_bound_bytes == 3 and plan.optimal
    problem = Problem.from_buffers(GREEDY_TRAP, 1)
    outcome = improve_by_milp(problem, seed_arena=4, lower_bound=3, time_limit_s=5.0)
    assert outcome.arena == 3 and outcome.proven_optimal


def test_milp_proves_an_optimal_seed_when_the_bound_is_weak():
    problem = Problem.from_buffers(GREEDY_TRAP, 1)
    outcome = improve_by_milp(problem, seed_arena=3, lower_bound=0, time_limit_s=5.0)
    assert outcome.offsets is None and outcome.proven_optimal and outcome.arena == 3


def test_milp_is_skipped_and_says_so_when_there_are_too_many_pairs():
    trap = Problem.from_buffers(GREEDY_TRAP, 1)
    outcome = improve_by_milp(trap, seed_arena=4, lower_bound=3, time_limit_s=0.001)
    assert outcome.offsets is None and not outcome.proven_optimal and "too many" in outcome.note


def test_auto_plans_150_buffers_within_10_seconds():
    sizes = [(i * 7919) % 9000 + 100 for i in range(150)]
    buffers = [Buffer(f"b{i}", size, i // 2, i // 2 + i % 11) for i, size in enumerate(sizes)]
    start = time.perf_counter()
    plan = plan_buffers(buffers)
    assert time.perf_counter() - start < 10.0 and plan.arena_bytes >= plan.lower_bound_bytes


def test_sizes_are_rounded_up_to_the_alignment():
    buffers = [Buffer("a", 1, 0, 1), Buffer("b", 17, 1, 2), Buffer("c", 3, 2, 2)]
    plan = plan_buffers(buffers, alignment=16)
    assert plan.lower_bound_bytes == align_up(17, 16) + 16 == plan.arena_bytes


def test_unknown_algorithm_lists_the_known_ones():
    with pytest.raises(ValueError, match="greedy-by-size, greedy-by-conflicts, hill-climb, milp"):
        plan_buffers([Buffer("a", 4, 0, 0)], algorithm="best-fit")


def test_verify_names_the_two_overlapping_buffers():
    buffers = [Buffer("conv1_out", 64, 0, 1), Buffer("relu_out", 32, 1, 2)]
    plan = Plan({"conv1_out": 0, "relu_out": 48}, 96, 96, "by-hand", {})
    with pytest.raises(InternalError, match="conv1_out and relu_out overlap"):
        verify_plan(plan, buffers, 16)
    verify_plan(Plan({"conv1_out": 0, "relu_out": 64}, 96, 96, "by-hand", {}), buffers, 16)


def test_verify_catches_misalignment_and_missing_buffers():
    buffers = [Buffer("x", 16, 0, 0)]
    with pytest.raises(InternalError, match="aligned"):
        verify_plan(Plan({"x": 8}, 32, 16, "by-hand", {}), buffers, 16)
    with pytest.raises(InternalError, match="missing"):
        verify_plan(Plan({}, 16, 16, "by-hand", {}), buffers, 16)


def test_timeline_draws_each_step_and_ends_with_the_summary():
    buffers = [Buffer("x", 32, 0, 0), Buffer("y", 64, 0, 1), Buffer("z", 32, 1, 1)]
    plan = plan_buffers(buffers)
    text = format_timeline(plan, buffers, width=12)
    rows = text.splitlines()
    assert rows[1:3] == ["   0 | " + "B" * 8 + "A" * 4, "   1 | " + "B" * 8 + "C" * 4]
    assert rows[3] == "A  @ 64  32 B  live [0, 0]  x"
    assert rows[-1] == "arena 96 B, lower bound 96 B (ratio 1.000), greedy-by-size, optimal"
    assert plan_buffers([]).arena_bytes == 0 and "ratio n/a" in format_timeline(plan_buffers([]), [])
