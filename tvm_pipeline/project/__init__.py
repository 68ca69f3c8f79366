"""Projects around a compiled model folder, for building and flashing with a platform's own tools.

    tvmp project create OUT/ DIR --platform zephyr|arduino|bare [--board NAME]   create_project()
    tvmp project build DIR                                                       build_project()
    tvmp project flash DIR [--port PORT]                                         flash_project()

One module per platform (zephyr.py, arduino.py, bare.py), each with the same functions: platform_board(board),
project_files(spec), check_project(folder), build_command(...), flash_command(...). writer.py holds what they
share, formats.py the checks of the files platform tools read, templates/ the files they are made from. Only the
platform glue (Zephyr's src/main.c, Arduino's example .ino) uses a platform API; everything else is portable C.
"""

from __future__ import annotations

from pathlib import Path

from tvm_pipeline.project.create import PLATFORMS, ProjectOptions, create_project, platform_module
from tvm_pipeline.project.tools import ToolCommand, run_tool
from tvm_pipeline.project.writer import read_manifest

__all__ = ["PLATFORMS", "ProjectOptions", "build_project", "create_project", "flash_project", "project_command"]


def project_command(action: str, project_dir: Path, platform_board: str | None = None,
                    port: str | None = None) -> ToolCommand:  # fmt: skip
    """The tool command that builds (`action` "build") or flashes ("flash") the project in `project_dir`."""
    folder = Path(project_dir).resolve()
    project = read_manifest(folder)
    platform = platform_module(project.get("platform", "?"))
    if action == "build":
        return platform.build_command(folder, project, platform_board)
    return platform.flash_command(folder, project, platform_board, port)


def build_project(project_dir: Path, platform_board: str | None = None) -> None:
    """Builds the project with its platform's tool (west, arduino-cli, make); UserError says what to install."""
    run_tool(project_command("build", project_dir, platform_board))


def flash_project(project_dir: Path, port: str | None = None, platform_board: str | None = None) -> None:
    """Flashes a real board with the platform's tool (west flash, arduino-cli upload)."""
    run_tool(project_command("flash", project_dir, platform_board, port))
