"""int8 convolutions as an im2col matrix product on the Cortex-M DSP extension (SMLAD), tensorized.

A dense int8 conv (groups 1, any KxK, stride, dilation, padding) is rescheduled as CMSIS-NN computes it, but written
as TensorIR schedule primitives (a reduction length K = C*KH*KW that is not a multiple of 4, as a 3-channel stem's 27,
is padded with zeros: pad_einsum gives col and a copy of the weight (O x K' bytes of workspace, or a constant
when the weights are prepacked) a zero tail):

    weight (O, C, KH, KW) -> (O, K)                       transform_layout: the same bytes in flash, a row per channel
    acc[o, i, j] over (rc, ry, rx) -> over one k            transform_block_layout
    col[i, j, k] = padded input under pixel (i, j)'s window reindex: im2col, padding read as the input zero point
    for each row i, each block of P pixels of the row:      compute_at: col holds P x K bytes (workspace), filled
        fill col (P x K)                                        once per pixel block, whatever the output channels
        for each block of C output channels:
            for k in 0..K/4: for c < C, p < P:              tensorize: acc[c, p] = tvmp_dot4(&col[p, 4k], &w[c, 4k],
                                                                         acc[c, p]) (tvm_adapter.dsp: 2 SMLADs)
            requantize the C x P block                      reverse_compute_at: the epilogue under the channel block

Every output sums the same products (in another order): integer sums are exact, so outputs are bit-identical to the
scalar schedule's. Against that schedule (schedules/default.py) it trades P*K bytes of workspace (the planner
budgets it like any kernel scratch) for no padding check in the inner loop and 2 MACs an SMLAD: on the emulated
F746 (-O3) the MLPerf int8 models ran in 0.60x (IC), 0.83x (VWW) and 0.80x (KWS) of the scalar schedule's
instructions (the README's speed figures).

Its settings (`knob_space`), measured per kernel by `tvmp tune`: the register block, activations widened to int16
in col (`widen`), and weights stored as int16 pairs, rewritten at compile time (`pack_weights`). `rule` takes the
kernels it applies to, with the defaults, when the board has the DSP extension (`schedules.pattern_rules(dsp=True)`).
"""

from __future__ import annotations

from tvm import s_tir

from schedules import default
from schedules.bottleneck_int8 import ConvInfo
from tvm_pipeline import tvm_adapter
from tvm_pipeline.tvm_adapter import dsp

#: (output channels, pixels) a pass over k computes when the pixel count allows pixel pairs: 4 accumulators, and
#: each operand word loaded and widened serves 2 of them.
BLOCK = (2, 2)
#: ... and when it does not (an odd pixel count): each col word serves 4 channels.
BLOCK_SINGLE_PIXEL = (4, 1)
#: The register blocks `tvmp tune` measures on the board (the best depends on K, the row width and the channel
#: count: on VWW's int8 1x1 convs (1, 4), (2, 3) and (4, 1) each won somewhere, by up to 0.88x the instructions;
#: (8, 1) on KWS's 25 x 5 1x1 convs with prepacked weights: 0.96x (4, 1)'s), each with col as int8 and widened to
#: int16 (`apply`'s `widen`) and the weights as they are or prepacked (`pack_weights`).
TUNABLE_BLOCKS = ((2, 2), (4, 1), (2, 3), (1, 4), (2, 4), (4, 2), (3, 2), (8, 1))
#: How `apply` may widen the activations to int16 for the dot products (see `apply`).
WIDEN = ("fill", "copy")


