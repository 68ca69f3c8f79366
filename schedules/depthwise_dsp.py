"""int8 3x3 depthwise convolutions on the Cortex-M DSP extension: two output pixels a window row, SMLAD-paired.

An int8 depthwise conv (NCHW, 3-wide window, horizontal stride 1, no dilation, an even output width) is scheduled
like `schedules/depthwise_inplace.py` (one channel plane at a time, so the output may be written over the input),
except that the plane copy is the padded plane and each window row under a pair of output pixels is one call of
`tvm_adapter.dsp.row3x2_intrin`:

    Before: for c, y, x:  acc = sum(pad(in)[c, y*s + ky, x + kx] * w[c, ky, kx]);  out[c, y, x] = epilogue(acc)
    After:  for c:        plane[:, :] = pad(in)[c, :, :]               (scratch: one padded plane, (H+2)*(W+2) bytes)
                          for y, pixel pair x in (0, 2, ...):
                              acc[0:2] = 0
                              for ky (unrolled):  tvmp_row3x2(&plane[y*s + ky, x], &w[c, ky, 0], acc)
                              out[c, y, x:x+2] = epilogue(acc[0:2])

A row costs one word load, two SXTB16, two SMLAD and two SMLAxy for 6 MACs, where the scalar schedule loads and
multiplies each byte (2 instructions a MAC); the weight pairs of the 3 rows are built once per channel (the helper
is inline and the rows unrolled, so gcc hoists them out of the pixel loops). The padding is in the plane, so the
inner loops carry no bounds checks; the plane is 2*(H+W+2) bytes larger than depthwise_inplace's. Integer sums in
another order: bit-identical outputs.

`Rule` takes the kernels it applies to when the board has the DSP extension (`schedules.pattern_rules(dsp=True)`);
the others (odd output widths, strided columns, other windows) stay with depthwise_inplace, and so do those the
compiler finds at the plan's memory peak (`compiler.lower_memory_first`: the padded plane is larger).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir

from schedules import default
from schedules.bottleneck_int8 import ConvInfo
from tvm_pipeline.tvm_adapter import dsp


def applies(func) -> bool:
    """Whether `func` is a fold-qdq int8 depthwise conv this schedule handles."""
    info = ConvInfo.of(func)
    if info is None or info.residual is not None or info.views:
        return False
    x, out = func.params[0], func.params[-1]
    channels, _, _, kw = info.weight_shape
    dims = [int(d) for d in x.ty.shape]
    return (len(dims) == 4 and dims[1] == channels == info.groups > 1 and kw == 3 and info.strides[1] == 1
            and info.dilation == (1, 1) and int(out.ty.shape[3]) % 2 == 0
            and str(x.ty.dtype.dtype) in ("int8", "uint8") and _blocks(s_tir.Schedule(func)))


def _blocks(sch: s_tir.Schedule) -> bool:
    names = {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))}
    return names == {"pad", "acc", "requantize"}


def apply(sch: s_tir.Schedule) -> None:
    """Schedule a kernel `applies` accepts (see the module docstring)."""
    dtype = str(sch.mod["main"].params[0].ty.dtype.dtype)
    pad, acc, epilogue = sch.get_sblock("pad"), sch.get_sblock("acc"), sch.get_sblock("requantize")
    b, o, i, j, rc, ry, rx = sch.get_loops(acc)
    j_outer, j_inner = sch.split(j, [None, 2])
    sch.reorder(b, o, i, j_outer, rc, ry, j_inner, rx)
    sch.compute_at(pad, o)  # the padded plane of channel o, filled before its first output
    sch.reverse_compute_at(epilogue, j_outer)  # the pair's accumulators stay in registers
    sch.decompose_reduction(acc, rc)
    sch.tensorize(j_inner, dsp.row3x2_intrin(dtype))
    sch.unroll(ry)  # each row's weight pair is then loop-invariant: built once per channel
    for block in ("acc_init", "requantize"):
        for loop in default.loops_below(sch, block, j_outer):
            sch.unroll(loop)


@dataclass(frozen=True)
class Rule:
    """Schedule rule for `lowering.lower_program`: the DSP depthwise schedule for the kernels it applies to, except
    those named in `skip` (TIR names: kernels at the plan's memory peak, left to depthwise_inplace's smaller
    unpadded plane)."""

    skip: frozenset[str] = frozenset()

    def __call__(self, sch: s_tir.Schedule, tir_name: str) -> bool:
        if tir_name in self.skip or not applies(sch.mod["main"]):
            return False
        apply(sch)
        return True
