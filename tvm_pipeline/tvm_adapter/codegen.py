"""One scheduled kernel -> standalone C (raw pointers, workspace) or a Cortex-M object from TVM's LLVM backend."""

from __future__ import annotations

import re

import numpy as np
import tvm
import tvm_ffi
from tvm import ir, s_tir, tirx

from tvm_pipeline.tvm_adapter import dsp
from tvm_pipeline.tvm_adapter.plane_inplace import plane_inplace_params
from tvm_pipeline.tvm_adapter.prepack import split_prepack
from tvm_pipeline.tvm_adapter.types import C_TARGET, LOCAL_SCRATCH_LIMIT_BYTES, KernelParam, LoweredKernel

_LOWERING_PASSES = (
    # The front of TVM's default s_tir pipeline (tvm/s_tir/pipeline.py), minus GPU-only passes, up to the point
    # where it would call MakePackedAPI: we make a raw-pointer C signature instead (no DLTensor, no TVM runtime).
    "s_tir.CanonicalizeLoop",
    "s_tir.LowerInitBlock",
    "s_tir.PlanAndUpdateBufferAllocationLocation",
    "s_tir.ConvertBlocksToOpaque",
    "s_tir.CompactBufferAllocation",
    "s_tir.LowerMatchBuffer",
    "s_tir.StmtSimplify",
    "s_tir.LowerOpaqueBlock",
    "tirx.FlattenBuffer",
    "tirx.NarrowDataType",
    "s_tir.LoopPartition",
    "tirx.VectorizeLoop",
    "tirx.StorageRewrite",
    "tirx.UnrollLoop",
    "tirx.StmtSimplify",
    "tirx.RemoveNoOp",
    "tirx.CommonSubexprElim",
)


def _lowering_pass(name: str) -> tvm.transform.Pass:
    ns, pass_name = name.split(".")
    module = s_tir.transform if ns == "s_tir" else tirx.transform
    if pass_name == "NarrowDataType":
        return module.NarrowDataType(32)
    if pass_name == "VectorizeLoop":
        return module.VectorizeLoop(False)  # Cortex-M has no float4: keep loops scalar
    return getattr(module, pass_name)()


def _raw_pointer_api(func: tirx.PrimFunc) -> tuple[tirx.PrimFunc, tuple[KernelParam, ...], int]:
    """Turn buffer parameters into plain pointers, and big internal allocations (and those viewed as another type)
    into workspace slices (16-byte aligned).

    Before: `def k(A: T.Buffer((1, 8), "float32")): tmp = T.alloc_buffer((512,)); ...A.data...`
    After:  `def k(A: T.handle("float32"), workspace: T.handle("uint8")): tmp = T.decl_buffer(data=&workspace[0])`
    """
    params: list[tirx.Var] = []
    infos: list[KernelParam] = []
    by_param: dict[int, tirx.Var] = {}
    for p in func.params:
        ty = p.ty
        ptr = tirx.Var(p.name, ir.PointerType(ty.dtype))
        params.append(ptr)
        by_param[p.__chandle__()] = ptr
        dtype = str(ty.dtype.dtype)
        numel = int(np.prod([int(d) for d in ty.shape], dtype=np.int64))
        infos.append(KernelParam(p.name, dtype, numel * np.dtype(dtype).itemsize))

    def on_call(call: ir.Call) -> ir.Expr:
        if isinstance(call.op, ir.Op) and call.op.name == "tirx.buffer_data":
            ptr = by_param.get(call.args[0].__chandle__())
            if ptr is not None:
                return ptr
        return call

    body = tvm_ffi.structural_map(func.body, [(ir.Call, on_call)])

    workspace = tirx.Var("workspace", ir.PointerType(ir.PrimType("uint8")))
    workspace_u8 = tirx.decl_buffer((1,), "uint8", name="workspace_u8", data=workspace)
    offset = 0
    # StorageRewrite may give one small allocation to buffers of different types (an int8 copy, later int32
    # accumulators): C would then read int32s through an int8 stack array, with no alignment guaranteed
    # (its views are DeclBuffers named like the allocation: each buffer's data refers to the buffer itself)
    view_types: dict[str, set[str]] = {}
    tvm_ffi.structural_walk(body, [(tirx.DeclBuffer, lambda decl: view_types.setdefault(
        decl.buffer.name, set()).add(str(decl.buffer.ty.dtype.dtype)))])

    def on_alloc(alloc: tirx.AllocBuffer) -> tirx.Stmt:
        nonlocal offset
        buf = alloc.buffer
        dtype = str(buf.ty.dtype.dtype)
        numel = int(np.prod([int(d) for d in buf.ty.shape], dtype=np.int64))
        nbytes = numel * np.dtype(dtype).itemsize
        if nbytes <= LOCAL_SCRATCH_LIMIT_BYTES and view_types.get(buf.name, {dtype}) <= {dtype}:
            return alloc
        addr = tirx.address_of(tirx.BufferLoad(workspace_u8, [tirx.IntImm("int32", offset)]))
        offset += (nbytes + 15) // 16 * 16  # keep every slice 16-byte aligned, like the arena
        return tirx.DeclBuffer(buf, data=addr)

    body = tvm_ffi.structural_map(body, [(tirx.AllocBuffer, on_alloc)])
    if offset:
        params.append(workspace)
        body = tirx.SeqStmt([tirx.DeclBuffer(workspace_u8, data=workspace), body])
    attrs = {k: v for k, v in func.attrs.items() if k != "tirx.is_entry_func"} if func.attrs else {}
    new_func = tirx.PrimFunc(params, body, attrs=tvm.ir.make_node("ir.DictAttrs", **attrs))
    return new_func, tuple(infos), offset


