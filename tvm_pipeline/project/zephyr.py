"""`--platform zephyr`: a Zephyr application around the compiled model, for the Zephyr board mapped from ours
(`zephyr_board` in boards/<name>.json) or any other given with --platform-board (e.g. qemu_cortex_m3).

    CMakeLists.txt  prj.conf  boards/<zephyr board>.conf (CONFIG_FPU=y where the part has one)  README.md  project.json
    model/    the compiled folder's .c and .h files, built as the `tvmp_model` library
    src/      main.c (the only Zephyr-specific file), tvmp_sample.c/.h, tvmp_sample_config.h, input_data.h
"""

from __future__ import annotations

import os
from pathlib import Path

from tvm_pipeline.board.boards import Board, list_boards, load_board
from tvm_pipeline.errors import InternalError, UserError
from tvm_pipeline.project.formats import check_prj_conf, check_zephyr_cmakelists
from tvm_pipeline.project.tools import ToolCommand
from tvm_pipeline.project.writer import Files, ProjectSpec, manifest, model_files, render, sample_files, template

PLATFORM = "zephyr"
NEEDS_STACK = True
EMULATOR_BOARD = "qemu_cortex_m3"
#: What stays free on the main stack besides the model's measured peak: printk/cbprintf and the kernel's own use.
STACK_MARGIN_BYTES = 1024
STACK_ALIGN = 256
INSTALL = (
    "Install Zephyr, its SDK and west (https://docs.zephyrproject.org/latest/develop/getting_started/index.html):\n"
    "  python3 -m venv ~/zephyrproject/.venv && source ~/zephyrproject/.venv/bin/activate\n"
    "  pip install west\n"
    "  west init ~/zephyrproject && cd ~/zephyrproject && west update\n"
    "  west zephyr-export\n"
    "  pip install -r ~/zephyrproject/zephyr/scripts/requirements.txt\n"
    "  cd ~/zephyrproject/zephyr && west sdk install\n"
    "then, in the shell that runs tvmp: source ~/zephyrproject/.venv/bin/activate && "
    "source ~/zephyrproject/zephyr/zephyr-env.sh"
)


def platform_board(board: Board) -> str:
    """The Zephyr board for ours, or UserError listing the boards that have one."""
    if board.zephyr_board:
        return board.zephyr_board
    mapped = [name for name in list_boards() if load_board(name).zephyr_board]
    raise UserError(
        f"board {board.name!r} has no Zephyr board; choose one of {', '.join(mapped)} with --board, or name a Zephyr "
        f"board with --platform-board (e.g. {EMULATOR_BOARD}, the emulator)"
    )


def main_stack(stack_peak_bytes: int, board_name: str) -> tuple[int, str]:
    """Main thread stack for a peak measured on `board_name`: + 50% + STACK_MARGIN_BYTES, rounded up to STACK_ALIGN;
    and that reason in words."""
    wanted = stack_peak_bytes + stack_peak_bytes // 2 + STACK_MARGIN_BYTES
    return -(-wanted // STACK_ALIGN) * STACK_ALIGN, (
        f"the stack peak measured on {board_name} under QEMU ({stack_peak_bytes} B, test harness included) + 50% + "
        f"{STACK_MARGIN_BYTES} B for printk and the kernel, rounded up to {STACK_ALIGN} B"
    )


def build_name(zephyr_board: str) -> str:
    """A file or folder name for a Zephyr board (`nrf52840dk/nrf52840` -> `nrf52840dk_nrf52840`, as Zephyr names
    board-specific Kconfig fragments)."""
    return zephyr_board.replace("/", "_")


