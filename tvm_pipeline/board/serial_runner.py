"""Reads a real board's report from a serial port: the `Runner` for `tvmp run OUT/ --serial PORT`.

The board runs a project made by `tvmp project create` (Zephyr or Arduino), whose sample prints, every few seconds,

    TVMP-BEGIN model=<name>
    TVMP-INPUT fnv1a32=<hash of the input bytes>
    TVMP-OUTPUT ... / TVMP-OUT ... / TVMP-STACK ...   (as boards/common/harness.c prints them)
    TVMP-CYCLES <n>|unknown
    TVMP-MICROS <n>|unknown
    TVMP-DONE status=<s>

SerialRunner reads lines until a whole report (from TVMP-BEGIN, or a TVMP-OUTPUT line when the firmware prints no
BEGIN, to TVMP-DONE) has arrived, or the timeout passes, and hands it to `result_from_log` like the QEMU runner.
Nothing is built or flashed here (`runs_built_firmware = False`): flash with `tvmp project flash` first.
pyserial is imported only when a port is opened.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvm_pipeline.board.boards import Board
from tvm_pipeline.board.firmware import Firmware, read_model_interface
from tvm_pipeline.board.runner import DEFAULT_TIMEOUT_S, TAIL_CHARS, RunError, Runner, RunResult, result_from_log
from tvm_pipeline.errors import UserError

DEFAULT_BAUD = 115200
PYSERIAL_PIN = "pyserial==3.5"
#: Lines after which the board prints no report: Zephyr's and Mbed OS's fatal-error banners (and our FAULT: line).
FATAL_BANNERS = (">>> ZEPHYR FATAL ERROR", "++ MbedOS Fault Handler ++", "++ MbedOS Error Info ++")


@dataclass(frozen=True)
class BoardTiming:
    """What the board measured itself (None where it could not)."""

    cycles: int | None
    micros: int | None


class SerialRunner(Runner):
    """Reads one report from a board on a serial port; checks it was made from `expected_input` when given."""

    runs_built_firmware = False

    def __init__(self, port: str, baud: int = DEFAULT_BAUD, timeout_s: float = DEFAULT_TIMEOUT_S,
                 expected_input: np.ndarray | None = None) -> None:  # fmt: skip
        self.port = port
        self.baud = baud
        self.timeout_s = timeout_s
        self.expected_input = expected_input
        self.last_timing: BoardTiming | None = None

    def run(self, firmware: Firmware) -> RunResult:
        """Waits for a whole report on the port and parses it; RunError on a timeout or a fatal-error line."""
        where = f"the board on {self.port}"
        log = self._read_report(where)
        self._check_input(log, where)
        self.last_timing = board_timing(log)
        return result_from_log(log, 0, firmware, where, None)

    def _read_report(self, where: str) -> str:
        connection = _open(self.port, self.baud)
        lines: list[str] = []
        report: list[str] | None = None
        pending = b""
        deadline = time.monotonic() + self.timeout_s
        try:
            while time.monotonic() < deadline:
                pending += connection.read(max(1, connection.in_waiting))
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    line = raw.decode("utf-8", errors="replace").rstrip("\r")
                    lines.append(line)
                    if line.startswith("FAULT:") or any(banner in line for banner in FATAL_BANNERS):
                        raise RunError(f"{where} reported a fatal error: {line}\n{_tail(lines)}", "\n".join(lines))
                    if line.startswith("TVMP-BEGIN") or (line.startswith("TVMP-OUTPUT") and report is None):
                        report = []
                    if report is not None:
                        report.append(line)
                        if line.startswith("TVMP-DONE"):
                            return "\n".join(report) + "\n"
                    elif line.startswith("TVMP-DONE"):
                        report = None  # the port opened in the middle of a report: wait for the next one
        finally:
            connection.close()
        raise RunError(
            f"no whole report from {where} within {self.timeout_s:g} s. Is the board flashed with the project "
            f"(`tvmp project flash`), the port right and the baud rate {self.baud}? A board prints a report every "
            f"5 s; pressing its reset button starts one. Last output:\n{_tail(lines) or '(none)'}",
            "\n".join(lines),
        )

    def _check_input(self, log: str, where: str) -> None:
        if self.expected_input is None:
            return
        from tvm_pipeline.project.create import input_fnv1a32

        match = re.search(r"^TVMP-INPUT fnv1a32=([0-9a-f]{8})$", log, re.MULTILINE)
        expected = f"{input_fnv1a32(self.expected_input):08x}"
        if match is not None and match.group(1) != expected:
            raise RunError(
                f"{where} ran another input (hash {match.group(1)}, expected {expected}): give `tvmp run` the --input "
                "that `tvmp project create` was given (none: both use the seeded random input)",
                log,
            )


def board_timing(log: str) -> BoardTiming:
    """The TVMP-CYCLES and TVMP-MICROS figures of a report."""
    figures = {}
    for name in ("CYCLES", "MICROS"):
        match = re.search(rf"^TVMP-{name} (\d+|unknown)$", log, re.MULTILINE)
        figures[name] = int(match.group(1)) if match and match.group(1) != "unknown" else None
    return BoardTiming(figures["CYCLES"], figures["MICROS"])


def flashed_firmware(model_dir: Path, board: Board, build_dir: Path) -> Firmware:
    """What a serial runner needs of a firmware it does not build: the output's dtype and count (from model.h and
    model.json); `path` is the compiled folder, since the program itself is on the board."""
    interface = read_model_interface(Path(model_dir))
    return Firmware(Path(model_dir), board, interface.output_dtype, interface.output_count, Path(build_dir))


def _open(port: str, baud: int):
    try:
        import serial
    except ImportError:
        raise UserError(f"reading a serial port needs pyserial: .venv/bin/pip install {PYSERIAL_PIN}") from None
    try:
        return serial.serial_for_url(port, baudrate=baud, timeout=0.1)
    except (serial.SerialException, ValueError) as error:
        raise UserError(f"cannot open serial port {port}: {error}") from None


def _tail(lines: list[str]) -> str:
    return "\n".join(lines)[-TAIL_CHARS:]
