"""Stream the input image: every tensor sliced out of the model input becomes a `read_window` kernel.

For `tvmp compile --input-mode stream`. The whole image never has to be in SRAM: the firmware (a camera driver,
flash, an SD card) hands over one window at a time through `read_patch`, and only the windows a patch tunnel is
working on are live in the arena.

Before (a patch tunnel, as exporters write the segmentation):
    lv  = strided_slice(input, axes=[2], begin=[0],  end=[20])      # rows 0..20
    lv1 = strided_slice(lv,    axes=[3], begin=[12], end=[32])      # cols 12..32
    lv2 = conv2d(lv1, w)
After:
    lv1 = call_tir(read_window_0, (input,))   # attr tvmp.input_window = [0, 0, 0, 12, 1, 3, 20, 32]
    lv2 = conv2d(lv1, w)

Requires that the input is read only by chains of stride-1 Slice ops; anything else reading it is a UserError that
names the op, since streaming would then need the whole image after all. A patch-tunnel network slices its input
itself (the compiler runs this before the passes there); a plain CNN's first layers read the whole image until
patch-stage splits them into patches that each slice their window (the compiler runs this after the passes there).
"""

from __future__ import annotations

import tvm

from tvm_pipeline import tvm_adapter
from tvm_pipeline.errors import UserError

NAME = "stream-input"

Window = tuple[tuple[int, ...], tuple[int, ...]]


def _sliced(window: Window, op: tvm_adapter.DataflowOp) -> Window:
    """The window of `op`'s output, `op` being a strided_slice of a tensor whose window is `window`."""
    params = op.args[1:]
    count = len(params) // 4
    axes, starts, ends, strides = (params[i * count:(i + 1) * count] for i in range(4))
    if not all(isinstance(v, int) for v in params) or any(s != 1 for s in strides):
        raise UserError(f"--input-mode stream: slice '{op.var}' of the input has a non-constant or strided window")
    begin, end = list(window[0]), list(window[1])
    for axis, start, stop in zip(axes, starts, ends):
        size = window[1][axis] - window[0][axis]
        start, stop = (v + size if v < 0 else v for v in (start, stop))
        begin[axis], end[axis] = window[0][axis] + max(start, 0), window[0][axis] + min(stop, size)
    return tuple(begin), tuple(end)


def reads_slices_only(mod: tvm.IRModule) -> bool:
    """Whether every reader of the model's input is a strided_slice (the model can stream as it is)."""
    view = tvm_adapter.dataflow_ops(mod)
    (image,) = view.inputs
    readers = [op for op in view.ops if any(isinstance(a, str) and a == image for a in op.args)]
    return bool(readers) and all(op.op == "relax.strided_slice" for op in readers)


def run(mod: tvm.IRModule, notes: list[str]) -> tvm.IRModule:
    """Replace the slices of the input by window reads; raise UserError where the input is read any other way."""
    view = tvm_adapter.dataflow_ops(mod)
    (image,) = view.inputs
    shape = view.types[image].shape
    windows: dict[str, Window] = {image: ((0,) * len(shape), tuple(shape))}
    needed: list[str] = []
    for op in view.ops:
        if op.op == "relax.strided_slice" and op.args[0] in windows:
            windows[op.var] = _sliced(windows[op.args[0]], op)
            continue
        for arg in (a for a in op.args if isinstance(a, str)):
            if arg == image:
                raise UserError(f"--input-mode stream needs an input read only by Slice ops, but '{op.var}' "
                                f"({op.op}) reads the whole input; use --input-mode ram (a plain CNN streams only "
                                "through the image windows of the patch-stage pass: keep it enabled)")
            if arg in windows and arg not in needed:
                needed.append(arg)
    calls = [
        tvm_adapter.KernelCall(var, tvm_adapter.window_kernel(view.types[image], *windows[var]),
                               f"read_window_{i}", (image,))
        for i, var in enumerate(needed)
    ]
    notes.append(f"{NAME}: the input is read as {len(calls)} window(s) through read_patch; largest "
                 f"{max((view.types[v].nbytes for v in needed), default=0):,} B, whole image "
                 f"{view.types[image].nbytes:,} B")
    return tvm_adapter.replace_with_kernels(mod, calls)
