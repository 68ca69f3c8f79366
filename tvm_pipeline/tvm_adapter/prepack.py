"""Constants laid out for a kernel at compile time: a schedule's layout-rewrite stage, split off and run on the host.

A schedule may copy a parameter into the layout (and type) its inner loop reads best, in a block at the kernel's top
level marked with `PREPACK_ANNOTATION` (`mark_prepack`): MetaSchedule's layout-rewrite preprocessing stage. When the
model passes that parameter a constant, the copy need not run on the board: `split_prepack` cuts it off with TVM's
`relax.transform.SplitLayoutRewritePreproc` (the kernel then takes the rewritten buffer as its parameter) and
returns a `Prepack` per rewritten parameter, which runs the cut-off stage on the host (TVM's LLVM backend) on the
constant, so the firmware stores the rewritten constant in flash.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, s_tir, tirx

_BUILDER_LOCK = threading.Lock()

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
    """Rewrites the constant passed to kernel parameter `param` into what the split kernel reads."""

    param: int
    in_shape: tuple[int, ...]  # the stage reads the constant in this shape (its bytes in the model's order)
    out_shape: tuple[int, ...]
    out_dtype: str
    _module: object  # the stage, built for the host

    def __call__(self, value: np.ndarray) -> np.ndarray:
        src = tvm.runtime.tensor(np.ascontiguousarray(value).reshape(self.in_shape))
        dst = tvm.runtime.empty(self.out_shape, self.out_dtype)
        self._module["main"](src, dst)
        return dst.numpy()


def _has_prepack(func: tirx.PrimFunc) -> bool:
    blocks: list = []
    tvm_ffi.structural_walk(func.body, [(s_tir.SBlock, blocks.append)])
    return any(PREPACK_ANNOTATION in block.annotations for block in blocks)


def split_prepack(func: tirx.PrimFunc) -> tuple[tirx.PrimFunc, tuple[Prepack, ...]]:
    """(the kernel without its prepack stages, one `Prepack` per parameter they rewrite); `func` and () when it has
    none."""
    if not _has_prepack(func):
        return func, ()
    params = [relax.Var(f"p{i}", relax.TensorType(_shape(p), _dtype(p))) for i, p in enumerate(func.params[:-1])]
    out_type = relax.TensorType(_shape(func.params[-1]), _dtype(func.params[-1]))
    with _BUILDER_LOCK:  # a BlockBuilder's scope stack is shared by all threads (the tuner lowers from several)
        builder = relax.BlockBuilder()
        with builder.function("main", params):
            kernel = builder.add_func(func, "kernel")
            builder.emit_func_output(builder.emit(relax.call_tir(kernel, params, out_type)))
        mod = relax.transform.SplitLayoutRewritePreproc()(builder.get())
    stage, split = mod["kernel_weight_prepack"], mod["kernel_prepacked"]
    host = tvm.compile(tvm.IRModule({"main": stage.with_attr("global_symbol", "main")}), target="llvm")
    if len(stage.params) != 2:  # (the original buffers..., the rewritten ones...): one Prepack runs the whole stage
        raise ValueError(f"a kernel may prepack one parameter, not {len(stage.params) // 2}")
    source, packed = stage.params
    index = [p.name for p in func.params].index(source.name)
    return split, (Prepack(index, _shape(source), _shape(packed), _dtype(packed), host),)
