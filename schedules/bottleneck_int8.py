"""The int8 reordered bottleneck kernel: three fold-qdq QConv2d kernels (1x1 expand, KxK depthwise, 1x1 projection,
the residual add in the projection's epilogue or not) as ONE kernel computing exactly the same integers.

`kernel(spec)` writes the block as TE stages over whole tensors, with the block names of schedules/bottleneck.py:

    expand[c, y, x]        = sum_i int32(x[i, y, x]) * int32(w_expand[c, i])                         (int32)
    padded[c, y, x]        = requant_e(expand + b_expand[c]) inside, dw input zero point on the padding  (int8)
    depthwise[c, y, x]     = sum_ky,kx int32(padded[c, y*s + ky, x*s + kx]) * int32(w_dw[c, ky, kx])  (int32)
    depthwise_act[c, y, x] = requant_dw(depthwise + b_dw[c])                                          (int8)
    project[o, y, x]       = sum_c int32(depthwise_act[c, y, x]) * int32(w_proj[o, c])                (int32)
    out[0, o, y, x]        = requant_p(project + b_proj[o])  [then the fused residual add with x[0, o, y, x]]

(with a skip_offset (r, c), the add reads x[0, o, y + r, x + c]: x is a patch with a halo, see patch-stage).

Each requantization is the one schedules/int8.py emits for QConv2d (`_requantize`, `_add`), with the same
multipliers, shifts, zero points and clamp bounds, and every bias already holds `-zp * sum(w)` (int8_ops.QConv2d).
Integer sums do not depend on their order, so any loop order gives the same integers as the unfused kernels.

The schedule is the float one (`schedules.bottleneck.apply`): the kernel name starts with
`schedules.bottleneck.KERNEL_PREFIX`, so `bottleneck.rule` picks it. The expanded-channel loop goes outermost; what
remains is one padded int8 plane per channel of a step (scratch) and the int32 projection accumulator `project`
(4 x C_out x H_o x W_o bytes, in the kernel's workspace, which the arena planner places).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from tvm import s_tir, te, tirx

from schedules import bottleneck
from schedules.bottleneck import (KERNEL_PREFIX as FLOAT_PREFIX, ConvGeometry, Tiling, channels_per_step,
                                 spec_from_attr)
from schedules.int8 import _add, _requantize
from tvm_pipeline.int8_ops import Fold, QConv2d, add_fields, add_from_fields
from tvm_pipeline.tvm_adapter import dsp

#: Name of the kernels the reorder-bottleneck-int8 pass creates (bottleneck.rule schedules them by this prefix).
KERNEL_PREFIX = f"{FLOAT_PREFIX}_int8"

#: Expanded channels a step of the channel loop (`apply`): 4, one SMLAD pair's worth of projection inputs; 2 for the
#: kernels the compiler makes compact (`Rule.compact`), where 2 more padded planes would raise the model's peak.
TILING, COMPACT_TILING = Tiling(channels=4), Tiling(channels=2)

#: PrimFunc attribute holding the Int8BottleneckSpec (JSON) a kernel was made from (read back by patch-stage).
SPEC_ATTR = "tvmp.bottleneck_int8_spec"

#: PrimFunc attribute fold-qdq puts on each QConv2d kernel: the conv's non-array parameters (JSON, see `conv_attr`).
CONV_ATTR = "tvmp.int8_conv"


def conv_attr(fold: Fold) -> tuple[str, str]:
    """(CONV_ATTR, JSON) for a QConv2d fold: what a later pass needs besides the kernel's constant arguments.

    Everything in it is also baked into the kernel's TIR (the input zero point only matters, and is only given,
    when the conv pads), so the attribute does not make equal kernels different.
    """
    op = fold.op
    assert isinstance(op, QConv2d)
    residual = None if op.residual is None else add_fields(op.residual)  # QAdd or QAddTFLite
    data = {"weight_shape": [int(d) for d in op.weight.shape], "strides": list(op.strides),
            "padding": list(op.padding), "dilation": list(op.dilation), "groups": op.groups,
            "input_zero_point": op.input_zero_point if any(op.padding) else None,
            "requant": [op.requant.zero_point, op.requant.lo, op.requant.hi, op.requant.dtype,
                        op.requant.arithmetic], "residual": residual,
            "views": bool(fold.out_views) or any(s.views for s in fold.sources)}
    return CONV_ATTR, json.dumps(data)


@dataclass(frozen=True)
class ConvInfo:
    """A QConv2d kernel as read back from its CONV_ATTR."""

    weight_shape: tuple[int, ...]
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int
    input_zero_point: int | None
    requant: tuple[int, int, int, str, str]  # zero point, lo, hi, dtype, arithmetic (Requant's fields)
    residual: tuple | None  # int8_ops.add_fields of the fused add
    views: bool

    @staticmethod
    def of(func) -> ConvInfo | None:
        attrs = getattr(func, "attrs", None)
        if attrs is None or CONV_ATTR not in attrs:
            return None
        d = json.loads(str(attrs[CONV_ATTR]))
        return ConvInfo(tuple(d["weight_shape"]), tuple(d["strides"]), tuple(d["padding"]), tuple(d["dilation"]),
                        d["groups"], d["input_zero_point"], tuple(d["requant"]),
                        None if d["residual"] is None else tuple(d["residual"]), d["views"])


@dataclass(frozen=True)
class _Requant:  # what schedules.int8._requantize reads of a Requant
    zero_point: int
    lo: int
    hi: int
    dtype: str
    arithmetic: str


@dataclass(frozen=True)
class Int8BottleneckSpec(ConvGeometry):
    """Shapes and integer parameters (besides the constant arrays) of one int8 inverted residual with expansion.

    Activations may be int8 or uint8: `in_dtype` is x's type, each requant tuple ends with the type it stores.
    """

    in_channels: int
    expand_channels: int
    out_channels: int
    height: int
    width: int
    kernel: int
    stride: int
    padding: tuple[int, int, int, int]
    dw_input_zero_point: int  # what the depthwise's padding reads
    expand_requant: tuple[int, int, int, str, str]  # zero point, lo, hi, dtype, arithmetic
    dw_requant: tuple[int, int, int, str, str]
    proj_requant: tuple[int, int, int, str, str]
    residual: tuple | None  # int8_ops.add_fields (the projection is operand a, x operand b)
    in_dtype: str = "int8"
    skip_offset: tuple[int, int] = (0, 0)  # the residual reads x[y + rows, x + cols]: x is a patch with a halo
    # (bound on |acc|, smallest and largest shift) of the expansion's, the depthwise's and the projection's
    # requantization, flattened (schedules.int8.rescale_bound; empty: unknown): they select cheaper exact epilogues
    rescale_bounds: tuple[int, ...] = ()

    @property
    def skip(self) -> bool:
        return self.residual is not None



def scratch_bytes(spec: Int8BottleneckSpec) -> int:
    """Workspace of the scheduled kernel: the int32 projection accumulator and one padded int8 plane per expanded
    channel of a step of `apply` (its TILING: the compact one needs less; 16-B aligned, like tvm_adapter's workspace
    slices)."""
    top, left, bottom, right = spec.padding
    plane = channels_per_step(spec.expand_channels, TILING) * (spec.height + top + bottom) * (spec.width + left + right)
    acc = 4 * spec.out_channels * spec.out_height * spec.out_width
    return (acc + 15) // 16 * 16 + (plane + 15) // 16 * 16


def kernel(spec: Int8BottleneckSpec):
    """The PrimFunc `f(x, w_e, b_e, m_e, s_e, w_dw, b_dw, m_dw, s_dw, w_p, b_p, m_p, s_p, out)`, op_pattern opaque.

    Multipliers and shifts are per channel (the pass broadcasts per-tensor ones).
    """
    cin, hidden, cout, h, w, k, s = (spec.in_channels, spec.expand_channels, spec.out_channels, spec.height,
                                     spec.width, spec.kernel, spec.stride)
    ho, wo, (pt, pl, pb, pr) = spec.out_height, spec.out_width, spec.padding
    x = te.placeholder((1, cin, h, w), spec.in_dtype, name="x")
    params = [x]

    def consts(prefix: str, channels: int, weight_shape: tuple[int, ...]):
        group = (te.placeholder(weight_shape, "int8", name=f"w_{prefix}"),
                 *(te.placeholder((channels,), "int32", name=f"{n}_{prefix}") for n in ("b", "m", "s")))
        params.extend(group)
        return group

    bounds = spec.rescale_bounds
    known = [tuple(bounds[i:i + 3]) for i in (0, 3, 6)] if bounds else [None] * 3
    w_e, b_e, m_e, s_e = consts("expand", hidden, (hidden, cin))
    w_d, b_d, m_d, s_d = consts("dw", hidden, (hidden, k, k))
    w_p, b_p, m_p, s_p = consts("proj", cout, (cout, hidden))

    i = te.reduce_axis((0, cin), "i")
    expand = te.compute((hidden, h, w), lambda c, y, xx: te.sum(
        x[0, i, y, xx].astype("int32") * w_e[c, i].astype("int32"), axis=i), name="expand")

    def padded_value(c, y, xx):
        inside = tirx.all(pt <= y, y < h + pt, pl <= xx, xx < w + pl)
        value = _requantize(expand[c, y - pt, xx - pl] + b_e[c], m_e[c], s_e[c], _Requant(*spec.expand_requant),
                            known[0])
        return tirx.if_then_else(inside, value, tirx.const(spec.dw_input_zero_point, spec.expand_requant[3]))

    padded = te.compute((hidden, h + pt + pb, w + pl + pr), padded_value, name="padded")
    ky, kx = te.reduce_axis((0, k), "ky"), te.reduce_axis((0, k), "kx")
    depthwise = te.compute((hidden, ho, wo), lambda c, y, xx: te.sum(
        padded[c, y * s + ky, xx * s + kx].astype("int32") * w_d[c, ky, kx].astype("int32"), axis=[ky, kx]),
        name="depthwise")
    depthwise_act = te.compute((hidden, ho, wo), lambda c, y, xx: _requantize(
        depthwise[c, y, xx] + b_d[c], m_d[c], s_d[c], _Requant(*spec.dw_requant), known[1]), name="depthwise_act")
    rc = te.reduce_axis((0, hidden), "rc")
    project = te.compute((cout, ho, wo), lambda o, y, xx: te.sum(
        depthwise_act[rc, y, xx].astype("int32") * w_p[o, rc].astype("int32"), axis=rc), name="project")

    def epilogue(b, o, y, xx):
        conv = _requantize(project[o, y, xx] + b_p[o], m_p[o], s_p[o], _Requant(*spec.proj_requant), known[2])
        if spec.residual is None:
            return conv
        return _add(add_from_fields(spec.residual), conv, x[b, o, y + spec.skip_offset[0], xx + spec.skip_offset[1]])

    out = te.compute((1, cout, ho, wo), epilogue, name="requantize")
    func = te.create_prim_func([*params, out], index_dtype_override="int64")
    func = func.with_attr(SPEC_ATTR, json.dumps(asdict(spec)))
    return func.with_attr("op_pattern", 8)  # 8 = kOpaque: FuseOps leaves the kernel alone


def spec_of(func) -> Int8BottleneckSpec | None:
    """The spec a `kernel(spec)` PrimFunc was made from (its SPEC_ATTR), None for any other PrimFunc."""
    return spec_from_attr(func, SPEC_ATTR, Int8BottleneckSpec)


def apply(sch: s_tir.Schedule, compact: bool = False) -> None:
    """The float schedule's loop order (`schedules.bottleneck`) with TILING's 4 expanded channels a step (`compact`:
    COMPACT_TILING's 2), and 4-long dot products (`tvm_adapter.dsp`: 2 SMLADs on a DSP core, plain C elsewhere; the
    same integer sums):

    - the projection of a step's 4 activations onto each output: its int32 accumulator is read and written once
      per 4 MACs instead of once per 2 (compact: per 2, scalar);
    - the expansion, pixel by pixel: the 4 channels of x under the pixel paired for SMLAD once and dotted with each
      of the step's weight rows, instead of a strided scalar dot product per channel.

    A width that is not a multiple of 4 keeps the float schedule's scalar loops for that product."""
    spec = spec_of(sch.mod["main"])
    tiling = COMPACT_TILING if compact else TILING
    step = channels_per_step(spec.expand_channels, tiling)
    dot4 = step == 4  # else 2 or 1 channels a step, scalar
    # 3 (else 2) output pixels of a row per depthwise pass: the MobileNetV2-0.35 bottleneck 16 -> 96 -> 16 at 18 x 18
    # ran in 0.84x the instructions with 3, 0.87x with 2; 4 and 6 spill its accumulators (slower)
    pixels = next((p for p in (3, 2) if spec.out_width % p == 0), 1)
    tile = bottleneck.channel_loop_outermost(sch, tiling, unroll_step=not dot4, pixels=pixels)
    if dot4:
        channels = sch.get_loops(sch.get_sblock("project_update"))[-1]
        # channels innermost, so a step's 4 activations are one contiguous region (the intrinsic's operand)
        sch.transform_layout(sch.get_sblock("depthwise_act"), ("write", 0), lambda c, y, xx: (y, xx, c))
        sch.tensorize(channels, dsp.dot4_intrin(spec.dw_requant[3]))
    if spec.in_channels % 4 == 0 and step > 1:  # (a single channel a step has no step loop to put innermost)
        _expand_pixel_by_pixel(sch, tile, spec.in_dtype)
    else:
        bottleneck.fill_padded_planes(sch, tile)


