"""The reordered bottleneck kernel: its TensorIR definition and its schedule (expanded channels outermost).

`kernel(spec)` defines one inverted residual as plain TensorIR stages, each over its whole tensor:

    expand[c, y, x]        = sum_i w_expand[c, i] * x[i, y, x]              (absent when the block has no expansion)
    padded[c, y, x]        = act(expand + b_expand[c]) inside, 0 on the depthwise's padding   (x itself if no expansion)
    depthwise[c, y, x]     = sum_ky,kx w_dw[c, ky, kx] * padded[c, y*s + ky, x*s + kx]
    depthwise_act[c, y, x] = act(depthwise + b_dw[c])
    out[o, y, x]           = b_proj[o] (+ x[o, y, x]) + sum_c w_proj[o, c] * depthwise_act[c, y, x]

`apply(sch, tiling)` turns it into the reordered loop nest, in which no C_expand-sized tensor exists:

    out = b_proj (+ x)                                # init of the projection, before the channel loop
    for c in expanded channels, tiling.channels (2) at a time:   # outermost: a step of 2 expanded channels
      for row tile (tiling.rows output rows; default: one tile, the whole plane):
        padded rows = 0; padded inside = act(w_expand[c] . x + b_expand[c])   # scratch: the rows the tile reads
        for y, x in tile:
          d[0:2] = act(depthwise(padded) + b_dw[c])   # two scalars
          for o: out[o, y, x] += w_proj[o, c] * d[0] + w_proj[o, c + 1] * d[1]   (in that order, unrolled)

Scratch is one padded plane per channel of a step ((H + pads) x (W + pads) floats each), or the rows of a tile:
never a function of C_expand. Two channels a step read and write each output element once per two projection MACs
(MobileNetV2-0.35@144 float: 0.91x the instructions for 640 B more peak). MACs are unchanged with the whole-plane tile; row tiles re-expand the (K - s) rows that
consecutive tiles share, and (as compiled today) test a row predicate in the expansion's inner loop. The projection
is summed channel by channel, so results equal the unfused graph within float rounding, not bit for bit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TypeVar

from tvm import s_tir, tirx
from tvm.script import tirx as T

#: Name (prefix) of the kernels the reorder-bottleneck pass creates; the schedule rule picks them by it.
KERNEL_PREFIX = "bottleneck_reordered"

#: PrimFunc attribute holding the BottleneckSpec (JSON) a kernel was made from, so later passes can re-derive it.
SPEC_ATTR = "tvmp.bottleneck_spec"

SpecT = TypeVar("SpecT")

#: (lower, upper) bounds of a clamp; None where unbounded. ReLU is (0.0, None), ReLU6 (0.0, 6.0).
Clamp = tuple[float | None, float | None]


def conv_output_size(size: int, pad_before: int, pad_after: int, kernel: int, stride: int) -> int:
    """Output rows (or columns) of a KxK convolution over `size` padded rows."""
    return (size + pad_before + pad_after - kernel) // stride + 1


class ConvGeometry:
    """The output size of a spec's KxK window (the float and the int8 bottleneck specs)."""

    height: int
    width: int
    kernel: int
    stride: int
    padding: tuple[int, int, int, int]  # top, left, bottom, right

    @property
    def out_height(self) -> int:
        return conv_output_size(self.height, self.padding[0], self.padding[2], self.kernel, self.stride)

    @property
    def out_width(self) -> int:
        return conv_output_size(self.width, self.padding[1], self.padding[3], self.kernel, self.stride)