_TVM_PREAMBLE = re.compile(
    r'^(#define TVM_EXPORTS|#include [<"](tvm/.*|math\.h|stdbool\.h)[>"]|void\* __tvm_ffi__library_ctx = NULL;|// tvm target:.*)\n',
    re.M,
)


def _output_sized(params: tuple[KernelParam, ...]) -> list[int]:
    """Indices of the inputs as large as the output, of its dtype: the only ones that may share its storage."""
    out = params[-1]
    return [i for i, p in enumerate(params[:-1]) if p.nbytes == out.nbytes and p.dtype == out.dtype]


def _inplace_params(func: tirx.PrimFunc, params: tuple[KernelParam, ...]) -> tuple[int, ...]:
    """Inputs that the output may share storage with: every element of the input is read before it is replaced.

    Safe when the output (last parameter) is written by exactly one store, is never read back, and each read of
    input p is either inside that store's value at the store's own index (`out[i] = f(..., p[i], ...)`: element i is
    consumed in the statement that overwrites it) or in a top-level statement that runs before the one holding the
    store (done before the output's first write). A helper call that takes a pointer into p (`tvm_access_ptr`) reads
    p at indices the proof cannot see: it counts as a read anywhere in its statement.
    """
    out = len(params) - 1
    ptr_of: dict[int, int] = {}  # buffer handle -> parameter index
    ptrs = {p.__chandle__(): i for i, p in enumerate(func.params)}

    def on_decl(decl: tirx.DeclBuffer) -> None:
        index = ptrs.get(decl.data.__chandle__()) if isinstance(decl.data, tirx.Var) else None
        if index is not None:
            ptr_of[decl.buffer.__chandle__()] = index

    tvm_ffi.structural_walk(func.body, [(tirx.DeclBuffer, on_decl)])

    def param_of_pointer(call: ir.Call) -> int | None:
        data = call.args[1]
        if isinstance(data, tirx.Var):
            return ptrs.get(data.__chandle__())
        if isinstance(data, ir.Call) and getattr(data.op, "name", None) == "tirx.buffer_data":
            return ptr_of.get(data.args[0].__chandle__())
        return None

    statements = list(func.body.seq) if isinstance(func.body, tirx.SeqStmt) else [func.body]
    loads: list[tuple[int, ir.TensorLoad]] = []  # (top-level statement, load)
    pointer_reads: list[tuple[int, int]] = []  # (top-level statement, parameter)
    stores: list[tuple[int, tirx.BufferStore]] = []
    for position, statement in enumerate(statements):
        def on_call(call: ir.Call, position: int = position) -> None:
            if getattr(call.op, "name", None) == "tirx.tvm_access_ptr" and (i := param_of_pointer(call)) is not None:
                pointer_reads.append((position, i))

        tvm_ffi.structural_walk(statement, [(ir.TensorLoad, lambda ld, at=position: loads.append((at, ld))),
                                            (tirx.BufferStore, lambda st, at=position: stores.append((at, st))),
                                            (ir.Call, on_call)])
    out_stores = [(at, st) for at, st in stores if ptr_of.get(st.buffer.__chandle__()) == out]
    if len(out_stores) != 1 or any(ptr_of.get(ld.source.__chandle__()) == out for _, ld in loads) \
            or any(i == out for _, i in pointer_reads):
        return ()
    ((written, store),) = out_stores
    inside: list[ir.TensorLoad] = []
    tvm_ffi.structural_walk(store.value, [(ir.TensorLoad, inside.append)])
    inside_handles = {ld.__chandle__() for ld in inside}

    def consumed_in_place(at: int, load: ir.TensorLoad) -> bool:
        return at < written or (load.__chandle__() in inside_handles
                                and tvm_ffi.structural_equal(list(load.indices), list(store.indices)))

    result = []
    for i in _output_sized(params):
        reads = [(at, ld) for at, ld in loads if ptr_of.get(ld.source.__chandle__()) == i]
        if reads and all(consumed_in_place(at, ld) for at, ld in reads) \
                and all(at < written for at, j in pointer_reads if j == i):
            result.append(i)
    return tuple(result)


