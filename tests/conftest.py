"""Shared fixtures: zoo models exported to ONNX once per session, compiled folders, random inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tvm_pipeline.compiler import CompileOptions, compile_model

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
