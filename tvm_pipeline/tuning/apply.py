"""`lower_tuned`: lower a fused model with its tuning records applied, never growing memory; build its kernels for
the chosen code generator.

    lower with [tuned settings of pattern rules, pattern rules..., MetaSchedule records]
                                                 (each kernel's scheduled PrimFunc is kept, for the LLVM build)
    -> records deeper in stack than the model's peak pays for (`rule.RecordRule.stack_cap`), or with more call
       arguments than the widest untuned call (a new stacked argument)?    lower again without them
    -> arena larger than with no records, or weights (prepacked by some records) past the board's flash?
                                                                          lower again with no records
    -> codegen "llvm": every kernel into one object for the board's CPU (kernels.o; kernels.c is not shipped)

The result carries what `model.json` records under "tuning" (the per-kernel table `tvmp report` prints).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import tvm

from schedules import default as default_schedule
from tvm_pipeline import tvm_adapter
from tvm_pipeline.arena import ArenaPlan, plan_arena
from tvm_pipeline.board.boards import Board
from tvm_pipeline.codegen.llvm_target import llvm_target
from tvm_pipeline.errors import UserError
from tvm_pipeline.lowering.lower import ScheduleRule, lower_program
from tvm_pipeline.lowering.program import Program
from tvm_pipeline.tuning.allowance import load_allowance, model_digest
from tvm_pipeline.tuning.measure import CODEGENS
from tvm_pipeline.tuning.rule import RecordRule
from tvm_pipeline.tuning.tuner import call_args, stacked_args_slots


class _KeepScheduled:
    """One schedule rule that runs `rules` (else the default schedule) and keeps each kernel's scheduled PrimFunc."""

    def __init__(self, rules: list[ScheduleRule]) -> None:
        self.rules = rules
        self.funcs: dict[str, object] = {}

    def __call__(self, sch, tir_name: str) -> bool:
        if not any(rule(sch, tir_name) for rule in self.rules):
            default_schedule.apply(sch)
        self.funcs[tir_name] = tvm_adapter.scheduled_func(sch)
        return True


@dataclass
class TunedLowering:
    program: Program
    arena: ArenaPlan
    notes: list[str] = field(default_factory=list)
    tuning: dict = field(default_factory=dict)  # model.json "tuning"
    kernel_object: bytes | None = None  # codegen "llvm": every kernel, built for the board's CPU


def _lower(fused: tvm.IRModule, rules: list[ScheduleRule], record_rule: RecordRule | None):
    keep = _KeepScheduled([record_rule.apply_settings, *rules, record_rule] if record_rule else list(rules))
    return lower_program(fused, rules=[keep]), keep


def lower_tuned(fused: tvm.IRModule, board: Board, rules: list[ScheduleRule], records_dir: Path, codegen: str,
                planner: str, reorder: bool = True, memory_first: frozenset[str] = frozenset()) -> TunedLowering:
    """Lower `fused` with `rules` first, then the records in `records_dir` for `board` and `codegen`;
    `memory_first`: kernels `rules` schedule for less scratch, whose records of rule settings are not applied."""
    if codegen not in CODEGENS:
        raise UserError(f"unknown --codegen {codegen!r}; choose one of: {', '.join(CODEGENS)}")
    target = llvm_target(board) if codegen == "llvm" else None  # fails early for a CPU LLVM is not set up for
    allowance = load_allowance(records_dir, board.name, codegen, model_digest(fused))
    verified = allowance is not None and allowance.verified
    stack_allowance = allowance.kernel_stack_bytes if verified else None
    excluded = frozenset(allowance.excluded) if verified else frozenset()  # records this model was checked without
    records = RecordRule(records_dir, board.name, codegen, exclude=excluded, stack_allowance=stack_allowance,
                         memory_first=memory_first)
    program, keep = _lower(fused, rules, records)
    notes: list[str] = []
    arena = plan_arena(program, board.buffer_alignment, planner, reorder)
    if records.applied:
        untuned, untuned_keep = _lower(fused, rules, None)
        # never deeper kernel stacks than the model's peak pays for, never a new stacked argument (see tuner.py)
        widest = stacked_args_slots(max((call_args(k) for k in untuned.kernels.values()), default=0))
        too_wide = frozenset(records.applied[k.tir_name].key for k in program.kernels.values()
                             if k.tir_name in records.applied and call_args(k) > widest)
        too_deep = records.stack_cap_violations()
        if too_deep or too_wide:
            notes.append(f"{len(too_deep | too_wide)} tuned schedule(s) not used: kernel stack above the "
                         f"{records.stack_cap} B the model's peak pays for, or a new stacked argument")
            records = RecordRule(records_dir, board.name, codegen, exclude=excluded | too_deep | too_wide,
                                 stack_allowance=stack_allowance, memory_first=memory_first)
            program, keep = _lower(fused, rules, records)
            arena = plan_arena(program, board.buffer_alignment, planner, reorder)
        untuned_arena = plan_arena(untuned, board.buffer_alignment, planner, reorder)
        # tuning never grows the arena, nor takes the weights past the flash (prepacked weights take more)
        unused = None
        if arena.layout.arena_bytes > untuned_arena.layout.arena_bytes:
            unused = f"arena {arena.layout.arena_bytes:,} B > untuned {untuned_arena.layout.arena_bytes:,} B"
        elif program.weight_bytes > board.flash.size >= untuned.weight_bytes:
            unused = f"weights {program.weight_bytes:,} B (prepacked) > {board.name}'s flash {board.flash.size:,} B"
        if unused:
            notes.append(f"tuned schedules from {records.records_dir} not used: {unused}")
            program, keep, arena = untuned, untuned_keep, untuned_arena
            records.applied.clear()
        elif records.applied:
            notes.append(f"tuned schedules applied to {len(records.applied)} kernel(s) from {records.records_dir}")
    kernel_object = None
    if target is not None:
        kernel_object = tvm_adapter.build_llvm_object(
            [(keep.funcs[k.tir_name], k.symbol) for k in program.kernels.values()], target)
        notes.append(f"kernels built by TVM's LLVM backend for {target['mcpu']} (kernels.o; fused multiply-add, so "
                     "results differ from the C build in the last bits)")
    tuning = {
        "codegen": codegen,
        "records": str(records.records_dir),
        "kernel_stack_cap": records.stack_cap if records.found else None,
        "kernels": [
            {"kernel": name, "key": r.key, "applied": name in records.applied, "trials": r.trials,
             "untuned_instructions": r.untuned_instructions,
             "tuned_instructions": r.tuned_instructions if name in records.applied else r.untuned_instructions,
             "untuned_stack_bytes": r.untuned_stack_bytes,
             "stack_bytes": r.stack_bytes if name in records.applied else r.untuned_stack_bytes,
             "adds_workspace": bool(r.workspace_bytes and not r.untuned_workspace_bytes), "schedule": r.schedule}
            for name, r in records.found.items()
        ],
    }
    return TunedLowering(program, arena, notes, tuning, kernel_object)
