"""create_project(): a compiled model folder -> a complete project folder for one platform, written atomically.

The sample input is the one `tvmp run` uses (seeded random, or --input x.npy), so `tvmp run OUT/ --serial PORT`
compares the board's report with onnxruntime on the same values. Platforms that give the model a thread stack
(Zephyr) size it from the stack peak measured on the emulated board (evaluate()), unless --stack-bytes is given.
"""

from __future__ import annotations

import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvm_pipeline.board.boards import load_board
from tvm_pipeline.board.firmware import write_input_header
from tvm_pipeline.errors import UserError
from tvm_pipeline.project import arduino, bare, zephyr
from tvm_pipeline.project.writer import ProjectSpec, check_name, default_name, refuse_existing, write_atomically

#: The platforms, by the name --platform takes.
PLATFORMS = {module.PLATFORM: module for module in (zephyr, arduino, bare)}


@dataclass(frozen=True)
class ProjectOptions:
    """What `tvmp project create` lets the user choose."""

    platform: str
    board: str | None = None  # our board (default: the one the folder was compiled for)
    platform_board: str | None = None  # the platform's board name (default: mapped from ours)
    input: Path | None = None  # .npy sample input (default: seeded random, as `tvmp run`)
    stack_bytes: int | None = None  # main thread stack as is, instead of measuring
    name: str | None = None
    force: bool = False


def platform_module(name: str):
    """The module that writes, checks, builds and flashes projects of platform `name`."""
    if name not in PLATFORMS:
        raise UserError(f"unknown platform {name!r}; choose one of: {', '.join(PLATFORMS)}")
    return PLATFORMS[name]


def create_project(model_dir: Path, project_dir: Path, options: ProjectOptions) -> ProjectSpec:
    """Writes the project for `options.platform` around the compiled folder `model_dir` into `project_dir`."""
    from tvm_pipeline.evaluate import load_input, model_metadata

    platform = platform_module(options.platform)
    model_dir, project_dir = Path(model_dir).resolve(), Path(project_dir).resolve()
    refuse_existing(project_dir, options.force)
    if project_dir == model_dir or project_dir in model_dir.parents:
        raise UserError(f"the project folder {project_dir} would hold or replace the compiled folder; choose another")
    meta, memory = model_metadata(model_dir)
    if meta.get("codegen", "c") != "c":
        raise UserError(f"{model_dir} was compiled with --codegen {meta['codegen']} (kernels.o for one CPU); "
                        "projects are generated from C sources: compile it with --codegen c")
    board = load_board(options.board or meta["board"])
    platform_board = options.platform_board or platform.platform_board(board)
    x = load_input(model_dir, options.input)
    peak, main_stack, reason = _stack(platform, model_dir, board, x, options.stack_bytes)
    spec = ProjectSpec(
        name=check_name(options.name) if options.name else default_name(meta.get("source_model", model_dir.name)),
        model_dir=model_dir,
        board=board,
        platform_board=platform_board,
        model_files=tuple(sorted(p for p in model_dir.iterdir() if p.suffix in (".c", ".h") and p.is_file())),
        input_header=_input_header(x),
        input_hash=f"{input_fnv1a32(x):08x}",
        input_origin=f"from {options.input}" if options.input else "seeded random, seed 0, as `tvmp run` uses",
        input_option=f" --input {shlex.quote(str(Path(options.input).resolve()))}" if options.input else "",
        source_model=meta.get("source_model", "the model"),
        arena_bytes=int(memory["arena_bytes"]),
        stack_peak_bytes=peak,
        main_stack_bytes=main_stack,
        stack_reason=reason,
    )
    write_atomically(project_dir, platform.project_files(spec), platform.check_project, options.force)
    return spec


def input_fnv1a32(x: np.ndarray) -> int:
    """FNV-1a (32 bit) of the input's bytes as they lie in the target's (little-endian) memory: the TVMP-INPUT hash."""
    data = np.ascontiguousarray(x).reshape(-1)
    data = data.astype(data.dtype.newbyteorder("<"), copy=False).tobytes()
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def _stack(platform, model_dir: Path, board, x: np.ndarray, stack_bytes: int | None):
    """(measured peak or None, main stack bytes or None, how it was chosen) for the platform."""
    if stack_bytes is not None:
        if stack_bytes < 512:
            raise UserError(f"--stack-bytes {stack_bytes} is too small to run anything; give at least 512")
        return None, stack_bytes, f"{stack_bytes} B as given with --stack-bytes"
    if not platform.NEEDS_STACK:
        return None, None, "not needed: the linker script reserves the stack"
    from tvm_pipeline.evaluate import evaluate

    peak = evaluate(model_dir, board, x).stack_peak_bytes
    if peak is None:
        raise UserError(f"the run on {board.name} reported no stack peak; give the stack with --stack-bytes")
    return (peak, *platform.main_stack(peak, board.name))


def _input_header(x: np.ndarray) -> str:
    """input_data.h for `x`, written by the same function the `tvmp run` build uses."""
    with tempfile.TemporaryDirectory(prefix="tvmp-input-") as folder:
        path = Path(folder) / "input_data.h"
        write_input_header(path, np.asarray(x))
        return path.read_text()
