"""Builds a compiled model folder into a program that runs it once: firmware for a board, or a host executable.

Both builds compile every `*.c` of the model folder with `boards/common/harness.c` and a generated `input_data.h`
(the input as exact C literals, `static const` so it stays in flash). The firmware adds startup.c/semihost.c, the
board's CPU flags and linker script. `-ffp-contract=off` on both keeps float results bit-identical between them.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvm_pipeline.board.boards import BOARDS_DIR, Board
from tvm_pipeline.board.toolchain import find_arm_toolchain, find_host_gcc
from tvm_pipeline.errors import InternalError, UserError

COMMON_DIR = BOARDS_DIR / "common"
# -O3, not -O2: measured on the emulated F746 it runs the MLPerf Tiny int8 models in 0.37x (IC), 0.77x (VWW) and
# 0.78x (KWS) of -O2's instructions for 3-4 KB more flash and <= 128 B more stack (the kernels' loops unroll).
COMMON_FLAGS = ["-O3", "-std=gnu11", "-ffp-contract=off", "-g"]
FIRMWARE_FLAGS = [
    "-ffunction-sections",
    "-fdata-sections",
    "-Wl,--gc-sections",
    "-nostartfiles",
    "--specs=nano.specs",
    "--specs=nosys.specs",
]
# C element types the harness supports, as model.h spells them and as model.json names them.
C_TYPES = {
    "float": "float32",
    "int8_t": "int8",
    "uint8_t": "uint8",
    "int16_t": "int16",
    "uint16_t": "uint16",
    "int32_t": "int32",
    "uint32_t": "uint32",
}
VALUES_PER_LINE = 8


@dataclass(frozen=True)
class ModelInterface:
    """What the harness needs to know about a compiled model: element types and counts of its input and output."""

    input_dtype: np.dtype
    input_count: int
    output_dtype: np.dtype
    output_count: int


@dataclass(frozen=True)
class Firmware:
    """A built program: an ELF for `board`, or a host executable when `board` is None."""

    path: Path
    board: Board | None
    output_dtype: np.dtype
    output_count: int
    build_dir: Path


def build_firmware(model_dir: Path, board: Board, input: np.ndarray, build_dir: Path) -> Firmware:
    """Compiles the model folder, the harness and the start-up code into `build_dir/app.elf` for `board`.

    Raises UserError when the program does not fit the board (bytes needed vs available) or the input does not match
    the model; InternalError when the C does not compile.
    """
    interface, sources = _prepare(model_dir, input, build_dir)
    sources += sorted(model_dir.glob("*.o"))  # kernels built by TVM's LLVM backend for the board (--codegen llvm)
    toolchain = find_arm_toolchain()
    elf = build_dir / "app.elf"
    command = [
        str(toolchain.gcc),
        *COMMON_FLAGS,
        *FIRMWARE_FLAGS,
        *board.cpu_flags,
        f"-DTVMP_BOARD_MPU={int(board.mpu)}",
        f"-I{build_dir}",
        f"-I{model_dir}",
        f"-I{COMMON_DIR}",
        # INCLUDE common/sections.ld in the board script is found through -L.
        f"-L{BOARDS_DIR}",
        f"-T{board.linker_script}",
        f"-Wl,-Map={build_dir / 'app.map'}",
        *map(str, sources),
        str(COMMON_DIR / "harness.c"),
        str(COMMON_DIR / "startup.c"),
        str(COMMON_DIR / "semihost.c"),
        "-lm",
        "-o",
        str(elf),
    ]
    _compile(command, board, model_dir)
    return Firmware(elf, board, interface.output_dtype, interface.output_count, build_dir)


def build_host(model_dir: Path, input: np.ndarray, build_dir: Path) -> Firmware:
    """Compiles the model folder and the harness (-DTVMP_HOST) with the host gcc into `build_dir/app_host`."""
    interface, sources = _prepare(model_dir, input, build_dir)
    objects = sorted(p.name for p in model_dir.glob("*.o"))
    if objects:
        raise UserError(f"{model_dir} holds {', '.join(objects)}, kernels built by LLVM for the board's CPU "
                        "(--codegen llvm): run it on the board, or compile with --codegen c for the host")
    executable = build_dir / "app_host"
    command = [
        str(find_host_gcc()),
        *COMMON_FLAGS,
        "-DTVMP_HOST",
        f"-I{build_dir}",
        f"-I{model_dir}",
        *map(str, sources),
        str(COMMON_DIR / "harness.c"),
        "-lm",
        "-o",
        str(executable),
    ]
    _compile(command, None, model_dir)
    return Firmware(executable, None, interface.output_dtype, interface.output_count, build_dir)


def read_model_interface(model_dir: Path) -> ModelInterface:
    """Reads the element counts from model.h and the element types from model.json (else model.h, else float32)."""
    header_path = model_dir / "model.h"
    if not header_path.is_file():
        raise UserError(f"{model_dir} has no model.h: pass the folder written by `tvmp compile -o`")
    header = header_path.read_text()
    metadata_path = model_dir / "model.json"
    metadata = json.loads(metadata_path.read_text()) if metadata_path.is_file() else {}
    return ModelInterface(
        input_dtype=_element_dtype(header, metadata, "input"),
        input_count=_count_define(header, "MODEL_INPUT_COUNT", header_path),
        output_dtype=_element_dtype(header, metadata, "output"),
        output_count=_count_define(header, "MODEL_OUTPUT_COUNT", header_path),
    )


def write_input_header(path: Path, values: np.ndarray) -> None:
    """Writes `input_data.h`: the values as exact C literals in a flash-resident array (include after model.h)."""
    values = values.reshape(-1)
    literals = [_c_literal(value, values.dtype) for value in values]
    rows = [", ".join(literals[start : start + VALUES_PER_LINE]) for start in range(0, len(literals), VALUES_PER_LINE)]
    path.write_text(
        "/* Generated by tvm_pipeline.board.firmware: the model input, exact, in flash. Include after model.h. */\n"
        f'_Static_assert(MODEL_INPUT_COUNT == {values.size}, "input_data.h was written for another model");\n'
        f'_Static_assert(sizeof(model_input_t) == {values.dtype.itemsize}, "input_data.h element size differs");\n'
        "static const model_input_t input_data[MODEL_INPUT_COUNT] = {\n"
        + "".join(f"    {row},\n" for row in rows)
        + "};\n"
    )


def _prepare(model_dir: Path, input: np.ndarray, build_dir: Path) -> tuple[ModelInterface, list[Path]]:
    """Checks the input against the model, writes input_data.h and lists the model's C sources."""
    interface = read_model_interface(model_dir)
    values = np.asarray(input)
    if values.dtype != interface.input_dtype:
        raise UserError(
            f"input dtype {values.dtype} does not match the model's input type {interface.input_dtype}; "
            f"convert it first (input.astype(np.{interface.input_dtype}))"
        )
    if values.size != interface.input_count:
        raise UserError(
            f"input has {values.size} elements (shape {values.shape}) but the model takes MODEL_INPUT_COUNT = "
            f"{interface.input_count}; pass an input of the model's input shape"
        )
    sources = sorted(model_dir.glob("*.c"))
    if not sources:
        raise UserError(f"{model_dir} has no .c files: pass the folder written by `tvmp compile -o`")
    build_dir.mkdir(parents=True, exist_ok=True)
    write_input_header(build_dir / "input_data.h", values)
    return interface, sources


