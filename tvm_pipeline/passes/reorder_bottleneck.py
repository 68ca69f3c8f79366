"""Replace each inverted residual `proj(act(dw(act(expand(x))))) (+ x)` by one kernel that runs channel by channel.

Before (as ONNX imports it; a bias is `add(conv, reshape(const))`, ReLU6 a max/min call_tir pair, BN maybe unfolded):

    e = conv2d(x, W_e) [1x1];  e = add(e, b_e);  e = relu|clip(e)                  # C_expand x H x W
    d = conv2d(e, W_d, groups=C_expand) [KxK, stride s];  d = add(d, b_d);  d = relu|clip(d)
    p = conv2d(d, W_p) [1x1];  p = add(p, b_p);  out = add(x, p)                    # the skip-add is optional

After:

    out = call_tir(bottleneck_reordered, (x, W_e, b_e, W_d, b_d, W_p, b_p))

The kernel (schedules/bottleneck.py) computes one expanded channel at a time and accumulates its share of the
projection, so the C_expand x H x W tensors never exist. A block without expansion (t = 1: dw -> act -> 1x1) is
reordered the same way. Every intermediate must be read by the next op of the chain only; the rewrite rebinds just
the block's output, so whatever is not matched stays as it was. Each grouped conv gets a note: reordered, or why not.
"""

from __future__ import annotations

import numpy as np
import tvm

from schedules.bottleneck import KERNEL_PREFIX, BottleneckSpec, Clamp, kernel, scratch_bytes
from tvm_pipeline import tvm_adapter
from tvm_pipeline.tvm_adapter import DataflowOp, DataflowView, KernelCall

NAME = "reorder-bottleneck"


class _NoMatch(Exception):
    """Why a block is left unchanged (the message goes into the notes)."""


class _Graph:
    """The dataflow view with producer and consumer lookups."""

    def __init__(self, view: DataflowView) -> None:
        self.users, self.types = view.users, view.types
        self.claimed: set[str] = set()  # convs inside blocks already reordered (a 1x1 is one block's or none's)
        self.producer = {op.var: op for op in view.ops}
        self.consumers: dict[str, list[DataflowOp]] = {}
        for op in view.ops:
            for a in dict.fromkeys(a for a in op.args if isinstance(a, str)):
                self.consumers.setdefault(a, []).append(op)

    def sole_consumer(self, var: str) -> DataflowOp | None:
        ops = self.consumers.get(var, [])
        return ops[0] if len(ops) == 1 and self.users.get(var, 0) == 1 else None

    def input_of(self, op: DataflowOp) -> str | None:
        return next((a for a in op.args if isinstance(a, str)), None)


def _conv_weight(op: DataflowOp | None, pointwise: bool) -> np.ndarray | None:
    """The OIHW weight of a float32 NCHW conv2d with constant weight; `pointwise`: 1x1, stride 1, unpadded, ungrouped."""
    if op is None or op.op != "relax.nn.conv2d" or not isinstance(op.args[1], np.ndarray):
        return None
    a, weight = op.attrs, op.args[1]
    if ((a["data_layout"], a["kernel_layout"], a["out_layout"]) != ("NCHW", "OIHW", "NCHW") or a["dilation"] != (1, 1)
            or a["out_dtype"] not in (None, "float32") or weight.dtype != np.float32 or op.type is None):
        return None
    if pointwise and (weight.shape[2:] != (1, 1) or a["groups"] != 1 or a["strides"] != (1, 1) or any(a["padding"])):
        return None
    return weight


def _per_channel(c: np.ndarray, channels: int) -> np.ndarray | None:
    """`c` as a (channels,) vector if adding it to an NCHW tensor is a per-channel bias."""
    shape = (1,) * (4 - c.ndim) + c.shape if c.ndim <= 4 else (0,)
    if shape[0] != 1 or shape[2:] != (1, 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1).astype(np.float64), (channels,))


def _only_used_item(graph: _Graph, tuple_op: DataflowOp) -> DataflowOp | None:
    """The `t[0]` of a batch_norm tuple if its other items (running statistics) are read by nobody."""
    items = graph.consumers.get(tuple_op.var, [])
    first = [i for i in items if i.op == "get_item" and i.attrs["index"] == 0]
    others_used = any(i.op != "get_item" or graph.users.get(i.var, 0) for i in items if first and i is not first[0])
    return first[0] if len(first) == 1 and not others_used else None


