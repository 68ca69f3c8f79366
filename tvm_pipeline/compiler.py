"""`compile_model`: ONNX or TFLite file -> a self-contained folder of C for one board.

frontend (validate, fix shapes, import) -> passes (Relax) -> fuse -> lowering (kernels as C) -> planner (arena)
-> fit check against the board -> C emitter -> folder written atomically (temp dir, then rename).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from schedules import bottleneck_int8, depthwise_dsp, pattern_rules
from tvm_pipeline import tvm_adapter
from tvm_pipeline.atomic_folder import replace_folder
from tvm_pipeline.arena import ArenaPlan
from tvm_pipeline.board.boards import Board, load_board
from tvm_pipeline.codegen import c_emitter
from tvm_pipeline.errors import UserError
from tvm_pipeline.frontend import LoadedModel, load_model
from tvm_pipeline.lowering.program import Program
from tvm_pipeline.planner import live_bytes_per_step
from tvm_pipeline.passes import fold_qdq, run_passes, stream_input
from tvm_pipeline.tuning.apply import TunedLowering, lower_tuned
from tvm_pipeline.tuning.records import SHIPPED_RECORDS_DIR

if TYPE_CHECKING:
    import tvm

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
    inplace_depthwise: bool = True  # depthwise convs copy each input plane to scratch, may write over their input


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


def _stream_before_passes(mod, mode: str) -> bool:
    """Whether stream-input runs before the passes: for a model that slices its input itself (patch tunnels).

    There it must: fold-qdq absorbs an int8 slice read by one kernel into that kernel's indexing, after which the
    kernel would read the whole image. Any other model (a plain CNN) streams after the passes, through the windows
    that patch-stage slices out of the image.
    """
    if mode not in ("ram", "stream"):
        raise UserError(f"unknown input mode {mode!r}; choose ram or stream")
    return mode == "stream" and stream_input.reads_slices_only(mod)


def fused_graph(loaded: LoadedModel, options: CompileOptions) -> tuple[tvm.IRModule, list[str], str | None]:
    """The imported model through stream-input (where it goes first), the pass pipeline and operator fusion, as
    `compile_model` lowers it (the tuner plans with the same): (fused module, notes, the int8 kernels' arithmetic,
    None when there are none)."""
    mod, notes = loaded.mod, []
    early = _stream_before_passes(mod, options.input_mode)
    if early:
        mod = stream_input.run(mod, notes)
    patching = {k: v for k, v in (("stage", options.patch_stage), ("grid", options.patch_grid)) if v is not None}
    late = options.input_mode == "stream" and not early
    if late and "patch-stage" not in options.disabled_passes:
        patching["stream"] = True  # patch-stage must split, reading the image in windows
    pass_options = {"patch-stage": patching}
    arithmetic = fold_qdq.ARITHMETIC_OF_FORMAT[loaded.format]  # a .tflite model follows the TFLite interpreter
    if fold_qdq.NAME not in options.disabled_passes:
        pass_options[fold_qdq.NAME] = {"arithmetic": arithmetic}
    mod, pass_notes = run_passes(mod, options.disabled_passes, pass_options)
    notes += pass_notes
    if late:
        mod = stream_input.run(mod, notes)
    fused = tvm_adapter.fuse(mod)
    folded = any(n.startswith(f"{fold_qdq.NAME}: ") and fold_qdq.FOLDED in n for n in pass_notes)
    return fused, notes, arithmetic if folded else None


def uses_dsp(board: Board, codegen: str) -> bool:
    """Whether int8 convs get the DSP (SMLAD) schedule: on a board with the extension, in C (its dot products call
    C helpers, which an object from TVM's LLVM backend cannot hold)."""
    return board.dsp and codegen == "c"


def lower_memory_first(fused: tvm.IRModule, board: Board, options: CompileOptions) -> TunedLowering:
    """Lower and plan (`lower_tuned`: records applied where they match, never growing arena or stack; codegen "llvm"
    builds kernels.o); then the kernels that run when the plan peaks and have a smaller-scratch schedule are lowered
    again with it, as long as that lowers the arena: speed where it costs no peak memory. Those are the reordered
    int8 bottlenecks (2 expanded channels a step instead of 4: 2 padded planes less) and the int8 depthwise convs
    of `schedules/depthwise_dsp.py` (depthwise_inplace's unpadded plane instead)."""
    dsp = uses_dsp(board, options.codegen)

    def lower(memory_first: frozenset[str]) -> TunedLowering:
        rules = pattern_rules(options.inplace_depthwise, dsp, memory_first)
        return lower_tuned(fused, board, rules, options.tuning or SHIPPED_RECORDS_DIR, options.codegen,
                           options.planner, reorder=options.order == "best", memory_first=memory_first)

    memory_first: frozenset[str] = frozenset()
    lowered = lower(memory_first)
    while at_peak := _smaller_scratch_at_peak(fused, lowered.program, lowered.arena, dsp) - memory_first:
        trial = lower(memory_first | at_peak)
        if trial.arena.layout.arena_bytes >= lowered.arena.layout.arena_bytes:
            break
        lowered, memory_first = trial, memory_first | at_peak
    if memory_first:
        lowered.notes.append(f"{len(memory_first)} kernel(s) at the memory peak scheduled for less scratch (int8 "
                             f"bottlenecks 2 expanded channels a step, depthwise convs without the DSP padded "
                             f"plane): {', '.join(sorted(memory_first))}")
    return lowered


def _smaller_scratch_at_peak(fused: tvm.IRModule, program: Program, arena: ArenaPlan, dsp: bool) -> frozenset[str]:
    """TIR names of the kernels running at a step where the planned live bytes peak that have a schedule with less
    scratch: reordered int8 bottlenecks, DSP depthwise convs (`dsp`: the rules include the DSP ones)."""
    live = live_bytes_per_step(arena.buffers, len(arena.layout.order))
    peak = max(live)
    kernels = (program.kernels.get(program.steps[step].kernel)
               for step, live_bytes in zip(arena.layout.order, live) if live_bytes == peak)
    names = {k.tir_name for k in kernels if k is not None}
    return frozenset(n for n in names if n.startswith(bottleneck_int8.KERNEL_PREFIX)
                     or dsp and depthwise_dsp.applies(tvm_adapter.prim_func(fused, n)))


def compile_model(model_path: Path, out_dir: Path, options: CompileOptions = CompileOptions()) -> CompileResult:
    """Compile an .onnx or .tflite model for `options.board` into `out_dir` (replaced as a whole if it exists)."""
    model_path = Path(model_path)
    board = load_board(options.board)
    if options.order not in ("best", "file"):
        raise UserError(f"unknown execution order {options.order!r}; choose best or file")
    loaded = load_model(model_path, options.input_shapes)
    spec = loaded.input
    fused, notes, arithmetic = fused_graph(loaded, options)
    lowered = lower_memory_first(fused, board, options)
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
        "inplace_depthwise": options.inplace_depthwise,
        "codegen": options.codegen,
        "int8_arithmetic": arithmetic,
        "tuning": lowered.tuning,
        "notes": program.notes,
    }, indent=2) + "\n"
    files["memory.json"] = json.dumps(arena.to_json(program), indent=2) + "\n"
    files[loaded.reference_file] = loaded.reference_bytes or model_path.read_bytes()
    replace_folder(Path(out_dir), files)
    return CompileResult(Path(out_dir), program, arena, board)