def spec_from_attr(func, attr: str, spec_type: type[SpecT]) -> SpecT | None:
    """The spec dataclass a kernel builder stored as JSON in PrimFunc attribute `attr`; None for any other PrimFunc."""
    attrs = getattr(func, "attrs", None)
    if attrs is None or attr not in attrs:
        return None
    fields = json.loads(str(attrs[attr]))
    return spec_type(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


@dataclass(frozen=True)
class BottleneckSpec(ConvGeometry):
    """Shapes and activations of one inverted residual (NCHW, batch 1, float32)."""

    in_channels: int
    expand_channels: int | None  # None: no 1x1 expansion (t = 1), the depthwise reads the input
    out_channels: int
    height: int
    width: int
    kernel: int
    stride: int
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    expand_act: Clamp | None
    dw_act: Clamp
    skip: bool  # out += x (needs stride 1 and in_channels == out_channels)
    skip_offset: tuple[int, int] = (0, 0)  # out[y, x] += x[y + rows, x + cols]: x is a patch with a halo

    @property
    def hidden(self) -> int:
        return self.expand_channels or self.in_channels


@dataclass(frozen=True)
class Tiling:
    """The tunable part of the schedule: output rows computed per step of the channel loop (None: the whole plane),
    and expanded channels per step (each adds a padded plane of scratch; the projection then reads and writes each
    output element once per `channels` MACs instead of once per MAC)."""

    rows: int | None = None
    channels: int = 2


def channels_per_step(hidden: int, tiling: Tiling) -> int:
    """The expanded channels one step of the channel loop computes: `tiling.channels` where it divides `hidden`."""
    return tiling.channels if hidden % tiling.channels == 0 else 1


def scratch_bytes(spec: BottleneckSpec, tiling: Tiling = Tiling()) -> int:
    """The kernel's scratch under `apply(sch, tiling)`: the padded rows that a tile reads, of the channels of a step."""
    top, left, bottom, right = spec.padding
    rows = spec.height + top + bottom if tiling.rows is None else (tiling.rows - 1) * spec.stride + spec.kernel
    plane = 4 * min(rows, spec.height + top + bottom) * (spec.width + left + right)
    return channels_per_step(spec.hidden, tiling) * plane


def _clamp(value, bounds: Clamp):
    lower, upper = bounds
    if lower is not None:
        value = T.max(value, T.float32(lower))
    if upper is not None:
        value = T.min(value, T.float32(upper))
    return value


def kernel(spec: BottleneckSpec):
    """The bottleneck as a TensorIR PrimFunc, kept out of operator fusion (op_pattern kOpaque)."""
    cin, hidden, cout, h, w, k, s = (spec.in_channels, spec.hidden, spec.out_channels, spec.height, spec.width,
                                     spec.kernel, spec.stride)
    ho, wo, (pt, pl, pb, pr) = spec.out_height, spec.out_width, spec.padding
    expands, skip, expand_act, dw_act = spec.expand_channels is not None, spec.skip, spec.expand_act, spec.dw_act
    sy, sx = spec.skip_offset

    def padded_value(expand, b_expand, x, c, y, xx):  # element (c, y, xx) of the depthwise's zero-padded input
        inside = tirx.all(pt <= y, y < h + pt, pl <= xx, xx < w + pl)
        value = (_clamp(expand[c, y - pt, xx - pl] + b_expand[c], expand_act) if expands
                 else x[0, c, y - pt, xx - pl])
        return T.if_then_else(inside, value, T.float32(0))

    @T.prim_func(private=True, s_tir=True)
    def bottleneck(x: T.Buffer((1, cin, h, w), "float32"), w_expand: T.Buffer((hidden, cin), "float32"),
                   b_expand: T.Buffer((hidden,), "float32"), w_dw: T.Buffer((hidden, k, k), "float32"),
                   b_dw: T.Buffer((hidden,), "float32"), w_proj: T.Buffer((cout, hidden), "float32"),
                   b_proj: T.Buffer((cout,), "float32"), out: T.Buffer((1, cout, ho, wo), "float32")):
        T.func_attr({"op_pattern": 8, "tirx.noalias": True})  # 8 = kOpaque: FuseOps leaves the kernel alone
        expand = T.sblock_alloc_buffer((hidden, h, w))
        padded = T.sblock_alloc_buffer((hidden, h + pt + pb, w + pl + pr))
        depthwise = T.sblock_alloc_buffer((hidden, ho, wo))
        depthwise_act = T.sblock_alloc_buffer((hidden, ho, wo))
        if expands:
            for c, y, xx, i in T.grid(hidden, h, w, cin):
                with T.sblock("expand"):
                    vc, vy, vx, vi = T.axis.remap("SSSR", [c, y, xx, i])
                    with T.init():
                        expand[vc, vy, vx] = T.float32(0)
                    expand[vc, vy, vx] = expand[vc, vy, vx] + w_expand[vc, vi] * x[0, vi, vy, vx]
        for c, y, xx in T.grid(hidden, h + pt + pb, w + pl + pr):
            with T.sblock("padded"):
                vc, vy, vx = T.axis.remap("SSS", [c, y, xx])
                padded[vc, vy, vx] = padded_value(expand, b_expand, x, vc, vy, vx)
        for c, y, xx, ky, kx in T.grid(hidden, ho, wo, k, k):
            with T.sblock("depthwise"):
                vc, vy, vx, vky, vkx = T.axis.remap("SSSRR", [c, y, xx, ky, kx])
                with T.init():
                    depthwise[vc, vy, vx] = T.float32(0)
                depthwise[vc, vy, vx] = depthwise[vc, vy, vx] + w_dw[vc, vky, vkx] * padded[vc, vy * s + vky,
                                                                                               vx * s + vkx]
        for c, y, xx in T.grid(hidden, ho, wo):
            with T.sblock("depthwise_act"):
                vc, vy, vx = T.axis.remap("SSS", [c, y, xx])
                depthwise_act[vc, vy, vx] = _clamp(depthwise[vc, vy, vx] + b_dw[vc], dw_act)
        for o, y, xx, c in T.grid(cout, ho, wo, hidden):
            with T.sblock("project"):
                vo, vy, vx, vc = T.axis.remap("SSSR", [o, y, xx, c])
                with T.init():
                    if skip:
                        out[0, vo, vy, vx] = b_proj[vo] + x[0, vo, vy + sy, vx + sx]
                    else:
                        out[0, vo, vy, vx] = b_proj[vo]
                out[0, vo, vy, vx] = out[0, vo, vy, vx] + w_proj[vo, vc] * depthwise_act[vc, vy, vx]

    if expands:
        return bottleneck.with_attr(SPEC_ATTR, json.dumps(asdict(spec)))
    # No expansion: the padded plane copies x; drop the two unused weight parameters.
    params = [p for p in bottleneck.params if p.name not in ("w_expand", "b_expand")]
    func = tirx.PrimFunc(params, bottleneck.body, attrs=bottleneck.attrs)
    return func.with_attr(SPEC_ATTR, json.dumps(asdict(spec)))


def spec_of(func) -> BottleneckSpec | None:
    """The spec a `kernel(spec)` PrimFunc was made from (its SPEC_ATTR), None for any other PrimFunc."""
    return spec_from_attr(func, SPEC_ATTR, BottleneckSpec)


def apply(sch: s_tir.Schedule, tiling: Tiling = Tiling()) -> None:
    """Reorder the kernel so that the expanded-channel loop is outermost (see the module docstring)."""
    fill_padded_planes(sch, channel_loop_outermost(sch, tiling))


def channel_loop_outermost(sch: s_tir.Schedule, tiling: Tiling = Tiling(), unroll_step: bool = True,
                           pixels: int = 1) -> s_tir.LoopRV:
    """Everything but the padded planes: the projection under the channel loop, its init before it, the depthwise
    and its activation one element at a time where the projection reads them. Returns the loop the padded planes
    belong under (a row tile's, else the channel loop). `unroll_step` False leaves the projection's loop over the
    channels of a step a plain loop (to be tensorized). `pixels` (a divisor of the output width): the depthwise
    computes that many neighbouring output pixels of each channel at once (a weight load serves them all)."""
    if tiling.rows is not None and tiling.rows < 1:
        raise ValueError(f"tiling.rows must be positive, got {tiling.rows}")
    project = sch.get_sblock("project")
    o, y, xx, c = sch.get_loops(project)
    hidden = int(sch.get(c).extent)
    c, step = sch.split(c, [None, channels_per_step(hidden, tiling)])  # step: the channels of one pass, innermost
    xx, xi = sch.split(xx, [None, pixels])
    if tiling.rows:
        tile, y = sch.split(y, [None, tiling.rows])
        sch.reorder(c, tile, y, xx, xi, o, step)
    else:
        tile = c
        sch.reorder(c, y, xx, xi, o, step)
    if unroll_step:
        sch.unroll(step)
    sch.decompose_reduction(project, c)  # out = b_proj (+ x), before the channel loop
    # depthwise + act: one output element (`pixels` of a row) at a time, right where the projection consumes it
    sch.compute_at(sch.get_sblock("depthwise_act"), xx)
    depthwise = sch.get_sblock("depthwise")
    sch.compute_at(depthwise, xx)
    sch.decompose_reduction(depthwise, sch.get_loops(depthwise)[-2])
    return tile


def fill_padded_planes(sch: s_tir.Schedule, tile: s_tir.LoopRV) -> None:
    """The padded, activated expansion of a step's channels under `tile`: the rows its depthwise reads, a plane at a
    time, each element's expansion a scalar dot product."""
    padded = sch.get_sblock("padded")
    sch.compute_at(padded, tile)
    try:  # zero the border, then fill only the inside (no branch per expansion MAC)
        sch.decompose_padding(padded, sch.get_loops(padded)[-2])
    except s_tir.ScheduleError:  # nothing to decompose: the depthwise is unpadded
        pass
    try:
        expand = sch.get_sblock("expand")
    except s_tir.ScheduleError:  # no expansion: the padded plane copies a channel of x
        return
    sch.compute_at(expand, sch.get_loops(sch.get_sblock("padded"))[-1])
    sch.decompose_reduction(expand, sch.get_loops(expand)[-1])


def rule(sch: s_tir.Schedule, tir_name: str) -> bool:
    """Schedule rule for `lowering.lower_program`: handles the kernels the reorder-bottleneck pass created."""
    if not tir_name.startswith(KERNEL_PREFIX) or spec_of(sch.mod["main"]) is None:  # int8: bottleneck_int8.Rule
        return False
    apply(sch)
    return True
