"""Replace each int8 inverted residual (after fold-qdq) by one kernel that runs expanded channel by channel.

Before (fold-qdq's integer kernels; the skip-add, when present, is in the projection's epilogue, `conv2d+add`):

    e = call_tir(int8_conv2d, (x, W_e, B_e, M_e, S_e))            # 1x1 expand, clamp fused      C_exp x H x W int8
    d = call_tir(int8_conv2d, (e, W_d, B_d, M_d, S_d))            # KxK depthwise, clamp fused
    y = call_tir(int8_conv2d[+add], (d, [x,] W_p, B_p, M_p, S_p)) # 1x1 projection [+ skip-add with x]

After:

    y = call_tir(bottleneck_reordered_int8, (x, W_e, B_e, M_e, S_e, W_d, B_d, M_d, S_d, W_p, B_p, M_p, S_p))

The kernel (schedules/bottleneck_int8.py) computes the same integers (bit for bit) one expanded channel at a time,
accumulating the projection in an int32 C_out x H_o x W_o workspace. A block is reordered only when every
intermediate is read by the next kernel alone, none reads through an absorbed view, and the block's live memory
(int8 tensors + accumulator + padded plane) goes down. Blocks without expansion (t = 1) are left alone: there the
int32 accumulator costs more than the int8 tensor it replaces. Each depthwise conv gets a note.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import tvm

from schedules.bottleneck_int8 import KERNEL_PREFIX, ConvInfo, Int8BottleneckSpec, kernel, scratch_bytes
from schedules.int8 import rescale_bound, shifts_of
from tvm_pipeline import tvm_adapter
from tvm_pipeline.int8_ops import ACTIVATION_DTYPES
from tvm_pipeline.tvm_adapter import DataflowOp, KernelCall

NAME = "reorder-bottleneck-int8"


class _NoMatch(Exception):
    """Why a block is left unchanged (the message goes into the notes)."""


def _conv(mod: tvm.IRModule, op: DataflowOp | None) -> ConvInfo | None:
    if op is None or op.op != "call_tir":
        return None
    try:
        return ConvInfo.of(mod[op.attrs["func"]])
    except (KeyError, ValueError, tvm.TVMError):
        return None


def _pointwise(info: ConvInfo | None) -> bool:
    return (info is not None and not info.views and info.weight_shape[2:] == (1, 1) and info.groups == 1
            and info.strides == (1, 1) and info.dilation == (1, 1) and not any(info.padding))


def _constants(op: DataflowOp, first: int, channels: int) -> list[np.ndarray]:
    """(weight, bias, multiplier, shift) arguments of a conv kernel call, multiplier/shift per channel (as fold-qdq's
    kernel made them: already in the form its epilogue's cheap paths take, schedules.int8._canonical_channels)."""
    weight, bias, multiplier, shift = op.args[first:first + 4]
    shift = shifts_of(np.asarray(shift))  # the exponents, also where the kernel takes a rounding table
    per_channel = [np.ascontiguousarray(np.broadcast_to(np.asarray(a).reshape(-1), (channels,)), dtype=np.int32)
                   for a in (bias, multiplier, shift)]
    return [np.asarray(weight, dtype=np.int8), *per_channel]


def _live_bytes(spec: Int8BottleneckSpec) -> tuple[int, int]:
    """Peak bytes live inside the block: the three unfused kernels, and the reordered kernel.

    Unfused: expand holds x and e; the depthwise e and d (and x, kept for the skip-add); the projection d and its
    output (which may overwrite x in place when the add is fused). Reordered: x, the output, the workspace.
    """
    x = spec.in_channels * spec.height * spec.width
    out = spec.out_channels * spec.out_height * spec.out_width
    e = spec.expand_channels * spec.height * spec.width
    d = spec.expand_channels * spec.out_height * spec.out_width
    skip = spec.residual is not None
    before = max(x + e, e + d + (x if skip else 0), d + out)
    return before, x + out + scratch_bytes(spec)


def _match(mod: tvm.IRModule, view: tvm_adapter.DataflowView, producer: dict[str, DataflowOp],
           consumers: dict[str, list[DataflowOp]], dw: DataflowOp,
           info: ConvInfo) -> tuple[KernelCall, Int8BottleneckSpec]:
    users = view.users

    def sole_consumer(var: str) -> DataflowOp | None:
        ops = consumers.get(var, [])
        return ops[0] if len(ops) == 1 and users.get(var, 0) == 1 else None

    channels, _, k, k2 = info.weight_shape
    if info.views or info.groups != channels or k != k2 or info.dilation != (1, 1) or info.residual is not None \
            or info.strides[0] != info.strides[1] or info.input_zero_point is None and any(info.padding):
        raise _NoMatch(f"not a plain square depthwise conv (groups {info.groups}, weight {info.weight_shape})")
    e = dw.args[0]
    expand = producer.get(e)
    e_info = _conv(mod, expand)
    if not _pointwise(e_info) or e_info.residual is not None or users.get(e, 0) != 1 \
            or e_info.weight_shape[0] != channels:
        raise _NoMatch(f"its input {e} is not a 1x1 expansion read by it alone (blocks without expansion stay)")
    project = sole_consumer(dw.var)
    p_info = _conv(mod, project)
    if not _pointwise(p_info) or project.args[0] != dw.var or p_info.weight_shape[1] != channels:
        raise _NoMatch(f"its output {dw.var} ({users.get(dw.var, 0)} users) is not read by a 1x1 projection alone")
    x = expand.args[0]
    if p_info.residual is not None and project.args[1] != x:
        raise _NoMatch(f"the projection's skip-add reads {project.args[1]}, not the block input {x}")
    x_type, out_type = view.types.get(x), view.types.get(project.var)
    if x_type is None or x_type.dtype not in ACTIVATION_DTYPES or len(x_type.shape) != 4 or x_type.shape[0] != 1:
        raise _NoMatch(f"the block's input {x} is not an int8/uint8 NCHW tensor of batch 1 ({x_type})")
    _, cin, h, w = x_type.shape
    spec = Int8BottleneckSpec(cin, channels, p_info.weight_shape[0], h, w, k, info.strides[0], info.padding,
                              info.input_zero_point or 0, e_info.requant, info.requant, p_info.requant,
                              p_info.residual, x_type.dtype)
    if out_type is None or out_type.shape != (1, spec.out_channels, spec.out_height, spec.out_width):
        raise _NoMatch(f"the block's output {project.var} has an unexpected type {out_type}")
    before, after = _live_bytes(spec)
    if after >= before:
        raise _NoMatch(f"reordering would not lower the block's memory ({before:,} B -> {after:,} B, "
                       "int32 accumulator included)")
    first = 2 if p_info.residual is not None else 1
    w_e, *rest_e = _constants(expand, 1, channels)
    w_d, *rest_d = _constants(dw, 1, channels)
    w_p, *rest_p = _constants(project, first, spec.out_channels)
    args = (x, w_e.reshape(channels, cin), *rest_e, w_d.reshape(channels, k, k), *rest_d,
            w_p.reshape(spec.out_channels, channels), *rest_p)
    spec = replace(spec, rescale_bounds=(  # each stage's input dtype: x, then the requantized expansion, depthwise
        *rescale_bound(w_e, rest_e[0], x_type.dtype, rest_e[2]),
        *rescale_bound(w_d, rest_d[0], spec.expand_requant[3], rest_d[2]),
        *rescale_bound(w_p, rest_p[0], spec.dw_requant[3], rest_p[2])))
    return KernelCall(project.var, kernel(spec), KERNEL_PREFIX, args), spec


def run(mod: tvm.IRModule, notes: list[str]) -> tvm.IRModule:
    """The pass: reorder every int8 inverted residual whose memory it lowers."""
    view = tvm_adapter.dataflow_ops(mod)
    producer = {op.var: op for op in view.ops}
    consumers: dict[str, list[DataflowOp]] = {}
    for op in view.ops:
        for a in dict.fromkeys(a for a in op.args if isinstance(a, str)):
            consumers.setdefault(a, []).append(op)
    calls: list[KernelCall] = []
    for op in view.ops:
        info = _conv(mod, op)
        if info is None or info.groups == 1:
            continue
        try:
            call, spec = _match(mod, view, producer, consumers, op, info)
        except _NoMatch as why:
            notes.append(f"{NAME}: depthwise conv {op.var} left unchanged: {why}")
            continue
        calls.append(call)
        before, after = _live_bytes(spec)
        notes.append(f"{NAME}: {op.var} .. {call.var} -> one channel-by-channel int8 kernel (expand "
                     f"{spec.in_channels}->{spec.expand_channels}, "
                     f"depthwise {spec.kernel}x{spec.kernel}/{spec.stride}, "
                     f"project ->{spec.out_channels}{', skip-add' if spec.residual else ''}; "
                     f"block memory {before:,} B -> {after:,} B)")
    return tvm_adapter.replace_with_kernels(mod, calls)
