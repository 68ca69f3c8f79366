"""Give structurally identical tensors one quantization: weight-shared patch tunnels -> shared integer constants.

A patch-tunnel network runs the same weights in every tunnel, but onnxruntime's quantizer calibrates each tunnel's
activations separately. Every tunnel then gets its own per-channel bias and requantization constants (int32), and
the flash saved by sharing weights is spent again: 17 tunnels of the `paper` config carried 400 KB of them.

Tensors that sit at the same place of identical tunnels get the same structural key: the op, its attributes and
constant inputs (the shared weights), and the keys of its variable inputs, with every slice of the model input
counted as one "window" of its shape. The QuantizeLinear nodes of tensors with one key are given one per-tensor
quantization covering all of their calibrated ranges; their DequantizeLinear partners read the same initializers.
The integer constants that fold-qdq derives are then identical across tunnels and stored once.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
from onnx import numpy_helper


def _key(node: onnx.NodeProto, inputs: list[str], keys: dict[str, str], constants: set[str]) -> str:
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        inputs = inputs[:1]  # its parameters are what is being unified, not part of the tensor's identity
    parts = [node.op_type, node.domain, *(str(a) for a in node.attribute)]
    parts += [f"const:{name}" if name in constants else f"var:{keys.get(name, name)}" for name in inputs]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _range(scale: float, zero_point: int) -> tuple[float, float]:
    return (-128 - zero_point) * scale, (127 - zero_point) * scale


def share_tunnel_quantization(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Unify the per-tensor int8 quantization of structurally identical tensors; returns the model and a note."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    constants = set(initializers) | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    (image,) = [i.name for i in graph.input if i.name not in initializers]
    keys: dict[str, str] = {image: "image"}
    for node in graph.node:
        if node.op_type == "Slice" and keys.get(node.input[0]) in ("image", "window"):
            keys[node.output[0]] = "window"  # every patch of the input is the same kind of tensor
            continue
        if node.op_type == "QuantizeLinear" and keys.get(node.input[0]) == "image":
            keys[node.output[0]] = "image"  # the input's own quantization (slice_input_qdq)
            continue
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers:
            # a quantized parameter: int8 weights are shared by name; an int32 bias is re-quantized per tunnel
            # (its scale follows the input's), so only its shape identifies it
            param = initializers[node.input[0]]
            name = node.input[0] if param.data_type == onnx.TensorProto.INT8 else "bias"
            keys[node.output[0]] = f"param:{name}:{list(param.dims)}"
            continue
        key = _key(node, list(node.input), keys, constants)
        for index, output in enumerate(node.output):
            keys[output] = f"{key}:{index}"
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) == 3 and node.input[1] in initializers:
            groups.setdefault(keys.get(node.input[0], node.input[0]), []).append(node)
    unified = 0
    for nodes in groups.values():
        params = {(n.input[1], n.input[2]) for n in nodes}
        if len(params) < 2:
            continue
        values = [(numpy_helper.to_array(initializers[s]), numpy_helper.to_array(initializers[z])) for s, z in params]
        if any(s.size != 1 or z.dtype != np.int8 for s, z in values):
            continue  # per-channel or uint8: leave as calibrated
        ranges = [_range(float(s), int(z)) for s, z in values]
        low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
        scale = np.float32((high - low) / 255.0)
        zero_point = np.int8(np.clip(round(-128 - low / float(scale)), -128, 127))
        for scale_name, zp_name in params:
            initializers[scale_name].CopyFrom(numpy_helper.from_array(np.array(scale, np.float32), scale_name))
            initializers[zp_name].CopyFrom(numpy_helper.from_array(np.array(zero_point, np.int8), zp_name))
        unified += len(params)
    if not unified:
        return model, []
    _requantize_biases(graph, initializers)
    return model, [f"{unified} activation quantizations of structurally identical tensors unified into shared "
                   f"ones, so weight-shared tunnels share their integer constants"]


def _requantize_biases(graph: onnx.GraphProto, initializers: dict) -> None:
    """Re-express each int32 bias in its conv's new input scale (bias scale = input scale x weight scale)."""
    producers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        x_dq, w_dq, b_dq = (producers.get(name) for name in node.input[:3])
        if not all(n is not None and n.op_type == "DequantizeLinear" for n in (x_dq, w_dq, b_dq)):
            continue
        if not all(name in initializers for name in (x_dq.input[1], w_dq.input[1], *b_dq.input[:2])):
            continue
        x_scale = numpy_helper.to_array(initializers[x_dq.input[1]]).astype(np.float64)
        w_scale = numpy_helper.to_array(initializers[w_dq.input[1]]).astype(np.float64)
        old_q = numpy_helper.to_array(initializers[b_dq.input[0]])
        old_scale = numpy_helper.to_array(initializers[b_dq.input[1]])
        bias = old_q.astype(np.float64) * old_scale.astype(np.float64)
        new_scale = (x_scale * w_scale).astype(np.float32).reshape(old_scale.shape)
        new_q = np.clip(np.round(bias / new_scale.astype(np.float64)), -2**31, 2**31 - 1).astype(old_q.dtype)
        initializers[b_dq.input[0]].CopyFrom(numpy_helper.from_array(new_q, b_dq.input[0]))
        initializers[b_dq.input[1]].CopyFrom(numpy_helper.from_array(new_scale, b_dq.input[1]))
