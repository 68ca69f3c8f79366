"""Run a compiled model folder on a board (or the host), check it against its reference, collect measured figures.

The reference is the source model copied into the folder (`model.json` "reference"), run by onnxruntime for
`reference.onnx` and by LiteRT's TFLite interpreter (`ai-edge-litert`) for `reference.tflite`.

Every memory figure comes from the built ELF (`measure.py`) and the run itself (stack high-water mark), never
from the planner's estimate; `arena_bytes` is the size of the `model_arena` symbol in the ELF.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tvm_pipeline.board.boards import Board
from tvm_pipeline.board.firmware import build_firmware, build_host
from tvm_pipeline.board.measure import measure_firmware
from tvm_pipeline.board.runner import HostRunner, QemuRunner, Runner
from tvm_pipeline.errors import UserError


@dataclass(frozen=True)
class Evaluation:
    """One run: numerics against the reference and the measured figures (None where the host cannot measure)."""

    board: str
    max_rel_error: float
    max_abs_error: float
    argmax_match: bool
    arena_bytes: int | None
    lower_bound_bytes: int
    static_ram_bytes: int | None
    stack_peak_bytes: int | None
    peak_sram_bytes: int | None
    flash_bytes: int | None
    instructions: int | None
    planner: str
    input_mode: str  # "ram" (model_run copies the input into the arena) or "stream" (read window by window)
    output: list[float]
    # Integer (int8) outputs only, None otherwise; differences are in output steps (LSB) of the quantized output.
    max_abs_diff_lsb: int | None = None
    mismatch_fraction: float | None = None  # elements that differ from the reference at all
    over_1lsb_fraction: float | None = None  # elements that differ by more than 1 LSB

    def to_json(self) -> dict:
        """The object `tvmp run --json` prints (the output values are left out, and the integer fields for floats)."""
        data = asdict(self)
        data.pop("output")
        if self.max_abs_diff_lsb is None:
            for key in ("max_abs_diff_lsb", "mismatch_fraction", "over_1lsb_fraction"):
                data.pop(key)
        return data

    def within_tolerance(self, tolerance: float) -> bool:
        """Float outputs: max relative error <= tolerance. Integer outputs: the 1-LSB rule (`INT_WITHIN_1LSB`)."""
        if self.over_1lsb_fraction is not None:
            return self.over_1lsb_fraction <= 1.0 - INT_WITHIN_1LSB
        return self.max_rel_error <= tolerance


#: Integer outputs pass when at least this fraction of elements is within 1 LSB of the reference (int8 models:
#: the reference requantizes in float where the board uses fixed point; see docs/int8.md).
INT_WITHIN_1LSB = 0.999


def model_metadata(model_dir: Path) -> tuple[dict, dict]:
    """model.json and memory.json of a compiled folder; a folder `tvmp compile` did not write is a UserError."""
    model_dir = Path(model_dir)
    try:
        return (json.loads((model_dir / "model.json").read_text()),
                json.loads((model_dir / "memory.json").read_text()))
    except FileNotFoundError:
        raise UserError(f"{model_dir} is not a folder written by `tvmp compile` (no model.json/memory.json)") from None


def random_input(model_dir: Path, seed: int = 0) -> np.ndarray:
    """A reproducible random input of the model's shape and dtype (normal floats, uniform integers)."""
    meta, _ = model_metadata(model_dir)
    spec = meta["inputs"][0]
    rng = np.random.default_rng(seed)
    dtype = np.dtype(spec["dtype"])
    if dtype.kind == "f":
        return rng.standard_normal(spec["shape"]).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=spec["shape"], endpoint=True).astype(dtype)


