"""Tensor schedules for Cortex-M kernels (TensorIR), and the tuned records shipped with tvm-pipeline.

A schedule rule is a function `rule(sch) -> None` that transforms a `tvm.s_tir.Schedule` over one fused kernel.
`default.py` holds the rule every kernel gets; pattern-specific rules (the reordered bottleneck) sit beside it.
"""
