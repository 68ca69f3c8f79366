"""The default schedule every fused kernel gets: no hidden full-size intermediates.

TVM's legalized kernels materialize every step of a fused group (a padded copy of the input, the raw convolution,
the biased result, the clamped result). On a microcontroller each of those is a full feature map of SRAM. This
rule inlines what can be inlined and computes what remains element by element:

- every injective producer (padding, bias add, activation) is inlined into its consumer (`compute_inline`);
- an injective consumer of a reduction (the epilogue of conv/matmul/mean) is moved under the reduction's
  innermost spatial loop (`reverse_compute_at`), so the accumulator shrinks to one element;
- the accumulator's initialisation is hoisted out of the reduction loops (`decompose_reduction`), so the inner
  loop has no `if (first iteration)` branch.

Before: pad_temp[1,3,18,18]; conv[1,8,8,8]; add[1,8,8,8]; max[...]; min -> out
After:  for f, y, x: acc = sum(if_then_else(pad cond, in, 0) * w); out[f,y,x] = min(max(acc + b, 0), 6)
"""

from __future__ import annotations

from tvm import s_tir


def _is_reduction(sch: s_tir.Schedule, block: s_tir.SBlockRV) -> bool:
    return any(int(iv.iter_type) != 0 for iv in sch.get(block).iter_vars)


def _inline_injective(sch: s_tir.Schedule) -> None:
    """Inline injective blocks into their consumers until nothing changes."""
    changed = True
    while changed:
        changed = False
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            if _is_reduction(sch, block) or not sch.get_consumers(block):
                continue
            try:
                sch.compute_inline(block)
                changed = True
            except s_tir.ScheduleError:
                continue


def _leading_spatial_loops(sch: s_tir.Schedule, block: s_tir.SBlockRV) -> int:
    iter_vars = sch.get(block).iter_vars
    spatial = 0
    while spatial < len(iter_vars) and int(iter_vars[spatial].iter_type) == 0:
        spatial += 1
    return spatial


def _fuse_epilogues(sch: s_tir.Schedule) -> None:
    """Compute each reduction's injective consumer right after each output element is reduced."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if not _is_reduction(sch, block):
            continue
        consumers = sch.get_consumers(block)
        spatial = _leading_spatial_loops(sch, block)
        if len(consumers) != 1 or _is_reduction(sch, consumers[0]) or spatial == 0:
            continue
        try:
            sch.reverse_compute_at(consumers[0], sch.get_loops(block)[spatial - 1], preserve_unit_loops=True)
        except s_tir.ScheduleError:
            continue


def _hoist_inits(sch: s_tir.Schedule) -> None:
    """Split each reduction into `acc = 0` before its reduction loops and `acc += ...` inside them."""
    for block in list(sch.get_child_blocks(sch.get_sblock("root"))):
        if not _is_reduction(sch, block):
            continue
        spatial = _leading_spatial_loops(sch, block)
        loops = sch.get_loops(block)
        if spatial < len(loops):
            try:
                sch.decompose_reduction(block, loops[spatial])
            except s_tir.ScheduleError:
                continue


def apply(sch: s_tir.Schedule) -> None:
    """Schedule one fused kernel for a scalar Cortex-M core."""
    _inline_injective(sch)
    _fuse_epilogues(sch)
    _hoist_inits(sch)
