"""Shared fixtures: zoo models exported to ONNX once per session, compiled folders, random inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

import numpy as np
import onnx

from tvm_pipeline.compiler import CompileOptions, compile_model
from tvm_pipeline.quantize import quantize_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def zoo_onnx(tmp_path_factory):
    """`zoo_onnx(name) -> Path`: the zoo model exported to ONNX (seeded random weights), cached per session."""
    from tvm_pipeline.models.export import export_onnx
    from tvm_pipeline.models.zoo import get_model

    root = tmp_path_factory.mktemp("zoo")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            model, shape = get_model(name)
            cache[name] = root / f"{name}.onnx"
            export_onnx(model, shape, cache[name])
        return cache[name]

    return get


@pytest.fixture(scope="session")
def compiled(zoo_onnx, tmp_path_factory):
    """`compiled(name, **options) -> Path`: a zoo model compiled with CompileOptions(**options), cached."""
    root = tmp_path_factory.mktemp("compiled")
    cache: dict[tuple, Path] = {}

    def get(name: str, **options) -> Path:
        key = (name, tuple(sorted((k, str(v)) for k, v in options.items())))
        if key not in cache:
            out = root / f"{name}-{len(cache)}"
            compile_model(zoo_onnx(name), out, CompileOptions(**options))
            cache[key] = out
        return cache[key]

    return get


@pytest.fixture(scope="session")
def int8_onnx(zoo_onnx, tmp_path_factory):
    """`int8_onnx(name) -> Path`: the zoo model quantized by `quantize_model` (16 random-normal calibration samples)."""
    root = tmp_path_factory.mktemp("int8")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            source = zoo_onnx(name)
            shape = [d.dim_value for d in onnx.load(str(source)).graph.input[0].type.tensor_type.shape.dim]
            calibration = root / f"{name}.calibration.npy"
            np.save(calibration, np.random.default_rng(1).standard_normal((16, *shape[1:])).astype(np.float32))
            cache[name] = quantize_model(source, calibration, root / f"{name}.int8.onnx").path
        return cache[name]

    return get


@pytest.fixture
def one_torch_thread():
    """Run torch on one thread: on this 2-core machine, shared with other work, two contended threads are slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
