"""Runs a built firmware once and reads back what the harness printed.

`QemuRunner` runs a board firmware on qemu-system-arm; `HostRunner` runs the host build. `SerialRunner`
(serial_runner.py), for a real board on a serial port, implements the same `Runner.run` and feeds the text it reads
to `result_from_log`, the one place that understands the harness's lines (see boards/common/harness.c):

    TVMP-OUTPUT count=<n> element_bytes=<k>
    TVMP-OUT <first index> <hex of element bytes> ...
    TVMP-TICKS <n>|unknown
    TVMP-STACK <n>|unknown
    TVMP-DONE status=<s>
    FAULT: <what> ...          (instead of the rest, when the firmware faults)
"""

from __future__ import annotations

import re
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from tvm_pipeline.board.firmware import Firmware
from tvm_pipeline.board.toolchain import find_qemu
from tvm_pipeline.errors import InternalError, UserError

DEFAULT_TIMEOUT_S = 120.0
TAIL_CHARS = 1500


class RunError(UserError):
    """The firmware hung, faulted, or did not finish cleanly; the message carries what it printed last."""

    def __init__(self, message: str, log: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        self.log = log
        self.exit_code = exit_code


@dataclass(frozen=True)
class RunResult:
    """One run of the harness: the model output (flat, the model's dtype) and what was measured."""

    output: np.ndarray
    instructions: int | None  # guest instructions spent in model_run (None on the host)
    stack_peak_bytes: int | None  # most stack ever used since reset (None on the host)
    exit_code: int
    log: str


@dataclass(frozen=True)
class HarnessReport:
    """The harness's lines, parsed; fields are None when their line is missing."""

    output: np.ndarray | None
    ticks: int | None
    stack_peak_bytes: int | None
    status: int | None
    fault: str | None


class Runner(ABC):
    """Runs a firmware once and returns its result; raises RunError when it hangs, faults or fails."""

    #: False for a runner that reads a real board, which runs what was flashed onto it: evaluate() then builds and
    #: measures nothing, and `Firmware` only tells the runner the output's dtype and element count.
    runs_built_firmware: bool = True

    @abstractmethod
    def run(self, firmware: Firmware) -> RunResult:
        """Runs `firmware` to completion."""


class QemuRunner(Runner):
    """Runs board firmware on qemu-system-arm with -icount shift=0, so the SysTick count is deterministic."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s

    def command(self, firmware: Firmware) -> list[str]:
        """The qemu-system-arm command line that runs `firmware`."""
        if firmware.board is None:
            raise InternalError("QemuRunner was given a host build; use HostRunner")
        return [str(find_qemu()), *qemu_arguments(firmware.board.qemu_machine), "-kernel", str(firmware.path)]

    def run(self, firmware: Firmware) -> RunResult:
        """Runs `firmware` under QEMU; instructions = SysTick ticks x the board's instructions_per_tick."""
        board = firmware.board
        assert board is not None  # command() has checked
        where = f"board {board.name} (qemu-system-arm -M {board.qemu_machine})"
        exit_code, log = _run_process(self.command(firmware), self.timeout_s, where)
        return result_from_log(log, exit_code, firmware, where, board.instructions_per_tick)


def qemu_arguments(machine: str) -> list[str]:
    """qemu-system-arm's arguments for a harness run on `machine`, all but `-kernel ELF` (also written into the
    Makefile of `tvmp project create --platform bare`)."""
    return [
        "-M", machine,
        "-nographic", "-monitor", "none", "-serial", "null",
        # Without the chardev, semihosting text goes to stderr.
        "-semihosting-config", "enable=on,target=native,chardev=shc", "-chardev", "stdio,id=shc",
        "-icount", "shift=0",
    ]  # fmt: skip


class HostRunner(Runner):
    """Runs the host build of the harness (same output lines, no ticks or stack figures)."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s

    def run(self, firmware: Firmware) -> RunResult:
        """Runs the host executable."""
        if firmware.board is not None:
            raise InternalError(f"HostRunner was given firmware for {firmware.board.name}; use QemuRunner")
        exit_code, log = _run_process([str(firmware.path)], self.timeout_s, "the host")
        return result_from_log(log, exit_code, firmware, "the host", None)


def result_from_log(
    log: str, exit_code: int, firmware: Firmware, where: str, instructions_per_tick: float | None
) -> RunResult:
    """Turns a finished run's text and exit code into a RunResult, or raises RunError saying what went wrong."""
    report = parse_harness_log(log, firmware.output_dtype)
    tail = log[-TAIL_CHARS:]
    if report.fault is not None:
        raise RunError(f"firmware on {where} faulted (exit status {exit_code}): {report.fault}\n{tail}", log, exit_code)
    if report.status is None:
        raise RunError(
            f"firmware on {where} exited with status {exit_code} without printing TVMP-DONE; last output:\n{tail}",
            log,
            exit_code,
        )
    if report.status != 0:
        raise RunError(f"model_run returned status {report.status} on {where}; last output:\n{tail}", log, exit_code)
    if exit_code != 0:
        raise RunError(f"firmware on {where} printed status 0 but exited with {exit_code}:\n{tail}", log, exit_code)
    if report.output is None or report.output.size != firmware.output_count:
        count = None if report.output is None else report.output.size
        raise RunError(
            f"firmware on {where} printed {count} output elements, expected {firmware.output_count}:\n{tail}",
            log,
            exit_code,
        )
    instructions = None
    if instructions_per_tick is not None and report.ticks is not None:
        instructions = round(report.ticks * instructions_per_tick)
    return RunResult(report.output, instructions, report.stack_peak_bytes, exit_code, log)


def parse_harness_log(log: str, dtype: np.dtype) -> HarnessReport:
    """Parses the harness's lines (any other lines are ignored). Output elements come back bit-exact as `dtype`."""
    count = None
    chunks: dict[int, bytes] = {}
    ticks = stack = status = fault = None
    for line in log.splitlines():
        line = line.strip()
        if line.startswith("FAULT:"):
            fault = fault or line
        elif match := re.fullmatch(r"TVMP-OUTPUT count=(\d+) element_bytes=(\d+)", line):
            count = int(match.group(1))
            if int(match.group(2)) != dtype.itemsize:
                raise InternalError(f"the harness prints {match.group(2)}-byte elements but the output is {dtype}")
        elif match := re.fullmatch(r"TVMP-OUT (\d+)((?: [0-9a-f]+)+)", line):
            chunks[int(match.group(1))] = bytes.fromhex(match.group(2).replace(" ", ""))
        elif match := re.fullmatch(r"TVMP-TICKS (\d+|unknown)", line):
            ticks = _figure(match.group(1))
        elif match := re.fullmatch(r"TVMP-STACK (\d+|unknown)", line):
            stack = _figure(match.group(1))
        elif match := re.fullmatch(r"TVMP-DONE status=(-?\d+)", line):
            status = int(match.group(1))
    return HarnessReport(_assemble_output(chunks, count, dtype), ticks, stack, status, fault)


def _figure(text: str) -> int | None:
    return None if text == "unknown" else int(text)


def _assemble_output(chunks: dict[int, bytes], count: int | None, dtype: np.dtype) -> np.ndarray | None:
    """Joins the TVMP-OUT lines in index order; None when a line is missing or the total is not `count` elements."""
    if count is None:
        return None
    data = b""
    for first in sorted(chunks):
        if first * dtype.itemsize != len(data):
            return None  # a line went missing
        data += chunks[first]
    if len(data) != count * dtype.itemsize:
        return None
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype)


def _run_process(command: list[str], timeout_s: float, where: str) -> tuple[int, str]:
    """Runs `command` with no input; returns (exit code, stdout + stderr), or raises RunError when it times out."""
    try:
        completed = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as timeout:
        log = _text(timeout.stdout) + _text(timeout.stderr)
        raise RunError(
            f"firmware on {where} timed out after {timeout_s:g} s and was stopped (a hang, or a model too slow for "
            f"the limit: raise the runner's timeout). Last output:\n{log[-TAIL_CHARS:] or '(none)'}",
            log,
        ) from None
    return completed.returncode, _text(completed.stdout) + _text(completed.stderr)


def _text(output: bytes | str | None) -> str:
    # TimeoutExpired carries bytes even in text mode, so decode here for both paths.
    if output is None:
        return ""
    return output if isinstance(output, str) else output.decode("utf-8", errors="replace")
