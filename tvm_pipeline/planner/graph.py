"""The op graph the planner sees, and its liveness: OpGraph + execution order -> Buffer records.

Lifetime convention (buffers.py): step i runs the i-th node of the order. A node's output is live from
its step to the step of its last reader (just its own step if nobody reads it); graph inputs are live
from step 0 (model_run copies the input into the arena first); graph outputs until the last step;
a node's scratch only at its step, as a buffer named f"{node.name}.scratch".

In-place: for a pair (input, output) in `node.inplace`, the output takes the input's storage (its offset) when
the input dies at this node (no later reader, not a graph output), the output is no larger than the input, and no
other output of the node took that storage already. An output smaller than its input (an in-place depthwise
conv with stride 2) merges only where that lowers the peak (see `liveness`). Chains merge: a storage is named after
its first tensor and has the size of its largest.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tvm_pipeline.errors import InternalError
from tvm_pipeline.planner.buffers import Buffer, lower_bound


@dataclass(frozen=True)
class OpNode:
    """One kernel call: the activation tensors it reads and writes, and its scratch bytes."""

    name: str
    inputs: tuple[str, ...]  # tensor names read (graph inputs and other nodes' outputs; constants are NOT listed)
    outputs: tuple[str, ...]  # tensor names written
    scratch: int = 0  # bytes of kernel-internal scratch, live only during this op
    inplace: tuple[tuple[str, str], ...] = ()  # (input, output) pairs the kernel may write in place


@dataclass(frozen=True)
class OpGraph:
    """Kernels in the file's order (a valid topological order) and the bytes of every tensor."""

    nodes: tuple[OpNode, ...]
    sizes: Mapping[str, int]  # bytes per tensor
    graph_inputs: tuple[str, ...]  # live from step 0
    graph_outputs: tuple[str, ...]  # live until the last step

    def __post_init__(self) -> None:
        names = [node.name for node in self.nodes]
        if len(set(names)) != len(names):
            raise InternalError(f"node names repeat: {sorted(name for name in set(names) if names.count(name) > 1)}")
        produced = set(self.graph_inputs)
        for node in self.nodes:
            for tensor in node.inputs:
                if tensor not in produced:
                    raise InternalError(f"node {node.name} reads {tensor} before anything writes it")
            for tensor in node.outputs:
                if tensor in produced:
                    raise InternalError(f"tensor {tensor} is written twice (again by node {node.name})")
                produced.add(tensor)
            for source, target in node.inplace:
                if source not in node.inputs or target not in node.outputs:
                    raise InternalError(f"node {node.name}: in-place pair ({source}, {target}) is not input -> output")
        for tensor in sorted(produced | set(self.graph_outputs)):
            if self.sizes.get(tensor, 0) <= 0:
                raise InternalError(f"tensor {tensor} has no positive size (got {self.sizes.get(tensor)})")
        if not set(self.graph_outputs) <= produced:
            raise InternalError(f"graph outputs {sorted(set(self.graph_outputs) - produced)} are never written")

    def consumers(self) -> dict[str, set[int]]:
        """For every tensor, the indices (in `nodes`) of the nodes that read it."""
        readers: dict[str, set[int]] = {tensor: set() for tensor in self.graph_inputs}
        for index, node in enumerate(self.nodes):
            readers.update({tensor: set() for tensor in node.outputs})
            for tensor in node.inputs:
                readers[tensor].add(index)
        return readers


def live_ranges(graph: OpGraph, order: Sequence[int]) -> tuple[dict[str, int], dict[str, int]]:
    """(first, last): the steps at which each activation tensor is written and read for the last time."""
    _check_order(graph, order)
    final = len(order) - 1
    first = {tensor: 0 for tensor in graph.graph_inputs}
    last = dict(first)
    for step, index in enumerate(order):
        for tensor in graph.nodes[index].inputs:
            last[tensor] = step
        for tensor in graph.nodes[index].outputs:
            first[tensor] = last[tensor] = step
    for tensor in graph.graph_outputs:
        last[tensor] = max(final, 0)
    return first, last


def liveness(graph: OpGraph, order: Sequence[int]) -> tuple[list[Buffer], dict[str, str]]:
    """Buffers (one per storage, plus scratch) for running `graph.nodes` in `order`, and tensor -> storage.

    The map covers every activation tensor; a tensor merged in place maps to the storage it shares. A merge whose
    output is smaller than its input (a stride-2 in-place depthwise) keeps the input's bytes for the output's whole
    life, so it is made only where it lowers the peak of live bytes; merges of equal sizes always are.
    """
    first, last = live_ranges(graph, order)
    shrinking = [(source, target) for node in graph.nodes for source, target in node.inplace
                 if graph.sizes[target] < graph.sizes[source]]
    kept: set[tuple[str, str]] = set()
    buffers, storage = _storages(graph, order, first, last, kept)
    peak = lower_bound(buffers, alignment=1)
    for pair in shrinking:
        trial = _storages(graph, order, first, last, kept | {pair})
        trial_peak = lower_bound(trial[0], alignment=1)
        if trial_peak < peak:
            kept.add(pair)
            (buffers, storage), peak = trial, trial_peak
    return buffers, storage


def _storages(graph: OpGraph, order: Sequence[int], first: Mapping[str, int], last: Mapping[str, int],
              shrinking: set[tuple[str, str]]) -> tuple[list[Buffer], dict[str, str]]:
    """Merge the in-place pairs that are allowed (equal sizes, or listed in `shrinking`); one buffer per storage."""
    storage = {tensor: tensor for tensor in first}
    scratch = []
    for step, index in enumerate(order):
        node = graph.nodes[index]
        taken: set[str] = set()
        for source, target in node.inplace:
            root = storage[source]
            dies_here = last[source] == step and source not in graph.graph_outputs
            fits = graph.sizes[target] == graph.sizes[source] or (source, target) in shrinking
            if dies_here and fits and root not in taken:
                storage[target] = root
                taken.add(root)
        if node.scratch > 0:
            scratch.append(Buffer(f"{node.name}.scratch", node.scratch, step, step))
    span_end = {root: last[root] for root in set(storage.values())}
    size = {root: graph.sizes[root] for root in span_end}
    for tensor, root in storage.items():
        span_end[root] = max(span_end[root], last[tensor])
        size[root] = max(size[root], graph.sizes[tensor])
    buffers = [Buffer(root, size[root], first[root], span_end[root]) for root in first if storage[root] == root]
    return buffers + scratch, storage


def _check_order(graph: OpGraph, order: Sequence[int]) -> None:
    """Raise InternalError unless `order` runs every node exactly once, after the writers of its inputs."""
    if sorted(order) != list(range(len(graph.nodes))):
        raise InternalError(f"order {list(order)} is not a permutation of the {len(graph.nodes)} nodes")
    available = set(graph.graph_inputs)
    for index in order:
        node = graph.nodes[index]
        missing = [tensor for tensor in node.inputs if tensor not in available]
        if missing:
            raise InternalError(f"order runs node {node.name} before the writers of {missing}")
        available.update(node.outputs)