def _compile(command: list[str], board: Board | None, model_dir: Path) -> None:
    """Runs one compile-and-link command; turns a memory-region overflow into UserError, anything else into
    InternalError (the model folder is ours to get right)."""
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode == 0:
        return
    diagnostics = completed.stdout + completed.stderr
    if board is not None:
        overflows = re.findall(r"region `(\w+)' overflowed by (\d+) bytes", diagnostics)
        if overflows:
            raise UserError(_overflow_message(board, model_dir, overflows))
    raise InternalError(f"building {model_dir} failed:\n$ {' '.join(command)}\n{diagnostics[-4000:]}")


def _overflow_message(board: Board, model_dir: Path, overflows: list[tuple[str, str]]) -> str:
    stack_reserve = _stack_reserve_bytes()
    parts = []
    for region_name, overflow in overflows:
        region = board.ram if region_name == "RAM" else board.flash
        needed = region.size + int(overflow)
        what = (
            f".data + .bss including the model arena, plus {stack_reserve} bytes of minimum stack"
            if region_name == "RAM"
            else "code, weights and initialised data"
        )
        parts.append(f"{region_name} needs {needed} bytes ({what}) but has {region.size} ({overflow} over)")
    return (
        f"the model in {model_dir} does not fit board {board.name!r}: {'; '.join(parts)}. "
        "Choose a board with more memory (e.g. generic-m7) or make the model smaller"
    )


