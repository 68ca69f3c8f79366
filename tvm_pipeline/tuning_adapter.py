"""The one place that calls TVM's MetaSchedule (0.27, `tvm.s_tir.meta_schedule`); a sibling of `tvm_adapter`.

MetaSchedule proposes schedules (traces) for one kernel; we build and measure them ourselves: each candidate is
lowered with `tvm_adapter.lower_to_c` (raw-pointer C, scratch in a workspace) and handed to a caller-supplied
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
    """One proposed schedule, lowered: its C (or the lowering error) and the trace that produced it."""

    index: int
    kernel: tvm_adapter.LoweredKernel | None
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


def _design_space() -> ms.space_generator.PostOrderApply:
    rules = [
        ms.schedule_rule.InlineConstantScalars(),
        ms.schedule_rule.AutoInline(into_producer=False, into_consumer=True, inline_const_tensor=True,
                                    disallow_if_then_else=False, require_injective=True, require_ordered=True),
        ms.schedule_rule.MultiLevelTiling(
            structure="SSRSRS", max_innermost_factor=16,
            # a write cache is allowed but usually rejected later: it is scratch the untuned kernel does not need
            reuse_write=ms.schedule_rule.ReuseType(req="may", levels=[1, 2], scope="global")),
        ms.schedule_rule.ParallelizeVectorizeUnroll(max_jobs_per_core=-1, max_vectorize_extent=-1,
                                                    unroll_max_steps=[0, 16, 64, 512], unroll_explicit=True),
        ms.schedule_rule.RandomComputeLocation(),
    ]
    postprocs = [ms.postproc.DisallowDynamicLoop(), ms.postproc.RewriteParallelVectorizeUnroll(),
                 ms.postproc.RewriteReductionBlock()]
    mutators = {ms.mutator.MutateTileSize(): 0.9, ms.mutator.MutateComputeLocation(): 0.05,
                ms.mutator.MutateUnroll(): 0.05}
    return ms.space_generator.PostOrderApply(sch_rules=rules, postprocs=postprocs, mutator_probs=mutators)


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
                strategy: str | None = None) -> list[tuple[object, int | None, str | None]]:
    """Search `trials` schedules of `func`; returns (trace JSON, instructions or None, error or None) per trial."""
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
                    kernel, error = tvm_adapter.lower_to_c(build_input.mod["main"], symbol), None
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
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
        ms.tune_tir(
            tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), _TUNING_TARGET, work_dir, trials,
            num_trials_per_iter=min(trials, 16), builder=_Builder(), runner=_Runner(), database=database,
            cost_model="xgb" if strategy == "evolutionary" else "random",
            measure_callbacks=[ms.measure_callback.AddToDatabase(), ms.measure_callback.UpdateCostModel()],
            space=_design_space(), strategy=strategy, num_tuning_cores=1, seed=seed,
        )
    for record in database.get_all_tuning_records():
        secs = [float(s) for s in record.run_secs] if record.run_secs is not None else []
        ok = secs and secs[0] < 1e9
        trials_seen.append((_plain_json(record.trace.as_json()), round(secs[0] / SECONDS_PER_INSTRUCTION) if ok else None,
                            None if ok else "failed"))
    return trials_seen