def _run_onnxruntime(model_file: Path, name: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    return session.run(None, {name: x})[0]


def _run_tflite_interpreter(model_file: Path, name: str, x: np.ndarray) -> np.ndarray:
    """LiteRT's reference kernels (BUILTIN_REF: no XNNPACK, no optimized kernels), like TFLM's reference kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(model_file),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    (detail,) = [d for d in interpreter.get_input_details() if d["name"] == name]
    if tuple(detail["shape"]) != x.shape:  # a batch fixed with --input-shape
        interpreter.resize_tensor_input(detail["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


#: Host bytes TFLM's interpreter may allocate for a reference run (its arena: far above any model a board holds).
_TFLM_ARENA_BYTES = 16 << 20


def _run_tflite_micro(model_file: Path, name: str, x: np.ndarray) -> np.ndarray:
    """TensorFlow Lite Micro's reference kernels (the `tflite-micro` package, on this host): the reference of an int8
    .tflite build, which computes TFLite's fixed-point arithmetic. LiteRT's reference fully connected kernel
    requantizes in double instead, and differs from TFLM by 1-2 LSB (docs/int8.md)."""
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_file(str(model_file), arena_size=_TFLM_ARENA_BYTES)
    interpreter.set_input(x, 0)
    interpreter.invoke()
    return interpreter.get_output(0)


#: The runtime that runs a reference model (its name, its runner), by the reference file's suffix.
_REFERENCE_RUNTIMES = {".onnx": ("onnxruntime", _run_onnxruntime), ".tflite": ("LiteRT", _run_tflite_interpreter)}


def _reference_runtime(model_dir: Path) -> tuple[Path, str, Callable]:
    """(reference file, runtime name, runner): the source model's own format's runtime (onnxruntime; LiteRT for a
    float .tflite, TFLite Micro for one compiled with TFLite's integer arithmetic)."""
    meta, _ = model_metadata(model_dir)
    reference = Path(model_dir) / meta.get("reference", "reference.onnx")  # folders from before TFLite support
    if meta.get("int8_arithmetic") == "tflite":
        return reference, "TFLite Micro", _run_tflite_micro
    return reference, *_REFERENCE_RUNTIMES[reference.suffix]


def reference_name(model_dir: Path) -> str:
    """The name of the runtime `reference_output` runs (what `tvmp run` compares with)."""
    return _reference_runtime(model_dir)[1]


def reference_output(model_dir: Path, x: np.ndarray) -> np.ndarray:
    """The source model's output, run by its own format's runtime (see `reference_name`)."""
    reference, _, run = _reference_runtime(model_dir)
    spec = model_metadata(model_dir)[0]["inputs"][0]
    return run(reference, spec["name"], x.reshape(spec["shape"]))


def load_input(model_dir: Path, path: Path | None) -> np.ndarray:
    """The user's .npy input (checked against the model's shape and dtype) or a seeded random one."""
    if path is None:
        return random_input(model_dir)
    meta, _ = model_metadata(model_dir)
    spec = meta["inputs"][0]
    try:
        x = np.load(path)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read input {path}: {err}") from None
    if x.size != int(np.prod(spec["shape"])):
        raise UserError(f"input {path} has shape {list(x.shape)}; the model expects {spec['shape']}")
    if x.dtype != np.dtype(spec["dtype"]):
        raise UserError(f"input {path} has dtype {x.dtype}; the model expects {spec['dtype']}")
    return x.reshape(spec["shape"])


def evaluate(model_dir: Path, board: Board | None, x: np.ndarray, runner: Runner | None = None) -> Evaluation:
    """Build the folder for `board` (None: the host), run it once on `x`, compare with the reference runtime."""
    model_dir = Path(model_dir)
    meta, memory = model_metadata(model_dir)
    with tempfile.TemporaryDirectory(prefix="tvmp-build-") as build:
        if board is None:
            firmware = build_host(model_dir, x, Path(build))
            result = (runner or HostRunner()).run(firmware)
            sizes = None
        elif runner is not None and not runner.runs_built_firmware:
            # A real board (SerialRunner) runs what was flashed onto it: nothing to build or measure here.
            from tvm_pipeline.board.serial_runner import flashed_firmware

            result = runner.run(flashed_firmware(model_dir, board, Path(build)))
            sizes = None
        else:
            firmware = build_firmware(model_dir, board, x, Path(build))
            sizes = measure_firmware(firmware)
            result = (runner or QemuRunner()).run(firmware)
    reference = reference_output(model_dir, x).reshape(-1)
    integer = _integer_differences(result.output, reference)
    got = result.output.astype(np.float64)
    ref = reference.astype(np.float64)
    abs_err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 1.0
    static_ram = sizes.static_ram_bytes if sizes else None
    stack = result.stack_peak_bytes
    return Evaluation(
        board=board.name if board else "host",
        max_rel_error=abs_err / scale if scale > 0 else abs_err,
        max_abs_error=abs_err,
        argmax_match=bool(np.argmax(got) == np.argmax(ref)),
        arena_bytes=sizes.arena_bytes if sizes else memory["arena_bytes"],
        lower_bound_bytes=memory["lower_bound_bytes"],
        static_ram_bytes=static_ram,
        stack_peak_bytes=stack,
        peak_sram_bytes=static_ram + stack if static_ram is not None and stack is not None else None,
        flash_bytes=sizes.flash_bytes if sizes else None,
        instructions=result.instructions,
        planner=memory["planner"],
        input_mode=meta.get("input_mode", "ram"),
        output=got.tolist(),
        **integer,
    )


def _integer_differences(got: np.ndarray, reference: np.ndarray) -> dict:
    """The Evaluation's integer fields when both outputs are integers, else {}."""
    if got.dtype.kind not in "iu" or reference.dtype.kind not in "iu" or not reference.size:
        return {}
    diff = np.abs(got.astype(np.int64) - reference.astype(np.int64))
    return {"max_abs_diff_lsb": int(diff.max()), "mismatch_fraction": float(np.mean(diff > 0)),
            "over_1lsb_fraction": float(np.mean(diff > 1))}
