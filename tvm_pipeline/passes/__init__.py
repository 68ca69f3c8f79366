"""Relax -> Relax graph passes, one per file, run in the order of `PIPELINE`.

Each entry names a pass the user can switch off with `tvmp compile --disable-pass NAME`. A pass takes the imported
Relax module and returns a module computing the same function; what it did (or declined to do, and why) goes into
the notes list the compile report prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tvm

from tvm_pipeline.errors import UserError

#: A pass: (module, notes) -> module. It appends human-readable lines to `notes`.
PassFn = Callable[[tvm.IRModule, list[str]], tvm.IRModule]


@dataclass(frozen=True)
class PassEntry:
    """One named step of the pass pipeline."""

    name: str
    run: PassFn
    doc: str


#: The pipeline, in order. Later issues add the bottleneck reordering and patch-stage passes here.
PIPELINE: tuple[PassEntry, ...] = ()


def pass_names() -> list[str]:
    """Names accepted by --disable-pass."""
    return [entry.name for entry in PIPELINE]


def run_passes(mod: tvm.IRModule, disabled: frozenset[str] = frozenset()) -> tuple[tvm.IRModule, list[str]]:
    """Run every enabled pass in order; returns the new module and the passes' notes."""
    unknown = sorted(disabled - set(pass_names()))
    if unknown:
        raise UserError(f"unknown pass(es) {', '.join(unknown)}; known passes: {', '.join(pass_names()) or 'none'}")
    notes: list[str] = []
    for entry in PIPELINE:
        if entry.name in disabled:
            notes.append(f"{entry.name}: disabled by the user")
            continue
        mod = entry.run(mod, notes)
    return mod, notes
