"""The one place that calls Apache TVM (0.27) internals.

TVM's Python API moves between releases (Relay -> Relax, tir -> tirx/s_tir, buffer_map gone from PrimFunc, ...).
Everything else in tvm-pipeline talks to TVM through the functions here, so a TVM upgrade touches one file.

What it offers:
- `import_onnx`: ONNX ModelProto -> Relax IRModule (weights as Relax constants).
- `import_tflite` / `nhwc_to_nchw`: TFLite flatbuffer -> Relax IRModule, then relaid out to NCHW like the ONNX graphs.
- `fuse`: legalize every Relax op to TensorIR and fuse them into kernels (one PrimFunc per fused group).
- `main_bindings`: the fused `main` as a flat list of kernel calls (our lowering reads the graph from it).
- `new_schedule` / `scheduled_func`: a TensorIR schedule over one kernel (rules live in `schedules/`).
- `lower_to_c`: one scheduled PrimFunc -> C with a raw-pointer signature and its scratch moved into a workspace.
- `build_llvm_object`: scheduled PrimFuncs -> one Cortex-M object from TVM's LLVM backend, same signatures.
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


def _lower_raw(func: tirx.PrimFunc, symbol: str, target) -> tuple[tirx.PrimFunc, tuple[KernelParam, ...], int]:
    """The s_tir pipeline for `target`, then the raw-pointer API: (raw PrimFunc named `symbol`, params, workspace)."""
    mod = tvm.IRModule({symbol: func.with_attr("global_symbol", symbol)})
    mod = tirx.transform.BindTarget(target)(mod)
    mod = tvm.transform.Sequential([_lowering_pass(n) for n in _LOWERING_PASSES])(mod)
    raw, params, workspace_bytes = _raw_pointer_api(mod[symbol])
    return raw.with_attr("global_symbol", symbol), params, workspace_bytes


def lower_to_c(func: tirx.PrimFunc, symbol: str) -> LoweredKernel:
    """Lower one (scheduled) kernel to standalone C with a raw-pointer signature."""
    raw, params, workspace_bytes = _lower_raw(func, symbol, _C_TARGET)
    inplace = _inplace_params(raw, params)
    mod = tirx.transform.LowerIntrin()(tvm.IRModule({symbol: raw}))
    source = tvm.get_global_func("target.build.c")(mod, _C_TARGET).inspect_source()
    source = _TVM_PREAMBLE.sub("", source).replace("TVM_DLL ", "")
    source = re.sub(r"#ifdef __cplusplus\nextern \"C\"\n#endif\n", "", source)
    return LoweredKernel(symbol, source.strip() + "\n", params, workspace_bytes, inplace)



def build_llvm_object(kernels: list[tuple[tirx.PrimFunc, str]], target: dict) -> bytes:
    """(scheduled kernel, symbol) pairs -> one ELF object built by TVM's LLVM backend for a Cortex-M CPU.

    `target` is an LLVM target dict (`{"kind": "llvm", "mtriple": "thumbv7em-none-eabihf", "mcpu": ..., "mattr":
    [...]}`). Each symbol has the signature `lower_to_c` gives the same kernel (raw pointers, workspace last), so the
    same `kernels.h` declares it. LLVM contracts a*b+c into fused multiply-adds: results are not bit-identical to C.
    """
    import tempfile

    llvm = tvm.target.Target(target)
    funcs = {symbol: _lower_raw(func, symbol, llvm)[0] for func, symbol in kernels}
    mod = tirx.transform.LowerIntrin()(tvm.IRModule(funcs))
    module = tvm.get_global_func("target.build.llvm")(mod, llvm)
    with tempfile.TemporaryDirectory(prefix="tvmp-llvm-") as tmp:
        path = f"{tmp}/kernels.o"
        module.write_to_file(path)
        with open(path, "rb") as f:
            return f.read()

def import_tflite(model, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str]) -> tvm.IRModule:
    """Import a parsed TFLite model (`tflite.Model`) into Relax with fixed input shapes; weights become constants.

    int8 models import as QDQ fake-quant (`R.quantize`/`R.dequantize` around float ops), as ONNX QDQ models do.
    """
    from tvm.relax.frontend.tflite import from_tflite

    mod = from_tflite(model, shape_dict={k: tuple(v) for k, v in shapes.items()}, dtype_dict=dict(dtypes))
    # The frontend also attaches every weight as a "params" attribute; they are constants in the body already.
    mod["main"] = mod["main"].without_attr("params")
    return mod


_BROADCAST_OPS = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum", "relax.minimum")


@relax.expr_functor.mutator
class _ConstantsToFullRank(relax.PyExprMutator):
    """`add(x, C)` with C of lower rank than x -> `add(x, reshape(C) to x's rank)`: ConvertLayout can permute it."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not (isinstance(call.op, ir.Op) and call.op.name in _BROADCAST_OPS):
            return call
        args = list(call.args)
        for i, (arg, other) in enumerate(((args[0], args[1]), (args[1], args[0]))):
            if isinstance(arg, ir.Constant) and isinstance(other.ty, relax.TensorType) and other.ty.ndim > arg.ty.ndim:
                value = arg.value.numpy()
                args[i] = relax.const(value.reshape((1,) * (other.ty.ndim - value.ndim) + value.shape))
        return relax.Call(call.op, args, call.attrs)


