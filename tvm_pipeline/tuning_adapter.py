"""The one place that calls TVM's MetaSchedule (0.27, `tvm.s_tir.meta_schedule`); a sibling of `tvm_adapter`.

MetaSchedule proposes schedules (traces) for one kernel; we build and measure them ourselves: each candidate is
lowered by a caller-supplied function (`tvm_adapter.lower_to_c` by default: raw-pointer C, scratch in a workspace;
the tuner adds an LLVM object for `--codegen llvm`) and handed to a caller-supplied
`evaluate` function that runs it on the (emulated) board and returns its cost or why it failed. The best schedule
leaves as a trace in JSON, which `apply_trace` replays on a fresh schedule of the same kernel at compile time.

Design space for a scalar Cortex-M core (see shared notes): no parallel loops (LLVM builds fail), no vectorized
loops (the C path would emit `float4`), no layout rewrite (weights are constants laid out by the planner).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sys
import tempfile
import types
from collections.abc import Callable
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from tvm_pipeline import tvm_adapter

#: Costs are reported to MetaSchedule as seconds; one guest instruction counts as one nanosecond.
SECONDS_PER_INSTRUCTION = 1e-9

#: MetaSchedule's target for cost-model features and rule defaults: one scalar CPU core.
_TUNING_TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 1})


@dataclass(frozen=True)
class Candidate:
    """One proposed schedule, lowered: what `lower` made of it (or the lowering error) and the trace behind it."""

    index: int
    kernel: object | None  # `lower(func, symbol)`'s result: a LoweredKernel by default
    error: str | None
    trace_json: object  # JSON-able list; replays with `apply_trace`


#: evaluate(candidates) -> for each one: instructions (int) or an error message (str) when it failed.
Evaluate = Callable[[list[Candidate]], list["int | str"]]


def kernel_key(func: tirx.PrimFunc) -> str:
    """A structural hash of a kernel (names and weight values do not matter; shapes, dtypes and the compute do)."""
    func = func.without_attr("global_symbol") if func.attrs and "global_symbol" in func.attrs else func
    return f"{tvm_ffi.structural_hash(func) & 0xFFFFFFFFFFFFFFFF:016x}"


def _plain_json(value: object) -> object:
    """A trace's JSON (TVM Arrays, IntImm, FloatImm, String) as plain Python lists, numbers and strings."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tirx.IntImm):
        return int(value.value)
    if isinstance(value, tirx.FloatImm):
        return float(value.value)
    if isinstance(value, (list, tuple)) or type(value).__name__ in ("Array", "List"):
        return [_plain_json(v) for v in value]
    if type(value).__name__ in ("String",):
        return str(value)
    raise TypeError(f"unexpected {type(value).__name__} in a trace: {value!r}")


def apply_trace(sch: s_tir.Schedule, trace_json: object) -> None:
    """Replay a recorded schedule (a trace from `tune_kernel`) on a fresh schedule of the same kernel."""
    s_tir.schedule.Trace.apply_json_to_schedule(trace_json, sch)


def _design_space(keep: Callable[[s_tir.Schedule], bool] | None = None) -> ms.space_generator.SpaceGenerator:
    """PostOrderApply with our rules; `keep(design space)` drops the design spaces that can never fit (see below)."""
    rules = [
        ms.schedule_rule.InlineConstantScalars(),
        ms.schedule_rule.AutoInline(into_producer=False, into_consumer=True, inline_const_tensor=True,
                                    disallow_if_then_else=False, require_injective=True, require_ordered=True),
        ms.schedule_rule.MultiLevelTiling(
            structure="SSRSRS", max_innermost_factor=16,
            # the epilogue (bias, activation) may be fused at the innermost spatial tile (level 3 of SSRSRS): its
            # accumulator is then a few elements, C locals rather than workspace; with levels [1, 2] the tiles were
            # larger and, on a 16-channel conv with ~80 B of stack allowed, no candidate of 32 passed (1.9x at 3)
            reuse_write=ms.schedule_rule.ReuseType(req="may", levels=[3], scope="global")),
        ms.schedule_rule.ParallelizeVectorizeUnroll(max_jobs_per_core=-1, max_vectorize_extent=-1,
                                                    unroll_max_steps=[0, 16, 64, 512], unroll_explicit=True),
        ms.schedule_rule.RandomComputeLocation(),
    ]
    postprocs = [ms.postproc.DisallowDynamicLoop(), ms.postproc.RewriteParallelVectorizeUnroll(),
                 ms.postproc.RewriteReductionBlock()]
    mutators = {ms.mutator.MutateTileSize(): 0.9, ms.mutator.MutateComputeLocation(): 0.05,
                ms.mutator.MutateUnroll(): 0.05}
    space = ms.space_generator.PostOrderApply(sch_rules=rules, postprocs=postprocs, mutator_probs=mutators)
    return space if keep is None else _FilteredSpace(space, keep, rules, postprocs, mutators)


