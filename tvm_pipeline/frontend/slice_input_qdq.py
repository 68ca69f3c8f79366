"""Quantize a sliced input once: QDQ models whose float input is cut into patches -> one int8 input.

onnxruntime's quantizer leaves Slice in float and quantizes each patch after it with that patch's own calibrated
parameters, so the model input stays float32 (4 bytes a pixel, and a float QuantizeLinear per patch on the board).
This rewrite gives the input one per-tensor int8 quantization (the calibration batch's range, asymmetric, as
onnxruntime computes activations) shared by every patch, and moves the slicing onto the int8 tensor:

    before:  x (float) -> Slice -> Slice -> QuantizeLinear(s_p, z_p) -> DequantizeLinear(s_p, z_p) -> Conv
    after:   x (float) -> QuantizeLinear(s, z) -> Slice -> Slice -> DequantizeLinear(s, z) -> Conv

Slicing commutes with a per-tensor quantization, so the result is exactly `quantize(x)` sliced; `integer_io` then
drops the input QuantizeLinear and the model takes int8. The patch QuantizeLinear nodes are gone, and each patch's
DequantizeLinear reads the input's parameters (the patch's own calibration range is replaced by the image's).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def input_quantization(batch: np.ndarray) -> tuple[np.float32, np.int8]:
    """(scale, zero point) of an asymmetric int8 quantization covering the batch's range and zero."""
    low, high = min(float(batch.min()), 0.0), max(float(batch.max()), 0.0)
    scale = np.float32((high - low) / 255.0 or 1.0)
    zero_point = np.int8(np.clip(round(-128 - low / float(scale)), -128, 127))
    return scale, zero_point


def share_input_quantization(model: onnx.ModelProto, batch: np.ndarray) -> tuple[onnx.ModelProto, list[str]]:
    """Rewrite `Slice* -> Q -> DQ` chains on the float input as above; unchanged (no notes) when there are none."""
    graph = model.graph
    inputs = {i.name for i in graph.input} - {init.name for init in graph.initializer}
    if len(inputs) != 1:
        return model, []
    (image,) = inputs
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    sliced = {image}
    for node in graph.node:  # topological order: a chain's slices come in order
        if node.op_type == "Slice" and node.input[0] in sliced:
            sliced.add(node.output[0])
    readers = [n for name in sliced for n in consumers.get(name, []) if n.op_type != "Slice"]
    if len(sliced) == 1 or any(n.op_type != "QuantizeLinear" for n in readers):
        return model, []  # the input is read by something else than slices and their quantization
    scale, zero_point = input_quantization(batch)
    q_name = f"{image}_quantized"
    scale_name, zp_name = f"{image}_scale", f"{image}_zero_point"
    graph.initializer.extend([numpy_helper.from_array(np.array(scale), scale_name),
                              numpy_helper.from_array(np.array(zero_point), zp_name)])
    for node in graph.node:
        if node.op_type == "Slice" and node.input[0] == image:
            node.input[0] = q_name
    for quant in readers:
        for dequant in consumers.get(quant.output[0], []):
            if dequant.op_type != "DequantizeLinear":
                return model, []
            dequant.input[0], dequant.input[1], dequant.input[2] = quant.input[0], scale_name, zp_name
        graph.node.remove(quant)
    for value in graph.value_info:  # the slices now carry int8
        if value.name in sliced:
            value.type.tensor_type.elem_type = onnx.TensorProto.INT8
    graph.node.insert(0, helper.make_node("QuantizeLinear", [image, scale_name, zp_name], [q_name],
                                          name=f"{image}_QuantizeLinear"))
    return model, [f"input {image}: one int8 quantization (scale {float(scale):.8g}, zero point {int(zero_point)}) "
                   f"shared by its {len(readers)} patch(es); the slices run on int8"]
