"""best_order: the topological order of an OpGraph whose peak of live bytes (the arena's lower bound) is least.

Search over "done sets" (which nodes have run). The bytes live between steps depend on the done set
only: every tensor written (or a graph input) with a reader still to run, or a graph output. Running
node n from done set S peaks at  live(S) + outputs(n) + scratch(n) - in-place savings(n, S), so the
least peak to reach S obeys the recurrence
    best(S + n) = min over n of max(best(S), step_peak(S, n)),
solved layer by layer (layer k = done sets of k nodes), keeping one parent per done set for the order.
Exact while every layer has at most EXACT_STATES done sets; once one has more, every layer from then
on keeps the BEAM_STATES with the lowest (peak, live bytes): a beam search, i.e. greedy with
look-ahead. States that cannot beat the file's order are dropped, so the result is never worse than
the file's order; past the time limit the beam narrows to one (plain greedy).
Peaks are those of lower_bound(liveness(graph, order)[0], alignment=1): raw bytes, in-place merges included.
The search credits in-place merges of equal sizes only; liveness makes a merge into a smaller output only
where it lowers the peak, so the peak of the order found is at most what the search counted.
"""

import time
from collections.abc import Sequence

from tvm_pipeline.planner.buffers import lower_bound
from tvm_pipeline.planner.graph import OpGraph, liveness

EXACT_STATES = 4000
BEAM_STATES = 200


def best_order(graph: OpGraph, time_limit_s: float = 2.0) -> list[int]:
    """A valid topological order of `graph.nodes` minimizing the peak of live bytes; never worse than file order."""
    start = min((list(range(len(graph.nodes))), depth_first_order(graph)), key=lambda o: peak_bytes(graph, o))
    found = _search(_Tables(graph), peak_bytes(graph, start), time.monotonic() + time_limit_s)
    return found if found is not None else start


def depth_first_order(graph: OpGraph) -> list[int]:
    """Post-order from the graph outputs: each input's whole branch runs before the next input's.

    Independent branches (patch tunnels) then run one after another instead of layer by layer, which the beam
    search may not find in a large graph; it seeds the search. Nodes no output depends on run last.
    """
    writer = {tensor: i for i, node in enumerate(graph.nodes) for tensor in node.outputs}
    order: list[int] = []
    done: set[int] = set()
    roots = [writer[t] for t in graph.graph_outputs if t in writer] + list(range(len(graph.nodes)))
    for root in roots:
        stack = [(root, False)]
        while stack:
            index, expanded = stack.pop()
            if index in done:
                continue
            if expanded:
                done.add(index)
                order.append(index)
                continue
            stack.append((index, True))
            producers = [writer[t] for t in graph.nodes[index].inputs if t in writer]
            stack.extend((p, False) for p in reversed(producers) if p not in done)
    return order


def peak_bytes(graph: OpGraph, order: Sequence[int]) -> int:
    """The most bytes live at any step when running `graph` in `order` (in-place merges included)."""
    return lower_bound(liveness(graph, order)[0], alignment=1)


class _Tables:
    """Per-node facts as bitmasks and byte counts, so a search step is a few integer operations."""

    def __init__(self, graph: OpGraph) -> None:
        readers = graph.consumers()
        outputs = set(graph.graph_outputs)
        self.count = len(graph.nodes)
        self.needs: list[int] = []  # bitmask of nodes that must run first
        self.successors: list[set[int]] = [set() for _ in graph.nodes]  # nodes that read an output
        self.reads: list[list[tuple[int, int]]] = []  # (readers mask, bytes) of inputs that may be freed
        self.written: list[int] = []  # bytes of outputs
        self.dead: list[int] = []  # bytes of outputs nobody reads (freed right after the step)
        self.inplace: list[list[tuple[int, int]]] = []  # (readers mask of the input, bytes saved)
        self.scratch = [node.scratch for node in graph.nodes]
        writer = {tensor: i for i, node in enumerate(graph.nodes) for tensor in node.outputs}
        mask = {tensor: sum(1 << r for r in nodes) for tensor, nodes in readers.items()}
        for index, node in enumerate(graph.nodes):
            for tensor in node.outputs:
                self.successors[index] |= readers[tensor]
            self.needs.append(sum(1 << w for w in {writer[t] for t in node.inputs if t in writer}))
            self.reads.append([(mask[t], graph.sizes[t]) for t in sorted(set(node.inputs)) if t not in outputs])
            self.written.append(sum(graph.sizes[t] for t in node.outputs))
            self.dead.append(sum(graph.sizes[t] for t in node.outputs if not readers[t] and t not in outputs))
            pairs, used = [], set()
            for source, target in node.inplace:
                if source not in outputs and source not in used and graph.sizes[source] == graph.sizes[target]:
                    pairs.append((mask[source], graph.sizes[target]))
                    used.add(source)
            self.inplace.append(pairs)
        inputs = set(graph.graph_inputs)
        self.start = sum(graph.sizes[t] for t in inputs)
        self.unread_inputs = sum(graph.sizes[t] for t in inputs if not readers[t] and t not in outputs)


def _search(tables: _Tables, incumbent: int, deadline: float) -> list[int] | None:
    """The order with the least peak below `incumbent`, or None when the search finds none."""
    ready = sum(1 << node for node in range(tables.count) if not tables.needs[node])
    layer = {0: (0, tables.start, ready)}  # done set -> (peak so far, live bytes, ready nodes)
    parents: list[dict[int, tuple[int, int]]] = []  # per layer: done set -> (previous done set, node)
    limit = EXACT_STATES
    for _ in range(tables.count):
        nxt: dict[int, tuple[int, int, int]] = {}
        came_from: dict[int, tuple[int, int]] = {}
        for done, (peak, live, ready) in layer.items():
            freed_inputs = tables.unread_inputs if done == 0 else 0
            for node in _bits(ready):
                after = done | 1 << node
                saved = sum(size for readers, size in tables.inplace[node] if not readers & ~after)
                step_peak = max(peak, live + tables.written[node] + tables.scratch[node] - saved)
                if step_peak >= incumbent or (after in nxt and nxt[after][0] <= step_peak):
                    continue
                freed = sum(size for readers, size in tables.reads[node] if not readers & ~after)
                now_ready = ready & ~(1 << node)
                for successor in tables.successors[node]:
                    if not tables.needs[successor] & ~after:
                        now_ready |= 1 << successor
                live_after = live + tables.written[node] - freed - tables.dead[node] - freed_inputs
                nxt[after] = (step_peak, live_after, now_ready)
                came_from[after] = (done, node)
        if not nxt:
            return None
        if time.monotonic() > deadline:
            limit = 1
        if len(nxt) > limit:
            limit = min(limit, BEAM_STATES)  # no longer exact: a beam from here on
            nxt = dict(sorted(nxt.items(), key=lambda item: (item[1][:2], item[0]))[:limit])
        layer = nxt
        parents.append(came_from)
    order, done = [], (1 << tables.count) - 1
    for came_from in reversed(parents):
        done, node = came_from[done]
        order.append(node)
    return order[::-1]


def _bits(mask: int) -> list[int]:
    """Indices of the set bits of `mask`, lowest first."""
    indices = []
    while mask:
        low = mask & -mask
        indices.append(low.bit_length() - 1)
        mask ^= low
    return indices
