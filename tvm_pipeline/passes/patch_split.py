"""Rewrite the first stage (input .. layer N) into R x C patches, each computed from its input window with halo.

Before (after reorder-bottleneck; any mix of conv2d, bias/activation ops, skip-adds and reordered bottlenecks):

    a = conv2d(input, W0) [3x3/2, pad 1];  a = add(a, b0);  a = min(max(a, 0), 6)          # 16 x 72 x 72
    s = call_tir(bottleneck_reordered, (a, ...))                                           # stage output, 8 x 36 x 36
    ... (the rest of the network reads s)

After (2 x 2 grid shown; patch (0, 1) of s is rows 0..18, columns 18..36):

    a01 = call_tir(patch_conv2d1, (input, W0))   # reads image rows 0..38, cols 33..143 in place; pads the top only
    a01 = add(a01, b0);  a01 = min(max(a01, 0), 6)                          # 16 x 19 x 38
    s01 = call_tir(bottleneck_reordered4, (a01, ...))  # a kernel for the patch's shapes and border padding
    s = call_tir(patch_place1, (s_placed0, s01))       # writes the patch into the stage output
    ... (unchanged)

Each op computes exactly the region its consumers need (patch_regions.py), so every stage-output element is the same
arithmetic as in the unsplit graph. A conv reading the image reads its window in place; any other reader of the
image, and a consumer that needs less of a tensor than its patch holds (a skip-add), gets a strided_slice.

`patch_place` kernels copy the stage output so far with one patch written in; each reads the previous one element by
element, so the planner runs the chain in place. Its order search runs one patch's chain at a time (only that
patch's intermediates live), keeps the finished patches, then places them all: the stage output is never held twice
while the input is live, and the input stays whole, as in MCUNetV2.

`stages` lists the valid split points: prefixes of `main` from the image through conv2d, reordered bottlenecks and
per-channel elementwise ops (bias, ReLU, ReLU6, skip-adds) whose only tensor read later is their last output. The
first op it cannot split ends the list, with the reason. Choosing among them is patch_search.py's job, and the
pass itself (patch_stage.py) writes the notes.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import tvm

from schedules.bottleneck import KERNEL_PREFIX, BottleneckSpec, kernel, spec_of
from tvm_pipeline import tvm_adapter
from tvm_pipeline.passes import patch_regions as pr
from tvm_pipeline.passes.patch_regions import Region, Window
from tvm_pipeline.tvm_adapter import DataflowOp, DataflowView, NewBinding, TensorType

_POINTWISE_BINARY = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide")


class NotSplittable(Exception):
    """Why an op cannot be part of a patched stage (the message goes into the notes)."""


@dataclass(frozen=True)
class StageOp:
    """One op of the stage: its activation inputs and, for a conv or a reordered bottleneck, its window."""

    op: DataflowOp
    inputs: tuple[str, ...]
    window: Window | None = None
    spec: BottleneckSpec | None = None


@dataclass(frozen=True)
class Stage:
    """Ops from the image to `output` (a prefix of `main` whose only tensor read afterwards is `output`)."""

    layer: int  # index of the last windowed op (conv / bottleneck) in the stage
    ops: tuple[StageOp, ...]
    image: str
    output: str
    types: dict[str, TensorType]

    @property
    def out_type(self) -> TensorType:
        return self.types[self.output]


def _conv(op: DataflowOp) -> StageOp:
    a, w = op.attrs, op.args[1]
    if not isinstance(w, np.ndarray) or not isinstance(op.args[0], str):
        raise NotSplittable("its weight is not a constant")
    if (a["data_layout"], a["kernel_layout"], a["out_layout"]) != ("NCHW", "OIHW", "NCHW") or a["dilation"] != (1, 1):
        raise NotSplittable(f"layouts/dilation {a['data_layout']}/{a['kernel_layout']}/{a['dilation']} are not "
                            "NCHW/OIHW/(1, 1)")
    return _windowed(StageOp(op, (op.args[0],), Window(tuple(w.shape[2:]), tuple(a["strides"]),
                                                       tuple(a["padding"]))))


def _windowed(s: StageOp) -> StageOp:
    """`s` if every output row and column reads at least one input row and column (padding < kernel)."""
    (kh, kw), (pt, pl, pb, pr_) = s.window.kernel, s.window.padding
    if max(pt, pb) >= kh or max(pl, pr_) >= kw:
        raise NotSplittable(f"padding {s.window.padding} reaches a whole kernel {s.window.kernel}")
    if s.spec is not None and s.spec.skip and max(pt, pl) > min(kh, kw) - 1:
        raise NotSplittable(f"skip-add with padding {s.window.padding} wider than the kernel's halo")
    return s


def _classify(op: DataflowOp, mod: tvm.IRModule) -> StageOp:
    """The op as a StageOp, or NotSplittable with the reason."""
    tensors = tuple(a for a in op.args if isinstance(a, str))
    if op.type is None or len(op.type.shape) != 4 or op.type.shape[0] != 1 or op.type.dtype != "float32":
        raise NotSplittable(f"its result is not a batch-1 NCHW float32 tensor ({op.type})")
    if op.op == "relax.nn.conv2d":
        return _conv(op)
    if op.op == "call_tir" and op.attrs["func"].startswith(KERNEL_PREFIX):
        spec = spec_of(mod[op.attrs["func"]])
        if spec is None:
            raise NotSplittable("a bottleneck kernel without its spec attribute")
        window = Window((spec.kernel, spec.kernel), (spec.stride, spec.stride), spec.padding)
        return _windowed(StageOp(op, tensors[:1], window, spec))
    if op.op in ("tir.maximum", "tir.minimum", "relax.nn.relu") and len(tensors) == 1:
        return StageOp(op, tensors)
    if op.op == "relax.clip" and len(tensors) == 1 and all(isinstance(b, float) for b in op.args[1:3]):
        return StageOp(op, tensors)
    if op.op in _POINTWISE_BINARY and len(tensors) == 2 and len(op.args) == 2:
        return StageOp(op, tensors)  # both operands are stage tensors of the output's shape (checked in _stages)
    if op.op in _POINTWISE_BINARY and len(tensors) == 1:
        const = next(a for a in op.args if not isinstance(a, str))
        shape = (1,) * (4 - np.ndim(const)) + np.shape(const) if np.ndim(const) <= 4 else (0,)
        if shape[0] == 1 and shape[2:] == (1, 1):
            return StageOp(op, tensors)
        raise NotSplittable(f"its constant operand of shape {np.shape(const)} varies over the image")
    raise NotSplittable("the pass splits conv2d, reordered bottlenecks and per-channel elementwise ops only")


def stages(view: DataflowView, mod: tvm.IRModule) -> tuple[list[Stage], int, str]:
    """Every valid stage (one per split layer, with its trailing elementwise ops), the number of windowed layers in
    the splittable prefix of `main`, and why that prefix ends."""
    (image,) = view.inputs
    if image not in view.types or len(view.types[image].shape) != 4 or view.types[image].shape[0] != 1:
        return [], 0, f"the input {image} is not a batch-1 NCHW tensor"
    ops: list[StageOp] = []
    reads: dict[str, int] = {}
    stages: dict[int, Stage] = {}
    layer, why = -1, "the model's output (the whole model is splittable)"
    for op in view.ops:
        try:
            stage_op = _classify(op, mod)
        except NotSplittable as err:
            why = f"{op.var} ({op.op}): {err}"
            break
        known = {image, *(s.op.var for s in ops)}
        if not set(stage_op.inputs) <= known or (stage_op.window is None and any(
                view.types.get(t) != op.type for t in stage_op.inputs)):
            why = f"{op.var} ({op.op}): it reads tensors from outside the stage or of another shape"
            break
        ops.append(stage_op)
        layer += stage_op.window is not None
        for t in (a for a in op.args if isinstance(a, str)):
            reads[t] = reads.get(t, 0) + 1
        closed = all(reads.get(t, 0) == view.users.get(t, 0) for t in known)  # nothing but op.var escapes
        if layer >= 0 and closed and view.types.get(op.var) is not None:
            stages[layer] = Stage(layer, tuple(ops), image, op.var, view.types)
    return list(stages.values()), layer + 1, why


def regions(stage: Stage, out: Region) -> dict[str, Region]:
    """The region of every stage tensor (the image included) that one patch computes or reads, for output `out`."""
    need: dict[str, Region] = {stage.output: out}
    for s in reversed(stage.ops):
        for t in s.inputs:
            need[t] = pr.hull(need.get(t), _input_region(s, need[s.op.var], stage.types[t]))
    return need


def _input_region(s: StageOp, out: Region, in_type: TensorType) -> Region:
    """The region of input `in_type` that op `s` reads to compute its output region `out`."""
    if s.window is None:
        return out
    return pr.window_input(s.window, out, in_type.shape[2:]).region  # a skip's region lies inside (_windowed)


def _emit_patch(stage: Stage, out: Region, index: int, bindings: list[NewBinding]) -> str:
    """Append one patch's bindings; returns the var of the patch's output."""
    need = regions(stage, out)
    local: dict[str, str] = {}

    def holding(t: str, wanted: Region) -> str:
        """A var holding exactly region `wanted` of tensor t: the patch itself, or a slice of it (or of the image)."""
        source, region = (stage.image, (0, stage.types[t].shape[2], 0, stage.types[t].shape[3])) \
            if t == stage.image else (local[t], need[t])
        if wanted == region:
            return source
        y0, y1, x0, x1 = pr.relative(wanted, region)
        bindings.append(NewBinding(f"{source}_w{index}_{len(bindings)}", "relax.strided_slice", (source,),
                                   {"axes": (2, 3), "begin": (y0, x0), "end": (y1, x1)}))
        return bindings[-1].var

    for s in stage.ops:
        region, var = need[s.op.var], f"{s.op.var}_p{index}"
        if s.window is not None and s.spec is None and s.inputs[0] == stage.image:  # read the window in place
            new = _window_conv(s, region, stage.types[stage.image], var)
        else:
            new = _patch_op(s, region, stage.types, [holding(t, _input_region(s, region, stage.types[t]))
                                                     for t in s.inputs], var)
        bindings.append(new)
        local[s.op.var] = new.var
    return local[stage.output]


def _window_conv(s: StageOp, out: Region, image: TensorType, var: str) -> NewBinding:
    """A conv of the image computing `out`, reading its input window straight from the image."""
    geometry = pr.window_input(s.window, out, image.shape[2:])
    w = s.op.args[1]
    func = tvm_adapter.window_conv_kernel(image, geometry.region, TensorType(w.shape, str(w.dtype)),
                                          s.window.stride, geometry.padding, s.op.attrs["groups"])
    out_type = TensorType((1, w.shape[0], *pr.size(out)), s.op.type.dtype)
    return NewBinding(var, "call_tir", (s.op.args[0], w), {"func": func, "name": "patch_conv2d", "type": out_type})


def _patch_op(s: StageOp, out: Region, types: dict[str, TensorType], args: list[str], var: str) -> NewBinding:
    """The binding computing `out` of op `s` from its patch inputs `args` (which hold exactly what it reads)."""
    op = s.op
    tensor_args = iter(args)
    full_args = tuple(next(tensor_args) if isinstance(a, str) else a for a in op.args)
    if op.op in ("tir.maximum", "tir.minimum"):
        return NewBinding(var, op.op.replace("tir.", "relax."), full_args, {})
    if op.op == "relax.clip":
        return NewBinding(var, op.op, full_args[:1], {"min": full_args[1], "max": full_args[2]})
    if s.window is None:
        return NewBinding(var, op.op, full_args, op.attrs)
    geometry = pr.window_input(s.window, out, types[s.inputs[0]].shape[2:])
    if s.spec is None:
        return NewBinding(var, op.op, full_args, {**op.attrs, "padding": geometry.padding})
    spec = _patch_spec(s.spec, out, geometry)
    out_type = TensorType((1, spec.out_channels, *pr.size(out)), "float32")
    return NewBinding(var, "call_tir", full_args, {"func": _bottleneck_kernel(spec), "name": KERNEL_PREFIX,
                                                   "type": out_type})


def _patch_spec(spec: BottleneckSpec, out: Region, geometry: pr.PatchInput) -> BottleneckSpec:
    """The bottleneck spec of one patch: its input window's size, its border padding, where its skip reads."""
    x = geometry.region
    offset = (out[0] - x[0], out[2] - x[2]) if spec.skip else (0, 0)
    patch = dataclasses.replace(spec, height=x[1] - x[0], width=x[3] - x[2], padding=geometry.padding,
                                skip_offset=offset)
    if (patch.out_height, patch.out_width) != pr.size(out):
        raise AssertionError(f"bottleneck patch {patch} does not compute a {pr.size(out)} region")
    return patch


