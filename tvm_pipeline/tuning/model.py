"""`tune_model`: tune every distinct kernel of a model for one board and code generator, resumably (records already
in `out_dir` are kept and their kernels skipped), spread over local worker processes.

Five phases, so that tuning never raises the model's measured peak SRAM (see `allowance`), and lowers it where it can:
0. compile the model untuned and run it on the board: its peak SRAM and stack;
1. measure every kernel untuned (instructions, output, the stack of the kernel call itself, the call depth);
2. tune each kernel with workspace budget = arena bytes free at its steps (the arena cannot grow), stack budget =
   the model's untuned stack peak less the depth of model_run's kernel calls (so the peak cannot rise), and at most
   as many call arguments as the widest untuned call (no new stacked argument);
3. compile the model with the new records and run it: if peak SRAM rose or the output left the tolerance, lower the
   model's stack allowance until it does not; the verified allowance is written beside the records;
4. memory first: while the deepest records are this run's, tune those kernels again with the next kernel's depth as
   a strict stack budget (`_shallower`; where nothing faster is that shallow, with their untuned schedule's depth)
   and keep them if the verified model's peak SRAM drops.

Workers: with `workers` > 1 and several kernels to tune, each kernel is tuned in its own process
(`ProcessPoolExecutor`, spawn: every worker imports TVM once and runs a whole search, lowering included); a single
kernel, or `workers` == 1, is tuned in this process with `workers` threads measuring a batch at once. A `runner` passed
in (a serial board: one device, not shareable) always runs in this process, one candidate at a time.
"""

from __future__ import annotations

import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from schedules import pattern_rules, tunable_rules
from tvm_pipeline import tuning_adapter, tvm_adapter
from tvm_pipeline.arena import plan_arena
from tvm_pipeline.board.boards import Board, load_board
from tvm_pipeline.board.runner import QemuRunner, Runner
from tvm_pipeline.compiler import CompileOptions, fused_graph, uses_dsp
from tvm_pipeline.frontend import load_model
from tvm_pipeline.lowering.lower import constant_params, lower_program
from tvm_pipeline.planner import live_bytes_per_step
from tvm_pipeline.tuning.records import TuningRecord, load_record, save_record
from tvm_pipeline.tuning import allowance as model_allowance
from tvm_pipeline.tuning.tuner import CANDIDATE_TIMEOUT_S, Baseline, KernelTuner, call_args, measure_untuned


def fixed_rules(board: Board, codegen: str = "c") -> list:
    """Schedule rules `tvmp compile` runs for `board` and `codegen` before the tuning records: the kernels they
    handle are not tuned (in C for a board with the DSP extension: the int8 convs schedules/int8_dsp.py takes)."""
    return pattern_rules(dsp=uses_dsp(board, codegen))


@dataclass(frozen=True)
class TunableKernel:
    """One distinct kernel of a model that `tvmp tune` tunes, as `tvmp compile` lowers it."""

    tir_name: str
    func: object  # the fused PrimFunc
    workspace_budget: int  # the most scratch a tuned schedule may take (see `model_kernels`)
    read_only: tuple[int, ...]  # parameters the model passes constants
    rule: str | None  # the tunable pattern rule that schedules it (`schedules.tunable_rules`), None: MetaSchedule


def model_kernels(model_path: Path, board: Board, input_shapes: dict | None = None,
                  disabled_passes: frozenset[str] = frozenset(), codegen: str = "c") -> list[TunableKernel]:
    """Each distinct tunable kernel of the model, as `tvmp compile` lowers it: those no pattern rule takes (searched
    by MetaSchedule) and those a tunable pattern rule takes (its settings measured); kernels other pattern rules
    schedule, such as reordered bottlenecks and in-place depthwise convs, are left out.

    The budget is the scratch a kernel may use without growing the untuned plan's arena: the arena size minus the
    bytes of the plan's storages live at its call (tensors sharing one storage in place count once; the fewest free
    bytes over all its calls), rounded down to the alignment.
    """
    return _untuned_model(model_path, board, input_shapes, disabled_passes, codegen)[0]


