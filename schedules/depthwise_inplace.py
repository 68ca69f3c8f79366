"""In-place depthwise convolution (TinyEngine): copy each input channel plane into a scratch plane before writing the
output plane, so the output may be written over the input.

The rule takes a depthwise convolution kernel (NCHW, groups == input channels == output channels; float32 from
operator fusion, or the int8 QConv2d kernel of fold-qdq) and schedules it like `schedules/default.py`, plus one
cache read of the input computed at the channel loop:

    Before: for c, y, x:  acc = sum(pad(in)[c, y*s + ky, x*s + kx] * w[c, ky, kx]);  out[c, y, x] = epilogue(acc)
    After:  for c:        plane[:, :] = in[c, :, :]                               (scratch: one input plane)
                          for y, x: acc = sum(pad(plane)[y*s + ky, x*s + kx] * w[c, ky, kx]);  out[c, y, x] = ...

Channel c's output plane (Ho*Wo elements at c*Ho*Wo) then overlaps only input planes <= c, all copied already;
`tvm_adapter.plane_inplace` proves this on the lowered TIR and the planner gives the output the input's offset when
the input dies at this kernel. The padding stays a condition on the plane's index (the int8 zero point or 0.0), so
the scratch is H*W elements. Every output element sums the same products in the same order: bit-exact.
"""

from __future__ import annotations

from tvm import s_tir

from schedules import default
from schedules.bottleneck_int8 import ConvInfo
from tvm_pipeline.errors import InternalError

#: Block names of a float depthwise convolution after legalization (topi).
_FLOAT_CONV_BLOCKS = ("group_conv2d_nchw", "depthwise_conv2d_nchw")


def _shape(param) -> tuple[int, ...]:
    return tuple(int(d) for d in param.ty.shape)


def _is_depthwise(sch: s_tir.Schedule) -> bool:
    """Input (1, C, H, W), output (1, C, Ho, Wo), weights (C, 1, K, K), C > 1, and a plain depthwise conv."""
    func = sch.mod["main"]
    x, out = _shape(func.params[0]), _shape(func.params[-1])
    if len(x) != 4 or len(out) != 4 or x[0] != 1 or out[:2] != x[:2] or x[1] < 2:
        return False
    channels = x[1]
    if not any(_shape(p)[:2] == (channels, 1) and len(_shape(p)) == 4 for p in func.params[1:-1]):
        return False
    info = ConvInfo.of(func)
    if info is not None:  # int8: a view (transpose, slice) would change what one input plane is
        return info.groups == channels and info.residual is None and not info.views
    names = {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))}
    return any(name in names for name in _FLOAT_CONV_BLOCKS)


def rule(sch: s_tir.Schedule, tir_name: str) -> bool:
    """Schedule a depthwise convolution kernel to read each input plane once, into scratch; False for other kernels."""
    if not _is_depthwise(sch):
        return False
    apply(sch)
    return True


def apply(sch: s_tir.Schedule) -> None:
    """The schedule of the module docstring, for a depthwise convolution kernel (`rule` checks that it is one)."""
    x = sch.mod["main"].params[0].name
    default.apply(sch)
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        reads = [region.source.name for region in sch.get(block).reads]
        if x in reads:
            cache = sch.cache_read(block, reads.index(x), "global")
            sch.compute_at(cache, sch.get_loops(block)[1])  # loops: batch, channel, ...
            return
    raise InternalError(f"depthwise kernel: no block reads its input {x}")