def _affine(graph: _Graph, var: str, channels: int) -> tuple[str, np.ndarray, np.ndarray]:
    """Follow per-channel bias adds and inference batch norms after a conv: (last var, scale, shift)."""
    scale, shift = np.ones(channels), np.zeros(channels)
    while (op := graph.sole_consumer(var)) is not None:
        consts = [a for a in op.args if isinstance(a, np.ndarray)]
        if op.op == "relax.add" and len(consts) == 1 and (bias := _per_channel(consts[0], channels)) is not None:
            shift = shift + bias
        elif op.op == "relax.nn.batch_norm" and len(consts) == 4 and op.attrs["axis"] == 1 \
                and not op.attrs["training"] and (normalized := _only_used_item(graph, op)) is not None:
            gamma, beta, mean, variance = (c.astype(np.float64) for c in consts)
            s = (gamma if op.attrs["scale"] else 1.0) / np.sqrt(variance + op.attrs["epsilon"])
            scale, shift = scale * s, (shift - mean) * s + (beta if op.attrs["center"] else 0.0)
            op = normalized
        else:
            break
        var = op.var
    return var, scale, shift


def _clamp_step(op: DataflowOp, var: str) -> tuple[float | None, float | None] | None:
    """The (lower, upper) bounds one op applies to `var`: ReLU, Clip, or one half of ONNX Clip's max/min pair."""
    bound = op.args[1] if len(op.args) == 2 and isinstance(op.args[1], np.ndarray) and op.args[1].size == 1 else None
    if op.args[:1] != (var,):
        return None
    if op.op == "relax.nn.relu":
        return 0.0, None
    if op.op == "relax.clip" and all(isinstance(b, float) for b in op.args[1:3]):
        return op.args[1], op.args[2]
    if op.op in ("tir.maximum", "tir.minimum") and bound is not None:
        return (float(bound), None) if op.op == "tir.maximum" else (None, float(bound))
    return None


def _clamp(graph: _Graph, var: str) -> tuple[str, Clamp] | None:
    """Follow ReLU / ReLU6 / Clip ops (`nn.relu`, `clip`, ONNX's max/min call_tir pair): (last var, bounds)."""
    lower, upper, steps = -np.inf, np.inf, 0
    while (op := graph.sole_consumer(var)) is not None and (step := _clamp_step(op, var)) is not None:
        if upper < (step[0] if step[0] is not None else -np.inf):
            return None  # max after min with a higher bound: a constant, not a clamp
        lower = max(lower, step[0]) if step[0] is not None else lower
        upper = min(upper, step[1]) if step[1] is not None else upper
        var, steps = op.var, steps + 1
    if steps == 0 or lower > upper or (np.isinf(lower) and np.isinf(upper)):
        return None
    return var, (None if np.isinf(lower) else float(lower), None if np.isinf(upper) else float(upper))


def _expansion(graph: _Graph, dw_input: str) -> tuple[str, np.ndarray, np.ndarray, Clamp, str] | None:
    """(x, W_e, b_e, act, conv) if `dw_input` = act(affine(conv1x1(x))), each step read by the next only; else None."""
    op = graph.producer.get(dw_input)
    for _ in range(6):  # walk back over act / bias / batch-norm steps to the conv, then check the chain forward
        if op is None or op.op == "relax.nn.conv2d":
            break
        op = graph.producer.get(graph.input_of(op))
    weight = _conv_weight(op, pointwise=True)
    if weight is None or not isinstance(op.args[0], str) or graph.users.get(dw_input) != 1 or op.var in graph.claimed:
        return None
    var, scale, shift = _affine(graph, op.var, weight.shape[0])
    act = _clamp(graph, var)
    if act is None or act[0] != dw_input:
        return None
    return op.args[0], weight * scale[:, None, None, None], shift, act[1], op.var


