"""Tune one kernel on the (emulated) board: measured cost, checked output, memory kept fixed.

Measure the untuned (default-scheduled) kernel once, then let MetaSchedule propose `trials` schedules; or, for a
kernel a tunable pattern rule schedules (`schedules.tunable_rules`: the int8 DSP convs), measure that rule's settings
(its `knob_space`, at most `trials` of them) against the rule's defaults. Each candidate is lowered for the code
generator (C for gcc, or an LLVM object for the board's CPU) and checked, cheapest check first:

1. workspace <= `workspace_budget` (default: the untuned kernel's; `tune_model` passes the arena bytes free at the
   kernel's steps, so the arena cannot grow);
2. no new stacked argument: arguments past the 4th are passed on the stack (AAPCS: r0-r3), in model_run's frame,
   which is as large as its widest call (8-byte aligned); so a candidate may take at most the arguments that fit
   the stacked-argument area of `call_args_budget` (default: the untuned kernel's; `tune_model` passes the widest
   untuned call of the model);
3. built into a one-kernel firmware and run by a `Runner` (QEMU under -icount, or a real board); a candidate that
   hangs or faults is recorded as failed and the search goes on;
4. output within `RTOL` of the reference: the untuned kernel built as C (exact, like the host), also for LLVM
   candidates, which use fused multiply-adds;
5. the stack of the kernel call itself (see `measure`) <= `stack_budget` (default: the untuned kernel's;
   `tune_model` passes the model's allowance, so that its measured peak stack cannot rise: see `allowance`); the
   untuned kernel's own stack is always allowed, unless `shallower` (`tune_model` then wants a candidate less deep
   than the untuned kernel, to lower the model's peak: see `model._shallower`).

Candidates of one batch are measured by `workers` threads: each check is a gcc (or link) and a QEMU subprocess, so
threads run them in parallel without the cost of a TVM import per process (`tune_model` spreads kernels over
worker processes instead).
"""

from __future__ import annotations

import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schedules import default as default_schedule
from schedules import tunable_rules
from tvm_pipeline import tuning_adapter, tvm_adapter
from tvm_pipeline.board.boards import Board
from tvm_pipeline.board.runner import QemuRunner, Runner, RunError
from tvm_pipeline.tuning.measure import KernelBuild, KernelRun, build_kernel, kernel_inputs, run_kernel
from tvm_pipeline.tuning.records import TuningRecord

RTOL = 1e-5  # max |candidate - reference| / max |reference|
CANDIDATE_TIMEOUT_S = 20.0
AAPCS_REGISTER_ARGS = 4


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


def untuned_func(func, rule: str | None = None):
    """The kernel as `tvmp compile` lowers it without records: the default schedule, or tunable rule `rule`'s with
    its default settings."""
    sch = tvm_adapter.new_schedule(func)
    if rule is None:
        default_schedule.apply(sch)
    else:
        tunable_rules()[rule].apply(sch)
    return tvm_adapter.scheduled_func(sch)


def call_args(kernel: tvm_adapter.LoweredKernel) -> int:
    """Arguments of a call to `kernel`: its tensors, and the workspace pointer if it has scratch."""
    return len(kernel.params) + (1 if kernel.workspace_bytes else 0)


