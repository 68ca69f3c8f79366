"""Plain data the adapter hands to the rest of tvm-pipeline: tensor types, kernel calls, lowered kernels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm

#: Internal allocations up to this size stay C locals (registers, a few stack bytes); larger ones are moved into the
#: planned workspace so that no kernel hides a big array on the stack.
LOCAL_SCRATCH_LIMIT_BYTES = 64

C_TARGET = tvm.target.Target({"kind": "c"})


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
    inplace_params: tuple[int, ...]  # inputs the output may overwrite (codegen._inplace_params, plane_inplace)
    prepack: object = None  # tvm_adapter.prepack.Prepack: parameters whose constants are rewritten on the host


def tensor_type(ty) -> TensorType:
    """Relax tensor type (`relax.TensorType`, fully static after shape fixing) -> ours."""
    shape = tuple(int(d) for d in ty.shape.values)
    return TensorType(shape, str(ty.dtype.dtype))


def static_tensor_type(ty) -> TensorType | None:
    """Our TensorType for a Relax tensor type with a static shape; None for tuples, unknown ranks, symbolic dims."""
    if type(ty).__name__ != "TensorType" or ty.shape is None:
        return None
    try:
        return tensor_type(ty)
    except (TypeError, ValueError, AttributeError):
        return None
