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


def _inline_injective(sch: s_tir.Schedule, keep: tuple[str, ...] = ()) -> None:
    """Inline injective blocks (but those named in `keep`) into their consumers until nothing changes."""
    changed = True
    while changed:
        changed = False
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            if _is_reduction(sch, block) or not sch.get_consumers(block) or sch.get(block).name_hint in keep:
                continue
            try:
                sch.compute_inline(block)
                changed = True
            except s_tir.ScheduleError:
                continue


def loops_below(sch: s_tir.Schedule, block: str, loop: s_tir.LoopRV) -> list[s_tir.LoopRV]:
    """The loops of `block` nested inside `loop` (for rules that unroll what they computed at `loop`)."""
    loops = sch.get_loops(sch.get_sblock(block))
    index = next(i for i, lp in enumerate(loops) if sch.get(lp).same_as(sch.get(loop)))
    return loops[index + 1:]


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


#: Output channels x adjacent output pixels one pass over the reduction computes: their accumulators stay in
#: registers, and each value loaded (an input, a weight) serves several of them. Measured on the emulated M7 (gcc
#: -O3, 13 free registers): a 3x3 conv's interior runs 1.86 instructions a MAC with 4 pixels, 3.3 with none, and
#: spills (more instructions) with 8 pixels or 2 channels x 4 pixels.
POINTWISE_BLOCK = (4, 2)  # 1x1 conv, matmul: 4 channels x 2 pixels (an input serves 4 weights, a weight 2 inputs)
WINDOW_BLOCK = (1, 4)  # KxK conv, depthwise: 4 pixels of a row (a weight serves 4 inputs; neighbours share inputs)


def _pixel_loop(sch: s_tir.Schedule, loops: list, spatial: int, pixels: int, window: bool) -> int | None:
    """Index of the spatial loop to block by `pixels`: the row's, else the column's (NCHW: loops b, o, i, j), whose
    extent `pixels` divides. A window's block also needs 3 blocks in the row: LoopPartition then leaves an interior
    block with no padding check."""
    for index in (spatial - 1, spatial - 2)[: max(spatial - 2, 0)]:
        extent = int(sch.get(loops[index]).extent)
        if extent % pixels == 0 and (not window or extent >= 3 * pixels):
            return index
    return None


def _block_registers(sch: s_tir.Schedule) -> list[str]:
    """Compute a block of output channels x pixels per pass over each conv's or matmul's reduction.

    Before: for o, i, j: acc = 0; for rc, ry, rx: acc += x[rc, i+ry, j+rx] * w[o, rc, ry, rx]; out[o, i, j] = f(acc)
    After:  for oo, i, jo: acc[0:C, 0:P] = 0
                for rc, ry, rx: for oi < C, ji < P (unrolled): acc[oi, ji] += x[rc, i+ry, P jo+ji+rx] * w[C oo+oi, ...]
                for oi, ji: out[C oo + oi, i, P jo + ji] = f(acc[oi, ji])
    Each output sums the same products in the same order: bit-identical, float or integer. LoopPartition
    (tvm_adapter.codegen) still splits the padded border blocks off. Returns the blocked reductions' names (their
    epilogues' loops are unrolled once fused: `_unroll_epilogues`).
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
            continue  # a residual added in the epilogue: left unblocked (blocking it is not measured yet)
        window = any(int(sch.get(loop).extent) != 1 for loop in loops[spatial + 1:])
        channels, pixels = WINDOW_BLOCK if window else POINTWISE_BLOCK
        inner = []
        if channels > 1 and int(sch.get(loops[1]).extent) % channels == 0:
            loops[1], channel_inner = sch.split(loops[1], [None, channels])
            inner.append(channel_inner)
        pixel = _pixel_loop(sch, loops, spatial, pixels, window)
        if pixel is not None:
            loops[pixel], pixel_inner = sch.split(loops[pixel], [None, pixels])
            inner.append(pixel_inner)
        if not inner:
            continue
        sch.reorder(*loops[1:], *inner)  # the blocks below every other spatial loop and the reduction
        for loop in inner:
            sch.unroll(loop)
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
    blocked = _block_registers(sch)
    _fuse_epilogues(sch)
    _unroll_epilogues(sch, blocked)
    _hoist_inits(sch)
