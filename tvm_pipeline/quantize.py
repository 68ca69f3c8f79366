"""`tvmp quantize`: post-training static quantization of a float ONNX model into an int8 QDQ model.

onnxruntime's quantizer does the work (QDQ format, int8 activations with zero points (uint8 on request:
onnxruntime's own default), per-channel symmetric int8 weights, int32 biases, MinMax calibration); it also removes a
ReLU / ReLU6 whose range the output quantization already clamps. Calibration data: an .npy batch (N x the input's
shape without the batch, or one sample), or a folder of images resized to the input's size and scaled to [0, 1]
(optionally ImageNet-normalized). The result takes and returns the activation type (`frontend/qdq_io.py`) unless
float I/O is asked for; the scales of both are printed.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from tvm_pipeline.errors import UserError
from tvm_pipeline.frontend.onnx_loader import input_specs, load_onnx
from tvm_pipeline.frontend.qdq_io import integer_io
from tvm_pipeline.frontend.slice_input_qdq import share_input_quantization
from tvm_pipeline.qdq_sharing import share_tunnel_quantization

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm"}
NORMALIZATIONS = ("unit", "imagenet")


@dataclass(frozen=True)
class QuantizeResult:
    """What `quantize_model` wrote."""

    path: Path
    samples: int
    qdq_nodes: int
    notes: list[str]


def _channels_first(shape: tuple[int, ...]) -> bool:
    """NCHW unless the last axis looks like the channels and the second does not."""
    return not (shape[-1] in (1, 3) and shape[1] not in (1, 3))


def _image_batch(folder: Path, shape: tuple[int, ...], normalization: str, limit: int) -> np.ndarray:
    from PIL import Image

    from tvm_pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    if len(shape) != 4:
        raise UserError(f"calibration images need a 4-D model input; this model's input is {list(shape)}")
    nchw = _channels_first(shape)
    channels, height, width = (shape[1], shape[2], shape[3]) if nchw else (shape[3], shape[1], shape[2])
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    samples = []
    for path in files:
        with Image.open(path) as image:
            image = image.convert("RGB" if channels == 3 else "L").resize((width, height), Image.BILINEAR)
            array = np.asarray(image, dtype=np.float32).reshape(height, width, channels) / 255.0
        if normalization == "imagenet":
            if channels != 3:
                raise UserError("ImageNet normalization needs a 3-channel input")
            array = (array - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
        samples.append(array.transpose(2, 0, 1) if nchw else array)
    return np.stack(samples)


def calibration_batch(path: Path, shape: tuple[int, ...], normalization: str = "unit", limit: int = 256) -> np.ndarray:
    """The calibration samples, (N, *shape[1:]) float32, from an .npy file or an image folder."""
    path = Path(path)
    if path.is_dir():
        return _image_batch(path, shape, normalization, limit)
    if path.suffix != ".npy" or not path.is_file():
        raise UserError(f"--calibration {path}: expected a folder of images or an .npy file")
    try:
        batch = np.load(path)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read calibration data {path}: {err}") from None
    sample = tuple(shape[1:])
    if batch.shape == sample:
        batch = batch[None]
    if batch.ndim != len(shape) or tuple(batch.shape[1:]) != sample or not batch.shape[0]:
        raise UserError(f"calibration data {path} has shape {list(batch.shape)}; expected [N, {', '.join(map(str, sample))}]")
    return batch[:limit].astype(np.float32)


def _reader(name: str, batch: np.ndarray):
    from onnxruntime.quantization import CalibrationDataReader

    class BatchReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._samples = iter(batch)

        def get_next(self) -> dict | None:
            sample = next(self._samples, None)
            return None if sample is None else {name: sample[None]}

    return BatchReader()


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime's quantizer logs a pre-processing suggestion on the root logger; it does not apply here."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _drop_unused_constants(model: onnx.ModelProto) -> None:
    """The quantizer leaves the constant bounds of the Clips it removed; onnxruntime warns about each."""
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)
    for node in [n for n in model.graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        model.graph.node.remove(node)


def quantize_model(model_path: Path, calibration: Path, out_path: Path, *, normalization: str = "unit",
                   samples: int = 256, float_io: bool = False, share: bool = True,
                   activation_type: str = "int8") -> QuantizeResult:
    """Quantize `model_path` with calibration data from `calibration`; write the QDQ model to `out_path`.

    `activation_type`: "int8" or "uint8" activations (and model input/output); weights are int8 either way.

    `share`: give structurally identical tensors (weight-shared patch tunnels) one quantization (qdq_sharing.py).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quant_types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    if activation_type not in quant_types:
        raise UserError(f"activation type {activation_type!r}: expected one of {', '.join(quant_types)}")
    model = load_onnx(Path(model_path))
    (spec,) = input_specs(model)
    if spec.dtype != "float32":
        raise UserError(f"{model_path} takes {spec.dtype} input: only float32 models can be quantized")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        raise UserError(f"{model_path} is already quantized (it has QuantizeLinear/DequantizeLinear nodes)")
    batch = calibration_batch(Path(calibration), spec.shape, normalization, samples)
    with tempfile.TemporaryDirectory(prefix="tvmp-quantize-") as tmp, _quiet_root_logger():
        quantized = Path(tmp) / "quantized.onnx"
        quantize_static(str(model_path), str(quantized), _reader(spec.name, batch), quant_format=QuantFormat.QDQ,
                        activation_type=quant_types[activation_type], weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        result = onnx.load(str(quantized))
    result, notes = share_input_quantization(result, batch)
    if share:
        result, sharing_notes = share_tunnel_quantization(result)
        notes += sharing_notes
    _drop_unused_constants(result)
    if not float_io:
        result, io_notes = integer_io(result)
        notes += io_notes
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(result, str(out_path))
    qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in result.graph.node)
    return QuantizeResult(out_path, len(batch), qdq, notes)
