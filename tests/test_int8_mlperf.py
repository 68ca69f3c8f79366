"""The MLPerf Tiny int8 reference models (QDQ ONNX: int8 I/O, Transpose at the input, Softmax at the end) compile to
integer-only C whose host build equals the NumPy integer reference and onnxruntime bit for bit.

Bit-exact with onnxruntime 1.32 (measured; see docs/int8.md): its QLinearConv/QGemm requantize with a float32
multiplier and round half to even, which the fixed-point multiplier reproduces exactly; the ops it runs in float
(first convs, Gemm, AveragePool, Softmax) agree on these models' inputs. Peak SRAM on the emulated STM32F746 is
measured by `tvmp run` (docs/int8.md lists the figures); these tests use the host build to stay fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tvm_pipeline.compiler import compile_model
from tvm_pipeline.evaluate import evaluate, random_input
from tvm_pipeline.int8_reference import run_reference

MODELS_DIR = Path("/work/shared/models/mlperf-tiny")
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