@derived_object
class _FilteredSpace(ms.space_generator.PySpaceGenerator):
    """`inner`'s design spaces, less those `keep` refuses (all of them if it would refuse every one).

    MultiLevelTiling's `reuse_write="may"` yields one design space that leaves a conv's epilogue unfused, so the
    accumulator stays a full feature map whatever tile sizes are sampled: on a kernel whose workspace budget cannot
    hold that, every trial from that space is wasted. Mutators never change which space a trace came from.
    """

    def __init__(self, inner, keep, sch_rules, postprocs, mutator_probs) -> None:
        super().__init__()
        self.inner, self.keep = inner, keep
        self.sch_rules, self.postprocs, self.mutator_probs = sch_rules, postprocs, mutator_probs

    def _initialize_with_tune_context(self, context) -> None:
        self.inner._initialize_with_tune_context(context)  # noqa: SLF001 - the PySpaceGenerator protocol

    def generate_design_space(self, mod: tvm.IRModule) -> list[s_tir.Schedule]:
        spaces = self.inner.generate_design_space(mod)
        return [s for s in spaces if self.keep(s)] or spaces

    def clone(self) -> "_FilteredSpace":
        return _FilteredSpace(self.inner.clone(), self.keep, self.sch_rules, self.postprocs, self.mutator_probs)


def _fits(func: tirx.PrimFunc, workspace_budget: int | None) -> Callable[[s_tir.Schedule], bool] | None:
    """A design-space filter: refuse spaces that keep every intermediate at full size (`func`'s own workspace,
    unscheduled) when that is more than `workspace_budget`."""
    if workspace_budget is None:
        return None
    full = tvm_adapter.lower_to_c(func, "full").workspace_bytes
    if full <= workspace_budget:
        return None

    def keep(space: s_tir.Schedule) -> bool:
        try:
            return tvm_adapter.lower_to_c(space.mod["main"], "space").workspace_bytes < full
        except Exception:  # noqa: BLE001 - a space we cannot lower is left to the search to fail on
            return True

    return keep


@contextlib.contextmanager
def _without_tensor_intrinsics():
    """Skip `import tvm.s_tir.tensor_intrin` in TuneContext for the duration of a search.

    That import only registers tensor intrinsics (x86 VNNI, CUDA MMA, ...) that a scalar Cortex-M space never uses,
    and takes 20 s to minutes (each of ~500 TVMScript functions calls `inspect.stack()`). An empty module stands in
    for it while tuning and is removed afterwards, so a later real import still works.
    """
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        yield
        return
    sys.modules[name] = types.ModuleType(name)
    try:
        yield
    finally:
        if sys.modules.get(name) is not None and not hasattr(sys.modules[name], "__file__"):
            del sys.modules[name]


def tune_kernel(func: tirx.PrimFunc, symbol: str, evaluate: Evaluate, trials: int, seed: int = 0,
                strategy: str | None = None,
                lower: Callable[[tirx.PrimFunc, str], object] = tvm_adapter.lower_to_c,
                workspace_budget: int | None = None) -> list[tuple[object, int | None, str | None]]:
    """Search `trials` schedules of `func`; returns (trace JSON, instructions or None, error or None) per trial.

    Each candidate is lowered by `lower(scheduled func, symbol)` (C by default) before `evaluate` measures it.
    With `workspace_budget`, design spaces that can never fit it are not searched.
    """
    counter = itertools.count()
    pending: dict[str, Candidate] = {}
    trials_seen: list[tuple[object, int | None, str | None]] = []

    @derived_object
    class _Builder(ms.builder.PyBuilder):
        def build(self, build_inputs):
            results = []
            for build_input in build_inputs:
                index = next(counter)
                key = f"candidate-{index}"
                try:
                    kernel, error = lower(build_input.mod["main"], symbol), None
                except Exception as exc:  # noqa: BLE001 - a candidate that does not lower is a failed trial
                    kernel, error = None, f"lowering failed: {exc}"
                pending[key] = Candidate(index, kernel, error, None)
                results.append(ms.builder.BuilderResult(key, None))
            return results

    @derived_object
    class _Runner(ms.runner.PyRunner):
        def run(self, runner_inputs):
            candidates = [pending.pop(str(r.artifact_path)) for r in runner_inputs]
            outcomes = evaluate(candidates)
            futures = []
            for outcome in outcomes:
                if isinstance(outcome, str):
                    futures.append(ms.runner.LocalRunnerFuture(error_message=outcome))
                else:
                    futures.append(ms.runner.LocalRunnerFuture(res=[outcome * SECONDS_PER_INSTRUCTION]))
            return futures

    database = ms.database.MemoryDatabase()
    strategy = strategy or ("replay-trace" if trials < 32 else "evolutionary")
    with tempfile.TemporaryDirectory(prefix="tvmp-ms-") as work_dir, _without_tensor_intrinsics():
        ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
        ms_logger.setLevel(logging.WARNING)
        for handler in [h for h in ms_logger.handlers if h.get_name() is None]:
            ms_logger.removeHandler(handler)  # MetaSchedule's log set-up lists handlers by name: None crashes it
        ms.tune_tir(
            tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), _TUNING_TARGET, work_dir, trials,
            num_trials_per_iter=min(trials, 16), builder=_Builder(), runner=_Runner(), database=database,
            cost_model="xgb" if strategy == "evolutionary" else "random",
            measure_callbacks=[ms.measure_callback.AddToDatabase(), ms.measure_callback.UpdateCostModel()],
            space=_design_space(_fits(func, workspace_budget)), strategy=strategy, num_tuning_cores=1, seed=seed,
        )
    for record in database.get_all_tuning_records():
        secs = [float(s) for s in record.run_secs] if record.run_secs is not None else []
        ok = secs and secs[0] < 1e9
        trials_seen.append((_plain_json(record.trace.as_json()), round(secs[0] / SECONDS_PER_INSTRUCTION) if ok else None,
                            None if ok else "failed"))
    return trials_seen