def project_files(spec: ProjectSpec) -> Files:
    """The files of the application, by path relative to its folder."""
    zephyr_board = spec.platform_board
    assert zephyr_board is not None and spec.main_stack_bytes is not None  # create_project resolves both
    files: Files = {
        "CMakeLists.txt": render(
            "zephyr/CMakeLists.txt.in",
            NAME=spec.name,
            ZEPHYR_BOARD=zephyr_board,
            BUILD_NAME=build_name(zephyr_board),
            MODEL_SOURCES=" ".join(f"model/{name}" for name in spec.model_sources),
        ),
        "prj.conf": render(
            "zephyr/prj.conf.in", NAME=spec.name, MAIN_STACK_BYTES=spec.main_stack_bytes, STACK_REASON=spec.stack_reason
        ),
        "README.md": render(
            "zephyr/README.md.in",
            NAME=spec.name,
            BOARD=spec.board.name,
            ZEPHYR_BOARD=zephyr_board,
            BUILD_NAME=build_name(zephyr_board),
            MODEL_DIR=spec.model_dir,
            INPUT_ORIGIN=spec.input_origin,
            INPUT_OPTION=spec.input_option,
            MAIN_STACK_BYTES=spec.main_stack_bytes,
            STACK_REASON=spec.stack_reason,
        ),
        "src/main.c": template("zephyr/main.c"),
        **sample_files(spec, "src"),
        **model_files(spec, "model"),
        **manifest(spec, PLATFORM),
    }
    has_fpu = any(flag.startswith("-mfpu=") for flag in spec.board.cpu_flags)
    if has_fpu and zephyr_board != EMULATOR_BOARD:
        files[f"boards/{build_name(zephyr_board)}.conf"] = render("zephyr/board.conf.in", ZEPHYR_BOARD=zephyr_board)
    return files


def check_project(folder: Path) -> None:
    """prj.conf, the board fragments and CMakeLists.txt against their formats (a problem is our bug)."""
    problems = [f"prj.conf: {problem}" for problem in check_prj_conf((folder / "prj.conf").read_text())]
    for fragment in sorted((folder / "boards").glob("*.conf")):
        problems += [f"boards/{fragment.name}: {problem}" for problem in check_prj_conf(fragment.read_text())]
    cmakelists = (folder / "CMakeLists.txt").read_text()
    problems += [f"CMakeLists.txt: {problem}" for problem in check_zephyr_cmakelists(cmakelists, folder)]
    if problems:
        raise InternalError(f"zephyr project {folder} breaks its formats:\n" + "\n".join(problems))


def build_dir(folder: Path, zephyr_board: str) -> Path:
    """Where `west build` puts the build for `zephyr_board` (one folder per board, so switching needs no pristine)."""
    return folder / "build" / build_name(zephyr_board)


def build_command(folder: Path, project: dict, platform_board: str | None) -> ToolCommand:
    """`west build -b BOARD -d FOLDER/build/BOARD FOLDER`, run inside the west workspace of $ZEPHYR_BASE if set."""
    zephyr_board = platform_board or project["platform_board"]
    workspace = _workspace()
    note = f"west workspace: {workspace}" if workspace else "ZEPHYR_BASE is not set: west looks for its workspace here"
    argv = ["west", "build", "-b", zephyr_board, "-d", str(build_dir(folder, zephyr_board)), str(folder)]
    return ToolCommand(argv, install=INSTALL, cwd=workspace, note=note)


def flash_command(folder: Path, project: dict, platform_board: str | None, port: str | None) -> ToolCommand:
    """`west flash -d FOLDER/build/BOARD` (the board's own runner: ST-Link, J-Link, ...; no port needed)."""
    zephyr_board = platform_board or project["platform_board"]
    build = build_dir(folder, zephyr_board)
    if not build.is_dir():
        raise UserError(f"{build} does not exist: build first with `tvmp project build {folder}`")
    return ToolCommand(["west", "flash", "-d", str(build)], install=INSTALL, cwd=_workspace())


def _workspace() -> Path | None:
    """The west workspace that holds $ZEPHYR_BASE (west finds its workspace from the current folder)."""
    zephyr_base = os.environ.get("ZEPHYR_BASE")
    return Path(zephyr_base).resolve().parent if zephyr_base else None
