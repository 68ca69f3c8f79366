"""The one place that calls Apache TVM (0.27) internals.

TVM's Python API moves between releases (Relay -> Relax, tir -> tirx/s_tir, buffer_map gone from PrimFunc, ...).
Everything else in tvm-pipeline talks to TVM through the functions here, so a TVM upgrade touches one file.

What it offers:
- `import_onnx`: ONNX ModelProto -> Relax IRModule (weights as Relax constants).
- `fuse`: legalize every Relax op to TensorIR and fuse them into kernels (one PrimFunc per fused group).
- `main_bindings`: the fused `main` as a flat list of kernel calls (our lowering reads the graph from it).
- `new_schedule` / `scheduled_func`: a TensorIR schedule over one kernel (rules live in `schedules/`).
- `lower_to_c`: one scheduled PrimFunc -> C with a raw-pointer signature and its scratch moved into a workspace.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import tvm
import tvm_ffi
from tvm import ir, relax, s_tir, tirx

#: Internal allocations up to this size stay C locals (registers, a few stack bytes); larger ones are moved into the
#: planned workspace so that no kernel hides a big array on the stack.
LOCAL_SCRATCH_LIMIT_BYTES = 64

_C_TARGET = tvm.target.Target({"kind": "c"})


@dataclass(frozen=True)
class TensorType:
    """Shape and element type of one tensor."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class Binding:
    """One `out = call_tir(func, args)` of the fused main function.

    Each argument is either the name of a tensor (`str`) or a constant (`np.ndarray`).
    """

    output: str
    output_type: TensorType
    func_name: str
    args: tuple[str | np.ndarray, ...]


@dataclass(frozen=True)
class MainFunction:
    """The fused main function as data: its inputs, its kernel calls in file order, and its output."""

    inputs: tuple[tuple[str, TensorType], ...]
    bindings: tuple[Binding, ...]
    output: str
    output_type: TensorType


@dataclass(frozen=True)
class KernelParam:
    """One pointer parameter of a lowered kernel."""

    name: str
    dtype: str
    nbytes: int


@dataclass(frozen=True)
class LoweredKernel:
    """A kernel as standalone C: `void symbol(T *p0, ..., [uint8_t *workspace])`."""

    symbol: str
    source: str
    params: tuple[KernelParam, ...]
    workspace_bytes: int
    inplace_params: tuple[int, ...]  # inputs the output may overwrite (see `_inplace_params`)


def import_onnx(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> tvm.IRModule:
    """Import an ONNX model into Relax with fixed input shapes; weights become Relax constants."""
    from tvm.relax.frontend.onnx import from_onnx

    dtypes = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).name for i in model.graph.input}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Renaming name")  # ONNX names like "input.1" are not C names
        return from_onnx(model, shape_dict={k: list(v) for k, v in shapes.items()},
                         dtype_dict={k: dtypes[k] for k in shapes}, keep_params_in_input=False)


def onnx_supported_ops(opset: int) -> set[str]:
    """ONNX op types TVM's Relax frontend can convert."""
    from tvm.relax.frontend.onnx import onnx_frontend

    return set(onnx_frontend._get_convert_map().keys())


def fuse(mod: tvm.IRModule) -> tvm.IRModule:
    """Lower every Relax op to TensorIR and fuse chains into kernels (conv + bias + activation -> one PrimFunc)."""
    with _C_TARGET:
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


def _tensor_type(ty) -> TensorType:
    """Relax tensor type (`relax.TensorType`, fully static after shape fixing) -> ours."""
    shape = tuple(int(d) for d in ty.shape.values)
    return TensorType(shape, str(ty.dtype.dtype))


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
    inputs = tuple((name_of(p), _tensor_type(p.ty)) for p in main.params)
    body = main.body
    if not isinstance(body, SeqExpr):
        raise ValueError(f"fused main has an unexpected body: {type(body).__name__}")
    call_tir = ir.Op.get("relax.call_tir")
    bindings: list[Binding] = []
    for block in body.blocks:
        for b in block.bindings:
            value = b.value
            if isinstance(value, Var):  # an alias: the dataflow output re-bound to a plain var
                bindings.append(Binding(name_of(b.var), _tensor_type(b.var.ty), "", (name_of(value),)))
                continue
            if not (isinstance(value, Call) and value.op.same_as(call_tir)):
                raise ValueError(f"unexpected binding after fusion: {b.var.name} = {value}")
            args = tuple(a.value.numpy() if isinstance(a, Constant) else name_of(a) for a in value.args[1].fields)
            bindings.append(Binding(name_of(b.var), _tensor_type(b.var.ty), value.args[0].name_hint, args))
    out = body.body
    if not isinstance(out, Var):
        raise ValueError("only models with a single tensor output are supported")
    return MainFunction(inputs, tuple(bindings), name_of(out), _tensor_type(out.ty))


def prim_func(mod: tvm.IRModule, name: str) -> tirx.PrimFunc:
    """The PrimFunc of kernel `name`."""
    return mod[name]


def new_schedule(func: tirx.PrimFunc) -> s_tir.Schedule:
    """A TensorIR schedule over one kernel; `schedules/` rules transform it."""
    return s_tir.Schedule(func)


