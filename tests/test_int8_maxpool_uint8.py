"""int8 MaxPool and uint8 activations: `quantize(max_pool2d(dequantize(x)))` folds into an integer max pool, and a
model quantized with uint8 activations (onnxruntime's default, many QAT exports) compiles to the same integer
kernels reading and writing uint8. Checked bit for bit against the NumPy integer reference, within the 1-LSB rule of
onnxruntime, on the host, on the emulated STM32F746, and for float helpers in the Cortex-M0 object."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from test_int8_e2e import FLOAT_HELPER_PREFIXES, _undefined_symbols, check_int8_output as _check
from tvm_pipeline import tvm_adapter
from tvm_pipeline.cli import main as tvmp
from tvm_pipeline.compiler import CompileOptions, compile_model
from tvm_pipeline.evaluate import random_input
from tvm_pipeline.int8_ops import QMaxPool
from tvm_pipeline.models.export import export_onnx
from tvm_pipeline.models.init import randomize_weights_
from tvm_pipeline.passes import fold_qdq
from tvm_pipeline.quantize import quantize_model

_ONNX_TYPES = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8}


def _maxpool_model(kernel: int, stride: int, pad: int, ceil: int, dilation: int, in_type: str,
                   out_type: str) -> onnx.ModelProto:
    """xq (1x3x9x9) -> DequantizeLinear -> MaxPool -> QuantizeLinear -> yq; equal parameters when the types are."""
    zero_points = {"int8": (np.int8(-3), np.int8(7)), "uint8": (np.uint8(140), np.uint8(20))}
    same = in_type == out_type
    inits = {"sx": np.float32(0.05), "zx": zero_points[in_type][0], "sy": np.float32(0.05 if same else 0.031),
             "zy": zero_points[out_type][0 if same else 1]}
    out_size = (9 + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil else 0)) // stride + 1
    nodes = [helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xf"]),
             helper.make_node("MaxPool", ["xf"], ["mf"], kernel_shape=[kernel] * 2, strides=[stride] * 2,
                              pads=[pad] * 4, ceil_mode=ceil, dilations=[dilation] * 2),
             helper.make_node("QuantizeLinear", ["mf", "sy", "zy"], ["yq"])]
    graph = helper.make_graph(nodes, "maxpool",
                              [helper.make_tensor_value_info("xq", _ONNX_TYPES[in_type], [1, 3, 9, 9])],
                              [helper.make_tensor_value_info("yq", _ONNX_TYPES[out_type], [1, 3, out_size, out_size])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("kernel, stride, pad, ceil, dilation, in_type, out_type", [
    (3, 2, 1, 0, 1, "uint8", "uint8"),  # padding, equal parameters: the window maximum as is
    (3, 2, 1, 1, 1, "uint8", "int8"),  # ceil mode, a mixed uint8 -> int8 edge: rescaled
    (2, 2, 0, 1, 1, "int8", "uint8"),  # ceil-mode overhang without padding
    (3, 1, 2, 0, 2, "int8", "int8"),  # dilated windows that skip the edge element
])
def test_maxpool_folds_and_is_exact(tmp_path, kernel, stride, pad, ceil, dilation, in_type, out_type):
    model = _maxpool_model(kernel, stride, pad, ceil, dilation, in_type, out_type)
    (fold,), notes = fold_qdq.plan(tvm_adapter.dataflow_ops(tvm_adapter.import_onnx(model, {"xq": (1, 3, 9, 9)})))
    assert notes == [] and isinstance(fold.op, QMaxPool) and fold.op.dtype == out_type
    assert (fold.op.requant is None) == (in_type == out_type)
    onnx.save(model, tmp_path / "maxpool.onnx")
    compile_model(tmp_path / "maxpool.onnx", tmp_path / "out")
    for seed in range(2):
        _check(tmp_path / "out", random_input(tmp_path / "out", seed))


class _SmallCnn(nn.Module):
    """conv+ReLU -> maxpool 2 -> residual add of conv+ReLU -> maxpool 3/2 pad 1 -> avgpool 2 -> Gemm; 3x16x16."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.conv = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.pool, self.pool2 = nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1)
        self.avg, self.fc = nn.AvgPool2d(2), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.stem(x)))
        x = self.pool2(x + torch.relu(self.conv(x)))
        return self.fc(self.avg(x).flatten(1))


