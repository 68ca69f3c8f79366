"""`tvmp project create/build/flash`: the bare project builds and runs from a copy of its folder alone, bit-exact with
`tvmp run`; folders are written whole or not at all, never over an existing one without --force; missing platform
tools are named with what installs them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tvm_pipeline.board.boards import load_board
from tvm_pipeline.board.firmware import build_firmware, read_model_interface
from tvm_pipeline.board.runner import QemuRunner, parse_harness_log
from tvm_pipeline.cli import main
from tvm_pipeline.errors import UserError
from tvm_pipeline.evaluate import evaluate, random_input
from tvm_pipeline.project import ProjectOptions, create_project, project_command
from tvm_pipeline.project import zephyr as zephyr_platform

MODEL = "pool_linear"
BOARD = "stm32f746"


def harness_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("TVMP-", "FAULT:"))]


def test_bare_project_builds_and_runs_alone_matching_tvmp_run(compiled, tmp_path, capsys):
    out = compiled(MODEL)
    made = tmp_path / "made"
    assert main(["project", "create", str(out), str(made), "--platform", "bare"]) == 0
    alone = tmp_path / "elsewhere" / "copy"
    shutil.copytree(made, alone)
    shutil.rmtree(made)
    assert str(out) not in (alone / "Makefile").read_text()  # nothing points back at the compiled folder

    assert main(["project", "build", str(alone)]) == 0  # = make -C alone
    assert (alone / "build" / "app.elf").is_file()
    run = subprocess.run(["make", "-s", "run"], cwd=alone, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr

    # What `tvmp run` builds and runs for the same input: the same lines, so the same bits, ticks and stack.
    x = random_input(out)
    board = load_board(BOARD)
    reference = QemuRunner().run(build_firmware(out, board, x, tmp_path / "tvmp-run"))
    assert harness_lines(run.stdout) == harness_lines(reference.log)
    report = parse_harness_log(run.stdout, read_model_interface(out).output_dtype)
    evaluation = evaluate(out, board, x)
    expected = np.asarray(evaluation.output, dtype=np.float32)  # float32 -> float64 -> float32 is exact
    assert report.output.tobytes() == expected.tobytes()
    assert round(report.ticks * board.instructions_per_tick) == evaluation.instructions
    assert report.stack_peak_bytes == evaluation.stack_peak_bytes


def test_bare_project_does_not_flash(compiled, tmp_path):
    project = tmp_path / "bare"
    create_project(compiled(MODEL), project, ProjectOptions(platform="bare"))
    with pytest.raises(UserError, match="semihosting"):
        project_command("flash", project)


def test_existing_folder_is_kept_without_force_and_replaced_with_it(compiled, tmp_path, capsys):
    out = compiled(MODEL)
    project = tmp_path / "p"
    project.mkdir()
    (project / "mine.txt").write_text("keep me")
    create = ["project", "create", str(out), str(project), "--platform", "zephyr", "--stack-bytes", "4096"]
    assert main(create) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert sorted(path.name for path in project.iterdir()) == ["mine.txt"]

    assert main([*create, "--force"]) == 0
    assert not (project / "mine.txt").exists()
    assert (project / "CMakeLists.txt").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["p"]  # no temp or old folder left beside it


def test_a_failed_create_leaves_no_folder(compiled, tmp_path, monkeypatch):
    def broken_check(folder: Path) -> None:
        assert (folder / "prj.conf").is_file()  # the files were being written...
        raise RuntimeError("disk full")  # ...when something went wrong

    monkeypatch.setattr(zephyr_platform, "check_project", broken_check)
    with pytest.raises(RuntimeError, match="disk full"):
        create_project(compiled(MODEL), tmp_path / "p", ProjectOptions(platform="zephyr", stack_bytes=4096))
    assert list(tmp_path.iterdir()) == []


def test_project_folder_may_not_hold_the_compiled_folder(compiled):
    out = compiled(MODEL)
    with pytest.raises(UserError, match="compiled folder"):
        create_project(out, out.parent, ProjectOptions(platform="bare", force=True))


@pytest.mark.parametrize(
    ("platform", "tool", "install_words"),
    [
        ("zephyr", "west", ["pip install west", "west init", "west sdk install", "zephyr-env.sh"]),
        ("arduino", "arduino-cli", ["install.sh", "arduino-cli core install STMicroelectronics:stm32"]),
    ],
)
def test_build_without_the_platform_tool_says_what_to_install(
    compiled, tmp_path, monkeypatch, capsys, platform, tool, install_words
):
    project = tmp_path / platform
    create_project(compiled(MODEL), project, ProjectOptions(platform=platform, stack_bytes=4096))
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # whatever is installed on this machine, the tool is not on PATH
    assert main(["project", "build", str(project)]) == 2
    err = capsys.readouterr().err
    assert f"{tool} is not installed" in err
    for words in install_words:
        assert words in err


def test_build_commands_are_the_documented_ones(compiled, tmp_path, monkeypatch):
    out = compiled(MODEL)
    zephyr, arduino = tmp_path / "z", tmp_path / "a"
    create_project(out, zephyr, ProjectOptions(platform="zephyr", stack_bytes=4096))
    create_project(out, arduino, ProjectOptions(platform="arduino", board="nrf52840", stack_bytes=4096))
    monkeypatch.setenv("ZEPHYR_BASE", str(tmp_path / "zephyrproject" / "zephyr"))

    west = project_command("build", zephyr)
    assert west.argv == ["west", "build", "-b", "nucleo_f746zg", "-d", str(zephyr / "build/nucleo_f746zg"), str(zephyr)]
    assert west.cwd == tmp_path / "zephyrproject"  # west finds its workspace from the current folder
    emulator = project_command("build", zephyr, platform_board="qemu_cortex_m3")
    assert emulator.argv[2:4] == ["-b", "qemu_cortex_m3"]

    compile_ = project_command("build", arduino)
    fqbn = "arduino:mbed_nano:nano33ble"
    assert compile_.argv == ["arduino-cli", "compile", "--fqbn", fqbn, "--library", str(arduino),
                             "--build-path", str(arduino / "build"), str(arduino / "examples/pool_linear")]
    (arduino / "build").mkdir()
    upload = project_command("flash", arduino, port="/dev/ttyACM0")
    assert upload.argv[:6] == ["arduino-cli", "upload", "-p", "/dev/ttyACM0", "--fqbn", fqbn]
    with pytest.raises(UserError, match="--port"):
        project_command("flash", arduino)
    with pytest.raises(UserError, match="build first"):
        project_command("flash", zephyr)


def test_zephyr_stack_comes_from_the_measured_peak(compiled, tmp_path):
    out = compiled(MODEL)
    spec = create_project(out, tmp_path / "z", ProjectOptions(platform="zephyr"))
    peak = evaluate(out, load_board(BOARD), random_input(out)).stack_peak_bytes
    assert spec.stack_peak_bytes == peak
    assert spec.main_stack_bytes >= peak + peak // 2 + zephyr_platform.STACK_MARGIN_BYTES
    assert spec.main_stack_bytes % zephyr_platform.STACK_ALIGN == 0
    assert f"CONFIG_MAIN_STACK_SIZE={spec.main_stack_bytes}\n" in (tmp_path / "z" / "prj.conf").read_text()
    manifest = json.loads((tmp_path / "z" / "project.json").read_text())
    assert manifest["stack"]["measured_peak_bytes"] == peak
    assert manifest["platform_board"] == "nucleo_f746zg"


def test_boards_without_a_platform_name_are_refused(compiled, tmp_path):
    with pytest.raises(UserError, match="no Zephyr board"):
        create_project(compiled(MODEL), tmp_path / "z", ProjectOptions("zephyr", board="generic-m7", stack_bytes=4096))
    spec = create_project(compiled(MODEL), tmp_path / "q", ProjectOptions(
        "zephyr", board="generic-m7", platform_board="qemu_cortex_m3", stack_bytes=4096))
    assert spec.platform_board == "qemu_cortex_m3"
    assert not (tmp_path / "q" / "boards").exists()  # the emulated Cortex-M3 has no FPU to enable
