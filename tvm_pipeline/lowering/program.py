"""The compiled model as plain data: tensors, constants, kernels and the kernel calls in execution order.

Everything after lowering (planner, C emitter, reports) reads a `Program`; nothing after it touches TVM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tvm_pipeline.tvm_adapter import KernelParam, TensorType


@dataclass(frozen=True)
class Kernel:
    """One generated C function: `void symbol(p0, ..., [workspace])`."""

    symbol: str
    source: str
    params: tuple[KernelParam, ...]
    workspace_bytes: int
    tir_name: str  # the fused TensorIR function it came from (for reports and tuning records)
    inplace_params: tuple[int, ...] = ()  # inputs the output may overwrite: element or channel plane at a time


@dataclass(frozen=True)
class Step:
    """One kernel call: `kernel(args...)`; the last argument is the output tensor.

    A step with a `window` has no kernel: in stream mode it asks the firmware for that window of the input.
    """

    name: str
    kernel: str
    args: tuple[str, ...]  # names of activation tensors or constants, in the kernel's parameter order
    inputs: tuple[str, ...]  # the activation tensors among `args` that are read
    output: str
    window: tuple[tuple[int, ...], tuple[int, ...]] | None = None  # stream mode: (begin, end) of the input to read


@dataclass
class Program:
    """A model lowered to kernels. `steps` are in the source file's order (a valid topological order)."""

    input: str
    output: str
    tensors: dict[str, TensorType]
    constants: dict[str, np.ndarray]
    kernels: dict[str, Kernel]
    steps: list[Step]
    notes: list[str] = field(default_factory=list)  # what passes did or declined to do, for the report

    @property
    def input_streamed(self) -> bool:
        """True when the input is never in the arena: steps read its windows through `read_patch`."""
        return any(step.window is not None for step in self.steps)

    @property
    def weight_bytes(self) -> int:
        return sum(c.nbytes for c in self.constants.values())