def _stack_reserve_bytes() -> int:
    """The guard plus minimum stack that sections.ld reserves after .bss (read from the script, its one home)."""
    script = (COMMON_DIR / "sections.ld").read_text()
    sizes = {name: int(value, 0) for name, value in re.findall(r"(__stack_\w+_size)\s*=\s*(\w+)\s*;", script)}
    return sizes["__stack_guard_size"] + sizes["__stack_min_size"]


def _count_define(header: str, name: str, header_path: Path) -> int:
    match = re.search(rf"^\s*#\s*define\s+{name}\s+(.+?)\s*(?://.*|/\*.*)?$", header, re.MULTILINE)
    if match is None:
        raise UserError(f"{header_path} does not #define {name}: it is not a compiled model header")
    try:
        return _integer_expression(match.group(1))
    except ValueError as error:
        raise UserError(f"{header_path}: {name} is {match.group(1)!r}, not an integer constant") from error


def _integer_expression(text: str) -> int:
    """Evaluates a C integer constant made of literals, + and * (e.g. `(1 * 3 * 32 * 32)`, `10u`)."""
    tree = ast.parse(re.sub(r"(?<=\d)[uUlL]+\b", "", text), mode="eval")

    def evaluate(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return evaluate(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            return evaluate(node.left) * evaluate(node.right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return evaluate(node.left) + evaluate(node.right)
        raise ValueError(f"unsupported expression {ast.dump(node)}")

    return evaluate(tree)


def _element_dtype(header: str, metadata: dict, direction: str) -> np.dtype:
    typedef = re.search(rf"typedef\s+([A-Za-z_][\w ]*?)\s+model_{direction}_t\s*;", header)
    header_dtype = None
    if typedef is not None:
        c_type = " ".join(typedef.group(1).split())
        if c_type not in C_TYPES:
            raise UserError(f"model_{direction}_t is {c_type!r}; the harness supports {', '.join(C_TYPES)}")
        header_dtype = np.dtype(C_TYPES[c_type])
    tensors = metadata.get(f"{direction}s")
    if not tensors:
        return header_dtype if header_dtype is not None else np.dtype("float32")
    if len(tensors) != 1:
        raise UserError(f"the model has {len(tensors)} {direction}s; the harness runs models with exactly one")
    metadata_dtype = np.dtype(tensors[0]["dtype"])
    if header_dtype is not None and header_dtype != metadata_dtype:
        raise InternalError(f"model.json says the {direction} is {metadata_dtype} but model.h says {header_dtype}")
    return metadata_dtype


def _c_literal(value: np.generic, dtype: np.dtype) -> str:
    """One value as a C literal that converts back to exactly the same bits."""
    if dtype == np.float32:
        return _float32_literal(value)
    if dtype.kind in "iu":
        number = int(value)
        if number == np.iinfo(dtype).min and dtype.kind == "i" and dtype.itemsize >= 4:
            return f"({number + 1} - 1)"  # -2147483648 is not an int literal in C: it is unary minus on a long
        return f"{number}u" if dtype.kind == "u" else str(number)
    raise InternalError(f"no C literal for dtype {dtype}")


def _float32_literal(value: np.float32) -> str:
    if np.isfinite(value):
        return float(value).hex() + "f"  # hex floats are exact; the f suffix keeps the constant single precision
    sign = "-" if np.signbit(value) else ""
    if np.isinf(value):
        return f"{sign}__builtin_inff()"
    bits = int(np.array(value, dtype=np.float32).view(np.uint32))
    quiet = bool(bits & 0x400000)
    payload = bits & 0x3FFFFF
    return f'{sign}__builtin_{"nanf" if quiet else "nansf"}("{payload:#x}")'
