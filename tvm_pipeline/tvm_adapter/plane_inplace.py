"""Prove on a lowered kernel that its output may be written over an input, channel plane by channel plane.

TinyEngine's in-place depthwise convolution: the kernel copies input plane c into a scratch plane, then writes output
plane c. With the output at the input's address, the writes of channels 0..c end at byte (c+1) * P_out * s_out, and
the input planes still to be read (c+1, ...) start at byte (c+1) * P_in * s_in; plane c itself was copied before
channel c's first write. So it is safe when (P: elements of one plane, s: bytes of one element)

    - the kernel's top level is one serial loop `for c in range(C)` and nothing outside it reads the input or writes
      the output; the output is never read, the input never written;
    - in the loop body, every statement that reads the input comes before every statement that writes the output;
    - every read of the input lies in plane c, [c * P_in, (c+1) * P_in), and every write of the output in plane c,
      [c * P_out, (c+1) * P_out), for all values of the loops and lets around it (tvm.sym.Analyzer proves it);
    - P_out * s_out <= P_in * s_in.

Conditions (if/else, if_then_else) are not used by the proof: an access it cannot bound makes it fail, never pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm_ffi
from tvm import ir, sym, tirx

from tvm_pipeline.tvm_adapter.types import KernelParam

_SERIAL_KINDS = (tirx.ForKind.SERIAL, tirx.ForKind.UNROLLED)


class _Unproven(Exception):
    """The kernel does not have the shape the proof follows."""


@dataclass(frozen=True)
class _Access:
    """One read or write of a parameter's buffer: its flat index and the loops/lets around it (outermost first)."""

    param: int
    store: bool
    index: ir.PrimExpr
    scope: tuple[tirx.Stmt, ...]


def plane_inplace_params(func: tirx.PrimFunc, params: tuple[KernelParam, ...]) -> tuple[int, ...]:
    """Indices of the inputs whose storage the output (last parameter) may take, plane by plane (see module doc)."""
    try:
        channel_loop, param_of = _channel_loop(func)
        accesses = [list(found) for found in _parts(channel_loop.body, (channel_loop,), param_of)]
    except _Unproven:
        return ()
    out = len(params) - 1
    channels = int(channel_loop.extent)
    every = [a for part in accesses for a in part]
    if any(a.param == out and not a.store for a in every):
        return ()
    writes = [k for k, part in enumerate(accesses) if any(a.param == out for a in part)]
    if not writes or not _in_planes([a for a in every if a.param == out], params[out], channels, channel_loop):
        return ()
    result = []
    for p in range(out):
        reads = [k for k, part in enumerate(accesses) if any(a.param == p for a in part)]
        mine = [a for a in every if a.param == p]
        if (reads and not any(a.store for a in mine) and max(reads) < min(writes)
                and params[out].nbytes <= params[p].nbytes
                and _in_planes(mine, params[p], channels, channel_loop)):
            result.append(p)
    return tuple(result)


def _channel_loop(func: tirx.PrimFunc) -> tuple[tirx.For, dict[int, int]]:
    """The one top-level loop (min 0, serial) and buffer handle -> parameter index; raises _Unproven otherwise."""
    params = {p.__chandle__(): i for i, p in enumerate(func.params)}
    param_of: dict[int, int] = {}
    declared: dict[int, int] = {}
    uses: list[tirx.Var] = []

    def on_decl(decl: tirx.DeclBuffer) -> None:
        index = params.get(decl.data.__chandle__()) if isinstance(decl.data, tirx.Var) else None
        if index is not None:
            param_of[decl.buffer.__chandle__()] = index
            declared[index] = declared.get(index, 0) + 1

    tvm_ffi.structural_walk(func.body, [(tirx.DeclBuffer, on_decl), (tirx.Var, uses.append)])
    used: dict[int, int] = {}
    for var in uses:
        if var.__chandle__() in params:
            used[params[var.__chandle__()]] = used.get(params[var.__chandle__()], 0) + 1
    if used != declared:  # a pointer used other than as one buffer's data (an alias, a call argument)
        raise _Unproven
    top = _flatten(func.body)
    loops = [s for s in top if isinstance(s, tirx.For)]
    if len(loops) != 1 or any(not isinstance(s, (tirx.For, tirx.DeclBuffer, tirx.AllocBuffer)) for s in top):
        raise _Unproven
    (loop,) = loops
    if not (isinstance(loop.min, tirx.IntImm) and int(loop.min) == 0 and isinstance(loop.extent, tirx.IntImm)
            and loop.kind in _SERIAL_KINDS and loop.step is None):
        raise _Unproven
    return loop, param_of