def _untuned_model(model_path: Path, board: Board, input_shapes: dict | None = None,
                   disabled_passes: frozenset[str] = frozenset(), codegen: str = "c"):
    """`model_kernels`, the most arguments of any kernel call of the untuned model (tensors + workspace), and the
    model's digest (see `allowance.model_digest`)."""
    loaded = load_model(Path(model_path), input_shapes or {})
    options = CompileOptions(board=board.name, disabled_passes=disabled_passes, input_shapes=input_shapes or {})
    fused = fused_graph(loaded, options)[0]
    rules = fixed_rules(board, codegen)
    program = lower_program(fused, rules=rules)
    arena = plan_arena(program, board.buffer_alignment)
    # the plan's storages live at each step: a tensor written in place over its input (a depthwise conv) shares that
    # storage, so it counts once
    live_bytes = live_bytes_per_step(arena.buffers, len(arena.layout.order))
    budgets: dict[str, int] = {}
    for p, index in enumerate(arena.layout.order):
        step = program.steps[index]
        if step.kernel not in program.kernels:  # an input window read by the firmware: no kernel
            continue
        kernel = program.kernels[step.kernel]
        live = live_bytes[p] - kernel.workspace_bytes  # the kernel's own scratch is what the budget bounds
        free = max((arena.layout.arena_bytes - live) // board.buffer_alignment * board.buffer_alignment, 0)
        budgets[kernel.tir_name] = min(budgets.get(kernel.tir_name, free), free)
    read_only = constant_params(tvm_adapter.main_bindings(fused).bindings)
    tunable_by_rule = [(module.rule, name) for name, module in tunable_rules().items()]
    kernels = []
    for name, budget in budgets.items():
        func = tvm_adapter.prim_func(fused, name)
        taker = next((rule for rule in rules if rule(tvm_adapter.new_schedule(func), name)), None)
        tunable = next((n for rule, n in tunable_by_rule if rule is taker), None)
        if taker is None or tunable is not None:
            kernels.append(TunableKernel(name, func, budget, read_only[name], tunable))
    widest = max((call_args(k) for k in program.kernels.values()), default=0)
    return kernels, widest, model_allowance.model_digest(fused)


@dataclass(frozen=True)
class _Job:
    """One kernel's search, as a worker process receives it (everything picklable)."""

    func: object  # PrimFunc (TVM objects pickle through their JSON)
    tir_name: str
    board: str
    codegen: str
    trials: int
    seed: int
    workspace_budget: int
    call_args_budget: int
    out_dir: Path
    read_only: tuple[int, ...]  # parameters the model passes constants
    rule: str | None  # see TunableKernel


def _measure(job: _Job, runner: Runner | None) -> Baseline:
    with tempfile.TemporaryDirectory(prefix="tvmp-untuned-") as folder:
        return measure_untuned(job.func, job.tir_name, load_board(job.board), job.codegen,
                               runner or QemuRunner(timeout_s=CANDIDATE_TIMEOUT_S), Path(folder), job.seed,
                               job.read_only, job.rule)


def _tune(job: _Job, baseline: Baseline, stack_budget: int, threads: int = 1,
          runner: Runner | None = None, shallower: bool = False) -> TuningRecord:
    """Tunes one kernel and writes its record at once (so a stopped run resumes after the last finished kernel).
    Module level, so that a spawned worker process can run it. `shallower`: see `KernelTuner`."""
    tuner = KernelTuner(job.func, job.tir_name, load_board(job.board), runner=runner, workers=threads,
                        codegen=job.codegen, seed=job.seed, workspace_budget=job.workspace_budget,
                        stack_budget=stack_budget, call_args_budget=job.call_args_budget, baseline=baseline,
                        read_only=job.read_only, rule=job.rule, shallower=shallower)
    record = tuner.tune(job.trials)
    save_record(job.out_dir, record)
    return record


def _tune_all(jobs: list[_Job], baselines: dict[str, Baseline], stack_budget: int, workers: int,
              runner: Runner | None, bar: tqdm) -> list[TuningRecord]:
    """Tunes every job: in `workers` processes when there are several, else here with `workers` threads."""
    def done(record: TuningRecord) -> None:
        bar.set_postfix_str(f"{record.tir_name[:32]} {record.speedup:.2f}x")
        bar.update(1)

    records = []
    if runner is not None or workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            records.append(_tune(job, baselines[job.tir_name], stack_budget, 1 if runner else workers, runner))
            done(records[-1])
        return records
    context = multiprocessing.get_context("spawn")  # TVM's thread pools do not survive a fork
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(_tune, job, baselines[job.tir_name], stack_budget) for job in jobs]
        for future in as_completed(futures):
            records.append(future.result())
            done(records[-1])
    return records


