"""Runs a platform's own tool (west, arduino-cli, make) on a project, or says exactly what to install when the tool
is missing. The tool's output goes straight to the terminal: builds are long and their messages are the user's.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tvm_pipeline.errors import UserError


@dataclass(frozen=True)
class ToolCommand:
    """One run of a platform tool: the command, where to run it, and how to get the tool when it is missing."""

    argv: list[str]
    install: str  # what to do when argv[0] is not on PATH: exact commands
    cwd: Path | None = None
    note: str = ""  # said before running (e.g. which west workspace is used)

    @property
    def tool(self) -> str:
        """The program the command runs."""
        return self.argv[0]


def require_tool(command: ToolCommand) -> str:
    """The tool's path on PATH, or UserError naming it and what installs it."""
    path = shutil.which(command.tool)
    if path is None:
        raise UserError(f"{command.tool} is not installed (not found on PATH). {command.install}")
    return path


def run_tool(command: ToolCommand) -> None:
    """Runs the command with the terminal as its output; a non-zero exit is a UserError (the output says why)."""
    require_tool(command)
    if command.note:
        print(command.note)
    print(f"$ {shlex.join(command.argv)}", flush=True)
    try:
        completed = subprocess.run(command.argv, cwd=command.cwd, check=False)
    except OSError as error:
        raise UserError(f"cannot run {command.tool}: {error}") from None
    if completed.returncode != 0:
        raise UserError(f"`{shlex.join(command.argv)}` failed with exit status {completed.returncode} (its output is "
                        "above)")  # fmt: skip

