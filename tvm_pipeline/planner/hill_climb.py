"""Hill-climbing over the greedy visiting order (USMP's hill_climb), deterministic.

Start from the better of the two greedy orders (see greedy.py). Each step proposes a neighbouring
order: with probability 0.7 a buffer that reaches the arena's top moves to a random earlier position
(placed earlier, it can settle lower), otherwise two random positions swap. First fit re-places the
buffers from the first changed position on, and the proposal is kept when the arena does not grow
(sideways moves cross plateaus). It stops at the lower bound or after `iterations` proposals (fewer on big
problems). The random generator has a fixed seed, so the result depends on the problem only.
"""

import random

from tvm_pipeline.planner.buffers import Problem
from tvm_pipeline.planner.greedy import conflict_order, first_fit, size_order

ITERATIONS = 1000
WORK = 2_000_000  # fewer iterations on big problems: about WORK / (buffers + conflicting pairs)
SEED = 0


def hill_climb(problem: Problem, lower_bound: int, iterations: int = ITERATIONS, seed: int = SEED) -> list[int]:
    """Offsets of the best first-fit placement found by hill-climbing from the greedy orders.

    Runs at most `iterations` steps, fewer on big problems (see WORK), so planning time stays bounded.
    """
    iterations = min(iterations, WORK // (len(problem.sizes) + len(problem.pairs) + 1))
    starts = [size_order(problem), conflict_order(problem)]
    order, offsets = min(((o, first_fit(problem, o)) for o in starts), key=lambda pair: problem.arena(pair[1]))
    arena = problem.arena(offsets)
    rng = random.Random(seed)
    for _ in range(iterations):
        if arena <= lower_bound or len(order) < 2:
            break
        proposal, changed_from = _neighbour(problem, order, offsets, arena, rng)
        placed = _replace_suffix(problem, proposal, offsets, changed_from)
        placed_arena = problem.arena(placed)
        if placed_arena <= arena:
            order, offsets, arena = proposal, placed, placed_arena
    return offsets


def _neighbour(
    problem: Problem, order: list[int], offsets: list[int], arena: int, rng: random.Random
) -> tuple[list[int], int]:
    """A neighbouring visiting order and the first position at which it differs from `order`."""
    proposal = list(order)
    top = [b for b in order if offsets[b] + problem.sizes[b] == arena]
    position = order.index(rng.choice(top))
    if position > 0 and rng.random() < 0.7:
        target = rng.randrange(position)
        proposal.insert(target, proposal.pop(position))
        return proposal, target
    i, j = sorted(rng.sample(range(len(order)), 2))
    proposal[i], proposal[j] = proposal[j], proposal[i]
    return proposal, i


def _replace_suffix(problem: Problem, order: list[int], offsets: list[int], start: int) -> list[int]:
    """First fit of `order`, reusing `offsets` for the unchanged prefix order[:start]."""
    kept = [-1] * len(order)
    for buffer in order[:start]:
        kept[buffer] = offsets[buffer]
    return first_fit(problem, order[start:], kept)