@dataclass(frozen=True)
class ModelTuning:
    """What `tune_model` leaves: one record per distinct kernel (old or new), and the model's verified allowance
    (with its untuned and tuned instructions per inference and peak SRAM, measured on the board)."""

    records: list[TuningRecord]
    allowance: model_allowance.ModelAllowance | None


def tune_model(model_path: Path, board_name: str, trials: int, out_dir: Path, workers: int = 2,
               codegen: str = "c", seed: int = 0, progress: bool = True,
               runner: Runner | None = None, disabled_passes: frozenset[str] = frozenset()) -> ModelTuning:
    """Tune each distinct kernel with `trials` candidates.

    The model's verified stack allowance is written beside the records (`allowance`); `runner` (default: QEMU)
    measures the kernels, while the model-level checks always run on QEMU. `disabled_passes` must be what
    `tvmp compile --disable-pass` will be given: the kernels are the ones that compile produces.
    """
    board = load_board(board_name)
    kernels, widest, digest = _untuned_model(model_path, board, None, disabled_passes, codegen)
    out_dir = Path(out_dir)
    records: dict[str, TuningRecord] = {}
    jobs: dict[str, _Job] = {}
    queued: set[str] = set()
    keys = [tuning_adapter.kernel_key(k.func) for k in kernels]
    for key, kernel in zip(keys, kernels):
        record = load_record(out_dir, board.name, codegen, key)
        if record is not None and record.untuned_stack_bytes is not None:  # older records lack the kernel stack
            records[key] = record
        elif key not in queued:  # the same kernel under another name is tuned once
            queued.add(key)
            jobs[kernel.tir_name] = _Job(kernel.func, kernel.tir_name, board.name, codegen, trials, seed,
                                         kernel.workspace_budget, widest, out_dir, kernel.read_only, kernel.rule)
    order = {key: i for i, key in enumerate(keys)}
    allowance = model_allowance.load_allowance(out_dir, board.name, codegen, digest)
    if not jobs and allowance is not None:  # everything was done by an earlier run
        return ModelTuning(sorted(records.values(), key=lambda r: order[r.key]), allowance)
    bar = tqdm(total=len(jobs), desc=f"tuning {len(jobs)} kernel(s) on {board.name}/{codegen}", unit="kernel",
               disable=not progress)
    with bar, tempfile.TemporaryDirectory(prefix="tvmp-no-records-") as no_records:
        bar.set_postfix_str("untuned model on the board")
        untuned, _ = model_allowance.measure_model(model_path, board.name, codegen, Path(no_records),
                                                   disabled_passes)
        bar.set_postfix_str("untuned kernels on the board")
        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            baselines = dict(zip(jobs, pool.map(lambda job: _measure(job, runner), jobs.values())))
        own = [b.run.stack_bytes or 0 for b in baselines.values()]
        own += [r.untuned_stack_bytes for r in records.values()]
        conservative = max(own, default=0)
        # the model's untuned stack peak less the depth of model_run's calls (estimated from the one-kernel firmwares)
        depth = max((b.run.call_depth_bytes for b in baselines.values()), default=0)
        stack_budget = max(conservative, (untuned.stack_peak_bytes or 0) - depth) if depth else conservative
        for record in _tune_all(list(jobs.values()), baselines, stack_budget, workers, runner, bar):
            records[record.key] = record
        bar.set_postfix_str("tuned model on the board")

        def verified() -> model_allowance.ModelAllowance:
            fresh = model_allowance.ModelAllowance(
                digest, Path(model_path).name, stack_budget, untuned.stack_peak_bytes, untuned.peak_sram_bytes,
                untuned_instructions=untuned.instructions)
            return model_allowance.verify(model_path, board.name, codegen, out_dir, fresh, conservative,
                                          disabled_passes=disabled_passes)

        allowance = verified()
        model_records = {key: records[key] for key in keys if key in records}
        while deepest := _shallower(model_records, jobs, baselines, workers, runner):
            bar.set_postfix_str(f"{len(deepest)} deepest kernel(s) made shallower")
            trial = verified()
            if trial.tuned_peak_sram_bytes >= allowance.tuned_peak_sram_bytes:  # the peak is set elsewhere: undo
                _restore(model_records, deepest, out_dir)
                allowance = verified()
                break
            allowance = trial
        records.update(model_records)
    return ModelTuning(sorted(records.values(), key=lambda r: order.get(r.key, len(order))), allowance)


