"""Export a PyTorch model to a clean inference ONNX graph and check it against PyTorch with onnxruntime.

Exporter choice: the TorchScript exporter (`dynamo=False`). In torch 2.13 the dynamo exporter builds the
graph at opset 18 and, when asked for 17, its down-conversion fails on ReduceMean's `axes` input and it
silently keeps opset 18; it also turns global average pooling into ReduceMean + Reshape. The TorchScript
exporter emits opset 17 directly, folds eval-mode BatchNorm into the Conv weights (constant folding), and
maps the zoo's layers to Conv, Relu / Clip, Add, Slice, Concat, GlobalAveragePool, Flatten and Gemm (plus
the Constant bounds of Clip). Shared weights come out as Identity nodes on one initializer; they are removed.
It is deprecated in torch 2.13 (the pinned version), hence the silenced deprecation warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn

from tvm_pipeline.errors import InternalError, UserError

OPSET = 17
MAX_RELATIVE_ERROR = 1e-5
# Ops that only exist in training graphs, or that eval-mode BatchNorm folding should have removed.
TRAINING_OPS = {"BatchNormalization", "Dropout"}


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, seed: int = 0) -> onnx.ModelProto:
    """Write `model` (put in eval mode) as ONNX opset 17 with a static batch-1 input to `path`, and check it.

    Checks: the ONNX checker, no training-only op left, and onnxruntime's output equals torch's on a random
    input drawn from `seed` (max |ort - torch| / max |torch| <= 1e-5); a failure raises InternalError.
    Returns the exported model.
    """
    if len(input_shape) != 4 or input_shape[0] != 1:
        raise UserError(f"input_shape: expected (1, C, H, W) with batch 1, got {tuple(input_shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    example = torch.randn(input_shape, generator=torch.Generator().manual_seed(seed))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
            input_names=["input"],
            output_names=["output"],
        )
    exported = onnx.load(str(path))
    _drop_weight_identities(exported.graph)
    onnx.save(exported, str(path))
    onnx.checker.check_model(exported, full_check=True)
    leftovers = sorted({node.op_type for node in exported.graph.node} & TRAINING_OPS)
    if leftovers:
        raise InternalError(f"export_onnx: {path} still contains training-only ops {leftovers}")
    _check_against_torch(model, example, path)
    return exported


def _drop_weight_identities(graph: onnx.GraphProto) -> None:
    """Let consumers read shared initializers directly instead of through `Identity` nodes.

    Before (tunnels with shared weights, tunnel 2 onwards): w --Identity--> w_copy --> Conv
    After:                                                   w ---------------------> Conv
    """
    initializers = {tensor.name for tensor in graph.initializer}
    alias = {
        node.output[0]: node.input[0]
        for node in graph.node
        if node.op_type == "Identity" and node.input[0] in initializers
    }
    kept = [node for node in graph.node if not (node.op_type == "Identity" and node.output[0] in alias)]
    for node in kept:
        node.input[:] = [alias.get(name, name) for name in node.input]
    del graph.node[:]
    graph.node.extend(kept)


def _check_against_torch(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """onnxruntime on the exported file must reproduce the PyTorch output within MAX_RELATIVE_ERROR."""
    with torch.no_grad():
        expected = model(example).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {session.get_inputs()[0].name: example.numpy()})
    if actual.shape != expected.shape:
        raise InternalError(
            f"export_onnx: onnxruntime output shape {actual.shape} != torch's {expected.shape} for {path}"
        )
    error = relative_error(actual, expected)
    if error > MAX_RELATIVE_ERROR:
        raise InternalError(f"export_onnx: onnxruntime differs from torch for {path}: relative error {error:.2e}")


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|: relative to the output's scale, so near-zero outputs are fair."""
    scale = max(float(np.max(np.abs(expected))), np.finfo(np.float32).tiny)
    return float(np.max(np.abs(actual - expected))) / scale
