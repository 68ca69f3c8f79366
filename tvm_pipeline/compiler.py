"""`compile_model`: ONNX or TFLite file -> a self-contained folder of C for one board.

frontend (validate, fix shapes, import) -> passes (Relax) -> fuse -> lowering (kernels as C) -> planner (arena)
-> fit check against the board -> C emitter -> folder written atomically (temp dir, then rename).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from schedules import bottleneck as bottleneck_schedule
from tvm_pipeline import tvm_adapter
from tvm_pipeline.atomic_folder import replace_folder
from tvm_pipeline.arena import ArenaPlan
from tvm_pipeline.board.boards import Board, load_board
from tvm_pipeline.codegen import c_emitter
from tvm_pipeline.errors import UserError
from tvm_pipeline.frontend import load_model
from tvm_pipeline.lowering.program import Program
from tvm_pipeline.passes import run_passes, stream_input
from tvm_pipeline.tuning.apply import lower_tuned
from tvm_pipeline.tuning.records import SHIPPED_RECORDS_DIR

#: Stack and harness RAM kept free when checking that a model fits a board at compile time.
STACK_RESERVE_BYTES = 4096


@dataclass(frozen=True)
class CompileOptions:
    """What `tvmp compile` lets the user choose."""

    board: str = "stm32f746"
    planner: str = "auto"
    disabled_passes: frozenset[str] = frozenset()
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    tuning: Path | None = None  # tuning records folder (`tvmp tune -o`); None: the shipped schedules/records/
    input_mode: str = "ram"  # "stream": the input is read window by window (model_run_stream), never whole
    order: str = "best"  # execution order: "best" (searched to minimize peak memory) or "file" (the model's own)
    codegen: str = "c"  # "llvm": kernels as one object built by TVM's LLVM backend for the board's CPU (kernels.o)
    patch_stage: int | None = None  # patch-stage pass: last layer of the patched stage (None: searched)
    patch_grid: tuple[int, int] | None = None  # patch-stage pass: rows x columns of patches (None: searched)


@dataclass(frozen=True)
class CompileResult:
    """What was written, and the figures the CLI prints."""

    out_dir: Path
    program: Program
    arena: ArenaPlan
    board: Board


def _check_fits(board: Board, arena_bytes: int, weight_bytes: int) -> None:
    ram_needed = arena_bytes + STACK_RESERVE_BYTES
    if ram_needed > board.ram.size:
        raise UserError(
            f"the model does not fit {board.name}'s RAM: it needs {ram_needed:,} B (arena {arena_bytes:,} B + "
            f"{STACK_RESERVE_BYTES:,} B stack reserve) but the board has {board.ram.size:,} B. Try a board with more "
            f"SRAM (tvmp boards) or generic-m7 to measure it anyway."
        )
    if weight_bytes > board.flash.size:
        raise UserError(
            f"the model does not fit {board.name}'s flash: its weights alone need {weight_bytes:,} B but the board "
            f"has {board.flash.size:,} B."
        )


def _input_mode(mod, mode: str):
    """`ram`: model_run copies the whole input into the arena. `stream`: it is read window by window."""
    if mode == "ram":
        return mod, []
    if mode != "stream":
        raise UserError(f"unknown input mode {mode!r}; choose ram or stream")
    notes: list[str] = []
    return stream_input.run(mod, notes), notes


def compile_model(model_path: Path, out_dir: Path, options: CompileOptions = CompileOptions()) -> CompileResult:
    """Compile an .onnx or .tflite model for `options.board` into `out_dir` (replaced as a whole if it exists)."""
    model_path = Path(model_path)
    board = load_board(options.board)
    if options.order not in ("best", "file"):
        raise UserError(f"unknown execution order {options.order!r}; choose best or file")
    loaded = load_model(model_path, options.input_shapes)
    spec = loaded.input
    mod, notes = _input_mode(loaded.mod, options.input_mode)
    patching = {k: v for k, v in (("stage", options.patch_stage), ("grid", options.patch_grid)) if v is not None}
    mod, pass_notes = run_passes(mod, options.disabled_passes, {"patch-stage": patching})
    notes += pass_notes
    fused = tvm_adapter.fuse(mod)
    # records applied where they match, never growing arena or stack; codegen "llvm" builds kernels.o
    lowered = lower_tuned(fused, board, [bottleneck_schedule.rule], options.tuning or SHIPPED_RECORDS_DIR,
                          options.codegen, options.planner, reorder=options.order == "best")
    program, arena = lowered.program, lowered.arena
    program.notes.extend([*loaded.notes, *notes, *lowered.notes])
    _check_fits(board, arena.layout.arena_bytes, program.weight_bytes)

    source = model_path.name
    files: dict[str, str | bytes] = {}
    files.update(c_emitter.emit_kernels(program, source))
    if lowered.kernel_object is not None:
        del files["kernels.c"]
        files["kernels.o"] = lowered.kernel_object
    files.update(c_emitter.emit_weights(program, source))
    files.update(c_emitter.emit_model(program, arena.layout, source))
    output = program.tensors[program.output]
    files["model.json"] = json.dumps({
        "source_model": source,
        "source_format": loaded.format,
        "reference": loaded.reference_file,
        "board": board.name,
        "inputs": [{"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype}],
        "outputs": [{"name": loaded.output_name, "shape": list(output.shape), "dtype": output.dtype}],
        "kernels": len(program.kernels),
        "steps": len(program.steps),
        "weight_bytes": program.weight_bytes,
        "disabled_passes": sorted(options.disabled_passes),
        "input_mode": options.input_mode,
        "codegen": options.codegen,
        "tuning": lowered.tuning,
        "notes": program.notes,
    }, indent=2) + "\n"
    files["memory.json"] = json.dumps(arena.to_json(program), indent=2) + "\n"
    files[loaded.reference_file] = loaded.reference_bytes or model_path.read_bytes()
    replace_folder(Path(out_dir), files)
    return CompileResult(Path(out_dir), program, arena, board)