def _match(graph: _Graph, dw: DataflowOp) -> tuple[KernelCall, BottleneckSpec]:
    """The kernel call replacing the block around depthwise conv `dw`; raises _NoMatch with the reason."""
    w_dw, x_dw = _conv_weight(dw, pointwise=False), dw.args[0]
    if w_dw is None or not isinstance(x_dw, str) or x_dw not in graph.types:
        raise _NoMatch("not a float32 NCHW conv2d with constant weights and a known input shape")
    channels, k = w_dw.shape[0], w_dw.shape[2]
    if dw.attrs["groups"] != channels or w_dw.shape[1] != 1 or w_dw.shape[3] != k:
        raise _NoMatch(f"not a square depthwise conv (groups={dw.attrs['groups']}, weight {w_dw.shape})")
    if dw.attrs["strides"][0] != dw.attrs["strides"][1]:
        raise _NoMatch(f"unequal strides {dw.attrs['strides']}")
    var, scale, shift = _affine(graph, dw.var, channels)
    w_dw, b_dw = w_dw * scale[:, None, None, None], shift
    if (act := _clamp(graph, var)) is None:
        raise _NoMatch(f"{var} (depthwise, {graph.users.get(var, 0)} users) is not followed by ReLU/ReLU6/Clip alone")
    var, dw_act = act
    project = graph.sole_consumer(var)
    w_p = _conv_weight(project, pointwise=True)
    if w_p is None or project.args[0] != var:
        raise _NoMatch(f"activated depthwise output {var} ({graph.users.get(var, 0)} users) is not read by a "
                       "1x1 projection alone")
    var, scale, shift = _affine(graph, project.var, w_p.shape[0])
    w_p, b_p = w_p * scale[:, None, None, None], shift
    expansion = _expansion(graph, x_dw)
    x, w_e, b_e, e_act, expand_conv = expansion or (x_dw, None, None, None, None)
    add = graph.sole_consumer(var)
    skip = (add is not None and add.op == "relax.add" and all(isinstance(a, str) for a in add.args)
            and sorted(add.args) == sorted([x, var]) and graph.types.get(x) == graph.types.get(var))
    var = add.var if skip else var
    x_type, out_type = graph.types.get(x), graph.types.get(var)
    if x_type is None or x_type.dtype != "float32" or len(x_type.shape) != 4 or x_type.shape[0] != 1:
        raise _NoMatch(f"the block's input {x} is not a float32 NCHW tensor of batch 1 ({x_type})")
    (_, cin, h, w) = x_type.shape
    spec = BottleneckSpec(cin, channels if w_e is not None else None, w_p.shape[0], h, w, k, dw.attrs["strides"][0],
                          tuple(dw.attrs["padding"]), e_act, dw_act, skip)
    if out_type is None or out_type.shape != (1, spec.out_channels, spec.out_height, spec.out_width):
        raise _NoMatch(f"the block's output {var} has an unexpected type {out_type}")
    before, after = _live_bytes(spec)
    if after >= before:  # e.g. dw -> 1x1 without expansion and C_out >= C: the depthwise output costs no more
        raise _NoMatch(f"reordering would not lower the block's memory ({before:,} B -> {after:,} B)")
    weights = ([w_e[:, :, 0, 0], b_e] if w_e is not None else []) + [w_dw[:, 0], b_dw, w_p[:, :, 0, 0], b_p]
    args = (x, *(np.ascontiguousarray(a, dtype=np.float32) for a in weights))
    graph.claimed |= {dw.var, project.var, expand_conv or dw.var}
    return KernelCall(var, kernel(spec), KERNEL_PREFIX, args), spec


def _live_bytes(spec: BottleneckSpec) -> tuple[int, int]:
    """Peak bytes live inside the block (input, output, intermediates, scratch): unfused graph, reordered kernel.

    Unfused, each conv kernel holds its input and output, and the skip-add keeps x alive to the end.
    """
    x, out = spec.in_channels * spec.height * spec.width, spec.out_channels * spec.out_height * spec.out_width
    e, d = spec.hidden * spec.height * spec.width, spec.hidden * spec.out_height * spec.out_width
    steps = [x + e, e + d] if spec.expand_channels else [x + d]
    steps.append(d + out + (x if spec.skip else 0))
    return 4 * max(steps), 4 * (x + out) + scratch_bytes(spec)


def _describe(spec: BottleneckSpec) -> str:
    expand = f"expand {spec.in_channels}->{spec.expand_channels}" if spec.expand_channels else "no expansion"
    before, after = _live_bytes(spec)
    return (f"{expand}, depthwise {spec.kernel}x{spec.kernel}/{spec.stride}, project ->{spec.out_channels}"
            f"{', skip-add' if spec.skip else ''}; block memory {before:,} B -> {after:,} B")


def run(mod: tvm.IRModule, notes: list[str]) -> tvm.IRModule:
    """The pass: reorder every inverted residual of `main` it can prove it handles exactly."""
    view = tvm_adapter.dataflow_ops(mod)
    graph = _Graph(view)
    calls: list[KernelCall] = []
    for op in view.ops:
        if op.op != "relax.nn.conv2d" or op.attrs.get("groups", 1) == 1:
            continue
        try:
            call, spec = _match(graph, op)
        except _NoMatch as why:
            notes.append(f"{NAME}: depthwise/grouped conv {op.var} left unchanged: {why}")
            continue
        calls.append(call)
        notes.append(f"{NAME}: {op.var} .. {call.var} -> one channel-by-channel kernel ({_describe(spec)})")
    return tvm_adapter.replace_with_kernels(mod, calls)
