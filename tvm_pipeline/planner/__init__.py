"""Static arena planner: buffer liveness over an execution order, order search, placement, verification.

Pure functions over (size, first use, last use) records; the lifetime convention is in buffers.py.
Typical use:
    order = best_order(graph)
    buffers, storage_of = liveness(graph, order)
    plan = plan_buffers(buffers, alignment=board_alignment)
    print(format_timeline(plan, buffers))
"""

from tvm_pipeline.planner.buffers import Buffer, lower_bound
from tvm_pipeline.planner.graph import OpGraph, OpNode, liveness
from tvm_pipeline.planner.order import best_order, peak_bytes
from tvm_pipeline.planner.plan import ALGORITHMS, Plan, plan_buffers
from tvm_pipeline.planner.timeline import format_timeline, summary_line
from tvm_pipeline.planner.verify import verify_plan

__all__ = [
    "ALGORITHMS",
    "Buffer",
    "OpGraph",
    "OpNode",
    "Plan",
    "best_order",
    "format_timeline",
    "liveness",
    "lower_bound",
    "peak_bytes",
    "plan_buffers",
    "summary_line",
    "verify_plan",
]