def scheduled_func(sch: s_tir.Schedule) -> tirx.PrimFunc:
    """The PrimFunc a schedule has produced."""
    return sch.mod["main"]


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
    """Turn buffer parameters into plain pointers and big internal allocations into workspace slices.

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

    def on_alloc(alloc: tirx.AllocBuffer) -> tirx.Stmt:
        nonlocal offset
        buf = alloc.buffer
        dtype = str(buf.ty.dtype.dtype)
        numel = int(np.prod([int(d) for d in buf.ty.shape], dtype=np.int64))
        nbytes = numel * np.dtype(dtype).itemsize
        if nbytes <= LOCAL_SCRATCH_LIMIT_BYTES:
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


def _inplace_params(func: tirx.PrimFunc, params: tuple[KernelParam, ...]) -> tuple[int, ...]:
    """Inputs that the output may share storage with: each element is read once, right where it is replaced.

    Safe when the output (last parameter) is written by exactly one store, is never read back, and input p is
    only read inside that store's value at the store's own index: `out[i] = f(..., p[i], ...)`. Then element i
    of p is consumed in the same statement that overwrites it, and no other element of p is touched.
    """
    out = len(params) - 1
    ptr_of: dict[int, int] = {}  # buffer handle -> parameter index
    loads: list[ir.TensorLoad] = []
    stores: list[tirx.BufferStore] = []
    ptrs = {p.__chandle__(): i for i, p in enumerate(func.params)}

    def on_decl(decl: tirx.DeclBuffer) -> None:
        index = ptrs.get(decl.data.__chandle__()) if isinstance(decl.data, tirx.Var) else None
        if index is not None:
            ptr_of[decl.buffer.__chandle__()] = index

    tvm_ffi.structural_walk(func.body, [(tirx.DeclBuffer, on_decl), (ir.TensorLoad, loads.append),
                                        (tirx.BufferStore, stores.append)])
    out_stores = [s for s in stores if ptr_of.get(s.buffer.__chandle__()) == out]
    if len(out_stores) != 1 or any(ptr_of.get(ld.source.__chandle__()) == out for ld in loads):
        return ()
    (store,) = out_stores
    inside: list[ir.TensorLoad] = []
    tvm_ffi.structural_walk(store.value, [(ir.TensorLoad, inside.append)])
    inside_handles = {ld.__chandle__() for ld in inside}
    result = []
    for i, param in enumerate(params[:out]):
        if param.nbytes != params[out].nbytes or param.dtype != params[out].dtype:
            continue
        reads = [ld for ld in loads if ptr_of.get(ld.source.__chandle__()) == i]
        if reads and all(
            ld.__chandle__() in inside_handles and tvm_ffi.structural_equal(list(ld.indices), list(store.indices))
            for ld in reads
        ):
            result.append(i)
    return tuple(result)


def lower_to_c(func: tirx.PrimFunc, symbol: str) -> LoweredKernel:
    """Lower one (scheduled) kernel to standalone C with a raw-pointer signature."""
    mod = tvm.IRModule({symbol: func.with_attr("global_symbol", symbol)})
    mod = tirx.transform.BindTarget(_C_TARGET)(mod)
    mod = tvm.transform.Sequential([_lowering_pass(n) for n in _LOWERING_PASSES])(mod)
    raw, params, workspace_bytes = _raw_pointer_api(mod[symbol])
    raw = raw.with_attr("global_symbol", symbol)
    inplace = _inplace_params(raw, params)
    mod = tirx.transform.LowerIntrin()(tvm.IRModule({symbol: raw}))
    source = tvm.get_global_func("target.build.c")(mod, _C_TARGET).inspect_source()
    source = _TVM_PREAMBLE.sub("", source).replace("TVM_DLL ", "")
    source = re.sub(r"#ifdef __cplusplus\nextern \"C\"\n#endif\n", "", source)
    return LoweredKernel(symbol, source.strip() + "\n", params, workspace_bytes, inplace)


def import_tflite(model, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str]) -> tvm.IRModule:
    """Import a parsed TFLite model (`tflite.Model`) into Relax with fixed input shapes; weights become constants.

    int8 models import as QDQ fake-quant (`R.quantize`/`R.dequantize` around float ops), as ONNX QDQ models do.
    """
    from tvm.relax.frontend.tflite import from_tflite

    mod = from_tflite(model, shape_dict={k: tuple(v) for k, v in shapes.items()}, dtype_dict=dict(dtypes))
    # The frontend also attaches every weight as a "params" attribute; they are constants in the body already.
    mod["main"] = mod["main"].without_attr("params")
    return mod


def tflite_supported_ops() -> tuple[set[str], set[str]]:
    """TFLite builtin operator names TVM's Relax frontend converts, and those it converts in quantized form."""
    from tvm.relax.frontend.tflite.tflite_frontend import OperatorConverter

    converter = OperatorConverter(None, None, None, None)  # only reads its tables; no model needed
    markers = {"DELEGATE", "PLACEHOLDER_FOR_GREATER_OP_CODES"}  # entries that only raise "not a tensor operator"
    return set(converter.convert_map) - markers, set(OperatorConverter._SUPPORTED_QUANTIZED_OPS)