_bottleneck_kernel = functools.lru_cache(maxsize=None)(kernel)  # parsing TVMScript costs ~0.1 s; patches repeat specs


def patch_macs(stage: Stage, out: Region | None = None) -> int:
    """Multiply-accumulates of one patch computing region `out` of the stage output (None: the unsplit stage)."""
    if out is None:
        out = (0, stage.out_type.shape[2], 0, stage.out_type.shape[3])
    need, total = regions(stage, out), 0
    for s in stage.ops:
        rows, cols = pr.size(need[s.op.var])
        if s.spec is not None:
            geometry = pr.window_input(s.window, need[s.op.var], stage.types[s.inputs[0]].shape[2:])
            total += bottleneck_macs(_patch_spec(s.spec, need[s.op.var], geometry))
        elif s.window is not None:
            w = s.op.args[1]
            total += w.shape[0] * rows * cols * int(np.prod(w.shape[1:]))
    return total


def bottleneck_macs(spec: BottleneckSpec) -> int:
    """Multiply-accumulates of one reordered bottleneck (the same as the unfused block's)."""
    plane, out_plane = spec.height * spec.width, spec.out_height * spec.out_width
    expand = (spec.expand_channels or 0) * spec.in_channels * plane
    return expand + spec.hidden * out_plane * (spec.kernel ** 2 + spec.out_channels)


def split(mod: tvm.IRModule, stage: Stage, rows: int, cols: int) -> tvm.IRModule:
    """`mod` with `stage` computed as a rows x cols grid of patches written into the stage output one by one."""
    out_type = stage.out_type
    bindings: list[NewBinding] = []
    placed = None
    for index, region in enumerate(pr.grid(out_type.shape[2:], rows, cols)):
        patch_var = _emit_patch(stage, region, index, bindings)
        func = tvm_adapter.place_kernel(out_type, region, first=placed is None)
        var = f"{stage.output}_placed{index}"
        args = (patch_var,) if placed is None else (placed, patch_var)
        bindings.append(NewBinding(var, "call_tir", args, {"func": func, "name": "patch_place", "type": out_type}))
        placed = var
    return tvm_adapter.rebind_subgraph(mod, stage.output, bindings)
