"""tvm-pipeline: ONNX CNNs -> Apache TVM -> standalone C with one static arena -> Cortex-M boards."""

__version__ = "0.1.0"
