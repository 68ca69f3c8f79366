"""Static arena planner: buffer liveness over an execution order, order search, placement, verification.

Pure functions over (size, first use, last use) records; the lifetime convention is in buffers.py.
Typical use:
    order = best_order(graph)
    buffers, storage_of = liveness(graph, order)
    plan = plan_buffers(buffers, alignment=board_alignment)
    print(format_timeline(plan, buffers))
    verify_tensors(graph, order, {t: plan.offsets[s] for t, s in storage_of.items()})
"""

from tvm_pipeline.planner.buffers import Buffer, live_bytes_per_step, lower_bound
from tvm_pipeline.planner.graph import OpGraph, OpNode, live_ranges, liveness
from tvm_pipeline.planner.order import best_order, peak_bytes
from tvm_pipeline.planner.plan import ALGORITHMS, Plan, plan_buffers
from tvm_pipeline.planner.timeline import format_timeline, summary_line
from tvm_pipeline.planner.verify import verify_plan, verify_tensors

__all__ = [
    "ALGORITHMS",
    "Buffer",
    "OpGraph",
    "OpNode",
    "Plan",
    "best_order",
    "format_timeline",
    "live_ranges",
    "live_bytes_per_step",
    "liveness",
    "lower_bound",
    "peak_bytes",
    "plan_buffers",
    "summary_line",
    "verify_plan",
    "verify_tensors",
]
