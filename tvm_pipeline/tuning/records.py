"""Tuning records: the best schedule found for one kernel on one board and code generator, one JSON file each.

Layout: `DIR/<board>/<codegen>/<kernel key>.json`, the key a structural hash of the kernel's PrimFunc (see
`tuning_adapter.kernel_key`), so a record applies to the same kernel in any model. Shipped records live under
`schedules/records/`; `tvmp tune -o DIR` writes them anywhere. A record whose search found nothing better than the
untuned schedule has `trace: null` and is still written, so that a resumed run does not tune that kernel again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

SHIPPED_RECORDS_DIR = Path(__file__).resolve().parents[2] / "schedules" / "records"


@dataclass
class TuningRecord:
    """The outcome of tuning one kernel."""

    key: str
    board: str
    codegen: str
    tir_name: str
    trials: int
    untuned_instructions: int
    tuned_instructions: int  # == untuned_instructions when no candidate was better
    untuned_workspace_bytes: int
    workspace_bytes: int
    trace: list | None  # MetaSchedule trace as JSON; None: keep the untuned schedule (or `knobs`, below)
    workspace_budget: int = 0  # the most scratch the tuned schedule was allowed (free arena bytes at its steps)
    failed: list[dict] = field(default_factory=list)  # {"index", "reason"} per failed or rejected candidate
    # Stack the kernel call itself uses on the board (see `measure`), untuned and tuned, and the most it was allowed:
    # the deepest untuned kernel of the model it was tuned in, so the model's peak stack cannot rise. None: a record
    # from before stack was measured per kernel; such records are not applied.
    untuned_stack_bytes: int | None = None
    stack_bytes: int | None = None
    stack_budget: int | None = None
    # A kernel a tunable pattern rule schedules (`schedules.tunable_rules`) is tuned by measuring that rule's settings
    # instead of a MetaSchedule search: the rule's name, and the settings chosen (None: keep the rule's defaults).
    rule: str | None = None
    knobs: dict | None = None

    @property
    def speedup(self) -> float:
        return self.untuned_instructions / max(self.tuned_instructions, 1)

    @property
    def schedule(self) -> str:
        """What was searched and chosen, for tables: a pattern rule's settings, or a MetaSchedule trace ("defaults":
        nothing beat the untuned schedule)."""
        if self.rule is not None:
            chosen = ", ".join(f"{k}={v}" for k, v in self.knobs.items()) if self.knobs else "defaults"
        else:
            chosen = "trace" if self.trace is not None else "defaults"
        return f"{self.rule or 'MetaSchedule'}: {chosen}"


def record_path(root: Path, board: str, codegen: str, key: str) -> Path:
    return Path(root) / board / codegen / f"{key}.json"


def load_record(root: Path, board: str, codegen: str, key: str) -> TuningRecord | None:
    path = record_path(root, board, codegen, key)
    if not path.is_file():
        return None
    return TuningRecord(**json.loads(path.read_text()))


def save_record(root: Path, record: TuningRecord) -> Path:
    path = record_path(root, record.board, record.codegen, record.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(record), indent=1) + "\n")
    tmp.replace(path)
    return path


def all_records(root: Path) -> list[TuningRecord]:
    return [TuningRecord(**json.loads(p.read_text())) for p in sorted(Path(root).glob("*/*/*.json"))]
