"""The ops of a patched stage: which ones patch-stage can split, and how one patch of each is written.

float32: relax conv2d, reordered bottlenecks (schedules/bottleneck.py, with their BottleneckSpec attribute) and
per-channel elementwise ops (bias, ReLU, ReLU6 / clip, skip-adds).
int8 / uint8, after fold-qdq: QConv2d kernels (any groups, with or without a fused residual add; read back from
their ConvInfo attribute and constant arguments), reordered int8 bottlenecks (Int8BottleneckSpec attribute) and
QAdd kernels.

A patch op computes its output region with the same arithmetic per element as the whole op: a conv keeps its
weights and gets the patch's border padding (int8: padding reads the input zero point and the bias already holds
-zx * sum(w), so the patch conv is the same QConv2d with other padding); a bottleneck gets its window's size, its
border padding and where its skip reads; an elementwise op only gets other shapes.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import tvm

from schedules import bottleneck, bottleneck_int8
from schedules import int8 as int8_kernels
from schedules.bottleneck import BottleneckSpec
from schedules.bottleneck_int8 import ConvInfo, Int8BottleneckSpec
from tvm_pipeline import tvm_adapter
from tvm_pipeline.int8_ops import ACTIVATION_DTYPES, Fold, QConv2d, Requant, Source, add_from_fields
from tvm_pipeline.passes import patch_regions as pr
from tvm_pipeline.passes.patch_regions import Region, Window
from tvm_pipeline.tvm_adapter import DataflowOp, NewBinding, TensorType

_POINTWISE_BINARY = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide")

AnySpec = BottleneckSpec | Int8BottleneckSpec


class NotSplittable(Exception):
    """Why an op cannot be part of a patched stage (the message goes into the notes)."""


@dataclass(frozen=True)
class StageOp:
    """One op of the stage: its activation inputs (a windowed op's window applies to the first) and how it is built."""

    op: DataflowOp
    inputs: tuple[str, ...]
    window: Window | None = None
    spec: AnySpec | None = None  # a reordered bottleneck (float or int8)
    fold: Fold | None = None  # an int8 conv or add: the integer op, rebuilt for each patch

    @property
    def weight_shape(self) -> tuple[int, ...] | None:
        """(O, C / groups, KH, KW) of a conv; None for any other op."""
        if self.fold is not None:
            return tuple(self.fold.op.weight.shape) if isinstance(self.fold.op, QConv2d) else None
        return tuple(self.op.args[1].shape) if self.window is not None and self.spec is None else None

    @property
    def reads_window_in_place(self) -> bool:
        """Whether the op can read a window of its first input without a copy (a conv, or any int8 kernel)."""
        return self.fold is not None or self.weight_shape is not None


@dataclass(frozen=True)
class Arg:
    """An input of one patch op: `var` of type `type`, read whole, or only its `window` (read in place)."""

    var: str
    type: TensorType
    window: Region | None = None


def _windowed(s: StageOp) -> StageOp:
    """`s` if every output row and column reads at least one input row and column (padding < kernel)."""
    (kh, kw), (pt, pl, pb, pr_) = s.window.kernel, s.window.padding
    if max(pt, pb) >= kh or max(pl, pr_) >= kw:
        raise NotSplittable(f"padding {s.window.padding} reaches a whole kernel {s.window.kernel}")
    if s.spec is not None and s.spec.skip and max(pt, pl) > min(kh, kw) - 1:
        raise NotSplittable(f"skip-add with padding {s.window.padding} wider than the kernel's halo")
    return s


def _bottleneck(op: DataflowOp, spec: AnySpec | None, tensors: tuple[str, ...]) -> StageOp:
    if spec is None:
        raise NotSplittable("a bottleneck kernel without its spec attribute")
    window = Window((spec.kernel, spec.kernel), (spec.stride, spec.stride), spec.padding)
    return _windowed(StageOp(op, tensors[:1], window, spec))


def _float_conv(op: DataflowOp) -> StageOp:
    a, w = op.attrs, op.args[1]
    if not isinstance(w, np.ndarray) or not isinstance(op.args[0], str):
        raise NotSplittable("its weight is not a constant")
    if (a["data_layout"], a["kernel_layout"], a["out_layout"]) != ("NCHW", "OIHW", "NCHW") or a["dilation"] != (1, 1):
        raise NotSplittable(f"layouts/dilation {a['data_layout']}/{a['kernel_layout']}/{a['dilation']} are not "
                            "NCHW/OIHW/(1, 1)")
    return _windowed(StageOp(op, (op.args[0],), Window(tuple(w.shape[2:]), tuple(a["strides"]),
                                                       tuple(a["padding"]))))


def _int8_conv(op: DataflowOp, info: ConvInfo, tensors: tuple[str, ...]) -> StageOp:
    """A fold-qdq QConv2d kernel `f(x, [skip,] weight, bias, multiplier, shift)` as the QConv2d it computes."""
    if info.views or info.dilation != (1, 1):
        raise NotSplittable("an int8 conv reading through an absorbed layout change, or dilated")
    count = 1 if info.residual is None else 2
    constants = op.args[count:]
    if len(tensors) != count or len(constants) != 4 or not all(isinstance(c, np.ndarray) for c in constants):
        raise NotSplittable("an int8 conv whose arguments are not (x, [skip,] weight, bias, multiplier, shift)")
    weight, bias, multiplier, shift = constants
    conv = QConv2d(weight, bias, info.input_zero_point or 0, info.strides, info.padding, info.dilation, info.groups,
                   Requant(multiplier, shift, *info.requant),
                   None if info.residual is None else add_from_fields(info.residual))
    window = Window(tuple(weight.shape[2:]), info.strides, info.padding)
    return _windowed(StageOp(op, tensors, window, fold=Fold(op.var, conv, tuple(Source(t) for t in tensors))))


def _int8(op: DataflowOp, mod: tvm.IRModule, tensors: tuple[str, ...]) -> StageOp:
    if op.op != "call_tir":
        raise NotSplittable("an integer op that is not a fold-qdq kernel")
    func = mod[op.attrs["func"]]
    if op.attrs["func"].startswith(bottleneck_int8.KERNEL_PREFIX):
        return _bottleneck(op, bottleneck_int8.spec_of(func), tensors)
    if (info := ConvInfo.of(func)) is not None:
        return _int8_conv(op, info, tensors)
    if (add := int8_kernels.add_of(func)) is not None and len(tensors) == 2 == len(op.args):
        return StageOp(op, tensors, fold=Fold(op.var, add, tuple(Source(t) for t in tensors)))
    raise NotSplittable("the pass splits int8 convs, reordered int8 bottlenecks and int8 adds only")


def classify(op: DataflowOp, mod: tvm.IRModule) -> StageOp:
    """The op as a StageOp, or NotSplittable with the reason."""
    tensors = tuple(a for a in op.args if isinstance(a, str))
    if op.type is None or len(op.type.shape) != 4 or op.type.shape[0] != 1:
        raise NotSplittable(f"its result is not a batch-1 NCHW tensor ({op.type})")
    if op.type.dtype in ACTIVATION_DTYPES:
        return _int8(op, mod, tensors)
    if op.type.dtype != "float32":
        raise NotSplittable(f"its result is {op.type.dtype}, not float32, int8 or uint8")
    if op.op == "relax.nn.conv2d":
        return _float_conv(op)
    if op.op == "call_tir" and op.attrs["func"].startswith(bottleneck.KERNEL_PREFIX):
        return _bottleneck(op, bottleneck.spec_of(mod[op.attrs["func"]]), tensors)
    if op.op in ("tir.maximum", "tir.minimum", "relax.nn.relu") and len(tensors) == 1:
        return StageOp(op, tensors)
    if op.op == "relax.clip" and len(tensors) == 1 and all(isinstance(b, float) for b in op.args[1:3]):
        return StageOp(op, tensors)
    if op.op in _POINTWISE_BINARY and len(tensors) == 2 and len(op.args) == 2:
        return StageOp(op, tensors)  # both operands are stage tensors of the output's shape (checked by stages)
    if op.op in _POINTWISE_BINARY and len(tensors) == 1:
        const = next(a for a in op.args if not isinstance(a, str))
        shape = (1,) * (4 - np.ndim(const)) + np.shape(const) if np.ndim(const) <= 4 else (0,)
        if shape[0] == 1 and shape[2:] == (1, 1):
            return StageOp(op, tensors)
        raise NotSplittable(f"its constant operand of shape {np.shape(const)} varies over the image")
    raise NotSplittable("the pass splits conv2d, reordered bottlenecks and per-channel elementwise ops only")


def input_region(s: StageOp, index: int, out: Region, in_type: TensorType) -> Region:
    """The region of input `index` (of type `in_type`) that op `s` reads to compute its output region `out`."""
    if s.window is None or index > 0:
        return out  # elementwise, or a fused skip-add: the output's own positions
    return pr.window_input(s.window, out, in_type.shape[2:]).region  # a bottleneck's skip lies inside (_windowed)


def patch_spec(s: StageOp, out: Region, in_type: TensorType) -> AnySpec:
    """The bottleneck spec of one patch: its input window's size, its border padding, where its skip reads."""
    geometry = pr.window_input(s.window, out, in_type.shape[2:])
    x = geometry.region
    offset = (out[0] - x[0], out[2] - x[2]) if s.spec.skip else (0, 0)
    patch = dataclasses.replace(s.spec, height=x[1] - x[0], width=x[3] - x[2], padding=geometry.padding,
                                skip_offset=offset)
    if (patch.out_height, patch.out_width) != pr.size(out):
        raise AssertionError(f"bottleneck patch {patch} does not compute a {pr.size(out)} region")
    return patch


def bottleneck_macs(spec: AnySpec) -> int:
    """Multiply-accumulates of one reordered bottleneck (the same as the unfused block's)."""
    plane, out_plane = spec.height * spec.width, spec.out_height * spec.out_width
    hidden = spec.expand_channels or spec.in_channels
    expand = (spec.expand_channels or 0) * spec.in_channels * plane
    return expand + hidden * out_plane * (spec.kernel ** 2 + spec.out_channels)


def macs(s: StageOp, out: Region, in_type: TensorType) -> int:
    """Multiply-accumulates of op `s` computing its region `out` (its first input has type `in_type`)."""
    if s.spec is not None:
        return bottleneck_macs(patch_spec(s, out, in_type))
    weight = s.weight_shape
    return 0 if weight is None else weight[0] * int(np.prod(pr.size(out))) * int(np.prod(weight[1:]))


def scratch_bytes(s: StageOp, out: Region, in_type: TensorType) -> int:
    """Workspace of op `s` computing region `out`: a bottleneck kernel's scratch, 0 for any other op."""
    if s.spec is None:
        return 0
    spec = patch_spec(s, out, in_type)
    return (bottleneck_int8 if isinstance(spec, Int8BottleneckSpec) else bottleneck).scratch_bytes(spec)


@functools.lru_cache(maxsize=None)  # building a kernel costs ~0.1 s; the patches of a grid repeat specs
def _bottleneck_kernel(spec: AnySpec):
    return (bottleneck_int8 if isinstance(spec, Int8BottleneckSpec) else bottleneck).kernel(spec)


def _kernel_name(s: StageOp) -> str:
    """The name prefix of the op's kernel (e.g. int8_conv2d, bottleneck_reordered): schedule rules match on it."""
    if s.spec is not None:
        return (bottleneck_int8 if isinstance(s.spec, Int8BottleneckSpec) else bottleneck).KERNEL_PREFIX
    return s.op.attrs["func"].rstrip("0123456789")  # fold-qdq's names end in a letter, before the module's number


def binding(s: StageOp, out: Region, types: dict[str, TensorType], args: list[Arg], var: str) -> NewBinding:
    """The binding computing region `out` of op `s` from `args` (one per input, holding what it reads)."""
    op = s.op
    out_type = TensorType((1, op.type.shape[1], *pr.size(out)), op.type.dtype)
    if s.fold is not None:
        return _int8_binding(s, out, types, args, var, out_type)
    if args[0].window is not None:
        return _window_conv(s, args[0], out, var, out_type)
    tensor_args = iter(a.var for a in args)
    full_args = tuple(next(tensor_args) if isinstance(a, str) else a for a in op.args)
    if op.op in ("tir.maximum", "tir.minimum"):
        return NewBinding(var, op.op.replace("tir.", "relax."), full_args, {})
    if op.op == "relax.clip":
        return NewBinding(var, op.op, full_args[:1], {"min": full_args[1], "max": full_args[2]})
    if s.window is None:
        return NewBinding(var, op.op, full_args, op.attrs)
    if s.spec is None:
        geometry = pr.window_input(s.window, out, types[s.inputs[0]].shape[2:])
        return NewBinding(var, op.op, full_args, {**op.attrs, "padding": geometry.padding})
    spec = patch_spec(s, out, types[s.inputs[0]])
    return NewBinding(var, "call_tir", full_args, {"func": _bottleneck_kernel(spec), "name": _kernel_name(s),
                                                   "type": out_type})


def _int8_binding(s: StageOp, out: Region, types: dict[str, TensorType], args: list[Arg], var: str,
                  out_type: TensorType) -> NewBinding:
    """An int8 conv / add kernel for the patch; an input window is read in place through a strided_slice view."""
    op = s.fold.op
    if isinstance(op, QConv2d):
        op = dataclasses.replace(op, padding=pr.window_input(s.window, out, types[s.inputs[0]].shape[2:]).padding)
    sources = tuple(Source(a.var) if a.window is None else Source(a.var, (
        ("strided_slice", ((2, 3), (a.window[0], a.window[2]), (a.window[1], a.window[3]), (1, 1))),)) for a in args)
    func, constants = int8_kernels.kernel(Fold(var, op, sources), [a.type for a in args], out_type)
    return NewBinding(var, "call_tir", (*(a.var for a in args), *constants),
                      {"func": func, "name": _kernel_name(s), "type": out_type})


def _window_conv(s: StageOp, arg: Arg, out: Region, var: str, out_type: TensorType) -> NewBinding:
    """A float conv computing `out`, reading its input window straight from the (whole) tensor `arg`."""
    padding = pr.window_input(s.window, out, arg.type.shape[2:]).padding
    w = s.op.args[1]
    func = tvm_adapter.window_conv_kernel(arg.type, arg.window, TensorType(w.shape, str(w.dtype)), s.window.stride,
                                          padding, s.op.attrs["groups"])
    return NewBinding(var, "call_tir", (arg.var, w), {"func": func, "name": "patch_conv2d", "type": out_type})
