"""Choose the patch stage's split layer and grid: score every candidate, then lower and plan the best few.

A candidate is (split layer, grid). Its score is analytic: the whole input + the stage output + the largest working
set of one patch (a windowed op's input and output regions and its scratch), the bytes live at the stage's peak;
bytes per element come from each tensor's type (float32 or int8), and a bottleneck's scratch from its kernel's
`scratch_bytes` (an int8 one holds an int32 accumulator). A streamed input (`stream`) is never whole in SRAM: its
score counts the image windows a patch reads instead, and its modules are planned after stream-input.
The `EXACT` best-scored candidates are then compiled through fusion, lowering and arena planning (the planner's
figures, no board); so are up to `EXACT` cheaper ones (fewer MACs) whose score says they might do as well. The
smallest arena wins, fewer MACs (then fewer patches) breaking ties, and only if it is below the unsplit module's
arena. Candidates whose halos would add more than the caller's MAC budget (the pass allows 15 % of the model's MACs)
are not considered.
Streaming, a split is needed (the unsplit module cannot stream): there is no unsplit arena to beat, and candidates
over the MAC budget are considered when none is within it.

Cost: planning one MobileNetV2 candidate takes 1-8 s (fusion, lowering, the 2 s order search), so of the ~90
scored candidates at most 2 * EXACT + 1 modules (the unsplit one included) are lowered: `tvmp compile` of
MobileNetV2-0.35@144 takes ~17-23 s with the search instead of ~5 s. Bottleneck kernels are built once per patch
shape (patch_split), and choices are memoized per process by the module's structural hash and the user's
constraints, so recompiling a model in the same process (tests) skips the search.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
import tvm_ffi

from tvm_pipeline.passes import patch_ops
from tvm_pipeline.passes import patch_regions as pr
from tvm_pipeline.passes.patch_split import Stage, patch_macs, regions, split

#: Grids tried when the user gives none. Finer than MCUNetV2's 4x4 because a float input stays whole in SRAM:
#: the patches' working set must shrink further for the stage to stop being the peak.
GRIDS: tuple[tuple[int, int], ...] = ((2, 2), (3, 3), (4, 4), (6, 6), (8, 8))
#: Candidates lowered and planned in each round of the search.
EXACT = 3
#: Planner settings of the search (the final compile uses the user's): first-fit, the boards' widest alignment.
ALIGNMENT, PLANNER = 16, "greedy-by-size"


@dataclass(frozen=True)
class Candidate:
    """One way to patch the stage, with its analytic score."""

    stage: Stage
    grid: tuple[int, int]
    score: int  # bytes live at the stage's peak, analytically
    macs: int  # multiply-accumulates of the patched stage
    extra_macs: int  # what the halos add to the unsplit stage's

    def describe(self) -> str:
        return f"layer {self.stage.layer} ({self.stage.output}) as {self.grid[0]}x{self.grid[1]}"


def _bytes(stage: Stage, tensor: str, region: pr.Region) -> int:
    t = stage.types[tensor]
    rows, cols = pr.size(region)
    return t.nbytes // (t.shape[2] * t.shape[3]) * rows * cols


def candidate(stage: Stage, grid: tuple[int, int], stream: bool = False) -> Candidate:
    """Score one (stage, grid): image (streamed: none) + stage output + the most bytes one op of one patch holds
    (streamed: the image windows it reads included)."""
    working, macs = 0, 0
    for out in pr.grid(stage.out_type.shape[2:], *grid):
        need = regions(stage, out)
        macs += patch_macs(stage, out)
        for s in stage.ops:
            if s.window is None and len(s.inputs) == 1:
                continue  # bias / activation: fused into the producer's kernel
            held = sum(_bytes(stage, t, need[t]) for t in set(s.inputs) if stream or t != stage.image)
            scratch = patch_ops.scratch_bytes(s, need[s.op.var], stage.types[s.inputs[0]])
            working = max(working, held + _bytes(stage, s.op.var, need[s.op.var]) + scratch)
    score = (0 if stream else stage.types[stage.image].nbytes) + stage.out_type.nbytes + working
    return Candidate(stage, grid, score, macs, macs - patch_macs(stage))


def arena_bytes(mod: tvm.IRModule, stream: bool = False) -> int:
    """The arena the compiler would plan for `mod` (fused, lowered, ordered, placed first-fit), after stream-input
    when `stream`."""
    from schedules import pattern_rules
    from tvm_pipeline import tvm_adapter
    from tvm_pipeline.arena import plan_arena
    from tvm_pipeline.lowering.lower import lower_program
    from tvm_pipeline.passes import stream_input

    if stream:
        mod = stream_input.run(mod, [])
    program = lower_program(tvm_adapter.fuse(mod), rules=pattern_rules())  # as `tvmp compile` lowers it
    return plan_arena(program, ALIGNMENT, PLANNER).layout.arena_bytes


@dataclass(frozen=True)
class Choice:
    """The search's outcome: the best candidate (None: nothing beats the unsplit module) and what was planned."""

    best: Candidate | None
    baseline_arena: int | None  # None: nothing was planned (no candidate within the MAC budget), or streaming
    planned: tuple[tuple[Candidate, int], ...]  # (candidate, arena bytes), in the order they were planned
    scored: int  # candidates scored