def _lower_raw(func: tirx.PrimFunc, symbol: str, target, partition: bool,
               unroll: bool = True) -> tuple[tirx.PrimFunc, tuple[KernelParam, ...], int]:
    """The s_tir pipeline for `target`, then the raw-pointer API: (raw PrimFunc named `symbol`, params, workspace).

    `partition`: LoopPartition splits loops at the bounds a kernel marks `likely` (padding checks), so the interior
    loops carry no condition and the borders become separate, shorter loops. `unroll` False: loops a schedule marked
    for unrolling stay loops (the same program, for proofs that reason about one store in a loop nest).
    """
    mod = tvm.IRModule({symbol: func.with_attr("global_symbol", symbol)})
    mod = tirx.transform.BindTarget(target)(mod)
    passes = [_lowering_pass(n) for n in _LOWERING_PASSES if unroll or n != "tirx.UnrollLoop"]
    with tvm.transform.PassContext(config={"s_tir.LoopPartition": {"partition_const_loop": partition}}):
        mod = tvm.transform.Sequential(passes)(mod)
    raw, params, workspace_bytes = _raw_pointer_api(mod[symbol])
    return raw.with_attr("global_symbol", symbol), params, workspace_bytes


def _marks_likely(func: tirx.PrimFunc) -> bool:
    calls: list[ir.Call] = []
    tvm_ffi.structural_walk(func.body, [(ir.Call, calls.append)])
    return any(getattr(call.op, "name", None) == "prim.likely" for call in calls)


def _lower_chosen(func: tirx.PrimFunc, symbol: str, target) -> tuple:
    """The lowering emitted: partitioned when the kernel marks bounds `likely` and it needs no more workspace than
    unpartitioned (LoopPartition copies a scratch buffer allocated inside a split loop into every part).
    Partitioned IC int8 runs in 0.7x the instructions, for ~15 % more code."""
    plain = _lower_raw(func, symbol, target, partition=False)
    if not _marks_likely(func):
        return plain
    split = _lower_raw(func, symbol, target, partition=True)
    return split if split[2] <= plain[2] else plain


#: C types of the dtypes whose min/max the C kernels compute through `_minmax_helpers`.
_C_SCALARS = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "uint16": "uint16_t", "int32": "int32_t",
              "uint32": "uint32_t", "int64": "int64_t", "uint64": "uint64_t", "float32": "float", "float64": "double"}


def _minmax_as_calls(func: tirx.PrimFunc) -> tuple[tirx.PrimFunc, list[tuple[str, str]]]:
    """`func` with every min/max of a scalar C type as a call to a static inline helper, and the helpers used.

    TVM's C printer writes `max(a, b)` as `((v) > (b) ? (v) : (b))` with `v` a temporary it reuses for any later
    operand that prints the same way in the same C scope, even after a store changed what it reads: a loop that
    partitioning or unrolling turned into straight-line `m = max(m, x0); m = max(m, x1)` read a stale `m` (a max
    pool gave wrong outputs). A call is printed as written, so each max reads its operands where it stands.
    """
    used: dict[tuple[str, str], None] = {}

    def rewrite(op: str):
        def on_node(node):
            dtype = str(node.ty)
            if dtype not in _C_SCALARS:
                return node
            used[op, dtype] = None
            return tirx.call_pure_extern(dtype, f"tvmp_{op}_{dtype}", node.a, node.b)
        return on_node

    body = tvm_ffi.structural_map(func.body, [(tirx.Max, rewrite("max")), (tirx.Min, rewrite("min"))])
    return func.with_body(body), list(used)


