"""Relax -> Relax graph passes, one per file, run in the order of `PIPELINE`.

Each entry names a pass the user can switch off with `tvmp compile --disable-pass NAME`. A pass takes the imported
Relax module and returns a module computing the same function; what it did (or declined to do, and why) goes into
the notes list the compile report prints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import tvm

from tvm_pipeline.errors import UserError
from tvm_pipeline.passes import fold_qdq, patch_stage, reorder_bottleneck, reorder_bottleneck_int8

#: A pass: (module, notes) -> module. It appends human-readable lines to `notes`.
PassFn = Callable[[tvm.IRModule, list[str]], tvm.IRModule]


@dataclass(frozen=True)
class PassEntry:
    """One named step of the pass pipeline."""

    name: str
    run: PassFn
    doc: str


#: The pipeline, in order.
PIPELINE: tuple[PassEntry, ...] = (
    # First: QDQ (int8) models -> integer kernels, before any pass that matches float ops.
    PassEntry(fold_qdq.NAME, fold_qdq.run,
              "fold dequantize -> op -> quantize chains into integer kernels (int8 models; float ops otherwise)"),
    # Right after fold-qdq: int8 inverted residuals (three QConv2d kernels) -> one exact channel-by-channel kernel.
    PassEntry(reorder_bottleneck_int8.NAME, reorder_bottleneck_int8.run,
              "run each int8 inverted residual one expanded channel at a time (bit-exact, int32 accumulator)"),
    # Runs on the imported, un-fused module: inverted residuals -> one channel-by-channel kernel each.
    PassEntry(reorder_bottleneck.NAME, reorder_bottleneck.run,
              "run each inverted residual one expanded channel at a time (no C_expand x H x W tensor)"),
    # Last: it sees the graph as it will be compiled, so its search plans exactly that; it splits the reordered
    # bottlenecks through their input window (each keeps its skip-add inside), and the graph's plain ops otherwise.
    PassEntry(patch_stage.NAME, patch_stage.run,
              "run the first stage (input .. a chosen layer) patch by patch with halos, writing its output once"),
)


def pass_names() -> list[str]:
    """Names accepted by --disable-pass."""
    return [entry.name for entry in PIPELINE]


def run_passes(mod: tvm.IRModule, disabled: frozenset[str] = frozenset(),
               options: Mapping[str, Mapping] | None = None) -> tuple[tvm.IRModule, list[str]]:
    """Run every enabled pass in order; returns the new module and the passes' notes.

    `options` maps a pass name to keyword arguments of its run function (e.g. patch-stage's stage and grid).
    """
    unknown = sorted(disabled - set(pass_names()))
    if unknown:
        raise UserError(f"unknown pass(es) {', '.join(unknown)}; known passes: {', '.join(pass_names()) or 'none'}")
    notes: list[str] = []
    for entry in PIPELINE:
        if entry.name in disabled:
            if (options or {}).get(entry.name):
                raise UserError(f"options for {entry.name} were given, but --disable-pass {entry.name} turns it off")
            notes.append(f"{entry.name}: disabled by the user")
            continue
        mod = entry.run(mod, notes, **(options or {}).get(entry.name, {}))
    return mod, notes