_MEMO: dict[tuple, Choice] = {}


def choose(mod: tvm.IRModule, stages: list[Stage], layer: int | None, grid: tuple[int, int] | None,
           mac_budget: int | None = None, stream: bool = False) -> Choice:
    """Search the candidates allowed by the user's `layer` / `grid` (None: any) for the smallest arena.

    With neither given, the best candidate must beat the unsplit module's arena and its halos may add at most
    `mac_budget` MACs; with one given, the user has asked for a split, so the best one allowed is kept. `stream`:
    the input is streamed, so a split is needed: the best one is kept, within the MAC budget if any candidate is.
    """
    key = (tvm_ffi.structural_hash(mod), layer, grid, mac_budget, stream)
    if key in _MEMO:
        return _MEMO[key]
    grids = [grid] if grid else GRIDS
    scored = [candidate(s, g, stream) for s in stages if layer is None or s.layer == layer for g in grids
              if g[0] <= s.out_type.shape[2] and g[1] <= s.out_type.shape[3]]
    forced = layer is not None or grid is not None
    eligible = [c for c in scored if forced or c.extra_macs <= (mac_budget or 0)]
    if stream:
        eligible, baseline = eligible or scored, None  # the unsplit module cannot stream: nothing to beat
        forced = True
    else:  # lowering the unsplit module costs as much as a candidate
        baseline = arena_bytes(mod) if eligible else None
    eligible = [c for c in eligible if forced or c.score < baseline]
    planned: dict[tuple[int, tuple[int, int]], tuple[Candidate, int]] = {}  # (layer, grid) -> (candidate, arena)

    def plan(c: Candidate) -> None:
        planned[c.stage.layer, c.grid] = c, arena_bytes(split(mod, c.stage, *c.grid, stream), stream)

    for c in sorted(eligible, key=lambda c: (c.score, c.macs))[:EXACT]:
        plan(c)
    if planned:  # cheaper candidates that the score says might reach the same arena
        best_arena = min(arena for _, arena in planned.values())
        best_macs = min(c.macs for c, arena in planned.values() if arena == best_arena)
        cheaper = [c for c in sorted(eligible, key=lambda c: c.macs) if (c.stage.layer, c.grid) not in planned
                   and c.macs < best_macs and c.score <= best_arena * 1.05]
        for c in cheaper[:EXACT]:
            plan(c)
    best, best_arena = min(planned.values(), default=(None, 0),  # ties: fewer MACs, then fewer patches
                           key=lambda item: (item[1], item[0].macs, item[0].grid[0] * item[0].grid[1]))
    if best is not None and not forced and best_arena >= baseline:
        best = None
    choice = Choice(best, baseline, tuple(planned.values()), len(scored))
    _MEMO[key] = choice
    return choice