def _flatten(stmt: tirx.Stmt) -> list[tirx.Stmt]:
    return [s for part in stmt.seq for s in _flatten(part)] if isinstance(stmt, tirx.SeqStmt) else [stmt]


def _parts(body: tirx.Stmt, scope: tuple[tirx.Stmt, ...], param_of: dict[int, int]):
    """For each statement of the sequence `body`, its accesses; a Bind is in scope for the statements after it."""
    for part in _flatten(body):
        yield _accesses(part, scope, param_of)
        if isinstance(part, tirx.Bind):
            scope = (*scope, part)


def _accesses(stmt: tirx.Stmt, scope: tuple[tirx.Stmt, ...], param_of: dict[int, int]):
    """Every access to a parameter's buffer inside `stmt`, with the loops and lets around it."""
    if isinstance(stmt, tirx.SeqStmt):
        for found in _parts(stmt, scope, param_of):
            yield from found
    elif isinstance(stmt, tirx.For):
        if stmt.step is not None:
            raise _Unproven
        yield from _loads(stmt.min, scope, param_of)
        yield from _loads(stmt.extent, scope, param_of)
        yield from _accesses(stmt.body, (*scope, stmt), param_of)
    elif isinstance(stmt, tirx.Bind):
        yield from _loads(stmt.value, scope, param_of)
    elif isinstance(stmt, tirx.IfThenElse):
        yield from _loads(stmt.condition, scope, param_of)
        yield from _accesses(stmt.then_case, scope, param_of)
        if stmt.else_case is not None:
            yield from _accesses(stmt.else_case, scope, param_of)
    elif isinstance(stmt, tirx.BufferStore):
        for index in stmt.indices:
            yield from _loads(index, scope, param_of)
        yield from _loads(stmt.value, scope, param_of)
        param = param_of.get(stmt.buffer.__chandle__())
        if param is not None:
            yield _Access(param, True, _flat_index(stmt.indices), scope)
    elif isinstance(stmt, tirx.Evaluate):
        yield from _loads(stmt.value, scope, param_of)
    elif not isinstance(stmt, (tirx.DeclBuffer, tirx.AllocBuffer)):
        raise _Unproven


def _loads(expr: ir.PrimExpr, scope: tuple[tirx.Stmt, ...], param_of: dict[int, int]):
    found: list[ir.TensorLoad] = []
    tvm_ffi.structural_walk(expr, [(ir.TensorLoad, found.append)])
    for load in found:
        param = param_of.get(load.source.__chandle__())
        if param is not None:
            yield _Access(param, False, _flat_index(load.indices), scope)


def _flat_index(indices) -> ir.PrimExpr:
    if len(indices) != 1:  # lowering flattens every buffer to one dimension
        raise _Unproven
    return indices[0]


def _in_planes(accesses: list[_Access], param: KernelParam, channels: int, loop: tirx.For) -> bool:
    """Every access at channel c lies in [c * P, (c+1) * P), P = the parameter's elements / channels."""
    elements = param.nbytes // np.dtype(param.dtype).itemsize
    if elements % channels:
        return False
    plane = elements // channels
    c = loop.loop_var
    dtype = str(c.ty.dtype)
    for access in accesses:
        analyzer = sym.Analyzer()
        for stmt in access.scope:
            if isinstance(stmt, tirx.For):
                analyzer.bind(stmt.loop_var, ir.Range.from_min_extent(stmt.min, stmt.extent), allow_override=True)
            else:
                analyzer.bind(stmt.var, stmt.value, allow_override=True)
        start = c * tirx.const(plane, dtype)
        index = access.index if str(access.index.ty.dtype) == dtype else access.index.astype(dtype)
        if not (analyzer.can_prove(index >= start) and analyzer.can_prove(index < start + tirx.const(plane, dtype))):
            return False
    return True
