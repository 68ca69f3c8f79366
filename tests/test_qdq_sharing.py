"""Weight-shared tunnels quantized once: identical tensors share activation quantization, so their integer
constants are stored once. Rule for int8 outputs: >= 99.9 % within 1 LSB of onnxruntime on the quantized model."""

from __future__ import annotations

import dataclasses

import numpy as np

from tvm_pipeline.compiler import compile_model
from tvm_pipeline.evaluate import evaluate, random_input
from tvm_pipeline.models.export import export_onnx
from tvm_pipeline.models.init import randomize_weights_
from tvm_pipeline.models.tunnel import TunnelNet
from tvm_pipeline.models.tunnel_config import load_config
from tvm_pipeline.quantize import quantize_model


def test_shared_tunnels_share_their_integer_constants(tmp_path):
    config = dataclasses.replace(load_config("tiny"), share_weights=True)
    model = randomize_weights_(TunnelNet(config), 0).eval()
    export_onnx(model, model.input_shape, tmp_path / "shared.onnx")
    calibration = tmp_path / "calibration.npy"
    np.save(calibration, np.random.default_rng(1).standard_normal((16, *model.input_shape[1:])).astype(np.float32))
    result = quantize_model(tmp_path / "shared.onnx", calibration, tmp_path / "shared.int8.onnx")
    assert any("unified" in note for note in result.notes)
    separate = quantize_model(tmp_path / "shared.onnx", calibration, tmp_path / "separate.int8.onnx", share=False)
    shared_flash = compile_model(result.path, tmp_path / "out").program.weight_bytes
    separate_flash = compile_model(separate.path, tmp_path / "separate").program.weight_bytes
    # five tunnels, one set of per-channel int32 biases and requantization constants instead of five
    assert shared_flash < separate_flash
    x = random_input(tmp_path / "out", seed=3)
    run = evaluate(tmp_path / "out", None, x)
    assert run.within_tolerance(1e-5) and run.argmax_match