def _shallower(records: dict[str, TuningRecord], jobs: dict[str, _Job], baselines: dict[str, Baseline],
               workers: int, runner: Runner | None) -> list[TuningRecord]:
    """Memory first: the kernels of this run whose records are the model's deepest are tuned again with the next
    kernel's depth as their stack budget (the fastest setting that shallow and faster than untuned). Where none is,
    the kernel ends as deep as its untuned schedule, so it is tuned once more with that depth as the budget: the
    fastest setting no deeper (measured on KWS: its 1x1 conv 915 K -> 793 K instructions a call, and 156 B of stack
    where the untuned schedule it would have kept takes 164 B). Returns the records replaced (so the caller can undo it
    when the model's peak did not drop), or [] when none could be: a deepest kernel tuned by an earlier run, or one
    with nothing shallower."""
    if len(records) < 2:
        return []
    depth = max(r.stack_bytes or 0 for r in records.values())
    deepest = [r for r in records.values() if (r.stack_bytes or 0) == depth]
    if any(r.tir_name not in jobs for r in deepest):
        return []
    below = max((r.stack_bytes or 0 for r in records.values() if (r.stack_bytes or 0) < depth), default=0)

    def retune(record: TuningRecord) -> TuningRecord:
        job, baseline = jobs[record.tir_name], baselines[record.tir_name]
        new = _tune(job, baseline, below, max(workers, 1), runner, shallower=True)
        if (new.stack_bytes or 0) > below:  # the untuned schedule, kept: the fastest setting as shallow as it
            new = _tune(job, baseline, new.stack_bytes or 0, max(workers, 1), runner, shallower=True)
        return new

    retuned = [retune(r) for r in deepest]
    records.update({r.key: r for r in retuned})
    if any((r.stack_bytes or 0) >= depth for r in retuned):
        _restore(records, deepest, jobs[deepest[0].tir_name].out_dir)
        return []
    return deepest


def _restore(records: dict[str, TuningRecord], old: list[TuningRecord], out_dir: Path) -> None:
    """Put the records `_shallower` replaced back, in `records` and on disk."""
    for record in old:
        save_record(out_dir, record)
        records[record.key] = record


def format_records(records: list[TuningRecord]) -> str:
    """A table: kernel, instructions untuned -> tuned, speedup, kernel stack, failed candidates, what was searched
    (MetaSchedule, or a pattern rule's settings) and what was chosen."""
    rows = [f"{'kernel':<36}{'untuned':>12}{'tuned':>12}{'speedup':>9}{'stack B':>12}{'failed':>10}  schedule"]
    for r in records:
        stack = f"{r.untuned_stack_bytes}->{r.stack_bytes}"
        rows.append(f"{r.tir_name[:35]:<36}{r.untuned_instructions:>12,}{r.tuned_instructions:>12,}"
                    f"{r.speedup:>8.2f}x{stack:>12}{len(r.failed):>6}/{r.trials}  {r.schedule}")
    total_u = sum(r.untuned_instructions for r in records)
    total_t = sum(r.tuned_instructions for r in records)
    rows.append(f"{'total (one call each)':<36}{total_u:>12,}{total_t:>12,}{total_u / max(total_t, 1):>8.2f}x")
    return "\n".join(rows)
