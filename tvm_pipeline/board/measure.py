"""Static memory figures of a built firmware, read from its ELF with arm-none-eabi-size and -nm.

static RAM = .data + .bss (everything placed in RAM before the stack, the model arena and the harness buffers
included); flash = .isr_vector + .text + .rodata + .ARM.extab + .ARM.exidx + the .data load image. The section names
are the ones boards/common/sections.ld defines.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tvm_pipeline.board.firmware import Firmware
from tvm_pipeline.board.toolchain import find_arm_toolchain
from tvm_pipeline.errors import InternalError

RAM_SECTIONS = (".data", ".bss")
FLASH_SECTIONS = (".isr_vector", ".text", ".rodata", ".ARM.extab", ".ARM.exidx", ".data")
ARENA_SYMBOL = "model_arena"
NOT_ON_TARGET = (".debug", ".comment", ".ARM.attributes")


@dataclass(frozen=True)
class FirmwareSizes:
    """Bytes a firmware needs: static RAM, flash, and the model's arena (None when the ELF has no such symbol)."""

    static_ram_bytes: int
    flash_bytes: int
    arena_bytes: int | None
    sections: dict[str, int]


def measure_firmware(firmware: Firmware, arena_symbol: str = ARENA_SYMBOL) -> FirmwareSizes:
    """Measures a board firmware (not a host build)."""
    if firmware.board is None:
        raise InternalError("measure_firmware needs a board firmware; host executables are not measured")
    return measure_elf(firmware.path, arena_symbol)


def measure_elf(elf: Path, arena_symbol: str = ARENA_SYMBOL) -> FirmwareSizes:
    """Section sizes of `elf` summed into static RAM and flash, plus the size of `arena_symbol`."""
    sections = section_sizes(elf)
    if ".text" not in sections:
        raise InternalError(f"{elf} has no .text section: not a firmware built with boards/common/sections.ld")
    return FirmwareSizes(
        static_ram_bytes=sum(sections.get(name, 0) for name in RAM_SECTIONS),
        flash_bytes=sum(sections.get(name, 0) for name in FLASH_SECTIONS),
        arena_bytes=symbol_size(elf, arena_symbol),
        sections=sections,
    )


def section_sizes(elf: Path) -> dict[str, int]:
    """The sections of `elf` that occupy the target's memory (debug and note sections left out), with their sizes
    in bytes, from `arm-none-eabi-size -A`."""
    listing = _run([str(find_arm_toolchain().size), "-A", "-d", str(elf)])
    sizes: dict[str, int] = {}
    # Rows are "<name> <size> <address>"; the header, the "Total" row and blank lines do not fit that shape.
    for row in listing.splitlines():
        fields = row.split()
        if len(fields) == 3 and fields[0].startswith(".") and fields[1].isdigit():
            if not fields[0].startswith(NOT_ON_TARGET):
                sizes[fields[0]] = int(fields[1])
    return sizes


def symbol_size(elf: Path, name: str) -> int | None:
    """Size in bytes of the symbol `name` (local or global), or None when `elf` has none."""
    listing = _run([str(find_arm_toolchain().nm), "-S", str(elf)])
    sizes = []
    # Rows with a size are "<address> <size> <type> <name>" (hex); symbols without a size have three fields.
    for row in listing.splitlines():
        fields = row.split()
        if len(fields) == 4 and fields[3] == name:
            sizes.append(int(fields[1], 16))
    if len(sizes) > 1:
        raise InternalError(f"{elf} has {len(sizes)} symbols named {name!r}; cannot tell which one is meant")
    return sizes[0] if sizes else None


def _run(command: list[str]) -> str:
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise InternalError(f"$ {' '.join(command)} failed:\n{completed.stderr}")
    return completed.stdout
