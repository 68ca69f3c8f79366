"""A schedule rule (see `lowering.lower.ScheduleRule`) that applies a matching tuning record to a kernel.

The record is found by the kernel's structural key, the board and the code generator: a MetaSchedule trace (for a
kernel no pattern rule takes: `__call__`, after the pattern rules) or the settings of a tunable pattern rule
(`apply_settings`, before them). It is tried on a copy of the schedule first, so a record that no longer replays (a
TVM upgrade changed a block name) falls back to the default schedule instead of leaving a half-applied one.

Records never raise memory:
- scratch: the tuner rejected every candidate with more workspace than the untuned plan had free at the kernel's
  steps, and `compile_model` falls back to the untuned schedules if the arena still grows (the same kernel in
  another model may have less room);
- stack: a model's peak stack is the larger of the harness's own deepest path and the depth of model_run's kernel
  calls plus the deepest kernel's own stack (measured per kernel by the tuner). A record applies only if its kernel
  stack is at most `stack_cap`: the model's allowance verified on the board by `tvmp tune` (see `allowance`), or
  else the deepest *untuned* kernel stack among the records found for this model (kernels without a record keep
  their schedule, so they can only make the untuned peak deeper). `stack_cap_violations` names the records that
  break this once every kernel has been seen; `lower_tuned` lowers again without them.
"""

from __future__ import annotations

from pathlib import Path

from schedules import tunable_rules
from tvm_pipeline import tuning_adapter, tvm_adapter
from tvm_pipeline.tuning.records import TuningRecord, load_record
from tvm_pipeline.tuning.tuner import apply_tuned


class RecordRule:
    """`rule(sch, tir_name) -> bool`: True when a record was applied; `applied` lists what was used, `found` every
    record that matched a kernel (applied or not)."""

    def __init__(self, records_dir: Path, board: str, codegen: str = "c", exclude: frozenset[str] = frozenset(),
                 stack_allowance: int | None = None, memory_first: frozenset[str] = frozenset()):
        self.records_dir, self.board, self.codegen = Path(records_dir), board, codegen
        self.exclude = exclude  # record keys not to apply (see stack_cap_violations)
        self.memory_first = memory_first  # kernels (TIR names) the pattern rules schedule for less scratch
        self.stack_allowance = stack_allowance  # this model's verified allowance (None: none was verified)
        self.found: dict[str, TuningRecord] = {}
        self.applied: dict[str, TuningRecord] = {}

    def __call__(self, sch, tir_name: str) -> bool:
        """Apply a MetaSchedule record (after the pattern rules: for kernels none of them took)."""
        record = self._usable(sch, tir_name)
        if record is None or record.trace is None:
            return False
        return self._apply(sch, tir_name, record, lambda s: apply_tuned(s, record.trace))

    def apply_settings(self, sch, tir_name: str) -> bool:
        """Apply a record of a tunable pattern rule's settings (before the pattern rules, which would otherwise
        take the kernel with their defaults); not to a kernel in `memory_first`, which the rules schedule for less
        scratch than a faster setting may take (`compiler.lower_memory_first`)."""
        if tir_name in self.memory_first:
            return False
        record = self._usable(sch, tir_name)
        module = tunable_rules().get(record.rule) if record is not None and record.knobs else None
        if module is None or not module.applies(tvm_adapter.scheduled_func(sch)):
            return False
        return self._apply(sch, tir_name, record, lambda s: module.apply(s, **record.knobs))

    def _usable(self, sch, tir_name: str) -> TuningRecord | None:
        """The record for this kernel, if there is one it may apply (noted in `found` either way)."""
        key = tuning_adapter.kernel_key(tvm_adapter.scheduled_func(sch))
        record = load_record(self.records_dir, self.board, self.codegen, key)
        if record is None:
            return None
        self.found[tir_name] = record
        if (key in self.exclude or record.stack_bytes is None
                or record.workspace_bytes > max(record.workspace_budget, record.untuned_workspace_bytes)):
            return None
        return record

    def _apply(self, sch, tir_name: str, record: TuningRecord, schedule) -> bool:
        trial = sch.copy()
        try:
            schedule(trial)
        except Exception:  # noqa: BLE001 - a stale record is ignored, never fatal
            return False
        schedule(sch)
        self.applied[tir_name] = record
        return True

    @property
    def stack_cap(self) -> int:
        """The deepest kernel stack the model's peak already pays for: its verified allowance, else the deepest
        untuned kernel stack among the records found."""
        if self.stack_allowance is not None:
            return self.stack_allowance
        return max((r.untuned_stack_bytes for r in self.found.values() if r.untuned_stack_bytes is not None), default=0)

    def stack_cap_violations(self) -> frozenset[str]:
        """Keys of applied records whose kernel stack is deeper than `stack_cap`."""
        return frozenset(r.key for r in self.applied.values() if r.stack_bytes > self.stack_cap)
