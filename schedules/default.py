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


#: Output channels one pass over a conv's or matmul's input window computes (their accumulators stay in registers).
CHANNEL_BLOCK = 4


def _block_channels(sch: s_tir.Schedule) -> list[str]:
    """Compute CHANNEL_BLOCK output channels per pass over the reduction: each input value loaded once serves them all.

    Before: for o, i, j: acc = 0; for rc, ry, rx: acc += x[rc, i+ry, j+rx] * w[o, rc, ry, rx]; out[o, i, j] = f(acc)
    After:  for oo, i, j: acc[0:4] = 0; for rc, ry, rx: for oi in 0..4 (unrolled): acc[oi] += x[...] * w[4 oo + oi, ...]
                          for oi in 0..4: out[4 oo + oi, i, j] = f(acc[oi])
    Each output sums the same products in the same order: bit-identical, float or integer. Returns the blocked
    reductions' names (their epilogues' channel loops are unrolled once fused: `_unroll_epilogues`).
    """
    blocked: list[str] = []
    *inputs, out = sch.mod["main"].params
    same_shape = {p.name for p in inputs if tuple(p.ty.shape) == tuple(out.ty.shape)}
    for block in list(sch.get_child_blocks(sch.get_sblock("root"))):
        spatial = _leading_spatial_loops(sch, block)
        loops = sch.get_loops(block)
        if not _is_reduction(sch, block) or spatial < 2 or spatial == len(loops):
            continue
        if same_shape - {region.source.name for region in sch.get(block).reads}:
            continue  # a residual added in the epilogue: the kernel may run in place over it, proven on one store
        channels, reduced = int(sch.get(loops[1]).extent), [int(sch.get(loop).extent) for loop in loops[spatial:]]
        # pointwise (1x1 conv, matmul) only: a KxK window's partitioned border loops would be blocked too, at ~40 %
        # more code for ~5 % fewer instructions (ResNet-8); a depthwise conv reads one input channel per output
        if channels % CHANNEL_BLOCK or reduced[0] == 1 or any(extent != 1 for extent in reduced[1:]):
            continue
        outer, inner = sch.split(loops[1], [None, CHANNEL_BLOCK])
        sch.reorder(outer, *loops[2:], inner)  # the channel block below the other spatial and the reduction loops
        sch.unroll(inner)
        blocked.append(sch.get(block).name_hint)
    return blocked


def _unroll_epilogues(sch: s_tir.Schedule, blocked: list[str]) -> None:
    """Unroll the loops an epilogue adds under its reduction's loops: with every accumulator index a constant, the C
    compiler keeps the accumulators in registers (an array indexed by a loop variable has to live in memory)."""
    for name in blocked:
        block = sch.get_sblock(name)
        producer_loops = [sch.get(loop) for loop in sch.get_loops(block)]
        for consumer in sch.get_consumers(block):
            for loop in sch.get_loops(consumer):
                if not any(sch.get(loop).same_as(p) for p in producer_loops):
                    sch.unroll(loop)


def apply(sch: s_tir.Schedule) -> None:
    """Schedule one fused kernel for a scalar Cortex-M core."""
    _inline_injective(sch)
    blocked = _block_channels(sch)
    _fuse_epilogues(sch)
    _unroll_epilogues(sch, blocked)
    _hoist_inits(sch)
