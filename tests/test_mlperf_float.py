"""The float32 MLPerf Tiny models in both formats, and what the TFLite frontend reports for files it cannot compile.

The MLPerf models compile and match their reference within 1e-5 (max |ours - ref| / max |ref|): onnxruntime for the
.onnx files, the TFLite interpreter's reference kernels for the .tflite files. To keep the default run fast, all
are checked on the host build (the same C, bit-identical to the board's) and only pretrainedResnet.onnx runs on the
emulated STM32F746. The error-path tests build their own tiny .tflite files and need no model folder.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from tflite.BuiltinOperator import BuiltinOperator

from tvm_pipeline import tvm_adapter
from tvm_pipeline.board.boards import load_board
from tvm_pipeline.cli import main as tvmp
from tvm_pipeline.compiler import CompileOptions, compile_model
from tvm_pipeline.errors import UserError
from tvm_pipeline.evaluate import evaluate, random_input
from tvm_pipeline.frontend import load_model
from tvm_pipeline.data.mlperf import models_dir

MODELS = models_dir()
TOLERANCE = 1e-5
#: ad01_fp32's float weights (1,063,456 B) alone exceed the STM32F746's 1 MB flash; the H743 has 2 MB.
BOARD = {"pretrainedResnet": "stm32f746", "vww_96_float": "stm32f746", "ad01_fp32": "stm32h743"}

needs_models = pytest.mark.skipif(not MODELS.is_dir(), reason=f"MLPerf Tiny models not found at {MODELS}")
needs_arm = pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
    reason="needs gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm",
)


@pytest.fixture(scope="module")
def mlperf(tmp_path_factory):
    """`mlperf(file_name) -> Path`: the model compiled for its board, once per module."""
    root = tmp_path_factory.mktemp("mlperf")
    cache: dict[str, Path] = {}

    def get(file_name: str) -> Path:
        if file_name not in cache:
            board = BOARD[Path(file_name).stem]
            cache[file_name] = compile_model(MODELS / file_name, root / file_name, CompileOptions(board=board)).out_dir
        return cache[file_name]

    return get


@needs_models
@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
@pytest.mark.parametrize("name", list(BOARD))
def test_float_model_matches_its_reference_on_the_host(mlperf, name, suffix):
    out = mlperf(name + suffix)
    meta = json.loads((out / "model.json").read_text())
    assert meta["source_format"] == suffix[1:]
    assert (out / meta["reference"]).read_bytes() == (MODELS / (name + suffix)).read_bytes()
    assert meta["inputs"][0]["shape"][0] == 1  # the symbolic batch, fixed
    result = evaluate(out, None, random_input(out))
    assert result.max_rel_error <= TOLERANCE
    assert result.argmax_match


@needs_models
@pytest.mark.parametrize("name", list(BOARD))
def test_float_tflite_is_relaid_out_to_nchw_like_the_onnx_graphs(name):
    """So that graph passes written for the ONNX (NCHW) graphs match .tflite files too."""
    ops = tvm_adapter.dataflow_ops(load_model(MODELS / f"{name}.tflite").mod).ops
    convs = [op for op in ops if op.op == "relax.nn.conv2d"]
    assert all((op.attrs["data_layout"], op.attrs["kernel_layout"]) == ("NCHW", "OIHW") for op in convs)
    assert all(isinstance(op.args[1], np.ndarray) for op in convs)  # relaid-out weights are folded constants
    assert sum(op.op == "relax.permute_dims" for op in ops) == (2 if convs else 0)  # after the input, before flatten


@needs_models
@needs_arm
def test_resnet_onnx_runs_on_the_emulated_stm32f746(mlperf):
    out = mlperf("pretrainedResnet.onnx")
    board = load_board("stm32f746")
    result = evaluate(out, board, random_input(out, seed=1))
    assert result.max_rel_error <= TOLERANCE
    assert result.argmax_match
    assert result.arena_bytes == json.loads((out / "memory.json").read_text())["arena_bytes"]
    assert result.arena_bytes < result.peak_sram_bytes <= board.ram.size


@needs_models
def test_ad01_fp32_fits_the_stm32f746_flash_neither_compiled_nor_as_tflm_would_hold_it(tmp_path):
    """Why BOARD puts ad01_fp32 on the H743: its float32 weights alone exceed the F746's 1 MB flash, and so does the
    .tflite flatbuffer TFLM would have to keep in flash (before TFLM's own code)."""
    flash = load_board("stm32f746").flash.size
    with pytest.raises(UserError, match=r"does not fit stm32f746's flash: its weights alone need 1,063,456 B"):
        compile_model(MODELS / "ad01_fp32.onnx", tmp_path / "out", CompileOptions(board="stm32f746"))
    assert (MODELS / "ad01_fp32.tflite").stat().st_size > flash


# --- tiny hand-built .tflite files --------------------------------------------------------------------------------

_SCHEMA = {name: importlib.import_module(f"tflite.{name}")  # the modules, not the classes the package re-exports
           for name in ("Buffer", "Model", "Operator", "OperatorCode", "SubGraph", "Tensor")}


def _table_vector(builder: flatbuffers.Builder, start, items: list[int]) -> int:
    start(builder, len(items))
    for item in reversed(items):
        builder.PrependUOffsetTRelative(item)
    return builder.EndVector()


def tiny_tflite(path: Path, ops: list[int | str], signature: tuple[int, ...] = (-1, 4)) -> Path:
    """A chain of unary float ops on one tensor: `ops` holds builtin codes, or a custom op's name."""
    S = _SCHEMA
    b = flatbuffers.Builder(1024)
    tensors = []
    for index in range(len(ops) + 1):
        name = b.CreateString(f"t{index}")
        shape = b.CreateNumpyVector(np.array([d if d > 0 else 1 for d in signature], np.int32))
        shape_signature = b.CreateNumpyVector(np.array(signature, np.int32))
        S["Tensor"].Start(b)
        S["Tensor"].AddShape(b, shape)
        S["Tensor"].AddShapeSignature(b, shape_signature)
        S["Tensor"].AddName(b, name)
        tensors.append(S["Tensor"].End(b))
    codes = []
    for op in ops:
        custom = b.CreateString(op) if isinstance(op, str) else None
        code = BuiltinOperator.CUSTOM if custom else op
        S["OperatorCode"].Start(b)
        S["OperatorCode"].AddDeprecatedBuiltinCode(b, min(code, 127))
        S["OperatorCode"].AddBuiltinCode(b, code)
        if custom:
            S["OperatorCode"].AddCustomCode(b, custom)
        S["OperatorCode"].AddVersion(b, 1)
        codes.append(S["OperatorCode"].End(b))
    operators = []
    for index in range(len(ops)):
        inputs = b.CreateNumpyVector(np.array([index], np.int32))
        outputs = b.CreateNumpyVector(np.array([index + 1], np.int32))
        S["Operator"].Start(b)
        S["Operator"].AddOpcodeIndex(b, index)
        S["Operator"].AddInputs(b, inputs)
        S["Operator"].AddOutputs(b, outputs)
        operators.append(S["Operator"].End(b))
    tensor_vec = _table_vector(b, S["SubGraph"].StartTensorsVector, tensors)
    operator_vec = _table_vector(b, S["SubGraph"].StartOperatorsVector, operators)
    graph_in = b.CreateNumpyVector(np.array([0], np.int32))
    graph_out = b.CreateNumpyVector(np.array([len(ops)], np.int32))
    S["SubGraph"].Start(b)
    S["SubGraph"].AddTensors(b, tensor_vec)
    S["SubGraph"].AddInputs(b, graph_in)
    S["SubGraph"].AddOutputs(b, graph_out)
    S["SubGraph"].AddOperators(b, operator_vec)
    subgraph = S["SubGraph"].End(b)
    S["Buffer"].Start(b)
    empty_buffer = S["Buffer"].End(b)
    subgraph_vec = _table_vector(b, S["Model"].StartSubgraphsVector, [subgraph])
    code_vec = _table_vector(b, S["Model"].StartOperatorCodesVector, codes)
    buffer_vec = _table_vector(b, S["Model"].StartBuffersVector, [empty_buffer])
    S["Model"].Start(b)
    S["Model"].AddVersion(b, 3)
    S["Model"].AddOperatorCodes(b, code_vec)
    S["Model"].AddSubgraphs(b, subgraph_vec)
    S["Model"].AddBuffers(b, buffer_vec)
    b.Finish(S["Model"].End(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return path


def test_tiny_tflite_compiles_and_matches_the_interpreter(tmp_path):
    model = tiny_tflite(tmp_path / "tiny.tflite", [BuiltinOperator.RELU, BuiltinOperator.TANH])
    out = compile_model(model, tmp_path / "out").out_dir
    meta = json.loads((out / "model.json").read_text())
    assert meta["inputs"] == [{"name": "t0", "shape": [1, 4], "dtype": "float32"}]
    assert meta["outputs"][0]["name"] == "t2" and meta["reference"] == "reference.tflite"
    result = evaluate(out, None, random_input(out))
    assert result.max_rel_error <= TOLERANCE


def test_batch_is_set_with_input_shape(tmp_path):
    model = tiny_tflite(tmp_path / "tiny.tflite", [BuiltinOperator.RELU])
    out = compile_model(model, tmp_path / "out", CompileOptions(input_shapes={"t0": (3, 4)})).out_dir
    assert json.loads((out / "model.json").read_text())["inputs"][0]["shape"] == [3, 4]
    assert evaluate(out, None, random_input(out)).max_rel_error <= TOLERANCE


def test_unsupported_tflite_ops_are_all_named_with_their_index_and_nothing_is_written(tmp_path, capsys):
    model = tiny_tflite(tmp_path / "m.tflite",
                        [BuiltinOperator.RELU, BuiltinOperator.SKIP_GRAM, "MyCustomOp", BuiltinOperator.RELU])
    with pytest.raises(UserError) as err:
        compile_model(model, tmp_path / "out")
    message = str(err.value)
    assert "SKIP_GRAM (operator index 1, output 't2')" in message
    assert "CUSTOM 'MyCustomOp' (operator index 2, output 't3')" in message
    assert "RELU" not in message
    assert tvmp(["compile", str(model), "-o", str(tmp_path / "out")]) == 2
    assert "SKIP_GRAM (operator index 1" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]  # no output folder, no temp folder left


def test_dynamic_dimension_other_than_batch_is_an_error(tmp_path):
    model = tiny_tflite(tmp_path / "m.tflite", [BuiltinOperator.RELU], signature=(1, -1))
    with pytest.raises(UserError, match=r"'t0' has a dynamic dimension 1.*--input-shape t0:1,1"):
        compile_model(model, tmp_path / "out")
    with pytest.raises(UserError, match=r"does not fit the model's declared shape \[1,\?\]"):
        compile_model(model, tmp_path / "out", CompileOptions(input_shapes={"t0": (2, 4)}))


@pytest.mark.parametrize("damage", ["truncated", "not-tflite", "empty"])
def test_damaged_tflite_is_a_user_error(tmp_path, damage):
    model = tiny_tflite(tmp_path / "m.tflite", [BuiltinOperator.RELU])
    data = model.read_bytes()
    model.write_bytes({"truncated": data[: len(data) // 2], "not-tflite": b"\x08\x01" * 64, "empty": b""}[damage])
    with pytest.raises(UserError, match="m.tflite"):
        compile_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_model_suffix_is_a_user_error(tmp_path):
    model = tmp_path / "m.pb"
    model.write_bytes(b"\0")
    with pytest.raises(UserError, match=r"unknown model format '\.pb'.*\.onnx and \.tflite"):
        compile_model(model, tmp_path / "out")
