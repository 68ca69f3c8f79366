"""The un-fused `main` as a list of ops over named variables, and rewrites of its bindings into kernel calls."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
import tvm_ffi
from tvm import ir, relax, tirx

from tvm_pipeline.tvm_adapter.types import TensorType, static_tensor_type

_FOLDABLE = {
    "relax.reshape": lambda a, shape: np.reshape(a, shape),
    "relax.isnan": np.isnan,
    "relax.where": np.where,
}


@dataclass(frozen=True)
class DataflowOp:
    """One `var = op(args)` binding of `main`, as data.

    `op` is the Relax op name ("relax.nn.conv2d", "relax.add", ...), "tir.maximum" / "tir.minimum" for a `call_tir`
    of an elementwise max/min of a tensor with a scalar (how ONNX Clip imports), "call_tir" for any other (both with
    attrs `func`, the callee's name), "get_item"
    for `t[i]` (attrs `index`), and "" for anything else. Each argument is the name of a variable (`str`), a
    constant (`np.ndarray`; constant sub-expressions such as `reshape(const)` are folded), or a Python scalar.
    """

    var: str
    op: str
    args: tuple[str | np.ndarray | float | int, ...]
    attrs: dict
    type: TensorType | None  # None when the value is not a tensor of static shape (a tuple, ...)


@dataclass(frozen=True)
class DataflowView:
    """`main`'s bindings in order, and how many bindings (or the function's result) read each variable."""

    ops: tuple[DataflowOp, ...]
    users: dict[str, int]
    inputs: tuple[str, ...]
    types: dict[str, TensorType]  # every tensor variable, parameters included


def _attrs_dict(attrs) -> dict:
    if attrs is None:
        return {}
    out = {}
    for field in type(attrs).__tvm_ffi_type_info__.fields:
        value = getattr(attrs, field.name)
        if isinstance(value, (list, tuple)) or type(value).__name__ == "Array":
            value = tuple(int(v) if isinstance(v, (int, tirx.IntImm)) else v for v in value)
        elif value is not None and not isinstance(value, (bool, int, float, str)):
            value = str(value)
        out[field.name] = value
    return out


def _elementwise_scalar_op(func: tirx.PrimFunc) -> str:
    """"maximum"/"minimum" if `func` is `out[i...] = max|min(a[i...], b[()])`, else ""."""
    stores: list[tirx.BufferStore] = []
    tvm_ffi.structural_walk(func.body, [(tirx.BufferStore, stores.append)])
    if len(func.params) != 3 or len(stores) != 1:
        return ""
    (store,) = stores
    value = store.value
    kind = {tirx.Max: "maximum", tirx.Min: "minimum"}.get(type(value), "")
    a, b, out = func.params
    ok = (
        kind
        and store.buffer.same_as(out)
        and isinstance(value.a, ir.TensorLoad) and value.a.source.same_as(a)
        and tvm_ffi.structural_equal(list(value.a.indices), list(store.indices))
        and isinstance(value.b, ir.TensorLoad) and value.b.source.same_as(b) and len(value.b.indices) == 0
    )
    return kind if ok else ""


def var_names(main) -> dict[int, str]:
    """A unique name for every parameter and bound variable of `main` (Relax names may repeat)."""
    names: dict[int, str] = {}
    taken: set[str] = set()
    for var in [*main.params, *(b.var for block in main.body.blocks for b in block.bindings)]:
        name, k = var.name, 1
        while name in taken:
            name, k = f"{var.name}_{k}", k + 1
        names[var.__chandle__()] = name
        taken.add(name)
    return names


def dataflow_ops(mod: tvm.IRModule) -> DataflowView:
    """Read the (un-fused) `main` as a list of ops over named variables, folding constant sub-expressions."""
    from tvm.relax import Call, ShapeExpr, TupleGetItem, Var
    from tvm.relax import Tuple as RelaxTuple

    main = mod["main"]
    names = var_names(main)
    consts: dict[int, np.ndarray] = {}
    users: dict[str, int] = {}
    call_tir = ir.Op.get("relax.call_tir")

    def arg(expr):
        if isinstance(expr, Var):
            handle = expr.__chandle__()
            return consts[handle] if handle in consts else names[handle]
        if isinstance(expr, ir.GenericConst):
            return expr.value.numpy()
        if isinstance(expr, ShapeExpr):
            return tuple(int(v) for v in expr.values)
        if isinstance(expr, (tirx.FloatImm, tirx.IntImm)):
            return expr.value
        return None

    inputs = tuple(names[p.__chandle__()] for p in main.params)
    types = {names[p.__chandle__()]: t for p in main.params if (t := static_tensor_type(p.ty)) is not None}
    ops: list[DataflowOp] = []
    for block in main.body.blocks:
        for binding in block.bindings:
            value, op, attrs = binding.value, "", {}
            if isinstance(value, Call) and value.op.same_as(call_tir):
                callee = mod[value.args[0]]
                kind = _elementwise_scalar_op(callee) if isinstance(callee, tirx.PrimFunc) else ""
                op, attrs = (f"tir.{kind}" if kind else "call_tir"), {"func": value.args[0].name_hint}
                operands = list(value.args[1].fields)
            elif isinstance(value, Call) and isinstance(value.op, ir.Op):
                op, attrs = value.op.name, _attrs_dict(value.attrs)
                operands = [f for a in value.args for f in (a.fields if isinstance(a, RelaxTuple) else [a])]
            elif isinstance(value, TupleGetItem):
                op, attrs, operands = "get_item", {"index": int(value.index)}, [value.tuple_value]
            else:
                operands = list(value.fields) if isinstance(value, RelaxTuple) else [value]
            args = tuple(arg(o) for o in operands)
            for a in args:
                if isinstance(a, str):
                    users[a] = users.get(a, 0) + 1
            if op in _FOLDABLE and all(isinstance(a, (np.ndarray, tuple)) for a in args):
                consts[binding.var.__chandle__()] = np.asarray(_FOLDABLE[op](*args))
                continue
            tensor = static_tensor_type(binding.var.ty)
            ops.append(DataflowOp(names[binding.var.__chandle__()], op, args, attrs, tensor))
            if tensor is not None:
                types[ops[-1].var] = tensor
    result = arg(main.body.body)
    if isinstance(result, str):
        users[result] = users.get(result, 0) + 1
    return DataflowView(tuple(ops), users, inputs, types)


@dataclass(frozen=True)
class KernelCall:
    """Replace the binding of `var` by `call_tir(func, args)`; arguments are variable names or constants."""

    var: str
    func: tirx.PrimFunc
    func_name: str
    args: tuple[str | np.ndarray, ...]


def replace_with_kernels(mod: tvm.IRModule, calls: list[KernelCall]) -> tvm.IRModule:
    """Rebind each `calls[i].var` to a `call_tir` of a new PrimFunc, then drop the bindings nobody reads any more.

    Variables are found by the names `dataflow_ops` gives them, so read the view and rewrite the same module.
    """
    from tvm.relax import DataflowBlock, SeqExpr, VarBinding

    if not calls:
        return mod
    main = mod["main"]
    names = var_names(main)
    view_names = {names[v.__chandle__()]: v for v in [*main.params, *(b.var for bl in main.body.blocks for b in bl.bindings)]}
    builder = relax.BlockBuilder(mod)
    new_values = {}
    for call in calls:
        gvar = builder.add_func(call.func, call.func_name)
        args = [view_names[a] if isinstance(a, str) else relax.const(a) for a in call.args]
        var = view_names[call.var]
        new_values[var.__chandle__()] = relax.call_tir(gvar, args, out_ty=var.ty)
    blocks = []
    for block in main.body.blocks:
        bindings = [VarBinding(b.var, new_values[b.var.__chandle__()]) if b.var.__chandle__() in new_values else b
                    for b in block.bindings]
        blocks.append(DataflowBlock(bindings) if isinstance(block, DataflowBlock) else type(block)(bindings))
    new_main = relax.Function(main.params, SeqExpr(blocks, main.body.body), main.ret_ty, main.is_pure, main.attrs)
    builder.update_func(mod.get_global_var("main"), new_main)
    return relax.transform.DeadCodeElimination()(builder.get())


def dataflow_output(mod: tvm.IRModule) -> str:
    """The name `dataflow_ops` gives the variable `main` returns."""
    main = mod["main"]
    return var_names(main)[main.body.body.__chandle__()]


#: PrimFunc attribute naming the input window a `read_window` kernel copies: (begin..., end...) per input axis.
