"""Tensor schedules for Cortex-M kernels (TensorIR), and the tuned records shipped with tvm-pipeline.

A schedule rule is a callable `rule(sch, tir_name) -> bool` that schedules a `tvm.s_tir.Schedule` over one fused
kernel and says whether it took it. `default.py` holds the schedule every other kernel gets; pattern-specific rules
(the reordered bottlenecks, the DSP convs, the in-place depthwise conv) sit beside it and are listed by
`pattern_rules`; those with settings `tvmp tune` measures are listed by `tunable_rules`.
"""

from __future__ import annotations

from collections.abc import Callable


def pattern_rules(inplace_depthwise: bool = True, dsp: bool = False,
                  memory_first: frozenset[str] = frozenset()) -> list[Callable]:
    """The pattern-specific rules `tvmp compile` tries, in order, before a kernel falls back to the default schedule
    (MetaSchedule records apply only to kernels none of them takes; records of a tunable rule's settings apply
    before them). The patch-stage search and the tuner use the same.
    `dsp`: the board's core has the DSP extension (SMLAD): int8 convs run as tensorized im2col products, int8 3-wide
    depthwise convs a window row under two pixels at a time where pairs fit.
    `memory_first`: kernels (TIR names) scheduled for less scratch, slower: reordered int8 bottlenecks with 2
    channels a step, int8 depthwise convs without the DSP rule's padded plane (see `compiler.lower_memory_first`)."""
    from schedules import bottleneck, bottleneck_int8, depthwise_dsp, depthwise_inplace, int8_dsp

    dsp_depthwise = depthwise_dsp.Rule(memory_first) if memory_first else depthwise_dsp.rule
    depthwise = [*([dsp_depthwise] if dsp else []), depthwise_inplace.rule] if inplace_depthwise else []
    return [bottleneck.rule, bottleneck_int8.Rule(memory_first), *([int8_dsp.rule] if dsp else []), *depthwise]


def tunable_rules() -> dict[str, object]:
    """Pattern rules whose schedule has settings `tvmp tune` measures on the board, by name: each module has
    `rule`, `applies(func)`, `knob_space(func) -> [settings]` and `apply(sch, **settings)`. A tuning record names
    the module and the settings it chose."""
    from schedules import depthwise_dsp, int8_dsp

    return {"int8_dsp": int8_dsp, "depthwise_dsp": depthwise_dsp}
