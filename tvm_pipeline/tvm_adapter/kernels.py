"""Kernels and graph rewrites that passes build: input windows, patch placement, windowed convolutions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, s_tir, tirx

from tvm_pipeline.tvm_adapter.dataflow import var_names
from tvm_pipeline.tvm_adapter.types import TensorType

INPUT_WINDOW_ATTR = "tvmp.input_window"


def window_kernel(input_type: TensorType, begin: tuple[int, ...], end: tuple[int, ...]) -> tirx.PrimFunc:
    """`out = input[begin:end]` (stride 1) as an opaque PrimFunc marked with the window it reads.

    In stream mode the C emitter never calls it: it asks the firmware's `read_patch` for that window instead.
    """
    from tvm import te

    x = te.placeholder(input_type.shape, input_type.dtype, name="image")
    shape = tuple(e - b for b, e in zip(begin, end))
    out = te.compute(shape, lambda *i: x[tuple(b + k for b, k in zip(begin, i))], name="window")
    func = te.create_prim_func([x, out])
    return func.with_attr(INPUT_WINDOW_ATTR, [*begin, *end]).with_attr("op_pattern", 8)  # 8 = kOpaque: never fused


def input_window(mod: tvm.IRModule, name: str) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(begin, end) of a `window_kernel` PrimFunc, None for any other kernel."""
    attrs = mod[name].attrs
    if attrs is None or INPUT_WINDOW_ATTR not in attrs:
        return None
    bounds = [int(v) for v in attrs[INPUT_WINDOW_ATTR]]
    half = len(bounds) // 2
    return tuple(bounds[:half]), tuple(bounds[half:])


# --- Emitting new bindings in place of a subgraph (used by the patch-stage pass) -----------------------------------

@dataclass(frozen=True)
class NewBinding:
    """`var = op(args)` to emit, with arguments named as in `dataflow_ops` (or earlier NewBindings' vars).

    `op` is a Relax op name with attrs as `dataflow_ops` reads them ("relax.nn.conv2d", "relax.strided_slice" with
    axes/begin/end and optional strides, elementwise ops, "relax.nn.relu", "relax.clip" with min/max), or "call_tir"
    with attrs `func` (a PrimFunc), `name` (its name prefix) and `type` (the output's TensorType).
    """

    var: str
    op: str
    args: tuple[str | np.ndarray | float, ...]
    attrs: dict


_ELEMENTWISE = {"relax.add": relax.op.add, "relax.subtract": relax.op.subtract, "relax.multiply": relax.op.multiply,
                "relax.divide": relax.op.divide, "relax.maximum": relax.op.maximum, "relax.minimum": relax.op.minimum}


def _new_call(builder: relax.BlockBuilder, new: NewBinding, args: list) -> relax.Expr:
    a = new.attrs
    if new.op == "call_tir":
        gvar = builder.add_func(a["func"], a["name"])
        return relax.call_tir(gvar, args, out_ty=relax.TensorType(a["type"].shape, a["type"].dtype))
    if new.op == "relax.nn.conv2d":
        out_dtype = a.get("out_dtype") if a.get("out_dtype") in ("float32", "int32") else None
        return relax.op.nn.conv2d(args[0], args[1], a["strides"], a["padding"], a["dilation"], a["groups"],
                                  a["data_layout"], a["kernel_layout"], a.get("out_layout"), out_dtype)
    if new.op == "relax.strided_slice":
        strides = list(a["strides"]) if "strides" in a else None
        return relax.op.strided_slice(args[0], list(a["axes"]), list(a["begin"]), list(a["end"]), strides)
    if new.op in _ELEMENTWISE:
        return _ELEMENTWISE[new.op](*args)
    if new.op == "relax.nn.relu":
        return relax.op.nn.relu(args[0])
    if new.op == "relax.clip":
        return relax.op.clip(args[0], relax.PrimValue(tirx.FloatImm(args[0].ty.dtype, a["min"])),
                             relax.PrimValue(tirx.FloatImm(args[0].ty.dtype, a["max"])))
    raise ValueError(f"NewBinding: no constructor for op {new.op!r}")


def rebind_subgraph(mod: tvm.IRModule, var: str, bindings: list[NewBinding]) -> tvm.IRModule:
    """Emit `bindings` right before the binding of `var`, rebind `var` to the last one's value, drop dead bindings.

    The bindings may read `main`'s parameters and any variable bound before `var` (by its `dataflow_ops` name).
    """
    from tvm.relax import DataflowBlock, SeqExpr, VarBinding

    main = mod["main"]
    names = var_names(main)
    bound = [*main.params, *(b.var for block in main.body.blocks for b in block.bindings)]
    scope = {names[v.__chandle__()]: v for v in bound}
    builder = relax.BlockBuilder(mod)
    target = scope[var]
    var_type = relax.DataflowVar if isinstance(target, relax.DataflowVar) else relax.Var
    emitted: list = []
    for new in bindings:
        args = [scope[x] if isinstance(x, str) else relax.const(np.asarray(x)) for x in new.args]
        value = _new_call(builder, new, args)
        if new is bindings[-1]:
            emitted.append(VarBinding(target, value))
            break
        new_var = var_type(new.var, builder.normalize(value).ty)
        emitted.append(VarBinding(new_var, value))
        scope[new.var] = new_var
    blocks = []
    for block in main.body.blocks:
        out = []
        for b in block.bindings:
            out.extend(emitted if b.var.same_as(target) else [b])
        blocks.append(DataflowBlock(out) if isinstance(block, DataflowBlock) else type(block)(out))
    new_main = relax.Function(main.params, SeqExpr(blocks, main.body.body), main.ret_ty, main.is_pure, main.attrs)
    builder.update_func(mod.get_global_var("main"), new_main)
    return relax.transform.DeadCodeElimination()(builder.get())


