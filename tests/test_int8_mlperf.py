"""The MLPerf Tiny int8 reference models (QDQ ONNX: int8 I/O, Transpose at the input, Softmax at the end) compile to
integer-only C whose host build equals the NumPy integer reference and onnxruntime bit for bit.

Bit-exact with onnxruntime 1.32 (measured; see docs/int8.md): its QLinearConv/QGemm requantize with a float32
multiplier and round half to even, which the fixed-point multiplier reproduces exactly; the ops it runs in float
(first convs, Gemm, AveragePool, Softmax) agree on these models' inputs. Peak SRAM on the emulated STM32F746 is
measured by `tvmp run` (docs/int8.md lists the figures); these tests use the host build to stay fast.

The `.tflite` forms of the same models compile to the same kernels (NHWC relaid out to NCHW through the
quantize/dequantize pairs) in TFLite's own integer arithmetic (fold-qdq `arithmetic="tflite"`: Q31 multipliers with
TFLite's double rounding for conv/depthwise/fully connected, its Add and AveragePool), and equal TensorFlow Lite
Micro (the `tflite-micro` package's interpreter, `tvmp run`'s reference for an int8 .tflite) bit for bit. LiteRT's
interpreter (BUILTIN_REF kernels) agrees except in its reference FULLY_CONNECTED, which rounds `acc * scale` in
double instead of TFLM's fixed-point steps: up to 2 LSB at the output of IC (seed 5) and AD01 (every seed;
docs/int8.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tvm_pipeline.board.boards import load_board
from tvm_pipeline.compiler import compile_model
from tvm_pipeline.evaluate import Evaluation, evaluate, random_input
from tvm_pipeline.int8_reference import run_reference
from tvm_pipeline.data.mlperf import models_dir

MODELS_DIR = models_dir()
#: model -> the arena TensorFlow Lite Micro plans for its tensors (README of the models folder): ours must not exceed it.
MODELS = {"pretrainedResnet_quant": 49_152, "vww_96_int8": 73_728, "kws_ref_model": 16_000, "ad01_int8": None}


@pytest.mark.parametrize("name", list(MODELS))
def test_mlperf_int8_model_is_integer_only_and_bit_exact(name, tmp_path):
    source = MODELS_DIR / f"{name}.onnx"
    if not source.is_file():
        pytest.skip(f"{source} is not available on this machine")
    out = tmp_path / name
    result = compile_model(source, out)
    assert "fold-qdq: integer only, no float op left" in result.program.notes
    if MODELS[name] is not None:
        assert result.arena.layout.arena_bytes <= MODELS[name]
    meta = json.loads((out / "model.json").read_text())
    assert meta["inputs"][0]["dtype"] == "int8" and meta["outputs"][0]["dtype"] == "int8"
    for seed in range(2):
        x = random_input(out, seed)
        evaluation = evaluate(out, None, x)
        got = np.asarray(evaluation.output, dtype=np.int64)
        assert np.array_equal(got, run_reference(out / "reference.onnx", x).reshape(-1).astype(np.int64))
        assert evaluation.max_abs_diff_lsb == 0 and evaluation.mismatch_fraction == 0.0, evaluation.to_json()


# --- the .tflite files -------------------------------------------------------------------------------------------

SEEDS = (0, 1, 2, 5)  # IC seed 5: LiteRT's float FULLY_CONNECTED rounds 1 LSB off TFLM's (module docstring)
@pytest.fixture(scope="module")
def tflite_runs(tmp_path_factory):
    """`tflite_runs(name) -> (compile result, [(input, host Evaluation vs LiteRT's interpreter)] per seed)`."""
    root = tmp_path_factory.mktemp("tflite")
    cache: dict[str, tuple] = {}

    def get(name: str):
        source = MODELS_DIR / f"{name}.tflite"
        if not source.is_file():
            pytest.skip(f"{source} is not available on this machine")
        if name not in cache:
            result = compile_model(source, root / name)
            runs = [(x, evaluate(result.out_dir, None, x)) for x in (random_input(result.out_dir, s) for s in SEEDS)]
            cache[name] = result, runs
        return cache[name]

    return get


def _tflm(model: Path, x: np.ndarray) -> np.ndarray:
    """TensorFlow Lite Micro's output (its reference kernels, run on this host by the `tflite-micro` package)."""
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_file(str(model), arena_size=400_000)
    interpreter.set_input(x, 0)
    interpreter.invoke()
    return interpreter.get_output(0).reshape(-1).astype(np.int64)


@pytest.mark.parametrize("name", list(MODELS))
def test_mlperf_int8_tflite_is_integer_only_in_tflites_arithmetic(name, tflite_runs):
    result, _ = tflite_runs(name)
    assert "fold-qdq: integer only, no float op left" in result.program.notes
    assert any(n.startswith("fold-qdq: TFLite's arithmetic") for n in result.program.notes)
    if MODELS[name] is not None:
        assert result.arena.layout.arena_bytes <= MODELS[name]
    meta = json.loads((result.out_dir / "model.json").read_text())
    assert meta["reference"] == "reference.tflite" and meta["int8_arithmetic"] == "tflite"
    assert meta["inputs"][0]["dtype"] == "int8" and meta["outputs"][0]["dtype"] == "int8"


@pytest.mark.parametrize("name", list(MODELS))
def test_mlperf_int8_tflite_is_bit_exact_with_tflite_micro(name, tflite_runs):
    _, runs = tflite_runs(name)
    for x, evaluation in runs:
        assert np.array_equal(np.asarray(evaluation.output, dtype=np.int64), _tflm(MODELS_DIR / f"{name}.tflite", x))
        assert evaluation.max_abs_diff_lsb == 0, evaluation.to_json()  # `tvmp run` compares with TFLM too


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                    reason="needs gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm")
def test_mlperf_int8_tflite_runs_bit_exact_on_the_emulated_stm32f746(tflite_runs):
    """IC: TFLite's Add (fused into the convs), AveragePool and requantization, on the Cortex-M7."""
    result, runs = tflite_runs("pretrainedResnet_quant")
    x, host = runs[-1]
    board = load_board("stm32f746")
    evaluation: Evaluation = evaluate(result.out_dir, board, x)
    assert evaluation.output == host.output  # the board runs the same C as the host build, bit for bit
    assert np.array_equal(np.asarray(evaluation.output, dtype=np.int64),
                          _tflm(MODELS_DIR / "pretrainedResnet_quant.tflite", x))
    assert evaluation.peak_sram_bytes <= board.ram.size and evaluation.flash_bytes <= board.flash.size
