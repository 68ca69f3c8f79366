"""Constants laid out for a kernel at compile time: a schedule's layout-rewrite stage, split off and run on the host.

A schedule may copy a parameter into the layout (and type) its inner loop reads best, in a block at the kernel's top
level marked with `PREPACK_ANNOTATION` (`mark_prepack`): MetaSchedule's layout-rewrite preprocessing stage. When the
model passes that parameter a constant, the copy need not run on the board: `split_prepack` cuts it off with TVM's
`relax.transform.SplitLayoutRewritePreproc` (the kernel then takes the rewritten buffer as its parameter) and
returns a `Prepack`, which runs the cut-off stages on the host (TVM's LLVM backend) on the constants, so the firmware
stores the rewritten constants in flash.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, s_tir, tirx

_BUILDER_LOCK = threading.Lock()
_HOST_LOCK = threading.Lock()
#: structural hash -> [(stage, its host build)]: a model's kernels share stages (VWW's five 6x6 128 -> 128 convs),
#: and `lower_tuned` lowers each kernel more than once; a host build takes ~0.1 s.
_HOST_BUILDS: dict[int, list[tuple[tirx.PrimFunc, object]]] = {}

#: The block annotation MetaSchedule gives a layout-rewrite preprocessing stage (what SplitLayoutRewritePreproc cuts).
PREPACK_ANNOTATION = "meta_schedule.layout_rewrite_preproc"


def mark_prepack(sch: s_tir.Schedule, block: s_tir.SBlockRV) -> None:
    """Mark `block` (a copy of one parameter, at the kernel's top level) as work for compile time."""
    sch.annotate(block, PREPACK_ANNOTATION, tirx.const(True, "bool"))


def _shape(buffer) -> tuple[int, ...]:
    return tuple(int(d) for d in buffer.ty.shape)


def _dtype(buffer) -> str:
    return str(buffer.ty.dtype.dtype)


@dataclass(frozen=True)
class Prepack:
    """Rewrites the constants passed to kernel parameters `params` into what the split kernel reads there."""

    params: tuple[int, ...]
    in_shapes: tuple[tuple[int, ...], ...]  # the stage reads each constant in this shape (its bytes in model order)
    out_types: tuple[tuple[tuple[int, ...], str], ...]  # (shape, dtype) of each rewritten constant
    _module: object  # the stage, built for the host

    def __call__(self, values: list[np.ndarray]) -> list[np.ndarray]:
        sources = [tvm.runtime.tensor(np.ascontiguousarray(v).reshape(s)) for v, s in zip(values, self.in_shapes)]
        results = [tvm.runtime.empty(shape, dtype) for shape, dtype in self.out_types]
        self._module["main"](*sources, *results)
        return [r.numpy() for r in results]

    def apply(self, args: list) -> list:
        """`args` (one call's arguments, in parameter order) with the prepacked parameters' constants rewritten."""
        out = list(args)
        for index, value in zip(self.params, self([args[i] for i in self.params])):
            out[index] = value
        return out


def _has_prepack(func: tirx.PrimFunc) -> bool:
    blocks: list = []
    tvm_ffi.structural_walk(func.body, [(s_tir.SBlock, blocks.append)])
    return any(PREPACK_ANNOTATION in block.annotations for block in blocks)


def _host_build(stage: tirx.PrimFunc):
    """`stage` built for the host by TVM's LLVM backend, once per structurally distinct stage."""
    stage = stage.with_attr("global_symbol", "main")
    key = tvm_ffi.structural_hash(stage)
    with _HOST_LOCK:
        for seen, host in _HOST_BUILDS.get(key, []):
            if tvm_ffi.structural_equal(seen, stage):
                return host
        host = tvm.compile(tvm.IRModule({"main": stage}), target="llvm")
        _HOST_BUILDS.setdefault(key, []).append((stage, host))
        return host


def split_prepack(func: tirx.PrimFunc) -> tuple[tirx.PrimFunc, Prepack | None]:
    """(the kernel without its prepack stages, the `Prepack` of the parameters they rewrite); `func` and None when
    it has none."""
    if not _has_prepack(func):
        return func, None
    params = [relax.Var(f"p{i}", relax.TensorType(_shape(p), _dtype(p))) for i, p in enumerate(func.params[:-1])]
    out_type = relax.TensorType(_shape(func.params[-1]), _dtype(func.params[-1]))
    with _BUILDER_LOCK:  # a BlockBuilder's scope stack is shared by all threads (the tuner lowers from several)
        builder = relax.BlockBuilder()
        with builder.function("main", params):
            kernel = builder.add_func(func, "kernel")
            builder.emit_func_output(builder.emit(relax.call_tir(kernel, params, out_type)))
        mod = relax.transform.SplitLayoutRewritePreproc()(builder.get())
    stage, split = mod["kernel_weight_prepack"], mod["kernel_prepacked"]
    host = _host_build(stage)
    count = len(stage.params) // 2  # the stage's parameters: the original buffers, then the rewritten ones
    sources, packed = stage.params[:count], stage.params[count:]
    names = [p.name for p in func.params]
    return split, Prepack(tuple(names.index(s.name) for s in sources), tuple(_shape(s) for s in sources),
                          tuple((_shape(p), _dtype(p)) for p in packed), host)
