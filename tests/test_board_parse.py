"""Pure parts of the board stage: board files, the harness-log parser, model.h reading, toolchain errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tvm_pipeline.board import toolchain
from tvm_pipeline.board.boards import BOARDS_DIR, list_boards, load_board
from tvm_pipeline.board.firmware import Firmware, read_model_interface, write_input_header
from tvm_pipeline.board.runner import RunError, parse_harness_log, result_from_log
from tvm_pipeline.errors import UserError

LOG = """\
some unrelated line
TVMP-OUTPUT count=3 element_bytes=4
TVMP-OUT 0 0000803f 000000c0 0000c07f
TVMP-TICKS 1234
TVMP-STACK 512
TVMP-DONE status=0
"""


@pytest.mark.parametrize("name", list_boards())
def test_board_json_agrees_with_its_linker_script(name: str) -> None:
    board = load_board(name)
    script = board.linker_script.read_text()
    lengths = dict(re.findall(r"(FLASH|RAM)\s*\([a-z]+\)\s*:\s*ORIGIN\s*=\s*\w+,\s*LENGTH\s*=\s*(\d+)K", script))
    assert int(lengths["FLASH"]) * 1024 == board.flash.size
    assert int(lengths["RAM"]) * 1024 == board.ram.size
    assert "INCLUDE common/sections.ld" in script
    assert board.buffer_alignment in (8, 16)
    assert board.mpu == ("cortex-m0" not in board.cpu_flags[0])


def test_boards_are_the_expected_set() -> None:
    assert list_boards() == ["cortex-m0", "generic-m7", "generic-m7-16mb", "nrf52840", "stm32f746", "stm32h743"]
    assert load_board("stm32f746").zephyr_board == "nucleo_f746zg"
    assert load_board("generic-m7").arduino_fqbn is None
    assert load_board("nrf52840").ram.origin == 0x20000000


def test_parse_harness_log_reads_every_line() -> None:
    report = parse_harness_log(LOG, np.dtype(np.float32))
    assert report.output.tolist()[:2] == [1.0, -2.0] and np.isnan(report.output[2])
    assert (report.ticks, report.stack_peak_bytes, report.status, report.fault) == (1234, 512, 0, None)


def test_parse_harness_log_is_byte_exact_for_int8() -> None:
    log = "TVMP-OUTPUT count=3 element_bytes=1\nTVMP-OUT 0 80 ff 7f\nTVMP-TICKS unknown\nTVMP-DONE status=-2\n"
    report = parse_harness_log(log, np.dtype(np.int8))
    assert report.output.tolist() == [-128, -1, 127]
    assert report.ticks is None and report.stack_peak_bytes is None and report.status == -2


def test_parse_harness_log_rejects_a_missing_output_line() -> None:
    log = LOG.replace("TVMP-OUTPUT count=3", "TVMP-OUTPUT count=11")
    assert parse_harness_log(log, np.dtype(np.float32)).output is None


def fake_firmware(output_count: int = 3) -> Firmware:
    return Firmware(Path("app"), load_board("stm32f746"), np.dtype(np.float32), output_count, Path("."))


def test_result_from_log_converts_ticks_to_instructions() -> None:
    result = result_from_log(LOG, 0, fake_firmware(), "test", 40)
    assert result.instructions == 1234 * 40 and result.stack_peak_bytes == 512


def test_result_from_log_raises_on_a_fault_and_on_a_missing_sentinel() -> None:
    fault_log = "TVMP-OUTPUT count=3 element_bytes=4\nFAULT: HardFault PC=0x00000123\n"
    with pytest.raises(RunError, match="faulted .*FAULT: HardFault PC=0x00000123"):
        result_from_log(fault_log, 250, fake_firmware(), "t", 40)
    with pytest.raises(RunError, match="exited with status 134 without printing TVMP-DONE"):
        result_from_log("qemu: fatal: Lockup\n", 134, fake_firmware(), "t", 40)
    with pytest.raises(RunError, match="printed 3 output elements, expected 4"):
        result_from_log(LOG, 0, fake_firmware(4), "t", 40)


def test_read_model_interface_accepts_expressions_and_prefers_model_json(tmp_path: Path) -> None:
    (tmp_path / "model.h").write_text(
        "#define MODEL_INPUT_COUNT (1 * 3 * 8 * 8)\n#define MODEL_OUTPUT_COUNT 10u  // classes\n"
        "typedef int8_t model_input_t;\ntypedef float model_output_t;\n"
    )
    interface = read_model_interface(tmp_path)
    assert (interface.input_count, interface.output_count) == (192, 10)
    assert (interface.input_dtype, interface.output_dtype) == (np.int8, np.float32)


def test_read_model_interface_needs_the_count_defines(tmp_path: Path) -> None:
    (tmp_path / "model.h").write_text("#define MODEL_INPUT_COUNT n\n")
    with pytest.raises(UserError, match="MODEL_INPUT_COUNT is 'n', not an integer constant"):
        read_model_interface(tmp_path)


def test_input_header_uses_exact_literals(tmp_path: Path) -> None:
    values = np.array([0.1, -0.0, np.inf], dtype=np.float32)
    write_input_header(tmp_path / "input_data.h", values)
    text = (tmp_path / "input_data.h").read_text()
    assert "0x1.99999a0000000p-4f, -0x0.0p+0f, __builtin_inff()" in text
    write_input_header(tmp_path / "input_data.h", np.array([-(2**31), 7], dtype=np.int32))
    assert "(-2147483647 - 1), 7" in (tmp_path / "input_data.h").read_text()


def test_missing_tool_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolchain.shutil, "which", lambda program: None)
    toolchain.find_qemu.cache_clear()
    try:
        with pytest.raises(UserError, match="qemu-system-arm was not found .*apt-get install --no-install-recommends"):
            toolchain.find_qemu()
    finally:
        toolchain.find_qemu.cache_clear()


def test_boards_dir_is_the_repository_folder() -> None:
    assert BOARDS_DIR == Path(__file__).resolve().parents[1] / "boards"
