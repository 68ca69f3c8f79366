"""Finds the external programs the board stage runs: arm-none-eabi-gcc/size/nm, qemu-system-arm and the host gcc.

A missing one raises UserError with the command that installs it.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tvm_pipeline.errors import UserError

INSTALL_COMMAND = (
    "sudo apt-get install --no-install-recommends gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
)


@dataclass(frozen=True)
class ArmToolchain:
    """Paths of the GNU Arm Embedded tools the firmware build and ELF measurement use."""

    gcc: Path
    size: Path
    nm: Path


@functools.cache
def find_arm_toolchain() -> ArmToolchain:
    """Locates arm-none-eabi-gcc, -size and -nm, and checks newlib (nano.specs) is installed beside them."""
    toolchain = ArmToolchain(
        gcc=_require("arm-none-eabi-gcc"), size=_require("arm-none-eabi-size"), nm=_require("arm-none-eabi-nm")
    )
    # gcc answers a bare name when it cannot find the file: then libnewlib-arm-none-eabi is missing.
    specs = subprocess.run(
        [toolchain.gcc, "-print-file-name=nano.specs"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not Path(specs).is_file():
        raise UserError(f"newlib for arm-none-eabi-gcc (nano.specs) is missing; install it with: {INSTALL_COMMAND}")
    return toolchain


@functools.cache
def find_qemu() -> Path:
    """Locates qemu-system-arm."""
    return _require("qemu-system-arm")


@functools.cache
def find_host_gcc() -> Path:
    """Locates the host C compiler used for the host build of the harness."""
    path = shutil.which("gcc")
    if path is None:
        raise UserError("gcc (the host C compiler) was not found on PATH; install it with: sudo apt-get install gcc")
    return Path(path)


def _require(program: str) -> Path:
    path = shutil.which(program)
    if path is None:
        raise UserError(f"{program} was not found on PATH; install it with: {INSTALL_COMMAND}")
    return Path(path)