def place_kernel(out_type: TensorType, patch: tuple[int, int, int, int], first: bool) -> tirx.PrimFunc:
    """`out = whole` with the spatial region `patch` (y0, y1, x0, x1) replaced by `part` (NCHW), as one opaque kernel.

    Parameters (whole, part, out), or (part, out) when `first` (then out is 0 outside the patch). Each output element
    is written by one store that reads `whole` at its own index, so the planner may run it in place over `whole`.
    The region's bounds are `likely`: lowering partitions the loops there, into plain copies (which gcc turns into
    block copies) around the patch, instead of a branch per element (MobileNetV2-0.35 int8: 0.3x the instructions).
    """
    from tvm import te

    y0, y1, x0, x1 = patch
    n, c = out_type.shape[:2]
    part = te.placeholder((n, c, y1 - y0, x1 - x0), out_type.dtype, name="part")
    whole = None if first else te.placeholder(out_type.shape, out_type.dtype, name="whole")

    def element(i, j, y, x):
        outside = whole[i, j, y, x] if whole is not None else tirx.const(0, out_type.dtype)
        inside = tirx.all(*(tirx.likely(c) for c in (y0 <= y, y < y1, x0 <= x, x < x1)))
        return tirx.if_then_else(inside, part[i, j, y - y0, x - x0], outside)

    out = te.compute(out_type.shape, element, name="placed")
    params = [part, out] if whole is None else [whole, part, out]
    func = te.create_prim_func(params, index_dtype_override="int64").without_attr("global_symbol")
    return func.with_attr("op_pattern", 8)  # 8 = kOpaque: never fused


def window_conv_kernel(image: TensorType, window: tuple[int, int, int, int], weight: TensorType, strides,
                       padding, groups: int) -> tirx.PrimFunc:
    """conv2d (NCHW/OIHW, TOPI's, as LegalizeOps makes it) of the spatial `window` (y0, y1, x0, x1) of `image`.

    The window is read straight from the image (the default schedule inlines it), so no copy of it is made.
    Marked out-elementwise-fusable, so FuseOps fuses the bias and activation that follow, as for a plain conv2d.
    """
    from tvm import te, topi

    y0, y1, x0, x1 = window
    x = te.placeholder(image.shape, image.dtype, name="image")
    w = te.placeholder(weight.shape, weight.dtype, name="weight")
    part = te.compute((*image.shape[:2], y1 - y0, x1 - x0), lambda n, c, y, xx: x[n, c, y + y0, xx + x0],
                      name="window")
    out = topi.nn.conv(part, w, stride=list(strides), padding=list(padding), dilation=[1, 1], groups=groups,
                       data_layout="NCHW", kernel_layout="OIHW")
    func = te.create_prim_func([x, w, out], index_dtype_override="int64").without_attr("global_symbol")
    return func.with_attr("op_pattern", 4)  # 4 = kOutEWiseFusable, as AnnotateTIROpPattern marks conv2d


def start_reduction_from(func: tirx.PrimFunc, block: str, param: str, axis: int) -> tirx.PrimFunc:
    """`func` with reduction block `block` starting from `param[v]` (v: the block's `axis`-th iterator) instead of
    0: what `te.sum(..., init=param[v])` means, which TVM 0.27's `te.create_prim_func` drops (it keeps the
    reducer's identity). The block's read regions stay those of its update: `decompose_reduction` keeps them for the
    update block, where `tensorize` matches them against an intrinsic's (a read-only parameter orders nothing)."""
    source = next(p for p in func.params if p.name == param)
    found = []

    def on_block(node: s_tir.SBlock) -> s_tir.SBlock:
        if node.name_hint != block or node.init is None:
            return node
        index = node.iter_vars[axis].var
        found.append(node)
        init = tirx.BufferStore(node.init.buffer, tirx.BufferLoad(source, [index]), node.init.indices)
        return s_tir.SBlock(node.iter_vars, node.reads, node.writes, node.name_hint, node.body, init, node.alloc_buffers,
                            node.match_buffers, node.annotations)

    body = tvm_ffi.structural_map(func.body, [(s_tir.SBlock, on_block)])
    if len(found) != 1:
        raise ValueError(f"expected one reduction block {block!r}, found {len(found)}")
    return func.with_body(body)