def _pair_order(*index):
    """The last axis k -> (k // 4, k % 2, k % 4 // 2): (x0, x2, x1, x3) per 4, the int16 pairs SMLAD multiplies."""
    *outer, k = index
    return (*outer, k // 4, k % 2, k % 4 // 2)


def applies(func) -> bool:
    """Whether `func` is a fold-qdq int8 conv this schedule handles."""
    info = ConvInfo.of(func)
    if info is None or info.groups != 1 or _reads_output_through_view(func):
        return False
    _, channels, kh, kw = info.weight_shape
    x, weight = func.params[0], func.params[2 if info.residual is not None else 1]
    return str(x.ty.dtype.dtype) in ("int8", "uint8") and str(weight.ty.dtype.dtype) == "int8"


def _reads_output_through_view(func) -> bool:
    """Whether the conv's output reaches the kernel's output through a layout change (a view after the epilogue):
    the schedule moves the epilogue, which must be the block that writes the output. Views of the input are
    inlined into the im2col buffer."""
    sch = s_tir.Schedule(func)
    try:
        epilogue = sch.get_sblock("requantize")
    except s_tir.ScheduleError:
        return True
    return bool(sch.get_consumers(epilogue))


def _read_index(sch: s_tir.Schedule, block: s_tir.SBlockRV, name: str) -> int:
    return [region.source.name for region in sch.get(block).reads].index(name)


def knob_space(func) -> list[dict]:
    """The settings of `apply` that `tvmp tune` measures for kernel `func`, the default first: each register block
    (channels, pixels) that divides the output channels and the row width (another would run as a smaller block),
    with col as int8 and, where K needs no zero padding, widened to int16 (each way `apply` has), each with the
    weights as they are and prepacked."""
    info = ConvInfo.of(func)
    out_c, in_c, kh, kw = info.weight_shape
    ow = int(func.params[-1].ty.shape[3])
    default_block = BLOCK if ow % BLOCK[1] == 0 else BLOCK_SINGLE_PIXEL
    blocks = dict.fromkeys(b for b in (default_block, *TUNABLE_BLOCKS) if out_c % b[0] == 0 and ow % b[1] == 0)
    widen = [None]
    if (in_c * kh * kw) % 4 == 0:
        widen += [*WIDEN] if kh * kw > 1 else ["fill"]  # a 1x1 fill is a plain copy: a second pass only adds one
    return [{"block": list(b), "widen": w, "pack_weights": p} for w in widen for b in blocks for p in (False, True)]


def apply(sch: s_tir.Schedule, block: tuple[int, int] | None = None, widen: str | None = None,
          pack_weights: bool = False) -> None:
    """Schedule a kernel `applies` accepts (see the module docstring); `block` = (channels, pixels) overrides the
    register block. `widen` (K a multiple of 4; one of WIDEN): the dot products read the activations widened to
    int16, in SMLAD's pair order (a0, a2, a1, a3) per 4 of K, and load its pairs as they are
    (`dsp.dot4_intrin(wide=True)`): no SXTB16 on the activations (VWW's 6x6 128 -> 128 1x1 conv with a 2 x 3 block: 0.84x
    the instructions), each value widened once for all output channels. "fill": col itself is int16 (twice the
    workspace); "copy": col stays int8 and a second pass widens it 4 bytes at a time (three times the workspace):
    a KxK window fills col by (rc, ry, rx), where the interleaved index of each byte would take divisions (IC's
    16x16 32 -> 32 3x3 conv with a 2 x 2 block: 0.93x; KWS's 10x4 stem prefers "fill").
    `pack_weights`: the weights are read as int16 pairs in the same order, rewritten so at compile time
    (`tvm_adapter.mark_prepack`: the model must pass them as a constant; twice their flash): no SXTB16 on the
    weights either (KWS's 25 x 5 64 -> 64 1x1 conv: 0.85x the instructions). Where K is padded, the zero-tailed
    copy of the weights pad_einsum makes is the rewritten stage: no copy on the board, no workspace for it (VWW's
    3x3 stem, K = 27: 0.97x). Widened activations with a padded K measured slower (the interleaved fill of a padded
    window: 1.4x on that stem), so `widen` applies only where K needs no padding."""
    func = sch.mod["main"]
    info = ConvInfo.of(func)
    x, weight = func.params[0], func.params[2 if info.residual is not None else 1]
    out_c, in_c, kh, kw = info.weight_shape
    ow = int(func.params[-1].ty.shape[3])
    window = kh * kw
    acc, epilogue = sch.get_sblock("acc"), sch.get_sblock("requantize")

    sch.transform_layout(acc, ("read", _read_index(sch, acc, weight.name)),
                         lambda o, c, y, xx: (o, c * window + y * kw + xx))
    sch.transform_block_layout(acc, lambda b, o, i, j, rc, ry, rx: (b, o, i, j, rc * window + ry * kw + rx))
    padded = (in_c * window) % 4 != 0
    reads = [region.source.name for region in sch.get(acc).reads]
    col = sch.reindex(acc, ("read", next(i for i, name in enumerate(reads) if name != weight.name)))
    # the padding stage and any input views, into col (which copies the padded input: it stays a stage)
    default._inline_injective(sch, keep=(sch.get(col).name_hint, "conv_requantize"))  # noqa: SLF001
    if padded:  # K padded to a multiple of 4 with zeros: col and a copy of the weight get a zero tail
        sch.pad_einsum(acc, [1, 1, 1, 1, 4])
        padded_col = sch.get_consumers(col)[0]
        sch.compute_inline(col)
        col = padded_col
    if pack_weights:  # (o, k) -> int16 (o, k // 4, k % 2, k % 4 // 2): SMLAD's pairs, as col's below
        if padded:  # the zero-tailed copy pad_einsum made is the stage
            packed = next(b for b in sch.get_producers(acc)
                          if weight.name in [region.source.name for region in sch.get(b).reads])
        else:
            packed = sch.cache_read(acc, _read_index(sch, acc, weight.name), "global")
        tvm_adapter.mark_prepack(sch, packed)
        sch.unsafe_set_dtype(packed, 0, "int16")
        sch.transform_layout(packed, ("write", 0), _pair_order)

    # Pixel blocks stay within a row: a block across rows makes the pixel index a division, and LoopPartition
    # (TVM 0.27) then splits col's fill loop at a wrong bound, writing past the block (measured on a 6x9 output).
    channels, pixels = block or (BLOCK if ow % BLOCK[1] == 0 else BLOCK_SINGLE_PIXEL)
    channels = channels if out_c % channels == 0 else 1
    pixels = pixels if ow % pixels == 0 else 1
    _, o, i, j, k = sch.get_loops(acc)
    p_outer, p_inner = sch.split(j, [None, pixels])
    o_outer, o_inner = sch.split(o, [None, channels])
    k_outer, k_inner = sch.split(k, [None, 4])
    sch.reorder(i, p_outer, o_outer, k_outer, o_inner, p_inner, k_inner)
    sch.compute_at(col, p_outer)
    if widen not in (None, *WIDEN):
        raise ValueError(f"widen must be None or one of {WIDEN}, got {widen!r}")
    widen = None if padded else widen
    if widen is not None:  # lossless: each read narrows back to the activation type, which is all col holds
        wide = col
        if widen == "copy":  # the second pass: 4 bytes at a time, so the interleave is a constant per byte
            wide = sch.cache_read(acc, _read_index(sch, acc, sch.get(col).writes[0].source.name), "global")
        sch.unsafe_set_dtype(wide, 0, "int16")
        sch.transform_layout(wide, ("write", 0), _pair_order)
        if widen == "copy":
            sch.unroll(sch.split(sch.get_loops(wide)[-1], [None, 4])[1])
    if padded:  # the zero tail written apart, so the fill below has its plain bounds again
        sch.decompose_padding(col, sch.get_loops(col)[-1])
    if window > 1:  # fill col by (rc, ry, rx): plain index arithmetic instead of a division per byte
        sch.split(sch.get_loops(col)[-1], [in_c, kh, kw])
    if info.residual is not None:  # the conv's own requantization, then the add, per block
        sch.reverse_compute_at(sch.get_sblock("conv_requantize"), o_outer)
    sch.reverse_compute_at(epilogue, o_outer)
    sch.decompose_reduction(acc, k_outer)
    dtype = str(x.ty.dtype.dtype)
    sch.tensorize(k_inner, dsp.dot4_intrin(dtype, wide=widen is not None, packed=pack_weights))
    # 4 (else 2) steps of the reduction per loop iteration: gcc -O3 does not unroll it, and the loop's own add,
    # compare and branch were ~4 of ~27 instructions a step (IC 0.92x, KWS 0.94x the instructions by 4s)
    steps = int(sch.get(k_outer).extent)
    for factor in (4, 2):
        if steps % factor == 0 and steps > factor:
            sch.unroll(sch.split(k_outer, [None, factor])[1])
            break
    epilogues = ("conv_requantize", "requantize") if info.residual is not None else ("requantize",)
    for loop in (o_inner, p_inner, *(lp for name in epilogues for lp in default.loops_below(sch, name, o_outer)),
                 *default.loops_below(sch, "acc_init", o_outer)):
        sch.unroll(loop)  # accumulators (and the conv's values) indexed by constants stay in registers


def rule(sch: s_tir.Schedule, tir_name: str) -> bool:
    """Schedule rule for `lowering.lower_program`: the im2col DSP schedule for the int8 convs it applies to."""
    if not applies(sch.mod["main"]):
        return False
    apply(sch)
    return True