@relax.expr_functor.mutator
class _FoldConstantPermutes(relax.PyExprMutator):
    """`permute_dims(C)` -> the permuted constant (ConvertLayout's weight relayouts); nothing else is folded."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if isinstance(call.op, ir.Op) and call.op.name == "relax.permute_dims" and isinstance(call.args[0], ir.Constant):
            value = call.args[0].value.numpy()
            axes = call.attrs.axes
            return relax.const(np.ascontiguousarray(value.transpose(None if axes is None else [int(a) for a in axes])))
        return call


def nhwc_to_nchw(mod: tvm.IRModule) -> tvm.IRModule:
    """Relayout a channels-last model (TFLite) to NCHW/OIHW, the layout of the ONNX graphs our passes match.

    ConvertLayout makes every conv2d NCHW and carries the layout through elementwise ops and pooling, so a float
    model ends with one `permute_dims` after its input and one before its first reshape, as tf2onnx's graphs do.
    Weight relayouts are folded into the constants. Ops ConvertLayout does not know (quantize, dequantize) keep a
    `permute_dims` on each side: int8 graphs would come out correct but transpose-heavy, so the frontend skips them.
    Updates `mod` (a freshly imported module) in place and returns the result.
    """
    mod["main"] = _ConstantsToFullRank().visit_expr(mod["main"])
    mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NCHW", "OIHW"]})(mod)
    mod["main"] = _FoldConstantPermutes().visit_expr(mod["main"])
    # CanonicalizeBindings puts the folded weights back into the conv2d calls (`w = C; conv2d(x, w)` -> `conv2d(x, C)`)
    return tvm.transform.Sequential([relax.transform.CanonicalizeBindings(),
                                     relax.transform.DeadCodeElimination()])(mod)


def tflite_supported_ops() -> tuple[set[str], set[str]]:
    """TFLite builtin operator names TVM's Relax frontend converts, and those it converts in quantized form."""
    from tvm.relax.frontend.tflite.tflite_frontend import OperatorConverter

    converter = OperatorConverter(None, None, None, None)  # only reads its tables; no model needed
    markers = {"DELEGATE", "PLACEHOLDER_FOR_GREATER_OP_CODES"}  # entries that only raise "not a tensor operator"
    return set(converter.convert_map) - markers, set(OperatorConverter._SUPPORTED_QUANTIZED_OPS)


# --- Relax dataflow as data, and kernel substitution (used by graph passes such as reorder-bottleneck) ---------------

#: Relax ops whose all-constant calls `dataflow_ops` evaluates with numpy (bias reshapes, ONNX Clip's bounds).
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


def _static_tensor_type(ty) -> TensorType | None:
    """Our TensorType for a Relax tensor type with a static shape; None for tuples, unknown ranks, symbolic dims."""
    if type(ty).__name__ != "TensorType" or ty.shape is None:
        return None
    try:
        return _tensor_type(ty)
    except (TypeError, ValueError, AttributeError):
        return None


def _var_names(main) -> dict[int, str]:
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
    names = _var_names(main)
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
    types = {names[p.__chandle__()]: t for p in main.params if (t := _static_tensor_type(p.ty)) is not None}
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
            tensor = _static_tensor_type(binding.var.ty)
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
    names = _var_names(main)
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
    return _var_names(main)[main.body.body.__chandle__()]


#: PrimFunc attribute naming the input window a `read_window` kernel copies: (begin..., end...) per input axis.
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
    axes/begin/end, elementwise ops, "relax.nn.relu", "relax.clip" with min/max), or "call_tir" with attrs
    `func` (a PrimFunc), `name` (its name prefix) and `type` (the output's TensorType).
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
        return relax.op.strided_slice(args[0], list(a["axes"]), list(a["begin"]), list(a["end"]))
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
    names = _var_names(main)
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
    """
    from tvm import te

    y0, y1, x0, x1 = patch
    n, c = out_type.shape[:2]
    part = te.placeholder((n, c, y1 - y0, x1 - x0), out_type.dtype, name="part")
    whole = None if first else te.placeholder(out_type.shape, out_type.dtype, name="whole")

    def element(i, j, y, x):
        outside = whole[i, j, y, x] if whole is not None else tirx.const(0, out_type.dtype)
        inside = tirx.all(y0 <= y, y < y1, x0 <= x, x < x1)
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
