"""Model file -> Relax module, whatever the format: `load_model` picks the loader by the file's suffix.

Each loader validates the file and reports every unsupported op before TVM converts anything, fixes a symbolic
batch to 1 (or to `--input-shape`), and names the reference model that `evaluate.py` checks the compiled C against:
the source file itself, run by its own format's runtime (onnxruntime for .onnx, the TFLite interpreter for .tflite).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tvm

from tvm_pipeline import tvm_adapter
from tvm_pipeline.errors import UserError
from tvm_pipeline.frontend import onnx_loader, qdq_io, tflite_loader
from tvm_pipeline.frontend.onnx_loader import InputSpec

__all__ = ["InputSpec", "LoadedModel", "load_model", "supported_suffixes"]


@dataclass(frozen=True)
class LoadedModel:
    """An imported model with its single input fixed, plus what the compiled folder records about it."""

    mod: tvm.IRModule
    input: InputSpec
    output_name: str
    format: str  # "onnx" or "tflite": the reference runtime evaluate.py uses
    notes: tuple[str, ...] = ()  # what the loader changed (e.g. a QDQ model's float I/O made int8)
    reference_bytes: bytes | None = None  # the reference model when it differs from the source file

    @property
    def reference_file(self) -> str:
        """Name of the copy of the source model in the compiled folder."""
        return f"reference.{self.format}"


def _import(kind: str, path: Path, run: Callable[[], tvm.IRModule]) -> tvm.IRModule:
    try:
        return run()
    except Exception as err:  # the TVM frontends raise bare errors for attributes they cannot convert
        raise UserError(f"TVM's {kind} frontend could not import {path.name}: {err}") from None


def _load_onnx(path: Path, input_shapes: dict[str, tuple[int, ...]]) -> LoadedModel:
    model = onnx_loader.load_onnx(path)
    onnx_loader.check_supported_ops(model)
    model, io_notes = qdq_io.integer_io(model)  # float-I/O QDQ models take and return int8 on the board
    (spec,) = onnx_loader.input_specs(model, input_shapes)
    mod = _import("ONNX", path, lambda: tvm_adapter.import_onnx(model, {spec.name: spec.shape}))
    return LoadedModel(mod, spec, model.graph.output[0].name, "onnx", tuple(io_notes),
                       model.SerializeToString() if io_notes else None)


def _load_tflite(path: Path, input_shapes: dict[str, tuple[int, ...]]) -> LoadedModel:
    loaded = tflite_loader.load_tflite(path)
    tflite_loader.check_supported_ops(loaded)
    (spec,) = tflite_loader.input_specs(loaded, input_shapes)
    output = tflite_loader.output_spec(loaded)
    mod = _import("TFLite", path, lambda: tvm_adapter.import_tflite(
        loaded.model, {spec.name: spec.shape}, {spec.name: spec.dtype}))
    # TFLite is channels-last; our graph passes (fold-qdq included) match the NCHW graphs of the ONNX files.
    mod = _import("TFLite", path, lambda: tvm_adapter.nhwc_to_nchw(mod))
    return LoadedModel(mod, spec, output.name, "tflite")


_LOADERS: dict[str, Callable[[Path, dict[str, tuple[int, ...]]], LoadedModel]] = {
    ".onnx": _load_onnx,
    ".tflite": _load_tflite,
}


def supported_suffixes() -> list[str]:
    """File suffixes `load_model` accepts."""
    return list(_LOADERS)


def load_model(path: Path, input_shapes: dict[str, tuple[int, ...]] | None = None) -> LoadedModel:
    """Validate, check and import a model file; every user-fixable problem is a UserError."""
    path = Path(path)
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise UserError(f"{path.name}: unknown model format '{path.suffix}'; tvm-pipeline reads "
                        f"{' and '.join(supported_suffixes())} files")
    return loader(path, dict(input_shapes or {}))
