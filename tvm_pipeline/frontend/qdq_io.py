"""A QDQ model with a float input and output -> the same model taking and returning int8.

    before:  x (float) -> QuantizeLinear(s_in, z_in) -> ...int8 graph... -> DequantizeLinear(s_out, z_out) -> y (float)
    after:   x (int8)  -> ...int8 graph... -> y (int8)

onnxruntime's quantizer and PyTorch's QAT export write float-I/O QDQ models; on a microcontroller the sensor data
arrive as integers and the first QuantizeLinear would be the only float arithmetic left. The rewrite keeps the
tensor names, so the compiled model and the reference model (this rewritten one) take the same int8 input. The
notes give the removed scales: real input = s_in * (x - z_in), real output = s_out * (y - z_out).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

_INTEGER = {TensorProto.INT8: "int8", TensorProto.UINT8: "uint8"}


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
        if node.op_type == "Identity" and node.output[0] == name:  # PyTorch shares constants through Identity
            return _constant(graph, node.input[0])
    return None


def _per_tensor(graph: onnx.GraphProto, node: onnx.NodeProto) -> tuple[float, np.ndarray] | None:
    """(scale, zero point) of a Q/DQ node with per-tensor constant parameters and an integer zero point."""
    if len(node.input) < 3:
        return None
    scale, zero_point = _constant(graph, node.input[1]), _constant(graph, node.input[2])
    if scale is None or zero_point is None or scale.size != 1 or zero_point.size != 1:
        return None
    return float(scale.reshape(())), zero_point.reshape(())


def integer_io(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The model with its input QuantizeLinear and output DequantizeLinear removed, and one note per change.

    Returns the model unchanged (and no notes) when it has no such pair; the input is not copied in that case.
    """
    graph = model.graph
    inputs = [i for i in graph.input if _constant(graph, i.name) is None]
    if len(inputs) != 1 or len(graph.output) != 1:
        return model, []  # input_specs reports this
    (inp,), (out,) = inputs, graph.output
    consumers = [n for n in graph.node if inp.name in n.input]
    producer = next((n for n in graph.node if out.name in n.output), None)
    quant = consumers[0] if len(consumers) == 1 and consumers[0].op_type == "QuantizeLinear" else None
    dequant = producer if producer is not None and producer.op_type == "DequantizeLinear" else None
    in_params = _per_tensor(graph, quant) if quant is not None else None
    out_params = _per_tensor(graph, dequant) if dequant is not None else None
    if inp.type.tensor_type.elem_type != TensorProto.FLOAT or (in_params is None and out_params is None):
        return model, []
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph, notes = model.graph, []
    if in_params is not None:
        node = next(n for n in graph.node if n.output[0] == quant.output[0])
        dtype = int(onnx.helper.np_dtype_to_tensor_dtype(in_params[1].dtype))
        for n in graph.node:
            n.input[:] = [inp.name if i == node.output[0] else i for i in n.input]
        graph.node.remove(node)
        next(i for i in graph.input if i.name == inp.name).type.tensor_type.elem_type = dtype
        notes.append(f"input {inp.name}: {_INTEGER.get(dtype, dtype)}, real value = {str(np.float32(in_params[0]))} * (x - "
                     f"{int(in_params[1])}) (its QuantizeLinear removed)")
    if out_params is not None:
        node = next(n for n in graph.node if n.output[0] == dequant.output[0])
        source = node.input[0]
        graph.node.remove(node)
        stale = [v for v in graph.value_info if v.name == source]
        for v in stale:
            graph.value_info.remove(v)
        for n in graph.node:
            n.output[:] = [out.name if o == source else o for o in n.output]
            n.input[:] = [out.name if i == source else i for i in n.input]
        dtype = int(onnx.helper.np_dtype_to_tensor_dtype(out_params[1].dtype))
        graph.output[0].type.tensor_type.elem_type = dtype
        notes.append(f"output {out.name}: {_INTEGER.get(dtype, dtype)}, real value = {str(np.float32(out_params[0]))} * (y - "
                     f"{int(out_params[1])}) (its DequantizeLinear removed)")
    return model, notes
