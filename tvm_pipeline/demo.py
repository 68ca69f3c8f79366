"""`make demo`: a small MobileNetV2-style model, PyTorch -> ONNX -> TVM -> C -> emulated STM32F746, measured.

    python -m tvm_pipeline.demo [--model mbv2_tiny] [--board stm32f746] [--out demo_out]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tvm_pipeline.cli import main as tvmp


def main(argv: list[str] | None = None) -> int:
    """Export a zoo model, then run `tvmp compile`, `tvmp run` and `tvmp report` on it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", default="mbv2_tiny", help="zoo model to build (tvm_pipeline.models.zoo)")
    parser.add_argument("--board", default="stm32f746")
    parser.add_argument("--out", default="demo_out", help="folder for the ONNX file and the compiled model")
    args = parser.parse_args(argv)

    from tvm_pipeline.models.export import export_onnx
    from tvm_pipeline.models.zoo import get_model

    out = Path(args.out)
    onnx_path = out / f"{args.model}.onnx"
    model, input_shape = get_model(args.model)
    export_onnx(model, input_shape, onnx_path)
    print(f"== exported {args.model} (PyTorch, random weights) to {onnx_path}\n")
    compiled = out / f"{args.model}_{args.board}"
    steps = [
        ["compile", str(onnx_path), "--board", args.board, "-o", str(compiled)],
        ["run", str(compiled), "--board", args.board],
    ]
    for step in steps:
        print(f"== tvmp {' '.join(step)}")
        status = tvmp(step)
        print()
        if status:
            return status
    print(f"== the memory plan: tvmp report {compiled}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
