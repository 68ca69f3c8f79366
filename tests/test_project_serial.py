"""The report a generated project prints, and `tvmp run --serial` reading it: the portable sample (tvmp_sample.c) runs
on the emulated board with a semihosting glue standing in for Zephyr's printk; its text is then written, the way a
board repeats it, into a pseudo-terminal that SerialRunner reads through pyserial."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tvm_pipeline.board.boards import BOARDS_DIR, load_board
from tvm_pipeline.board.firmware import COMMON_DIR, COMMON_FLAGS, FIRMWARE_FLAGS, Firmware, read_model_interface
from tvm_pipeline.board.runner import QemuRunner, RunError
from tvm_pipeline.board.serial_runner import SerialRunner, flashed_firmware
from tvm_pipeline.cli import main
from tvm_pipeline.errors import UserError
from tvm_pipeline.evaluate import evaluate, random_input
from tvm_pipeline.project import ProjectOptions, create_project
from tvm_pipeline.project.create import input_fnv1a32

pytest.importorskip("serial", reason="pyserial (requirements.txt) reads the serial port")

MODEL = "pool_linear"
BOARD = "stm32f746"
GLUE = Path(__file__).resolve().parent / "project_stubs" / "semihost_glue.c"


@pytest.fixture(scope="module")
def sample(compiled, tmp_path_factory):
    """(compiled folder, the QEMU run of a Zephyr project's sample sources with the semihosting glue)."""
    out = compiled(MODEL)
    root = tmp_path_factory.mktemp("sample")
    project = root / "project"
    create_project(out, project, ProjectOptions("zephyr", stack_bytes=4096))
    board = load_board(BOARD)
    elf = root / "sample.elf"
    command = ["arm-none-eabi-gcc", *COMMON_FLAGS, *FIRMWARE_FLAGS, *board.cpu_flags,
               f"-DTVMP_BOARD_MPU={int(board.mpu)}", f"-I{project / 'src'}", f"-I{project / 'model'}",
               f"-I{COMMON_DIR}", f"-L{BOARDS_DIR}",
               f"-T{board.linker_script}", *map(str, sorted((project / "model").glob("*.c"))),
               str(project / "src" / "tvmp_sample.c"), str(GLUE), str(COMMON_DIR / "startup.c"),
               str(COMMON_DIR / "semihost.c"), "-lm", "-o", str(elf)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    interface = read_model_interface(out)
    return out, QemuRunner(timeout_s=30).run(Firmware(elf, board, interface.output_dtype, interface.output_count, root))


@contextmanager
def board_on_a_pty(*reports: str, every_s: float = 0.05) -> Iterator[str]:
    """A pseudo-terminal whose other end prints `reports` (CRLF lines) over and over, like a board repeating its
    report; yields the port name to open."""
    master, slave = os.openpty()
    stop = threading.Event()

    def board() -> None:
        while not stop.is_set():
            for report in reports:
                os.write(master, report.replace("\n", "\r\n").encode())
                time.sleep(every_s)

    thread = threading.Thread(target=board, daemon=True)
    thread.start()
    try:
        yield os.ttyname(slave)
    finally:
        stop.set()
        thread.join(timeout=5)
        os.close(master)
        os.close(slave)


def test_sample_report_on_the_emulated_board_matches_tvmp_run(sample):
    out, result = sample
    x = random_input(out)
    evaluation = evaluate(out, load_board(BOARD), x)
    assert result.output.tobytes() == np.asarray(evaluation.output, dtype=np.float32).tobytes()
    assert 0 < result.stack_peak_bytes < 4096
    lines = result.log.splitlines()
    assert lines[0] == f"TVMP-BEGIN model={MODEL}"
    assert lines[1] == f"TVMP-INPUT fnv1a32={input_fnv1a32(x):08x}"
    assert f"tvmp: {MODEL}: argmax {int(np.argmax(evaluation.output))}, unknown us, unknown cycles" in result.log
    assert lines[-1] == "TVMP-DONE status=0"


def test_tvmp_run_serial_reads_the_board_through_the_runner_interface(sample, capsys):
    out, result = sample
    with board_on_a_pty("boot banner\n", result.log) as port:
        assert main(["run", str(out), "--serial", port, "--json", "--timeout", "20"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["within_tolerance"] is True
    assert figures["stack_peak_bytes"] == result.stack_peak_bytes
    assert figures["board_micros"] is None and figures["instructions"] is None
    assert figures["flash_bytes"] is None  # nothing built here: the board's own firmware is not measured


def test_a_report_cut_by_opening_the_port_late_is_skipped(sample, tmp_path):
    out, result = sample
    cut = "\n".join(line for line in result.log.splitlines() if line.startswith("TVMP-OUT ")) + "\nTVMP-DONE status=7\n"
    firmware = flashed_firmware(out, load_board(BOARD), tmp_path)
    with board_on_a_pty(cut, result.log.replace("TVMP-MICROS unknown", "TVMP-MICROS 1234")) as port:
        runner = SerialRunner(port, timeout_s=20, expected_input=random_input(out))
        read = runner.run(firmware)
    assert read.output.tobytes() == result.output.tobytes()
    assert runner.last_timing.micros == 1234 and runner.last_timing.cycles is None


def test_a_board_running_another_input_is_refused(sample, tmp_path):
    out, result = sample
    firmware = flashed_firmware(out, load_board(BOARD), tmp_path)
    with board_on_a_pty(result.log) as port, pytest.raises(RunError, match="ran another input"):
        SerialRunner(port, timeout_s=20, expected_input=random_input(out, seed=1)).run(firmware)


@pytest.mark.parametrize(
    ("text", "match"),
    [("booting\n", "no whole report"), ("*** Booting Zephyr OS\n>>> ZEPHYR FATAL ERROR 0: CPU exception\n", "fatal")],
)
def test_silence_or_a_crash_ends_in_a_run_error(sample, tmp_path, text, match):
    out, _ = sample
    with board_on_a_pty(text) as port, pytest.raises(RunError, match=match):
        SerialRunner(port, timeout_s=1).run(flashed_firmware(out, load_board(BOARD), tmp_path))


def test_missing_pyserial_is_named_with_its_pin(sample, monkeypatch, tmp_path):
    out, _ = sample
    monkeypatch.setitem(sys.modules, "serial", None)  # import serial -> ImportError
    with pytest.raises(UserError, match="pyserial==3.5"):
        SerialRunner("/dev/ttyACM0", timeout_s=1).run(flashed_firmware(out, load_board(BOARD), tmp_path))


def test_serial_and_host_exclude_each_other(sample, capsys):
    out, _ = sample
    assert main(["run", str(out), "--serial", "/dev/ttyACM0", "--host"]) == 2
    assert "give one of them" in capsys.readouterr().err
