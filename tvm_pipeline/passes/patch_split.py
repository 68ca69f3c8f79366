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
arithmetic as in the unsplit graph. A conv reading the image reads its window in place (float: a window conv
kernel; int8: the QConv2d kernel reading through a strided_slice view); any other reader of the image, and a consumer
that needs less of a tensor than its patch holds (a skip-add), gets a strided_slice. When the input is streamed
(`split(..., stream=True)`), every reader of the image gets a strided_slice, which stream-input turns into a
read_patch window: the image is never needed whole.

int8 stages (after fold-qdq and reorder-bottleneck-int8) are split the same way: QConv2d kernels (depthwise and
fused skip-adds included), reordered int8 bottlenecks and int8 adds, each rebuilt for its patch (patch_ops.py).

`patch_place` kernels copy the stage output so far with one patch written in; each reads the previous one element by
element, so the planner runs the chain in place. Its order search runs one patch's chain at a time (only that
patch's intermediates live), keeps the finished patches, then places them all: the stage output is never held twice
while the input is live, and the input stays whole, as in MCUNetV2.

`stages` lists the valid split points: prefixes of `main` from the image through the ops patch_ops.py splits (convs,
reordered bottlenecks, per-channel elementwise ops: bias, ReLU, ReLU6, skip-adds) whose only tensor read later is
their last output. The
first op it cannot split ends the list, with the reason. Choosing among them is patch_search.py's job, and the
pass itself (patch_stage.py) writes the notes.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm

from tvm_pipeline import tvm_adapter
from tvm_pipeline.passes import patch_ops
from tvm_pipeline.passes import patch_regions as pr
from tvm_pipeline.passes.patch_ops import Arg, NotSplittable, StageOp
from tvm_pipeline.passes.patch_regions import Region
from tvm_pipeline.tvm_adapter import DataflowView, NewBinding, TensorType


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
            stage_op = patch_ops.classify(op, mod)
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
        for i, t in enumerate(s.inputs):
            need[t] = pr.hull(need.get(t), patch_ops.input_region(s, i, need[s.op.var], stage.types[t]))
    return need


def _emit_patch(stage: Stage, out: Region, index: int, bindings: list[NewBinding], stream: bool) -> str:
    """Append one patch's bindings; returns the var of the patch's output."""
    need = regions(stage, out)
    local: dict[str, str] = {}

    def holding(t: str, wanted: Region) -> str:
        """A var holding exactly region `wanted` of tensor t: the patch itself, or a slice of it (or of the image)."""
        source, region = (stage.image, (0, stage.types[t].shape[2], 0, stage.types[t].shape[3])) \
            if t == stage.image else (local[t], need[t])
        if wanted == region and not (stream and t == stage.image):  # streamed, even the whole image is a window
            return source
        y0, y1, x0, x1 = pr.relative(wanted, region)
        bindings.append(NewBinding(f"{source}_w{index}_{len(bindings)}", "relax.strided_slice", (source,),
                                   {"axes": (2, 3), "begin": (y0, x0), "end": (y1, x1), "strides": (1, 1)}))
        return bindings[-1].var

    def arg(s: StageOp, i: int, t: str) -> Arg:
        wanted = patch_ops.input_region(s, i, need[s.op.var], stage.types[t])
        if t == stage.image and not stream and s.reads_window_in_place:  # no copy of the window
            return Arg(t, stage.types[t], wanted)
        return Arg(holding(t, wanted), TensorType((1, stage.types[t].shape[1], *pr.size(wanted)),
                                                  stage.types[t].dtype))

    for s in stage.ops:
        args = [arg(s, i, t) for i, t in enumerate(s.inputs)]
        new = patch_ops.binding(s, need[s.op.var], stage.types, args, f"{s.op.var}_p{index}")
        bindings.append(new)
        local[s.op.var] = new.var
    return local[stage.output]


def patch_macs(stage: Stage, out: Region | None = None) -> int:
    """Multiply-accumulates of one patch computing region `out` of the stage output (None: the unsplit stage)."""
    if out is None:
        out = (0, stage.out_type.shape[2], 0, stage.out_type.shape[3])
    need = regions(stage, out)
    return sum(patch_ops.macs(s, need[s.op.var], stage.types[s.inputs[0]]) for s in stage.ops)


def split(mod: tvm.IRModule, stage: Stage, rows: int, cols: int, stream: bool = False) -> tvm.IRModule:
    """`mod` with `stage` computed as a rows x cols grid of patches written into the stage output one by one.

    `stream`: every reader of the image reads its window through a strided_slice (which stream-input turns into a
    read_patch window), never the whole image.
    """
    out_type = stage.out_type
    bindings: list[NewBinding] = []
    placed = None
    for index, region in enumerate(pr.grid(out_type.shape[2:], rows, cols)):
        patch_var = _emit_patch(stage, region, index, bindings, stream)
        func = tvm_adapter.place_kernel(out_type, region, first=placed is None)
        var = f"{stage.output}_placed{index}"
        args = (patch_var,) if placed is None else (placed, patch_var)
        bindings.append(NewBinding(var, "call_tir", args, {"func": func, "name": "patch_place", "type": out_type}))
        placed = var
    return tvm_adapter.rebind_subgraph(mod, stage.output, bindings)
