"""`--platform bare`: a Makefile project for arm-none-eabi-gcc that builds exactly what `tvmp run` builds (the
harness, our start-up code and the board's linker script) and runs it in QEMU with `make run`.

    Makefile  README.md  project.json
    model/    the compiled folder's .c and .h files
    src/      harness.c startup.c/.h semihost.c/.h (copied from boards/common) and input_data.h
    ld/       <board>.ld and common/sections.ld
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tvm_pipeline.board.boards import BOARDS_DIR, Board
from tvm_pipeline.board.firmware import COMMON_DIR, COMMON_FLAGS, FIRMWARE_FLAGS
from tvm_pipeline.board.runner import qemu_arguments
from tvm_pipeline.board.toolchain import INSTALL_COMMAND, find_arm_toolchain
from tvm_pipeline.errors import InternalError, UserError
from tvm_pipeline.project.tools import ToolCommand
from tvm_pipeline.project.writer import Files, ProjectSpec, manifest, model_files, render

PLATFORM = "bare"
NEEDS_STACK = False
#: The harness and start-up sources, in the order firmware.build_firmware compiles them (after the model's).
RUNTIME_SOURCES = ("harness.c", "startup.c", "semihost.c")
RUNTIME_HEADERS = ("startup.h", "semihost.h")


def platform_board(board: Board) -> None:
    """Bare projects run on the emulated board itself: there is no other name for it (None)."""


def project_files(spec: ProjectSpec) -> Files:
    """The files of the project, by path relative to its folder."""
    board = spec.board
    sources = [f"model/{name}" for name in spec.model_sources] + [f"src/{name}" for name in RUNTIME_SOURCES]
    files: Files = {
        "Makefile": render(
            "bare/Makefile.in",
            NAME=spec.name,
            BOARD=board.name,
            BOARD_DESCRIPTION=board.description.split(";")[0],
            QEMU_MACHINE=board.qemu_machine,
            CPU_FLAGS=shlex.join(board.cpu_flags),
            COMMON_FLAGS=shlex.join(COMMON_FLAGS),
            FIRMWARE_FLAGS=shlex.join(FIRMWARE_FLAGS),
            MPU=int(board.mpu),
            SOURCES=" ".join(sources),
            QEMU_ARGUMENTS=shlex.join(qemu_arguments(board.qemu_machine)),
        ),
        "README.md": render(
            "bare/README.md.in",
            NAME=spec.name,
            BOARD=board.name,
            MODEL_DIR=spec.model_dir,
            QEMU_MACHINE=board.qemu_machine,
            INSTRUCTIONS_PER_TICK=f"{board.instructions_per_tick:g}",
            INPUT_ORIGIN=spec.input_origin,
        ),
        **model_files(spec, "model"),
        **{f"src/{name}": (COMMON_DIR / name).read_bytes() for name in RUNTIME_SOURCES + RUNTIME_HEADERS},
        "src/input_data.h": spec.input_header,
        f"ld/{board.name}.ld": board.linker_script.read_bytes(),
        "ld/common/sections.ld": (BOARDS_DIR / "common" / "sections.ld").read_bytes(),
        **manifest(spec, PLATFORM, elf="build/app.elf"),
    }
    return files


def check_project(folder: Path) -> None:
    """Every source the Makefile names is in the folder, and the linker script's INCLUDE resolves inside ld/."""
    makefile = (folder / "Makefile").read_text()
    match = re.search(r"^SOURCES := (.+)$", makefile, re.MULTILINE)
    missing = [] if match is None else [name for name in match.group(1).split() if not (folder / name).is_file()]
    if match is None or missing:
        raise InternalError(f"bare project {folder}: Makefile SOURCES missing or naming absent files {missing}")
    for script in (folder / "ld").glob("*.ld"):
        for included in re.findall(r"^\s*INCLUDE\s+(\S+)", script.read_text(), re.MULTILINE):
            if not (folder / "ld" / included).is_file():
                raise InternalError(f"bare project {folder}: {script.name} includes {included}, absent from ld/")


def build_command(folder: Path, project: dict, platform_board: str | None) -> ToolCommand:
    """`make -C FOLDER`: the toolchain is checked first, so a missing one is named with its install command."""
    if platform_board:
        raise UserError("a bare project is built for the emulated board it was created for; drop --platform-board")
    find_arm_toolchain()
    return ToolCommand(["make", "-C", str(folder)], install=f"Install it with: {INSTALL_COMMAND} make")


def flash_command(folder: Path, project: dict, platform_board: str | None, port: str | None) -> ToolCommand:
    """Bare projects talk through semihosting and are linked for QEMU's memory map: they do not flash."""
    raise UserError(
        f"{folder} is a bare project: its firmware talks through semihosting and is linked for QEMU's memory map, so "
        f"it runs in the emulator (`make -C {folder} run`), not on a real board. For a board, create a Zephyr or "
        "Arduino project: tvmp project create OUT/ DIR --platform zephyr|arduino"
    )
