"""`--platform arduino`: an Arduino library (specification 1.5 format) around the compiled model, for the board's
FQBN (`arduino_fqbn` in boards/<name>.json, or --platform-board), installable with `arduino-cli lib install
--zip-path` once zipped with its folder at the top.

    library.properties  README.md  project.json
    src/                <name>.h (the library header), the compiled folder's .c/.h, tvmp_sample.c/.h,
                        tvmp_sample_config.h, input_data.h
    examples/<name>/<name>.ino   the only Arduino-specific source: one inference, the report over Serial
"""

from __future__ import annotations

import json
from pathlib import Path

from tvm_pipeline.board.boards import Board, list_boards, load_board
from tvm_pipeline.errors import InternalError, UserError
from tvm_pipeline.project.formats import check_library_properties, parse_properties
from tvm_pipeline.project.tools import ToolCommand
from tvm_pipeline.project.writer import Files, ProjectSpec, manifest, model_files, render, sample_files

PLATFORM = "arduino"
NEEDS_STACK = True  # measured for the README and the header (Arduino cores fix the stack size themselves)
LIBRARY_VERSION = "1.0.0"
LIBRARY_URL = "https://tvm.apache.org/"
#: Boards Manager index files of cores that are not Arduino's own, by FQBN vendor.
CORE_INDEX_URLS = {
    "STMicroelectronics":
        "https://github.com/stm32duino/BoardManagerFiles/raw/main/package_stmicroelectronics_index.json",
    "sandeepmistry": "https://sandeepmistry.github.io/arduino-nRF5/package_nRF5_boards_index.json",
}


def platform_board(board: Board) -> str:
    """The Arduino FQBN for ours, or UserError listing the boards that have one."""
    if board.arduino_fqbn:
        return board.arduino_fqbn
    mapped = [name for name in list_boards() if load_board(name).arduino_fqbn]
    raise UserError(
        f"board {board.name!r} has no Arduino FQBN; choose one of {', '.join(mapped)} with --board, or give an FQBN "
        "with --platform-board (e.g. arduino:mbed_nano:nano33ble)"
    )


def main_stack(stack_peak_bytes: int, board_name: str) -> tuple[None, str]:
    """Arduino cores size the main stack themselves: the measured peak is only reported."""
    return None, f"the stack peak measured on {board_name} under QEMU; the Arduino core sizes the stack itself"


def install_text(fqbn: str) -> str:
    """The exact commands that install arduino-cli and the core `fqbn` needs."""
    vendor, architecture = fqbn.split(":")[:2]
    urls = f" --additional-urls {CORE_INDEX_URLS[vendor]}" if vendor in CORE_INDEX_URLS else ""
    return (
        "Install arduino-cli (https://arduino.github.io/arduino-cli/latest/installation/) and the board's core:\n"
        "  curl -fsSL https://raw.githubusercontent.com/arduino/arduino-cli/master/install.sh"
        " | BINDIR=~/.local/bin sh\n"
        f"  arduino-cli core update-index{urls}\n"
        f"  arduino-cli core install {vendor}:{architecture}{urls}"
    )


def project_files(spec: ProjectSpec) -> Files:
    """The files of the library, by path relative to its folder."""
    fqbn = spec.platform_board
    assert fqbn is not None  # create_project resolves it
    if spec.name.lower().startswith("arduino"):
        raise UserError(f"library name {spec.name!r}: names starting with 'Arduino' are reserved; pass --name")
    metadata = json.loads((spec.model_dir / "model.json").read_text())
    shapes = "; ".join(f"{kind} {tensor['name']} {tensor['dtype']} {tensor['shape']}" for kind in ("input", "output")
                       for tensor in metadata[f"{kind}s"])  # fmt: skip
    vendor, architecture = fqbn.split(":")[:2]
    urls = f" --additional-urls {CORE_INDEX_URLS[vendor]}" if vendor in CORE_INDEX_URLS else ""
    stack_note = (
        f"{spec.stack_peak_bytes} B (measured on {spec.board.name} under QEMU, test harness included)"
        if spec.stack_peak_bytes is not None
        else "not measured"
    )
    return {
        "library.properties": render(
            "arduino/library.properties.in",
            NAME=spec.name,
            VERSION=LIBRARY_VERSION,
            SOURCE_MODEL=spec.source_model,
            PARAGRAPH=f"model_run(in, out) in model.h: {shapes}; arena {spec.arena_bytes} B of static RAM, no heap. "
            f"Example: examples/{spec.name} runs one inference and prints it over Serial.",
            URL=LIBRARY_URL,
        ),
        f"src/{spec.name}.h": render(
            "arduino/library_header.h.in",
            NAME=spec.name,
            SOURCE_MODEL=spec.source_model,
            GUARD=spec.name.upper(),
            STACK_NOTE=stack_note,
        ),
        **model_files(spec, "src"),
        **sample_files(spec, "src"),
        f"examples/{spec.name}/{spec.name}.ino": render("arduino/example.ino.in", NAME=spec.name),
        "README.md": render(
            "arduino/README.md.in",
            NAME=spec.name,
            BOARD=spec.board.name,
            FQBN=fqbn,
            MODEL_DIR=spec.model_dir,
            INPUT_ORIGIN=spec.input_origin,
            INPUT_OPTION=spec.input_option,
            CORE=f"{vendor}:{architecture}",
            ADDITIONAL_URLS=urls,
            CORE_URL_NOTE=" (a third-party core: hence --additional-urls)" if urls else "",
            ARENA_BYTES=spec.arena_bytes,
            STACK_NOTE=stack_note,
        ),
        **manifest(spec, PLATFORM, example=f"examples/{spec.name}"),
    }


def check_project(folder: Path) -> None:
    """library.properties against the specification; the header it names and the example sketch exist."""
    text = (folder / "library.properties").read_text()
    problems = [f"library.properties: {problem}" for problem in check_library_properties(text)]
    name = parse_properties(text).get("name") or ""
    for needed in (f"src/{name}.h", f"examples/{name}/{name}.ino"):
        if not (folder / needed).is_file():
            problems.append(f"{needed} is missing")
    if problems:
        raise InternalError(f"arduino library {folder} breaks the library specification:\n" + "\n".join(problems))


def build_command(folder: Path, project: dict, platform_board: str | None) -> ToolCommand:
    """`arduino-cli compile` of the example against this library folder (no install needed: --library)."""
    fqbn = platform_board or project["platform_board"]
    argv = ["arduino-cli", "compile", "--fqbn", fqbn, "--library", str(folder), "--build-path",
            str(folder / "build"), str(folder / project["example"])]  # fmt: skip
    return ToolCommand(argv, install=install_text(fqbn))


def flash_command(folder: Path, project: dict, platform_board: str | None, port: str | None) -> ToolCommand:
    """`arduino-cli upload -p PORT` of what `tvmp project build` compiled."""
    fqbn = platform_board or project["platform_board"]
    if not port:
        raise UserError("arduino-cli upload needs the board's port: pass --port (e.g. --port /dev/ttyACM0)")
    if not (folder / "build").is_dir():
        raise UserError(f"{folder / 'build'} does not exist: build first with `tvmp project build {folder}`")
    argv = ["arduino-cli", "upload", "-p", port, "--fqbn", fqbn, "--input-dir", str(folder / "build"),
            str(folder / project["example"])]  # fmt: skip
    return ToolCommand(argv, install=install_text(fqbn))
