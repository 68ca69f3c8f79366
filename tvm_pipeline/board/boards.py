"""Boards: the `boards/<name>.json` descriptions, loaded into `Board` values.

Each board is a real part (or a generic one) and the QEMU machine that stands in for it. The JSON holds the facts the
rest of the pipeline needs: compiler CPU flags, the real part's flash and RAM (which `boards/<name>.ld` enforces),
buffer alignment, how to turn SysTick ticks into instructions, and names for later Zephyr/Arduino project generation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tvm_pipeline.errors import InternalError, UserError

BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"


@dataclass(frozen=True)
class MemoryRegion:
    """One address range of a board: where it starts and how many bytes it has."""

    origin: int
    size: int

    def contains(self, address: int) -> bool:
        """Whether `address` lies inside this region."""
        return self.origin <= address < self.origin + self.size


#: Cortex-M cores whose gcc -mcpu defines __ARM_FEATURE_DSP.
_DSP_CPUS = ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55", "cortex-m85")


@dataclass(frozen=True)
class Board:
    """A target board as described by `boards/<name>.json`."""

    name: str
    description: str
    qemu_machine: str
    cpu_flags: tuple[str, ...]
    flash: MemoryRegion
    ram: MemoryRegion
    buffer_alignment: int
    # SysTick ticks -> guest instructions under `qemu -icount shift=0` (1 instruction = 1 ns): 1e9 / SysTick clock.
    instructions_per_tick: float
    zephyr_board: str | None
    arduino_fqbn: str | None
    mpu: bool

    @property
    def dsp(self) -> bool:
        """Whether the board's core has the DSP extension (SMLAD, SXTB16): Cortex-M4, M7, M33, M55, M85."""
        return any(flag in (f"-mcpu={cpu}" for cpu in _DSP_CPUS) for flag in self.cpu_flags)

    @property
    def linker_script(self) -> Path:
        """The board's linker script (MEMORY for this part, sections from boards/common/sections.ld)."""
        return BOARDS_DIR / f"{self.name}.ld"


def list_boards() -> list[str]:
    """Names of every board in the boards folder, sorted."""
    return sorted(path.stem for path in BOARDS_DIR.glob("*.json"))


def load_board(name: str) -> Board:
    """Loads `boards/<name>.json`; an unknown name raises UserError listing the boards there are."""
    path = BOARDS_DIR / f"{name}.json"
    if not path.is_file():
        raise UserError(f"unknown board {name!r}; choose one of: {', '.join(list_boards())}")
    return _board_from_json(json.loads(path.read_text()), path)


def _board_from_json(data: dict, path: Path) -> Board:
    # The JSON files ship with the package, so a malformed one is our bug, not the user's.
    try:
        board = Board(
            name=data["name"],
            description=data["description"],
            qemu_machine=data["qemu_machine"],
            cpu_flags=tuple(data["cpu_flags"]),
            flash=_region(data["flash"]),
            ram=_region(data["ram"]),
            buffer_alignment=int(data["buffer_alignment"]),
            instructions_per_tick=float(data["instructions_per_tick"]),
            zephyr_board=data.get("zephyr_board"),
            arduino_fqbn=data.get("arduino_fqbn"),
            mpu=bool(data["mpu"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise InternalError(f"{path}: malformed board description ({error!r})") from error
    if board.name != path.stem:
        raise InternalError(f"{path}: name {board.name!r} does not match the file name")
    if board.buffer_alignment not in (4, 8, 16, 32):
        raise InternalError(f"{path}: buffer_alignment {board.buffer_alignment} is not 4, 8, 16 or 32")
    return board


def _region(data: dict) -> MemoryRegion:
    # Origins are written as hex strings ("0x20000000") because JSON has no hex numbers.
    origin = data["origin"]
    return MemoryRegion(origin=int(origin, 0) if isinstance(origin, str) else int(origin), size=int(data["size"]))
