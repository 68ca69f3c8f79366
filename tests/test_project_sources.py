"""Zephyr and Arduino projects, which cannot be built here (no Zephyr, no Arduino cores): every C source they hold
except the platform glue compiles with arm-none-eabi-gcc for the board's CPU with -Wall -Wextra -Werror; the glue
is small, is the only code that uses a platform API, and compiles against stubs of the documented APIs (the Zephyr
CMakeLists.txt through a real CMake, the example sketch as C++)."""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tvm_pipeline.board.boards import load_board
from tvm_pipeline.project import ProjectOptions, create_project

MODEL = "pool_linear"
STUBS = Path(__file__).resolve().parent / "project_stubs"
#: Every board with a Zephyr board and an Arduino FQBN (generic-m7 has neither).
BOARDS = ["stm32f746", "stm32h743", "nrf52840", "cortex-m0"]
GLUE = {"zephyr": ["src/main.c"], "arduino": [f"examples/{MODEL}/{MODEL}.ino"]}
PLATFORM_INCLUDES = re.compile(r'#include\s*[<"](zephyr/|Arduino\.h)')
STRICT = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror"]


@pytest.fixture(scope="module")
def projects(compiled, tmp_path_factory):
    """`projects(platform, board) -> folder`, created once each (stack given: nothing to measure)."""
    root = tmp_path_factory.mktemp("projects")
    made: dict[tuple[str, str], Path] = {}

    def get(platform: str, board: str) -> Path:
        if (platform, board) not in made:
            folder = root / f"{platform}-{board}"
            create_project(compiled(MODEL), folder, ProjectOptions(platform, board=board, stack_bytes=4096))
            made[platform, board] = folder
        return made[platform, board]

    return get


def gcc(board: str, *arguments: str) -> None:
    command = ["arm-none-eabi-gcc", *load_board(board).cpu_flags, *arguments]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, f"$ {' '.join(command)}\n{completed.stderr}"


@pytest.mark.parametrize("board", BOARDS)
@pytest.mark.parametrize("platform", ["zephyr", "arduino"])
def test_sources_except_the_glue_compile_strictly_for_the_cpu(projects, tmp_path, platform, board):
    folder = projects(platform, board)
    sources = sorted(set(folder.rglob("*.c")) - {folder / glue for glue in GLUE[platform]})
    assert {path.name for path in sources} >= {"model.c", "kernels.c", "weights.c", "tvmp_sample.c"}
    includes = [f"-I{path}" for path in sorted({source.parent for source in sources})]
    for source in sources:
        gcc(board, *STRICT, *includes, "-c", str(source), "-o", str(tmp_path / f"{source.stem}.o"))


@pytest.mark.parametrize("platform", ["zephyr", "arduino"])
def test_the_glue_is_small_and_the_only_platform_code(projects, platform):
    folder = projects(platform, "stm32f746")
    users = sorted(str(path.relative_to(folder)) for path in folder.rglob("*")
                   if path.suffix in (".c", ".h", ".ino", ".cpp") and PLATFORM_INCLUDES.search(path.read_text()))
    assert users == GLUE[platform]
    for glue in GLUE[platform]:
        assert len((folder / glue).read_text().splitlines()) <= 60


@pytest.mark.parametrize("board", ["stm32f746", "cortex-m0"])
def test_zephyr_application_configures_and_compiles_with_cmake(projects, tmp_path, board):
    """CMakeLists.txt through CMake 3.2x against a stub Zephyr package: the model library and the app (glue
    included) compile with arm-none-eabi-gcc for the board's CPU, -Wall -Wextra -Werror."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    folder = projects("zephyr", board)
    build = tmp_path / "build"
    configure = ["cmake", "-S", str(folder), "-B", str(build), f"-DZephyr_DIR={STUBS / 'zephyr'}",
                 "-DCMAKE_SYSTEM_NAME=Generic", "-DCMAKE_C_COMPILER=arm-none-eabi-gcc",
                 "-DCMAKE_TRY_COMPILE_TARGET_TYPE=STATIC_LIBRARY",
                 f"-DSTUB_CPU_FLAGS={';'.join(load_board(board).cpu_flags)}"]  # fmt: skip
    for command in (configure, ["cmake", "--build", str(build)]):
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        assert completed.returncode == 0, completed.stdout + completed.stderr
    assert {path.name for path in build.rglob("*.a")} == {"libapp.a", "libtvmp_model.a"}


def test_arduino_sketch_and_header_compile_as_cpp(projects, tmp_path):
    folder = projects("arduino", "nrf52840")
    sketch = folder / "examples" / MODEL / f"{MODEL}.ino"
    command = ["arm-none-eabi-g++", *load_board("nrf52840").cpu_flags, "-std=gnu++17", "-Wall", "-Wextra", "-Werror",
               f"-I{STUBS / 'arduino'}", f"-I{folder / 'src'}", "-x", "c++", "-fsyntax-only", str(sketch)]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr


def test_arduino_library_zips_into_the_layout_lib_install_reads(projects, tmp_path):
    """`arduino-cli lib install --zip-path` takes a zip whose single top folder is the library."""
    folder = projects("arduino", "stm32f746")
    library = tmp_path / MODEL
    shutil.copytree(folder, library)
    archive = shutil.make_archive(str(tmp_path / MODEL), "zip", root_dir=tmp_path, base_dir=MODEL)
    names = set(zipfile.ZipFile(archive).namelist())
    assert {name.split("/")[0] for name in names} == {MODEL}
    for needed in ("library.properties", f"src/{MODEL}.h", f"examples/{MODEL}/{MODEL}.ino", "src/model.c"):
        assert f"{MODEL}/{needed}" in names
