"""Liveness (lifetimes, scratch, in-place merges) and the execution-order search."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_pipeline.errors import InternalError
from tvm_pipeline.planner import Buffer, OpGraph, OpNode, best_order, liveness, peak_bytes, plan_buffers


def chain_with_relu() -> OpGraph:
    """x -conv-> a -relu-> b -conv-> y, the relu allowed in place."""
    nodes = (
        OpNode("conv1", ("x",), ("a",), scratch=40),
        OpNode("relu", ("a",), ("b",), inplace=(("a", "b"),)),
        OpNode("conv2", ("b",), ("y",)),
    )
    return OpGraph(nodes, {"x": 100, "a": 200, "b": 200, "y": 50}, ("x",), ("y",))


def test_liveness_lifetimes_scratch_and_in_place_alias():
    buffers, storage = liveness(chain_with_relu(), [0, 1, 2])
    assert buffers == [
        Buffer("x", 100, 0, 0),
        Buffer("a", 200, 0, 2),  # a, then b in place, until conv2 reads b
        Buffer("y", 50, 2, 2),
        Buffer("conv1.scratch", 40, 0, 0),
    ]
    assert storage == {"x": "x", "a": "a", "b": "a", "y": "y"}
    assert plan_buffers(buffers, alignment=1).arena_bytes == 340


def test_no_in_place_when_the_input_lives_on_or_the_output_is_larger():
    nodes = (
        OpNode("relu", ("x",), ("a",), inplace=(("x", "a"),)),  # x is read again by add
        OpNode("add", ("x", "a"), ("b",), inplace=(("a", "b"),)),  # the output is larger than its input
    )
    graph = OpGraph(nodes, {"x": 64, "a": 64, "b": 96}, ("x",), ("b",))
    buffers, storage = liveness(graph, [0, 1])
    assert storage == {"x": "x", "a": "a", "b": "b"}
    assert [(b.name, b.first, b.last) for b in buffers] == [("x", 0, 1), ("a", 0, 1), ("b", 1, 1)]


def test_graph_outputs_live_to_the_end_and_are_never_overwritten_in_place():
    nodes = (OpNode("relu", ("x",), ("y",)), OpNode("neg", ("y",), ("z",), inplace=(("y", "z"),)))
    graph = OpGraph(nodes, {"x": 8, "y": 8, "z": 8}, ("x",), ("y", "z"))
    buffers, storage = liveness(graph, [0, 1])
    assert storage["z"] == "z" and Buffer("y", 8, 0, 1) in buffers


def test_bad_graphs_and_orders_are_internal_errors():
    with pytest.raises(InternalError, match="reads t before"):
        OpGraph((OpNode("n", ("t",), ("u",)),), {"t": 4, "u": 4}, (), ("u",))
    with pytest.raises(InternalError, match="before the writers"):
        liveness(chain_with_relu(), [1, 0, 2])


def two_branches() -> OpGraph:
    """Two independent branches, each a large tensor reduced to a small one, then joined."""
    nodes = (
        OpNode("a1", ("x",), ("a",)),
        OpNode("b1", ("x",), ("b",)),
        OpNode("a2", ("a",), ("a_small",)),
        OpNode("b2", ("b",), ("b_small",)),
        OpNode("join", ("a_small", "b_small"), ("y",)),
    )
    sizes = {"x": 10, "a": 100, "b": 100, "a_small": 5, "b_small": 5, "y": 10}
    return OpGraph(nodes, sizes, ("x",), ("y",))


def test_running_one_branch_fully_first_lowers_the_peak():
    graph = two_branches()
    assert peak_bytes(graph, range(5)) == 210  # x + a + b
    order = best_order(graph)
    assert order == [0, 2, 1, 3, 4] and peak_bytes(graph, order) == 115  # x + b + a_small


def test_residual_block_runs_the_skip_projection_as_soon_as_it_frees_x():
    """x feeds a two-conv main path and a small projection; projecting right after conv1 frees x before conv2."""
    nodes = (
        OpNode("conv1", ("x",), ("h",), scratch=30),
        OpNode("conv2", ("h",), ("m",)),
        OpNode("project", ("x",), ("s",)),
        OpNode("add", ("m", "s"), ("y",), inplace=(("m", "y"),)),
    )
    graph = OpGraph(nodes, {"x": 80, "h": 120, "m": 40, "s": 10, "y": 40}, ("x",), ("y",))
    assert peak_bytes(graph, range(4)) == 240  # conv2: x + h + m
    assert peak_bytes(graph, [2, 0, 1, 3]) == 240  # conv1: x + h + s + scratch
    order = best_order(graph)
    assert order == [0, 2, 1, 3] and peak_bytes(graph, order) == 230  # conv1: x + h + scratch


@st.composite
def small_graphs(draw, shrinking: bool = False) -> OpGraph:
    """Random DAGs of up to 6 nodes: scratch, one or two outputs, several readers per tensor, in-place pairs (of equal
    sizes, or with `shrinking` also into smaller outputs)."""
    tensors, sizes, nodes = ["in"], {"in": draw(st.integers(1, 50))}, []
    for index in range(draw(st.integers(1, 6))):
        inputs = tuple(draw(st.lists(st.sampled_from(tensors), min_size=1, max_size=3, unique=True)))
        outputs = tuple(f"t{index}_{k}" for k in range(draw(st.integers(1, 2))))
        source = draw(st.sampled_from(inputs))
        for out in outputs:
            sizes[out] = draw(st.sampled_from([sizes[source], draw(st.integers(1, 50))]))
        allowed = [out for out in outputs if sizes[out] == sizes[source] or shrinking and sizes[out] < sizes[source]]
        inplace = tuple((source, out) for out in allowed if draw(st.booleans()))
        nodes.append(OpNode(f"n{index}", inputs, outputs, draw(st.integers(0, 20)), inplace))
        tensors.extend(outputs)
    outputs = tuple(sorted({tensors[-1], *draw(st.lists(st.sampled_from(tensors[1:]), max_size=2))}))
    return OpGraph(tuple(nodes), sizes, ("in",), outputs)


def topological_orders(graph: OpGraph, done: tuple[int, ...] = ()):
    """Every valid execution order of `graph` (small graphs only)."""
    if len(done) == len(graph.nodes):
        yield list(done)
        return
    written = {t for i in done for t in graph.nodes[i].outputs} | set(graph.graph_inputs)
    for index, node in enumerate(graph.nodes):
        if index not in done and set(node.inputs) <= written:
            yield from topological_orders(graph, done + (index,))


@settings(max_examples=150, deadline=None)
@given(small_graphs())
def test_order_search_is_exact_on_small_graphs(graph):
    order = best_order(graph)
    liveness(graph, order)  # a valid topological order, or InternalError
    assert peak_bytes(graph, order) == min(peak_bytes(graph, o) for o in topological_orders(graph))
    assert peak_bytes(graph, order) <= peak_bytes(graph, range(len(graph.nodes)))


@settings(max_examples=100, deadline=None)
@given(small_graphs(shrinking=True))
def test_order_search_is_never_worse_than_the_file_order_with_shrinking_in_place_pairs(graph):
    """The search does not credit merges into smaller outputs (liveness makes them only where they lower the peak)."""
    order = best_order(graph)
    assert peak_bytes(graph, order) <= peak_bytes(graph, range(len(graph.nodes)))


def test_wide_graph_falls_back_to_the_beam_and_stays_valid():
    """Twelve independent 6-node branches, listed breadth first: 7**12 done sets, far past the exact search."""
    nodes, sizes = [], {"x": 4}
    for depth in range(6):
        for branch in range(12):
            name = f"b{branch}_{depth}"
            nodes.append(OpNode(name, (f"b{branch}_{depth - 1}" if depth else "x",), (name,)))
            sizes[name] = 1000 if depth == 0 else 10 + branch
    nodes.append(OpNode("join", tuple(f"b{b}_5" for b in range(12)), ("y",)))
    sizes["y"] = 4
    graph = OpGraph(tuple(nodes), sizes, ("x",), ("y",))
    order = best_order(graph, time_limit_s=2.0)
    assert peak_bytes(graph, order) < peak_bytes(graph, range(len(nodes)))
    assert peak_bytes(graph, order) <= 4 + 1000 + 10 + sum(10 + b for b in range(12))
