"""Print our measured memory next to TensorFlow Lite Micro's arena for the MLPerf Tiny models (a table, not a test).

TFLM side (the `tflite-micro` PyPI package, run on this x86-64 host): the smallest `arena_size` with which its
interpreter allocates and invokes the model (binary search to 16 B), and its RecordingMicroAllocator report
(`print_allocations()`: total = head, the tensor plan, + tail, persistent data). A 32-bit part needs slightly less
persistent data; neither figure includes TFLM's stack or static data.

Our side, for the .onnx and the .tflite file of each model: `compile_model` for stm32f746 (generic-m7 where the
model does not fit it), then one run on the emulated board: peak SRAM = .data + .bss (arena included) + measured
stack, the arena alone, and flash, all from the ELF and the run. The "our kernels" column says what the int8 models
became: "int8" (integer kernels only), "fake-quant float32" (TVM's QDQ import left as float kernels on float32
weights), or "mixed"; a model that does not compile says "pending int8 support". Numerics: the largest difference
from the file's own runtime (onnxruntime for .onnx, TFLM for an int8 .tflite, LiteRT's reference kernels for a
float one) over 4 seeded random inputs (the board run and 3 host runs of the same C). A model that does not fit the
STM32F746 says so under its table, with whether TFLM could hold it there (its .tflite alone against the board's
flash).

    .venv/bin/python bench/vs_tflm.py [--models DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvm_pipeline.board.boards import load_board
from tvm_pipeline.compiler import CompileOptions, compile_model
from tvm_pipeline.errors import UserError
from tvm_pipeline.evaluate import evaluate, random_input
from tvm_pipeline.data.mlperf import models_dir

MODELS = models_dir()
INT8_MODELS = ("pretrainedResnet_quant", "vww_96_int8", "kws_ref_model", "ad01_int8")
FLOAT_MODELS = ("pretrainedResnet", "vww_96_float", "ad01_fp32")
BOARDS = ("stm32f746", "generic-m7")  # the first one the model fits
ARENA_STEP = 16
PENDING = "pending int8 support"
CHECK_INPUTS = 4  # seeded random inputs each model's numerics are checked on (the first one on the board)


@dataclass(frozen=True)
class TflmArena:
    """TFLM's arena for one model: the smallest size that works, and its recording allocator's breakdown."""

    min_arena_bytes: int
    recorded_total: int
    recorded_head: int
    recorded_tail: int


@dataclass(frozen=True)
class Ours:
    """Our figures for one model, measured on the emulated board."""

    board: str
    mode: str
    peak_sram_bytes: int
    arena_bytes: int
    flash_bytes: int
    max_abs_error: float
    max_rel_error: float
    skipped: tuple[str, ...] = ()  # boards tried first and why the model did not fit them


@contextmanager
def _stderr_to(lines: list[str]):
    """Collect what C++ code writes to file descriptor 2 (TFLM prints its reports and errors there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


def _tflm_runs(model: bytes, arena_size: int) -> bool:
    from tflite_micro.python.tflite_micro import runtime

    try:
        interpreter = runtime.Interpreter.from_bytes(model, arena_size=arena_size)
        detail = interpreter.get_input_details(0)
        interpreter.set_input(np.zeros(detail["shape"], detail["dtype"]), 0)
        interpreter.invoke()
        return True
    except RuntimeError:
        return False


def tflm_arena(path: Path) -> TflmArena:
    """Binary search for the smallest working `arena_size`, then read `print_allocations()` at that size."""
    from tflite_micro.python.tflite_micro import runtime

    model = path.read_bytes()
    lo, hi = 0, 16 * 1024  # lo fails, hi works
    with _stderr_to([]):  # TFLM prints one "Failed to resize buffer" line per failing try
        while not _tflm_runs(model, hi):
            lo, hi = hi, hi * 2
        while hi - lo > ARENA_STEP:
            mid = (lo + hi) // 2 // ARENA_STEP * ARENA_STEP
            lo, hi = (lo, mid) if _tflm_runs(model, mid) else (mid, hi)
    report: list[str] = []
    with _stderr_to(report):
        interpreter = runtime.Interpreter.from_bytes(model, arena_size=hi)
        detail = interpreter.get_input_details(0)
        interpreter.set_input(np.zeros(detail["shape"], detail["dtype"]), 0)
        interpreter.invoke()
        interpreter.print_allocations()
    figures = {m.group(1): int(m.group(2)) for m in
               (re.search(r"Arena allocation (total|head|tail) (\d+) bytes", line) for line in report) if m}
    return TflmArena(hi, figures["total"], figures["head"], figures["tail"])


def _kernel_kind(program) -> str:
    """float32 / int8 / fake-quant float32 / mixed, from the input's type and the weights' element types."""
    if program.tensors[program.input].dtype == "float32":
        return "float32"
    kinds = {c.dtype.kind for c in program.constants.values() if c.size > 1}
    if "f" not in kinds:
        return "int8"
    return "mixed int8 + fake-quant float32" if kinds - {"f"} else "fake-quant float32"


def ours(path: Path, work: Path) -> Ours | str:
    """Compile for the first board in BOARDS the model fits and run it there; a string says why not."""
    reason, skipped = "", []
    for board_name in BOARDS:
        out = work / f"{path.name}.{board_name}"
        try:
            result = compile_model(path, out, CompileOptions(board=board_name))
        except UserError as err:
            reason = str(err).splitlines()[0]
            if "does not fit" in reason:
                skipped.append(f"{board_name}: {reason.rstrip('.')}")
                continue
            return reason
        mode = _kernel_kind(result.program)
        run = evaluate(out, load_board(board_name), random_input(out))
        # numerics on more inputs, built for the host (bit-identical C, much faster than QEMU)
        host = [evaluate(out, None, random_input(out, seed)) for seed in range(1, CHECK_INPUTS)]
        return Ours(board_name, mode, run.peak_sram_bytes, run.arena_bytes, run.flash_bytes,
                    max([run.max_abs_error] + [h.max_abs_error for h in host]),
                    max([run.max_rel_error] + [h.max_rel_error for h in host]), tuple(skipped))
    return reason


def _does_not_fit(path: Path, tflite: Path, got: Ours | str) -> list[str]:
    """A line saying that `path` did not fit the first board, and whether TFLM's flatbuffer (`tflite`) alone would."""
    if isinstance(got, str) or not got.skipped:
        return []
    flash = load_board(BOARDS[0]).flash.size
    size = tflite.stat().st_size
    tflm = "nor could TFLM hold it there" if size > flash else "TFLM's flatbuffer would fit"
    return [f"{path.name}: {'; '.join(got.skipped)}; its .tflite is {_n(size)} B against {BOARDS[0]}'s "
            f"{_n(flash)} B flash: {tflm} (measured on {got.board} instead)"]


def _n(n: int) -> str:
    return f"{n:,}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def int8_table(models: Path, work: Path) -> str:
    header = ["model", "TFLM min arena", "TFLM recorded (plan+persistent)", "ours peak SRAM",
              "ours arena", "peak/TFLM", "our flash", ".tflite size", "flash/.tflite", "board", "our kernels",
              "max |err| vs its runtime (LSB, 4 inputs)"]
    rows, notes = [], []
    for name in INT8_MODELS:
        tflite = models / f"{name}.tflite"
        tflm = tflm_arena(tflite)
        size = tflite.stat().st_size
        for path in (models / f"{name}.onnx", tflite):
            row = [path.name, _n(tflm.min_arena_bytes),
                   f"{_n(tflm.recorded_total)} ({_n(tflm.recorded_head)}+{_n(tflm.recorded_tail)})"]
            got = ours(path, work)
            notes += _does_not_fit(path, tflite, got)
            if isinstance(got, str):
                row += [PENDING] * 2 + ["-"] * 2 + [_n(size)] + ["-", "-", PENDING, "-"]
            else:
                row += [_n(got.peak_sram_bytes), _n(got.arena_bytes),
                        f"{got.peak_sram_bytes / tflm.min_arena_bytes:.2f}x", _n(got.flash_bytes), _n(size),
                        f"{got.flash_bytes / size:.2f}x", got.board, got.mode, f"{got.max_abs_error:g}"]
            rows.append(row)
    return "\n".join([_table(header, rows), *notes])


def float_table(models: Path, work: Path) -> str:
    header = ["model", "board", "ours peak SRAM", "ours arena", "TFLM min arena", "peak/TFLM", "our flash",
              "model file", "flash/file", "max rel error (4 inputs)"]
    rows, notes = [], []
    for name in FLOAT_MODELS:
        tflm = tflm_arena(models / f"{name}.tflite")
        for suffix in (".onnx", ".tflite"):
            path = models / f"{name}{suffix}"
            got = ours(path, work)
            notes += _does_not_fit(path, models / f"{name}.tflite", got)
            if isinstance(got, str):
                rows.append([path.name, got] + ["-"] * 8)
                continue
            rows.append([path.name, got.board, _n(got.peak_sram_bytes), _n(got.arena_bytes),
                         _n(tflm.min_arena_bytes), f"{got.peak_sram_bytes / tflm.min_arena_bytes:.2f}x",
                         _n(got.flash_bytes), _n(path.stat().st_size), f"{got.flash_bytes / path.stat().st_size:.2f}x",
                         f"{got.max_rel_error:.1e}"])
    return "\n".join([_table(header, rows), *notes])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=MODELS, help="folder of the MLPerf Tiny .tflite/.onnx files")
    args = parser.parse_args()
    if not args.models.is_dir():
        print(f"no models folder at {args.models}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tvmp-vs-tflm-") as work:
        print("int8 models: TFLM arena (x86-64 host) vs ours measured on the emulated board (bytes)")
        print(int8_table(args.models, Path(work)))
        print()
        print("float32 models: ours measured on the emulated board vs TFLM arena of the .tflite (bytes)")
        print(float_table(args.models, Path(work)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
