"""Tune the kernels of a model on the (emulated) board: measured cost, checked output, memory kept fixed.

For each distinct kernel: measure the untuned (default-scheduled) kernel once, then let MetaSchedule propose
`trials` schedules. Each candidate is lowered to C, rejected outright if its workspace is larger than the plan can
give it without growing the arena (`workspace_budget`; default: the untuned kernel's workspace), built into a
one-kernel firmware, run by a `Runner` (QEMU under -icount, or a real board), and accepted only if its output
matches the untuned kernel's and its stack peak stays within `stack_budget` (default: the untuned one's). A candidate that hangs or faults is recorded as failed; tuning goes on.
Candidates of one batch are measured in parallel by `workers` threads (each drives a gcc and a QEMU process).
"""

from __future__ import annotations

import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schedules import default as default_schedule
from tvm_pipeline import tuning_adapter, tvm_adapter
from tvm_pipeline.board.boards import Board
from tvm_pipeline.board.runner import QemuRunner, Runner, RunError
from tvm_pipeline.errors import InternalError
from tvm_pipeline.tuning.measure import KernelRun, kernel_inputs, run_kernel
from tvm_pipeline.tuning.records import TuningRecord

#: Extra stack a candidate may use over the untuned kernel: none, so peak SRAM (arena + stack) never grows.
STACK_SLACK_BYTES = 0
RTOL = 1e-5
CANDIDATE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Trial:
    index: int
    instructions: int | None
    reason: str | None  # why it failed or was rejected; None when it was measured and correct


def prepared_func(func):
    """The kernel as the search starts from it: injective producers (padding, bias, activation) already inlined,
    so no candidate brings back the full-size padded copy the planner has not budgeted for."""
    sch = tvm_adapter.new_schedule(func)
    default_schedule._inline_injective(sch)  # noqa: SLF001 - the same first step as the untuned schedule
    return tvm_adapter.scheduled_func(sch)


def apply_tuned(sch, trace) -> None:
    """Apply a record's trace to a fresh schedule of the kernel (the inverse of how `KernelTuner` searched)."""
    default_schedule._inline_injective(sch)  # noqa: SLF001
    tuning_adapter.apply_trace(sch, trace)


def untuned_kernel(func, symbol: str) -> tvm_adapter.LoweredKernel:
    sch = tvm_adapter.new_schedule(func)
    default_schedule.apply(sch)
    return tvm_adapter.lower_to_c(tvm_adapter.scheduled_func(sch), symbol)