#: int32 clamps a single saturating instruction computes, as (lo, hi) -> C helper (tvm_adapter.dsp): an int8 or
#: uint8 requantization's last step. gcc only finds SSAT itself in simpler expressions than an epilogue's.
_SATURATIONS = {(-128, 127): "tvmp_ssat8", (0, 255): "tvmp_usat8"}


def _saturate_stores(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """`out[i] = (int8) max(min(x, 127), -128)` on int32 -> `out[i] = (int8) tvmp_ssat8(x)` (uint8: tvmp_usat8).

    Only a clamp whose result is stored: an inner one (a conv's, feeding a fused residual add) stays min/max, which
    measured faster there (gcc allocates registers better around it: IC int8's conv+add in 0.75x the instructions).
    Runs before `_minmax_as_calls`, so only the min/max left get helpers.
    """
    def on_store(store: tirx.BufferStore):
        value = store.value
        clamp = value.value if isinstance(value, tirx.Cast) else None
        if not isinstance(clamp, tirx.Max) or not isinstance(clamp.a, tirx.Min) or str(clamp.ty) != "int32":
            return store
        lo, hi = clamp.b, clamp.a.b
        if not (isinstance(lo, tirx.IntImm) and isinstance(hi, tirx.IntImm)):
            return store
        helper = _SATURATIONS.get((int(lo.value), int(hi.value)))
        if helper is None:
            return store
        saturated = tirx.Cast(value.ty.dtype, tirx.call_pure_extern("int32", helper, clamp.a.a))
        return tirx.BufferStore(store.buffer, saturated, store.indices)

    return func.with_body(tvm_ffi.structural_map(func.body, [(tirx.BufferStore, on_store)]))


def _is_int(expr, value: int) -> bool:
    return isinstance(expr, tirx.IntImm) and int(expr.value) == value


def _rounded_high_words(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """`(int32)((int64(a) * int64(b) + 2^31) >> 32)` on int32 a, b -> `tvmp_smmulr(a, b)`: gcc builds it from an
    SMLAL with a 64-bit constant accumulator, SMMULR is one instruction (the same bits for every a, b)."""
    def as_int32(expr):
        if isinstance(expr, tirx.Cast) and str(expr.value.ty) == "int32":
            return expr.value
        if isinstance(expr, tirx.IntImm) and -(1 << 31) <= int(expr.value) < 1 << 31:
            return tirx.IntImm("int32", int(expr.value))
        return None

    def on_cast(cast: tirx.Cast):
        shifted = cast.value
        if str(cast.ty) != "int32" or not isinstance(shifted, tirx.RShift) or not _is_int(shifted.b, 32):
            return cast
        total = shifted.a
        if not isinstance(total, tirx.Add) or not _is_int(total.b, 1 << 31) or not isinstance(total.a, tirx.Mul):
            return cast
        a, b = as_int32(total.a.a), as_int32(total.a.b)
        if a is None or b is None:
            return cast
        return tirx.call_pure_extern("int32", "tvmp_smmulr", a, b)

    return func.with_body(tvm_ffi.structural_map(func.body, [(tirx.Cast, on_cast)]))


def _minmax_helpers(used: list[tuple[str, str]]) -> str:
    """C definitions of the helpers `_minmax_as_calls` used, each guarded so kernels can be concatenated."""
    defs = []
    for op, dtype in used:
        c, guard, compare = _C_SCALARS[dtype], f"TVMP_{op.upper()}_{dtype.upper()}", ">" if op == "max" else "<"
        defs.append(f"#ifndef {guard}\n#define {guard}\nstatic inline {c} tvmp_{op}_{dtype}({c} a, {c} b) "
                    f"{{ return a {compare} b ? a : b; }}\n#endif\n")
    return "".join(defs)


def _read_only(source: str, symbol: str, params: tuple[int, ...]) -> str:
    """`void k(int8_t* w, ...)` -> `void k(const int8_t* restrict w, ...)` for the parameters at `params`.

    A store through an int8 pointer may modify any object in C, so without this gcc reloads a conv's bias, multiplier
    and shift (and recomputes what it derived from them) after every output byte it stores: VWW int8 runs in 0.89x
    the instructions with its constants read-only. Only constants get `restrict`: an output may share an input's
    storage (in-place kernels).
    """
    def rewrite(match: re.Match) -> str:
        args = match.group(2).split(", ")
        for i in params:
            ctype, name = args[i].rsplit("* ", 1)
            args[i] = f"const {ctype}* restrict {name}"
        return match.group(1) + ", ".join(args) + ")"

    return re.sub(rf"(void {re.escape(symbol)}\()([^)]*)\)", rewrite, source)


def lower_to_c(func: tirx.PrimFunc, symbol: str, read_only: tuple[int, ...] = ()) -> LoweredKernel:
    """Lower one (scheduled) kernel to standalone C with a raw-pointer signature.

    `read_only`: indices of the parameters every call passes a constant (a weight in flash), declared `const
    restrict`. A parameter the schedule rewrites at compile time (`mark_prepack`) must be one of them: the kernel
    takes the rewritten buffer, and `LoweredKernel.prepack` rewrites the constant."""
    func, prepack = split_prepack(func)
    if prepack is not None and not set(prepack.params) <= set(read_only):
        raise ValueError(f"{symbol}: a prepacked parameter must be passed a constant (prepacked {prepack.params}, "
                         f"constant {read_only})")
    raw, params, workspace_bytes = _lower_chosen(func, symbol, C_TARGET)
    # Element by element: proven on the loops before partitioning and unrolling (either repeats the output's store,
    # which the proof does not follow, but every element is still written once, reading what it read before).
    # Plane by plane (in-place depthwise): proven on the code emitted.
    rolled = _lower_raw(func, symbol, C_TARGET, partition=False, unroll=False) if _output_sized(params) else None
    inplace = (rolled and _inplace_params(*rolled[:2])) or plane_inplace_params(raw, params)
    raw, helpers = _minmax_as_calls(_saturate_stores(_rounded_high_words(raw)))
    mod = tirx.transform.LowerIntrin()(tvm.IRModule({symbol: raw}))
    source = tvm.get_global_func("target.build.c")(mod, C_TARGET).inspect_source()
    source = _TVM_PREAMBLE.sub("", source).replace("TVM_DLL ", "")
    source = re.sub(r"#ifdef __cplusplus\nextern \"C\"\n#endif\n", "", source)
    source = re.sub(r"^\w+ tvmp_(?:min|max)_\w+\(.*\);\n", "", source, flags=re.M)  # TVM declares each call's callee
    source = dsp.DECLARATION.sub("", source)
    source = _read_only(source, symbol, read_only)
    helpers_c = _minmax_helpers(helpers) + dsp.helper_definitions(source)
    return LoweredKernel(symbol, helpers_c + source.strip() + "\n", params, workspace_bytes, inplace, prepack)



def build_llvm_object(kernels: list[tuple[tirx.PrimFunc, str]], target: dict) -> bytes:
    """(scheduled kernel, symbol) pairs -> one ELF object built by TVM's LLVM backend for a Cortex-M CPU.

    `target` is an LLVM target dict (`{"kind": "llvm", "mtriple": "thumbv7em-none-eabihf", "mcpu": ..., "mattr":
    [...]}`). Each symbol has the signature `lower_to_c` gives the same kernel (raw pointers, workspace last), so the
    same `kernels.h` declares it. LLVM contracts a*b+c into fused multiply-adds: results are not bit-identical to C.
    """
    import tempfile

    llvm = tvm.target.Target(target)
    funcs = {}
    for func, symbol in kernels:
        raw, params, _ = _lower_chosen(split_prepack(func)[0], symbol, llvm)  # as lower_to_c
        # LLVM marks the pointers of a `tirx.noalias` function noalias; an output the planner may place over its
        # input (plane by plane) must not be
        funcs[symbol] = raw.without_attr("tirx.noalias") if plane_inplace_params(raw, params) else raw
    mod = tirx.transform.LowerIntrin()(tvm.IRModule(funcs))
    module = tvm.get_global_func("target.build.llvm")(mod, llvm)
    with tempfile.TemporaryDirectory(prefix="tvmp-llvm-") as tmp:
        path = f"{tmp}/kernels.o"
        module.write_to_file(path)
        with open(path, "rb") as f:
            return f.read()