def stacked_args_slots(args: int) -> int:
    """The most arguments a call may pass in the same frame as a call with `args`: the first 4 go in registers and
    the caller keeps its stacked-argument area 8-byte aligned (AAPCS), so 5 arguments pay for a 6th."""
    return AAPCS_REGISTER_ARGS + 2 * -(-max(args - AAPCS_REGISTER_ARGS, 0) // 2)


def kernel_symbol(tir_name: str) -> str:
    return "tvmp_" + "".join(c if c.isalnum() else "_" for c in tir_name)


@dataclass(frozen=True)
class Baseline:
    """The untuned kernel measured for one code generator, and the reference output candidates must match."""

    build: KernelBuild
    inputs: list[np.ndarray]
    run: KernelRun
    reference: np.ndarray  # the untuned kernel's output built as C (== run.output for codegen "c")


def measure_untuned(func, tir_name: str, board: Board, codegen: str, runner: Runner, folder: Path,
                    seed: int = 0, read_only: tuple[int, ...] = (), rule: str | None = None) -> Baseline:
    """Measures the untuned kernel (see `untuned_func`) in `codegen` (and in C for the reference, if that is
    another); `read_only` as `measure.build_kernel`."""
    symbol, scheduled = kernel_symbol(tir_name), untuned_func(func, rule)
    build = build_kernel(scheduled, symbol, codegen, board, read_only)
    inputs = kernel_inputs(build.kernel.params, seed)
    run = run_kernel(build, inputs, board, runner, folder / f"untuned-{codegen}")
    reference = run.output
    if codegen != "c":
        reference = run_kernel(KernelBuild(build.kernel), inputs, board, runner, folder / "untuned-c").output
    return Baseline(build, inputs, run, reference)


class KernelTuner:
    """Tunes one kernel (a fused PrimFunc) for one board and code generator."""

    def __init__(self, func, tir_name: str, board: Board, runner: Runner | None = None, workers: int = 2,
                 codegen: str = "c", seed: int = 0, workspace_budget: int | None = None,
                 stack_budget: int | None = None, call_args_budget: int | None = None,
                 baseline: Baseline | None = None, read_only: tuple[int, ...] = (), rule: str | None = None,
                 shallower: bool = False) -> None:
        self.func, self.tir_name, self.board, self.codegen, self.seed = func, tir_name, board, codegen, seed
        self.read_only = read_only  # parameters the model passes constants (see measure.build_kernel)
        self.rule = rule  # the tunable pattern rule that schedules this kernel (None: a MetaSchedule search)
        self.symbol = kernel_symbol(tir_name)
        self.runner = runner or QemuRunner(timeout_s=CANDIDATE_TIMEOUT_S)
        self.workers = workers
        self.trials: list[Trial] = []
        self._stack: dict[int, int] = {}  # candidate index -> measured kernel stack, for candidates that passed
        self._dir = Path(tempfile.mkdtemp(prefix="tvmp-tune-"))
        self.baseline = baseline or measure_untuned(func, tir_name, board, codegen, self.runner, self._dir, seed,
                                                      read_only, rule)
        self.untuned = self.baseline.build.kernel
        self.inputs = self.baseline.inputs
        self.workspace_budget = max(workspace_budget or 0, self.untuned.workspace_bytes)
        self.call_args_budget = stacked_args_slots(max(call_args_budget or 0, call_args(self.untuned)))
        own_stack = self.baseline.run.stack_bytes or 0
        self.stack_budget = max(stack_budget if stack_budget is not None else own_stack, own_stack)
        if shallower and stack_budget is not None:
            self.stack_budget = stack_budget

    def lower(self, func, symbol: str) -> KernelBuild:
        """A scheduled candidate -> what the board runs (the callback MetaSchedule's builder calls)."""
        return build_kernel(func, symbol, self.codegen, self.board, self.read_only)

    def _check(self, candidate: tuning_adapter.Candidate) -> int | str:
        if candidate.kernel is None:
            return candidate.error or "lowering failed"
        build: KernelBuild = candidate.kernel
        if build.workspace_bytes > self.workspace_budget:
            return f"rejected: workspace {build.workspace_bytes} B > budget {self.workspace_budget} B"
        if call_args(build.kernel) > self.call_args_budget:
            return (f"rejected: {call_args(build.kernel)} arguments (with the workspace pointer) > "
                    f"{self.call_args_budget}: a new stacked argument would grow the caller's frame")
        folder = self._dir / f"c{candidate.index}"
        try:
            run = run_kernel(build, self.inputs, self.board, self.runner, folder)
        except RunError as err:
            return f"failed on the board: {str(err).splitlines()[0]}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        ref = self.baseline.reference.astype(np.float64)
        err = np.max(np.abs(run.output.astype(np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30)
        if not np.isfinite(err) or err > RTOL:
            return f"rejected: wrong output (max rel error {err:.2e})"
        if run.stack_bytes is None:
            return "rejected: the runner did not report the stack"
        if run.stack_bytes > self.stack_budget:
            return f"rejected: stack {run.stack_bytes} B > budget {self.stack_budget} B"
        self._stack[candidate.index] = run.stack_bytes
        return run.instructions

    def evaluate(self, candidates: list[tuning_adapter.Candidate]) -> list[int | str]:
        """Measures a batch of candidates (the callback MetaSchedule's runner calls)."""
        with ThreadPoolExecutor(max_workers=max(self.workers, 1)) as pool:
            outcomes = list(pool.map(self._check, candidates))
        for candidate, outcome in zip(candidates, outcomes):
            ok = not isinstance(outcome, str)
            self.trials.append(Trial(candidate.index, outcome if ok else None, None if ok else outcome))
        return outcomes

    def _verify_replay(self, trace: object) -> tuple[int, int, int] | None:
        """(instructions, workspace bytes, stack bytes) of the kernel rebuilt from `trace`, if it passes every check."""
        sch = tvm_adapter.new_schedule(self.func)
        try:
            apply_tuned(sch, trace)
            build = self.lower(tvm_adapter.scheduled_func(sch), self.symbol)
        except Exception:  # noqa: BLE001 - a trace that does not replay is simply not kept
            return None
        outcome = self._check(tuning_adapter.Candidate(-1, build, None, None))
        return None if isinstance(outcome, str) else (outcome, build.workspace_bytes, self._stack[-1])

    def tune(self, trials: int) -> TuningRecord:
        """Runs the search; the record keeps the untuned schedule unless a correct candidate is faster."""
        try:
            if self.rule is not None:
                return self._tune_knobs(trials)
            seen = tuning_adapter.tune_kernel(prepared_func(self.func), self.symbol, self.evaluate, trials,
                                              seed=self.seed, lower=self.lower,
                                              workspace_budget=self.workspace_budget)
            return self._best_verified(seen)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _tune_knobs(self, trials: int) -> TuningRecord:
        """Measures the tunable rule's settings (at most `trials`); the record names the fastest that passes every
        check, if it beats the rule's defaults."""
        module = tunable_rules()[self.rule]
        candidates = []
        for index, knobs in enumerate(module.knob_space(self.func)[:trials]):
            sch = tvm_adapter.new_schedule(self.func)
            try:
                module.apply(sch, **knobs)
                build, error = self.lower(tvm_adapter.scheduled_func(sch), self.symbol), None
            except Exception as err:  # noqa: BLE001 - a setting that does not schedule is a failed trial
                build, error = None, f"scheduling failed: {str(err).splitlines()[0][:200]}"
            candidates.append(tuning_adapter.Candidate(index, build, error, knobs))
        outcomes = self.evaluate(candidates)
        record = self._untuned_record()
        measured = [(outcome, c) for outcome, c in zip(outcomes, candidates) if not isinstance(outcome, str)]
        if measured:
            instructions, best = min(measured, key=lambda m: m[0])
            if instructions < record.untuned_instructions:
                record.tuned_instructions, record.knobs = instructions, best.trace_json
                record.workspace_bytes, record.stack_bytes = best.kernel.workspace_bytes, self._stack[best.index]
        return record

    def _untuned_record(self) -> TuningRecord:
        """A record that keeps the untuned schedule (what a search that found nothing faster writes)."""
        base = self.baseline.run
        return TuningRecord(
            key=tuning_adapter.kernel_key(self.func), board=self.board.name, codegen=self.codegen,
            tir_name=self.tir_name, trials=len(self.trials), untuned_instructions=base.instructions,
            tuned_instructions=base.instructions, untuned_workspace_bytes=self.untuned.workspace_bytes,
            workspace_bytes=self.untuned.workspace_bytes, trace=None, workspace_budget=self.workspace_budget,
            failed=[{"index": t.index, "reason": t.reason} for t in self.trials if t.reason is not None],
            untuned_stack_bytes=base.stack_bytes, stack_bytes=base.stack_bytes, stack_budget=self.stack_budget,
            rule=self.rule,
        )

    def _best_verified(self, seen: list[tuple[object, int | None, str | None]]) -> TuningRecord:
        """The record: the fastest measured trace that still passes every check when replayed, else untuned."""
        base = self.baseline.run
        record = self._untuned_record()
        # A record must hold for what a later compile rebuilds from it, not for what the search measured: the
        # database keeps traces without their post-processing, so each trace is replayed and checked again.
        measured = sorted(((ins, trace) for trace, ins, _ in seen if ins is not None), key=lambda t: t[0])
        for _, trace in measured:
            verified = self._verify_replay(trace)
            if verified is None or verified[0] >= base.instructions:
                continue
            record.tuned_instructions, record.workspace_bytes, record.stack_bytes = verified
            record.trace = trace
            break
        return record
