"""Relax -> fused TensorIR kernels, the fused `main` as data, and schedules over one kernel."""

from __future__ import annotations


import tvm
from tvm import ir, relax, s_tir, tirx

from tvm_pipeline.tvm_adapter.types import C_TARGET, Binding, MainFunction, tensor_type

def fuse(mod: tvm.IRModule) -> tvm.IRModule:
    """Lower every Relax op to TensorIR and fuse chains into kernels (conv + bias + activation -> one PrimFunc)."""
    with C_TARGET:
        seq = tvm.transform.Sequential(
            [
                relax.transform.LegalizeOps(),
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(),
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
                relax.transform.DeadCodeElimination(),
            ]
        )
        return seq(mod)


def main_bindings(mod: tvm.IRModule) -> MainFunction:
    """Read the fused `main` as data. Relax var names repeat across scopes, so each var gets a unique name."""
    from tvm.ir import Constant
    from tvm.relax import Call, SeqExpr, Var

    names: dict[int, str] = {}
    taken: set[str] = set()

    def name_of(var: Var) -> str:
        handle = var.__chandle__()
        if handle not in names:
            name, k = var.name, 1
            while name in taken:
                name, k = f"{var.name}_{k}", k + 1
            names[handle] = name
            taken.add(name)
        return names[handle]

    main = mod["main"]
    inputs = tuple((name_of(p), tensor_type(p.ty)) for p in main.params)
    body = main.body
    if not isinstance(body, SeqExpr):
        raise ValueError(f"fused main has an unexpected body: {type(body).__name__}")
    call_tir = ir.Op.get("relax.call_tir")
    bindings: list[Binding] = []
    for block in body.blocks:
        for b in block.bindings:
            value = b.value
            if isinstance(value, Var):  # an alias: the dataflow output re-bound to a plain var
                bindings.append(Binding(name_of(b.var), tensor_type(b.var.ty), "", (name_of(value),)))
                continue
            if not (isinstance(value, Call) and value.op.same_as(call_tir)):
                raise ValueError(f"unexpected binding after fusion: {b.var.name} = {value}")
            args = tuple(a.value.numpy() if isinstance(a, Constant) else name_of(a) for a in value.args[1].fields)
            bindings.append(Binding(name_of(b.var), tensor_type(b.var.ty), value.args[0].name_hint, args))
    out = body.body
    if not isinstance(out, Var):
        raise ValueError("only models with a single tensor output are supported")
    return MainFunction(inputs, tuple(bindings), name_of(out), tensor_type(out.ty))


def prim_func(mod: tvm.IRModule, name: str) -> tirx.PrimFunc:
    """The PrimFunc of kernel `name`."""
    return mod[name]


def new_schedule(func: tirx.PrimFunc) -> s_tir.Schedule:
    """A TensorIR schedule over one kernel; `schedules/` rules transform it."""
    return s_tir.Schedule(func)


def scheduled_func(sch: s_tir.Schedule) -> tirx.PrimFunc:
    """The PrimFunc a schedule has produced."""
    return sch.mod["main"]