@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory):
    """`small_cnn(activation_type, board) -> compiled folder`: the CNN quantized (uint8 through `tvmp quantize`)."""
    root = tmp_path_factory.mktemp("small-cnn")
    export_onnx(randomize_weights_(_SmallCnn(), 0).eval(), (1, 3, 16, 16), root / "float.onnx")
    np.save(root / "calibration.npy", np.random.default_rng(1).standard_normal((16, 3, 16, 16)).astype(np.float32))
    cache: dict[tuple[str, str], Path] = {}

    def get(activation_type: str, board: str = "stm32f746") -> Path:
        if (activation_type, board) not in cache:
            quantized = root / f"{activation_type}.onnx"
            if not quantized.exists() and activation_type == "uint8":
                assert tvmp(["quantize", str(root / "float.onnx"), "--calibration", str(root / "calibration.npy"),
                             "-o", str(quantized), "--activation-type", "uint8"]) == 0
            elif not quantized.exists():
                quantize_model(root / "float.onnx", root / "calibration.npy", quantized)
            cache[activation_type, board] = root / f"{activation_type}-{board}"
            compile_model(quantized, cache[activation_type, board], CompileOptions(board=board))
        return cache[activation_type, board]

    return get


def _calibration_like_input(out: Path, seed: int) -> np.ndarray:
    """A standard-normal image (the calibration distribution) quantized with the model input's parameters."""
    model = onnx.load(str(out / "reference.onnx"))
    name = model.graph.input[0].name
    dequantize = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == name)
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    scale, zero_point = constants[dequantize.input[1]], constants[dequantize.input[2]]
    real = np.random.default_rng(seed).standard_normal((1, 3, 16, 16))
    info = np.iinfo(zero_point.dtype)
    return np.clip(np.rint(real / scale) + zero_point, info.min, info.max).astype(zero_point.dtype)


@pytest.mark.parametrize("activation_type", ["int8", "uint8"])
def test_small_cnn_host_build_is_exact_and_within_1lsb(small_cnn, activation_type):
    out = small_cnn(activation_type)
    model = json.loads((out / "model.json").read_text())
    assert model["inputs"][0]["dtype"] == activation_type and model["outputs"][0]["dtype"] == activation_type
    assert "fold-qdq: integer only, no float op left" in model["notes"]
    assert any("maxpool 2" in n and "add 1" in n and "avgpool 1" in n and "matmul 1" in n for n in model["notes"])
    for seed in range(2):
        result = _check(out, _calibration_like_input(out, seed))
        assert len(set(result.output)) > 3  # not a saturated output: argmax means something
    _check(out, random_input(out, seed=0))


def test_uint8_cnn_is_exact_on_the_stm32f746(small_cnn):
    out = small_cnn("uint8")
    result = _check(out, _calibration_like_input(out, seed=5), "stm32f746")
    assert result.max_abs_diff_lsb <= 1 and result.peak_sram_bytes is not None


def test_uint8_cnn_needs_no_float_helper_on_the_cortex_m0(small_cnn, tmp_path):
    symbols = _undefined_symbols(small_cnn("uint8", "cortex-m0"), "cortex-m0", tmp_path)
    assert not {s for s in symbols if s.startswith(FLOAT_HELPER_PREFIXES)}, sorted(symbols)


def test_uint8_bottleneck_is_reordered_and_exact(zoo_onnx, tmp_path):
    """An inverted residual with uint8 activations: reorder-bottleneck-int8 makes it one kernel; the result is exact."""
    calibration = tmp_path / "calibration.npy"
    np.save(calibration, np.random.default_rng(1).standard_normal((16, 3, 16, 16)).astype(np.float32))
    quantized = quantize_model(zoo_onnx("inverted_residual"), calibration, tmp_path / "uint8.onnx",
                               activation_type="uint8")
    out = tmp_path / "out"
    compile_model(quantized.path, out, CompileOptions(disabled_passes=frozenset({"patch-stage"})))  # not under test
    notes = json.loads((out / "model.json").read_text())["notes"]
    assert any("-> one channel-by-channel int8 kernel" in n and "skip-add" in n for n in notes), notes
    _check(out, random_input(out, seed=3))
