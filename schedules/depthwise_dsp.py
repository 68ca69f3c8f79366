"""int8 3-wide depthwise convolutions on the Cortex-M DSP extension: each window row one SMLAD-paired helper call.

An int8 depthwise conv (NCHW, 3-wide window, no dilation) is scheduled like `schedules/depthwise_inplace.py` (one
channel plane at a time, so the output may be written over the input), except that the plane copy is the padded
plane and each window row under `P` output pixels is one call of `tvm_adapter.dsp.row3_intrin(dtype, P)`:

    Before: for c, y, x:  acc = sum(pad(in)[c, y*sy + ky, x*sx + kx] * w[c, ky, kx]);  out[c, y, x] = epilogue(acc)
    After:  for c:        plane[:, :] = pad(in)[c, :, :]            (scratch: one padded plane, rows of W' bytes)
                          for y, x in (0, P, 2P, ...):
                              acc[0:P] = 0
                              for ky (unrolled):  tvmp_row3xP(&plane[y*sy + ky, x*sx], &w[c, ky, 0], acc)
                              out[c, y, x:x+P] = epilogue(acc[0:P])

A pixel pair (P = 2: columns not strided, an even output width) costs one word load, two SXTB16, two SMLAD and two
SMLAxy a row for 6 MACs, a single pixel (P = 1: any width and column stride) one word load, two SXTB16, one SMLAD and
one SMLABB for 3, where the scalar schedule loads and multiplies each byte; the weight pairs of the rows are built
once per channel (the helper is inline and the rows unrolled, so gcc hoists them out of the pixel loops). The
single-pixel helper's word load also reads the byte after the window, so its plane rows get one spare byte
(`storage_align`: W' = the window's columns + 1); pairs use all four bytes (W' = the columns). The padding is in the
plane, so the inner loops carry no bounds checks. Integer sums in another order: bit-identical outputs.

Which is fastest is measured, not guessed: `pixels` is this schedule's setting (`knob_space`) that `tvmp tune` measures
per kernel on the board, 0 being depthwise_inplace's scalar schedule (an unpadded plane, padding as a condition).
On the emulated F746 single pixels beat the scalar schedule on KWS's 25 x 5 planes (0.91x the instructions, and
92 B of kernel stack instead of 248) and on VWW's smallest planes (0.97x, 0.997x), not on its larger stride-2 ones
(1.13-1.20x: the epilogue's constants and the six weight registers spill, where the scalar loop keeps them), so the
default, without a record, is pairs where they fit and the scalar schedule elsewhere.

`rule` takes every kernel `applies` accepts when the board has the DSP extension (`schedules.pattern_rules(dsp=True)`);
`Rule(skip)` leaves those the compiler finds at the plan's memory peak to depthwise_inplace (`compiler.
lower_memory_first`: the padded plane is larger).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir

from schedules import default, depthwise_inplace
from schedules.bottleneck_int8 import ConvInfo
from tvm_pipeline.tvm_adapter import dsp


def applies(func) -> bool:
    """Whether `func` is a fold-qdq int8 depthwise conv this schedule handles."""
    info = ConvInfo.of(func)
    if info is None or info.residual is not None or info.views:
        return False
    x = func.params[0]
    channels, _, _, kw = info.weight_shape
    dims = [int(d) for d in x.ty.shape]
    return (len(dims) == 4 and dims[1] == channels == info.groups > 1 and kw == 3 and info.dilation == (1, 1)
            and str(x.ty.dtype.dtype) in ("int8", "uint8") and _blocks(s_tir.Schedule(func)))


#: `apply`'s settings: output pixels a helper call computes (0: no helper, depthwise_inplace's scalar schedule).
PIXELS = (2, 1, 0)


def _pairs_fit(func) -> bool:
    """Whether pixel pairs apply: columns not strided and an even output width."""
    return ConvInfo.of(func).strides[1] == 1 and int(func.params[-1].ty.shape[3]) % 2 == 0


def knob_space(func) -> list[dict]:
    """The settings of `apply` that `tvmp tune` measures for kernel `func`, the default first."""
    return [{"pixels": 2}, {"pixels": 1}, {"pixels": 0}] if _pairs_fit(func) else [{"pixels": 0}, {"pixels": 1}]


def _blocks(sch: s_tir.Schedule) -> bool:
    names = {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))}
    return names == {"pad", "acc", "requantize"}


def apply(sch: s_tir.Schedule, pixels: int | None = None) -> None:
    """Schedule a kernel `applies` accepts (see the module docstring) with `pixels` output pixels a helper call
    (one of PIXELS; None: the default, the first of `knob_space`)."""
    func = sch.mod["main"]
    pixels = knob_space(func)[0]["pixels"] if pixels is None else pixels
    if pixels not in PIXELS or pixels == 2 and not _pairs_fit(func):
        raise ValueError(f"pixels must be one of {PIXELS} (2 only for unstrided columns and an even width), "
                         f"got {pixels!r}")
    if pixels == 0:
        depthwise_inplace.apply(sch)
        return
    dtype = str(func.params[0].ty.dtype.dtype)
    pad, acc, epilogue = sch.get_sblock("pad"), sch.get_sblock("acc"), sch.get_sblock("requantize")
    b, o, i, j, rc, ry, rx = sch.get_loops(acc)
    if pixels == 2:
        j_outer, tensorized = sch.split(j, [None, 2])
        sch.reorder(b, o, i, j_outer, rc, ry, tensorized, rx)
    else:
        j_outer, tensorized = j, rx
    sch.compute_at(pad, o)  # the padded plane of channel o, filled before its first output
    if pixels == 1:  # a spare byte after each row's last window, for the helper's word load (rows one longer)
        window_columns = (int(func.params[-1].ty.shape[3]) - 1) * ConvInfo.of(func).strides[1] + 3
        sch.storage_align(pad, 0, axis=2, factor=window_columns + 1, offset=0)
    sch.reverse_compute_at(epilogue, j_outer)  # the accumulators stay in registers
    sch.decompose_reduction(acc, rc)
    sch.tensorize(tensorized, dsp.row3_intrin(dtype, pixels))
    sch.unroll(ry)  # each row's weight pair is then loop-invariant: built once per channel
    for block in ("acc_init", "requantize"):
        for loop in default.loops_below(sch, block, j_outer):
            sch.unroll(loop)


@dataclass(frozen=True)
class Rule:
    """Schedule rule for `lowering.lower_program`: this schedule, with its default settings, for the kernels it
    applies to, except those named in `skip` (TIR names: kernels at the plan's memory peak, left to
    depthwise_inplace's smaller unpadded plane)."""

    skip: frozenset[str] = frozenset()

    def __call__(self, sch: s_tir.Schedule, tir_name: str) -> bool:
        if tir_name in self.skip or not applies(sch.mod["main"]):
            return False
        apply(sch)
        return True


#: The rule `schedules.pattern_rules` lists when no kernel is left out (the one `schedules.tunable_rules` names).
rule = Rule()
