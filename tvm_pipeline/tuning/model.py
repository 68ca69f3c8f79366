"""`tune_model`: tune every distinct kernel of a model for one board, resumably (records already in `out_dir` are
kept and their kernels skipped)."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from schedules import bottleneck as bottleneck_schedule
from tvm_pipeline import tuning_adapter, tvm_adapter
from tvm_pipeline.arena import plan_arena
from tvm_pipeline.board.boards import Board, load_board
from tvm_pipeline.lowering.lower import lower_program
from tvm_pipeline.frontend import load_model
from tvm_pipeline.passes import run_passes
from tvm_pipeline.tuning.records import TuningRecord, load_record, save_record
from tvm_pipeline.tuning.tuner import KernelTuner


def model_kernels(model_path: Path, board: Board, input_shapes: dict | None = None):
    """(tir_name, PrimFunc, workspace budget) of each distinct kernel of the model, as `tvmp compile` lowers them.

    The budget is the scratch a kernel may use without growing the untuned plan's arena: the arena size minus the
    bytes of the tensors live at its call (the fewest free bytes over all its calls), rounded down to the alignment.
    """
    loaded = load_model(Path(model_path), input_shapes or {})
    mod, _ = run_passes(loaded.mod, frozenset())
    fused = tvm_adapter.fuse(mod)
    program = lower_program(fused, rules=[bottleneck_schedule.rule])
    layout = plan_arena(program, board.buffer_alignment).layout
    position = {index: p for p, index in enumerate(layout.order)}
    first = {program.input: -1}
    last: dict[str, int] = {program.output: len(layout.order)}
    for index, step in enumerate(program.steps):
        first[step.output] = position[index]
        for name in step.inputs:
            last[name] = max(last.get(name, -1), position[index])
    budgets: dict[str, int] = {}
    for index, step in enumerate(program.steps):
        p = position[index]
        live = sum(t.nbytes for name, t in program.tensors.items() if first.get(name, p + 1) <= p <= last.get(name, p))
        free = (layout.arena_bytes - live) // board.buffer_alignment * board.buffer_alignment
        tir_name = program.kernels[step.kernel].tir_name
        budgets[tir_name] = min(budgets.get(tir_name, free), max(free, 0))
    names = dict.fromkeys(b.func_name for b in tvm_adapter.main_bindings(fused).bindings if b.func_name)
    return [(name, tvm_adapter.prim_func(fused, name), budgets.get(name, 0)) for name in names]


def tune_model(model_path: Path, board_name: str, trials: int, out_dir: Path, workers: int = 2,
               codegen: str = "c", seed: int = 0, progress: bool = True) -> list[TuningRecord]:
    """Tune each distinct kernel with `trials` candidates; returns one record per kernel (old or new)."""
    board = load_board(board_name)
    kernels = model_kernels(model_path, board)
    records: dict[str, TuningRecord] = {}
    bar = tqdm(kernels, desc="tuning kernels", unit="kernel", disable=not progress)
    for tir_name, func, budget in bar:
        key = tuning_adapter.kernel_key(func)
        bar.set_postfix_str(tir_name[:40])
        if key in records:
            continue
        record = load_record(out_dir, board.name, codegen, key)
        if record is None:
            tuner = KernelTuner(func, tir_name, board, workers=workers, codegen=codegen, seed=seed,
                                workspace_budget=budget)
            record = tuner.tune(trials)
            save_record(out_dir, record)
        records[key] = record
    return list(records.values())


def format_records(records: list[TuningRecord]) -> str:
    """A table: kernel, instructions untuned -> tuned, speedup, failed candidates."""
    rows = [f"{'kernel':<48}{'untuned':>12}{'tuned':>12}{'speedup':>9}{'failed':>8}"]
    for r in records:
        rows.append(f"{r.tir_name[:47]:<48}{r.untuned_instructions:>12,}{r.tuned_instructions:>12,}"
                    f"{r.speedup:>8.2f}x{len(r.failed):>5}/{r.trials}")
    total_u = sum(r.untuned_instructions for r in records)
    total_t = sum(r.tuned_instructions for r in records)
    rows.append(f"{'total (one call each)':<48}{total_u:>12,}{total_t:>12,}{total_u / max(total_t, 1):>8.2f}x")
    return "\n".join(rows)
