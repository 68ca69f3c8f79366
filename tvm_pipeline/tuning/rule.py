"""A schedule rule (see `lowering.lower.ScheduleRule`) that applies a matching tuning record to a kernel.

The record is found by the kernel's structural key, the board and the code generator. It is tried on a copy of the
schedule first, so a record that no longer replays (a TVM upgrade changed a block name) falls back to the default
schedule instead of leaving a half-applied one. Records do not raise memory: the tuner rejected every candidate with
more scratch than the untuned plan had free at the kernel's steps, and `compile_model` falls back to the untuned
schedules if the arena still grows (the same kernel in another model may have less room).
"""

from __future__ import annotations

from pathlib import Path

from tvm_pipeline import tuning_adapter, tvm_adapter
from tvm_pipeline.tuning.records import TuningRecord, load_record
from tvm_pipeline.tuning.tuner import apply_tuned


class RecordRule:
    """`rule(sch, tir_name) -> bool`: True when a record was applied; `applied` lists what was used."""

    def __init__(self, records_dir: Path, board: str, codegen: str = "c") -> None:
        self.records_dir, self.board, self.codegen = Path(records_dir), board, codegen
        self.applied: dict[str, TuningRecord] = {}

    def __call__(self, sch, tir_name: str) -> bool:
        key = tuning_adapter.kernel_key(tvm_adapter.scheduled_func(sch))
        record = load_record(self.records_dir, self.board, self.codegen, key)
        if record is None or record.trace is None or record.workspace_bytes > max(record.workspace_budget,
                                                                               record.untuned_workspace_bytes):
            return False
        trial = sch.copy()
        try:
            apply_tuned(trial, record.trace)
        except Exception:  # noqa: BLE001 - a stale record is ignored, never fatal
            return False
        apply_tuned(sch, record.trace)
        self.applied[tir_name] = record
        return True
