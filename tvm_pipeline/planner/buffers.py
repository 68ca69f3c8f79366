"""Buffer records, the conflict relation between them, and the live-bytes lower bound.

Lifetime convention (used by every module of the planner):
    A buffer is live over the closed range of steps [first, last]; step i is the i-th kernel of the
    execution order. A buffer is written at `first` and read for the last time at `last`. Two buffers
    conflict (must not share bytes) exactly when their ranges intersect, so an op's inputs, outputs and
    scratch, all live at the op's step, never overlap; a buffer whose `last` is i and one whose `first`
    is i conflict too (reuse starts at the step after the last read).
    Sizes are rounded up to the alignment before placement; every offset is a multiple of it.

Placement algorithms work on a `Problem`: the aligned sizes and, per buffer, the indices of the buffers
it conflicts with.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from tvm_pipeline.errors import InternalError


@dataclass(frozen=True)
class Buffer:
    """One arena storage: `size` bytes, live over steps [first, last] (both inclusive)."""

    name: str
    size: int
    first: int
    last: int

    def __post_init__(self) -> None:
        if self.size <= 0 or self.first < 0 or self.last < self.first:
            raise InternalError(f"bad buffer {self.name!r}: size {self.size}, live [{self.first}, {self.last}]")


def align_up(size: int, alignment: int) -> int:
    """Round `size` up to a multiple of `alignment`."""
    return -(-size // alignment) * alignment


def conflict_pairs(buffers: Sequence[Buffer]) -> list[tuple[int, int]]:
    """Index pairs (i, j), i < j, of buffers whose live ranges intersect (a sweep over first use)."""
    by_first = sorted(range(len(buffers)), key=lambda i: (buffers[i].first, i))
    active: list[int] = []
    pairs = []
    for i in by_first:
        active = [j for j in active if buffers[j].last >= buffers[i].first]
        pairs.extend((min(i, j), max(i, j)) for j in active)
        active.append(i)
    return sorted(pairs)


def lower_bound(buffers: Sequence[Buffer], alignment: int) -> int:
    """The largest number of aligned bytes live at any one step: no placement can use less."""
    events: list[tuple[int, int]] = []
    for buffer in buffers:
        size = align_up(buffer.size, alignment)
        events.append((buffer.first, size))
        events.append((buffer.last + 1, -size))
    live = peak = 0
    for _, delta in sorted(events):  # at equal steps the frees (negative) come first
        live += delta
        peak = max(peak, live)
    return peak


def live_bytes_per_step(buffers: Sequence[Buffer], steps: int) -> list[int]:
    """Bytes of `buffers` live at each of `steps` steps (a buffer live past the last step counts up to it)."""
    live = [0] * max(steps, 1)
    for buffer in buffers:
        for t in range(buffer.first, min(buffer.last, steps - 1) + 1):
            live[t] += buffer.size
    return live


def maximal_live_sets(buffers: Sequence[Buffer]) -> list[tuple[int, ...]]:
    """The maximal sets of buffer indices live at a common step (the maximal cliques of the conflicts)."""
    starts = sorted({buffer.first for buffer in buffers})
    sets = []
    for step, following in zip(starts, starts[1:] + [None]):
        live = tuple(i for i, buffer in enumerate(buffers) if buffer.first <= step <= buffer.last)
        if following is None or any(buffers[i].last < following for i in live):  # else the next set is larger
            sets.append(live)
    return sets


@dataclass(frozen=True)
class Problem:
    """A placement problem in index form: aligned sizes and each buffer's conflicting neighbours."""

    sizes: tuple[int, ...]
    neighbours: tuple[tuple[int, ...], ...]
    pairs: tuple[tuple[int, int], ...]
    lifetimes: tuple[int, ...]  # last - first + 1, a tie-breaker for the greedy orders
    cliques: tuple[tuple[int, ...], ...]  # the maximal sets of buffers live at one step

    @staticmethod
    def from_buffers(buffers: Sequence[Buffer], alignment: int) -> "Problem":
        """Index the buffers, round their sizes up to `alignment` and find the conflicting pairs."""
        names = [buffer.name for buffer in buffers]
        if len(set(names)) != len(names):
            raise InternalError(f"duplicate buffer names in {sorted(names)}")
        pairs = conflict_pairs(buffers)
        neighbours: list[list[int]] = [[] for _ in buffers]
        for i, j in pairs:
            neighbours[i].append(j)
            neighbours[j].append(i)
        return Problem(
            sizes=tuple(align_up(buffer.size, alignment) for buffer in buffers),
            neighbours=tuple(tuple(n) for n in neighbours),
            pairs=tuple(pairs),
            lifetimes=tuple(buffer.last - buffer.first + 1 for buffer in buffers),
            cliques=tuple(maximal_live_sets(buffers)),
        )

    def arena(self, offsets: Sequence[int]) -> int:
        """Bytes needed by a placement: the highest end of any buffer (0 when there are none)."""
        return max((offset + size for offset, size in zip(offsets, self.sizes)), default=0)
