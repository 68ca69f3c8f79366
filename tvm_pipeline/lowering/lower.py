"""Fused Relax module -> `Program`: schedule and lower every kernel to raw-pointer C, read the call graph."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import numpy as np
import tvm

from schedules import default as default_schedule
from tvm_pipeline import tvm_adapter
from tvm_pipeline.lowering.program import Kernel, Program, Step

#: A schedule rule picks itself by the kernel's TIR function: it returns True when it handled the schedule.
ScheduleRule = Callable[[object, str], bool]


def _symbol(tir_name: str) -> str:
    return "tvmp_" + re.sub(r"[^0-9A-Za-z_]", "_", tir_name)


def _lower_kernel(mod: tvm.IRModule, tir_name: str, rules: list[ScheduleRule],
                  read_only: tuple[int, ...]) -> tuple[Kernel, tvm_adapter.Prepack | None]:
    """The kernel, and how to rewrite the constants of the parameters its schedule prepacks."""
    sch = tvm_adapter.new_schedule(tvm_adapter.prim_func(mod, tir_name))
    if not any(rule(sch, tir_name) for rule in rules):
        default_schedule.apply(sch)
    lowered = tvm_adapter.lower_to_c(tvm_adapter.scheduled_func(sch), _symbol(tir_name), read_only)
    kernel = Kernel(lowered.symbol, lowered.source, lowered.params, lowered.workspace_bytes, tir_name,
                    lowered.inplace_params)
    return kernel, lowered.prepack


def constant_params(bindings) -> dict[str, tuple[int, ...]]:
    """Per kernel, the parameters that every call of it passes a constant."""
    found: dict[str, set[int]] = {}
    for binding in bindings:
        constant = {i for i, a in enumerate(binding.args) if isinstance(a, np.ndarray)}
        found[binding.func_name] = found.get(binding.func_name, constant) & constant
    return {name: tuple(sorted(params)) for name, params in found.items()}


def lower_program(mod: tvm.IRModule, rules: list[ScheduleRule] | None = None) -> Program:
    """Lower a fused module (see `tvm_adapter.fuse`) to a Program.

    Identical constants are stored once; each distinct kernel is generated once, however often it is called. A
    constant a kernel's schedule prepacks is stored as that kernel reads it (rewritten on the host, per call).
    """
    main = tvm_adapter.main_bindings(mod)
    (input_name, input_type), = main.inputs
    tensors = {input_name: input_type}
    constants: dict[str, np.ndarray] = {}
    constant_by_digest: dict[str, str] = {}
    kernels: dict[str, Kernel] = {}
    prepacks: dict[str, tvm_adapter.Prepack | None] = {}
    steps: list[Step] = []
    alias: dict[str, str] = {}

    def constant(value: np.ndarray) -> str:
        value = np.ascontiguousarray(value)
        digest = hashlib.sha256(value.tobytes() + str((value.dtype, value.shape)).encode()).hexdigest()
        if digest not in constant_by_digest:
            name = f"weight_{len(constants)}"
            constant_by_digest[digest] = name
            constants[name] = value
        return constant_by_digest[digest]

    read_only = constant_params(main.bindings)
    for binding in main.bindings:
        if not binding.func_name:  # `y = x`: no code, the same storage
            alias[binding.output] = alias.get(binding.args[0], binding.args[0])
            continue
        window = tvm_adapter.input_window(mod, binding.func_name)
        if window is not None:  # stream mode: the firmware's read_patch fills it, no kernel
            tensors[binding.output] = binding.output_type
            steps.append(Step(binding.output, "", (binding.output,), (), binding.output, window))
            continue
        if binding.func_name not in kernels:
            kernels[binding.func_name], prepacks[binding.func_name] = _lower_kernel(
                mod, binding.func_name, rules or [], read_only[binding.func_name])
        prepack = prepacks[binding.func_name]
        given = prepack.apply(list(binding.args)) if prepack else binding.args
        args = [constant(a) if isinstance(a, np.ndarray) else alias.get(a, a) for a in given]
        inputs = tuple(dict.fromkeys(a for a in args if a in tensors))
        tensors[binding.output] = binding.output_type
        steps.append(Step(binding.output, kernels[binding.func_name].symbol, (*args, binding.output), inputs,
                          binding.output))
    by_symbol = {k.symbol: k for k in kernels.values()}
    return Program(input_name, alias.get(main.output, main.output), tensors, constants, by_symbol, steps)
