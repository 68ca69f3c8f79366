"""The model zoo: every model exports to a clean opset-17 ONNX graph that onnxruntime runs like PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from tvm_pipeline.errors import UserError
from tvm_pipeline.models.blocks import InvertedResidual, make_divisible
from tvm_pipeline.models.export import MAX_RELATIVE_ERROR, OPSET, export_onnx, relative_error
from tvm_pipeline.models.mobilenetv2 import MobileNetV2
from tvm_pipeline.models.zoo import ZOO, get_model

LARGE = {"mobilenetv2_w035_144", "mobilenetv2_w10_224", "mobilenetv2_baseline"}
INFERENCE_OPS = {"Conv", "Relu", "Clip", "Constant", "Add", "Slice", "Concat", "GlobalAveragePool", "Flatten", "Gemm"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def export_and_compare(name: str, tmp_path: Path) -> None:
    """Export zoo model `name`, check the graph's form, and compare onnxruntime with torch on a fresh input."""
    model, shape = get_model(name)
    path = tmp_path / f"{name}.onnx"
    exported = export_onnx(model, shape, path)
    assert [opset.version for opset in exported.opset_import if opset.domain == ""] == [OPSET]
    assert {node.op_type for node in exported.graph.node} <= INFERENCE_OPS
    assert tuple(dim.dim_value for dim in exported.graph.input[0].type.tensor_type.shape.dim) == shape
    # BN folded into every conv, and weights shared by several tunnels stored once.
    layers = {id(m): m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}.values()
    folded = sum(layer.weight.numel() + layer.weight.shape[0] for layer in layers)  # weights + biases
    assert sum(int(np.prod(tensor.dims)) for tensor in exported.graph.initializer) == folded
    image = torch.randn(shape, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        expected = model(image).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"input": image.numpy()})
    assert relative_error(actual, expected) <= MAX_RELATIVE_ERROR
    assert np.std(expected) > 0.1, "random weights should give non-trivial outputs"


@pytest.mark.parametrize("name", [name for name in ZOO if name not in LARGE])
def test_zoo_model_exports_equal_to_torch(name: str, tmp_path) -> None:
    export_and_compare(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LARGE))
def test_large_model_exports_equal_to_torch(name: str, tmp_path) -> None:
    export_and_compare(name, tmp_path)


def test_unknown_model_error_lists_the_zoo() -> None:
    with pytest.raises(UserError, match=r"unknown zoo model 'resnet50'.*mbv2_tiny"):
        get_model("resnet50")


def test_weights_are_deterministic_and_batchnorm_is_not_identity() -> None:
    first, _ = get_model("mbv2_tiny", seed=0)
    again, _ = get_model("mbv2_tiny", seed=0)
    other, _ = get_model("mbv2_tiny", seed=1)
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    assert not torch.equal(first.state_dict()["0.0.weight"], other.state_dict()["0.0.weight"])
    norms = [module for module in first.modules() if isinstance(module, nn.BatchNorm2d)]
    assert norms and all(not torch.allclose(norm.running_var, torch.ones_like(norm.running_var)) for norm in norms)


def test_mbv2_tiny_covers_the_block_variants() -> None:
    model, _ = get_model("mbv2_tiny")
    blocks = [module for module in model.modules() if isinstance(module, InvertedResidual)]
    depthwise = [block.conv[-2][0] for block in blocks]
    assert {conv.stride[0] for conv in depthwise} == {1, 2}
    assert {conv.kernel_size[0] for conv in depthwise} == {3, 5}
    assert {block.use_skip for block in blocks} == {True, False}
    assert {block.expands for block in blocks} == {True, False}
    activations = {type(module) for block in blocks for module in block.modules()}
    assert {nn.ReLU, nn.ReLU6} <= activations


def test_mobilenetv2_matches_the_reference_sizes() -> None:
    assert [make_divisible(c * 0.35) for c in (32, 16, 24, 32, 64, 96, 160, 320)] == [16, 8, 8, 16, 24, 32, 56, 112]
    assert sum(p.numel() for p in MobileNetV2(1.0).parameters()) == 3_504_872  # torchvision mobilenet_v2
    assert sum(p.numel() for p in MobileNetV2(0.5).parameters()) == 1_968_680


def test_export_rejects_a_batched_shape(tmp_path) -> None:
    model, _ = get_model("conv_stack")
    with pytest.raises(UserError, match="input_shape"):
        export_onnx(model, (2, 3, 16, 16), tmp_path / "x.onnx")