class KernelTuner:
    """Tunes one kernel (a fused PrimFunc) for one board."""

    def __init__(self, func, tir_name: str, board: Board, runner: Runner | None = None, workers: int = 2,
                 codegen: str = "c", seed: int = 0, workspace_budget: int | None = None,
                 stack_budget: int | None = None) -> None:
        if codegen != "c":
            raise InternalError(f"codegen {codegen!r} is not implemented for tuning yet (only 'c')")
        self.func, self.tir_name, self.board, self.codegen, self.seed = func, tir_name, board, codegen, seed
        self.symbol = "tvmp_" + "".join(c if c.isalnum() else "_" for c in tir_name)
        self.runner = runner or QemuRunner(timeout_s=CANDIDATE_TIMEOUT_S)
        self.workers = workers
        self.trials: list[Trial] = []
        self.untuned = untuned_kernel(func, self.symbol)
        self.inputs = kernel_inputs(self.untuned.params, seed)
        # Scratch the plan can give this kernel without growing the arena (default: what the untuned kernel uses).
        self.workspace_budget = max(workspace_budget or 0, self.untuned.workspace_bytes)
        self._dir = Path(tempfile.mkdtemp(prefix="tvmp-tune-"))
        self.baseline: KernelRun = run_kernel(self.untuned, self.inputs, board, self.runner, self._dir / "untuned")
        # Peak stack a candidate's firmware may reach (default: the untuned kernel's firmware, + STACK_SLACK_BYTES).
        self.stack_budget = stack_budget or (self.baseline.stack_peak_bytes or 0) + STACK_SLACK_BYTES

    def _check(self, candidate: tuning_adapter.Candidate) -> int | str:
        if candidate.kernel is None:
            return candidate.error or "lowering failed"
        kernel = candidate.kernel
        if kernel.workspace_bytes > self.workspace_budget:
            return f"rejected: workspace {kernel.workspace_bytes} B > budget {self.workspace_budget} B"
        folder = self._dir / f"c{candidate.index}"
        try:
            run = run_kernel(kernel, self.inputs, self.board, self.runner, folder)
        except RunError as err:
            return f"failed on the board: {str(err).splitlines()[0]}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        ref = self.baseline.output.astype(np.float64)
        err = np.max(np.abs(run.output.astype(np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30)
        if not np.isfinite(err) or err > RTOL:
            return f"rejected: wrong output (max rel error {err:.2e})"
        if (run.stack_peak_bytes or 0) > self.stack_budget:
            return f"rejected: stack {run.stack_peak_bytes} B > budget {self.stack_budget} B"
        return run.instructions

    def evaluate(self, candidates: list[tuning_adapter.Candidate]) -> list[int | str]:
        """Measures a batch of candidates (the callback MetaSchedule's runner calls)."""
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            outcomes = list(pool.map(self._check, candidates))
        for candidate, outcome in zip(candidates, outcomes):
            ok = not isinstance(outcome, str)
            self.trials.append(Trial(candidate.index, outcome if ok else None, None if ok else outcome))
        return outcomes

    def _verify_replay(self, trace: object) -> tuple[int, int] | None:
        """(instructions, workspace bytes) of the kernel rebuilt from `trace`, if it passes every check."""
        sch = tvm_adapter.new_schedule(self.func)
        try:
            apply_tuned(sch, trace)
            kernel = tvm_adapter.lower_to_c(tvm_adapter.scheduled_func(sch), self.symbol)
        except Exception:  # noqa: BLE001 - a trace that does not replay is simply not kept
            return None
        outcome = self._check(tuning_adapter.Candidate(-1, kernel, None, None))
        return None if isinstance(outcome, str) else (outcome, kernel.workspace_bytes)

    def tune(self, trials: int) -> TuningRecord:
        """Runs the search; the record keeps the untuned schedule unless a correct candidate is faster."""
        try:
            seen = tuning_adapter.tune_kernel(prepared_func(self.func), self.symbol, self.evaluate, trials,
                                              seed=self.seed)
            return self._best_verified(seen)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _best_verified(self, seen: list[tuple[object, int | None, str | None]]) -> TuningRecord:
        """The record: the fastest measured trace that still passes every check when replayed, else untuned."""
        record = TuningRecord(
            key=tuning_adapter.kernel_key(self.func), board=self.board.name, codegen=self.codegen,
            tir_name=self.tir_name, trials=len(self.trials), untuned_instructions=self.baseline.instructions,
            tuned_instructions=self.baseline.instructions, untuned_workspace_bytes=self.untuned.workspace_bytes,
            workspace_bytes=self.untuned.workspace_bytes, trace=None, workspace_budget=self.workspace_budget,
            failed=[{"index": t.index, "reason": t.reason} for t in self.trials if t.reason is not None],
        )
        # A record must hold for what a later compile rebuilds from it, not for what the search measured: the
        # database keeps traces without their post-processing, so each trace is replayed and checked again.
        measured = sorted(((ins, trace) for trace, ins, _ in seen if ins is not None), key=lambda t: t[0])
        for _, trace in measured:
            verified = self._verify_replay(trace)
            if verified is None or verified[0] >= self.baseline.instructions:
                continue
            record.tuned_instructions, record.trace, record.workspace_bytes = verified[0], trace, verified[1]
            break
        return record