def _expand_pixel_by_pixel(sch: s_tir.Schedule, tile: s_tir.LoopRV, in_dtype: str) -> None:
    """Fill the step's padded planes pixel by pixel (the step's channels innermost): per 4 of x's channels under
    the pixel, a 4-long dot product with each of the step's 4 weight rows, unrolled, so the 4 activations are
    loaded and paired once for all 4 (`tvm_adapter.dsp.strided_dot4_intrin`)."""
    padded = sch.get_sblock("padded")
    sch.compute_at(padded, tile)
    try:  # zero the border (all the step's planes), then fill only the inside
        sch.decompose_padding(padded, sch.get_loops(padded)[-3])
    except s_tir.ScheduleError:  # nothing to decompose: the depthwise is unpadded
        pass
    channel, row, column = sch.get_loops(padded)[-3:]
    sch.reorder(row, column, channel)
    sch.unroll(channel)  # the 4 accumulators indexed by constants: registers
    expand = sch.get_sblock("expand")
    sch.compute_at(expand, column)
    channel, i = sch.get_loops(expand)[-2:]
    outer, inner = sch.split(i, [None, 4])
    sch.reorder(outer, channel, inner)
    sch.decompose_reduction(expand, outer)
    sch.unroll(channel)
    sch.unroll(sch.get_loops(sch.get_sblock("expand_init"))[-1])
    sch.tensorize(inner, dsp.strided_dot4_intrin(in_dtype))


@dataclass(frozen=True)
class Rule:
    """Schedule rule for `lowering.lower_program`: the kernels the reorder-bottleneck-int8 pass created; those named
    in `compact` (TIR names) take COMPACT_TILING."""

    compact: frozenset[str] = frozenset()

    def __call__(self, sch: s_tir.Schedule, tir_name: str) -> bool:
        if not tir_name.startswith(KERNEL_PREFIX):
            return False
        apply(sch, compact=tir_name in self.compact)
        return True
