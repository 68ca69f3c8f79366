"""Instructions per inference, untuned / tuned (C) / tuned (LLVM object), for the MLPerf Tiny models and
MobileNetV2-0.35@144, measured on the emulated board (a table, not a test).

The MLPerf Tiny models are their published int8 `.tflite` files (the models the MLPerf results run; our builds
are bit-exact with TFLM), MACs counted on their int8 `.onnx` twins. MobileNetV2-0.35@144 is quantized to int8
first (`tvmp quantize`, random calibration images, float input/output): its float32 weights fit no board's flash.
Untuned: no records at all (not even the shipped ones); on a DSP board the int8 convs then take the int8_dsp rule's
default register block, and tuning measures that rule's other blocks (see `tuning/tuner.py`).

For each model: `tune_model` for codegen c and for codegen llvm (every distinct kernel, `--trials` candidates each,
each measured on QEMU under -icount and checked against the untuned kernel), then the model compiled with the records
and run once on the board (the untuned and tuned figures are those runs, from the verified allowance files). MACs are
counted from the ONNX graph (Conv: output elements x input channels per group x kernel area; Gemm/MatMul: M x N x K).

The reference column is the best published MLPerf Tiny v1.1 result on an STM32F746 (Cortex-M7 @ 216 MHz) in CPU
*cycles*; ours are emulated *instructions*. QEMU has no cycle model: a Cortex-M7 can issue two instructions a cycle
but also stalls on flash and memory, so the two columns are not the same unit. The anomaly-detection model has no
such reference in the issue.

    .venv/bin/python bench/tuning_bench.py [--trials 8] [--llvm-trials N] [--workers 2] [--models ic,vww,kws,ad,mbv2]
                                           [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx

from tvm_pipeline.compiler import CompileOptions, compile_model
from tvm_pipeline.errors import UserError
from tvm_pipeline.tuning.model import tune_model
from tvm_pipeline.data.mlperf import models_dir

MODELS_DIR = models_dir()
MODELS = {  # key: (file or zoo name, its ONNX form for counting MACs, MLPerf Tiny v1.1 best cycles on a Cortex-M7
    # F746 @ 216 MHz)
    "ic": ("pretrainedResnet_quant.tflite", "pretrainedResnet_quant.onnx", 13.3e6),
    "vww": ("vww_96_int8.tflite", "vww_96_int8.onnx", 7.36e6),
    "kws": ("kws_ref_model.tflite", "kws_ref_model.onnx", 3.83e6),
    "ad": ("ad01_int8.tflite", "ad01_int8.onnx", None),
    "mbv2": ("zoo:mobilenetv2_w035_144", None, None),  # int8: its float32 weights (6.7 MB) fit no board's flash
}
BOARDS = ("stm32f746", "generic-m7")  # the first one the model fits


def model_file(name: str, scratch: Path) -> Path:
    if not name.startswith("zoo:"):
        return MODELS_DIR / name
    from tvm_pipeline.models.export import export_onnx
    from tvm_pipeline.models.zoo import get_model

    from tvm_pipeline.quantize import quantize_model

    path, float_path = scratch / f"{name[4:]}.int8.onnx", scratch / f"{name[4:]}.onnx"
    if not path.exists():
        model, shape = get_model(name[4:])
        export_onnx(model, shape, float_path)
        calibration = scratch / "calibration.npy"  # random images in [0, 1]: instruction counts, not accuracy
        np.save(calibration, np.random.default_rng(0).random((8, *shape[1:])).astype(np.float32))
        quantize_model(float_path, calibration, path, samples=8, float_io=True)
    return path


def count_macs(path: Path) -> int:
    """Multiply-accumulates of every Conv, Gemm and MatMul, from ONNX shape inference with batch 1."""
    model = onnx.load(path)
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim[:1]:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    producers = {o: n for n in model.graph.node for o in n.output}

    def weight_shape(name: str) -> list[int]:  # through a DequantizeLinear (QDQ models)
        while name not in shapes and name in producers:
            name = producers[name].input[0]
        return shapes[name]

    macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            out, w = shapes[node.output[0]], weight_shape(node.input[1])
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            out, a = shapes[node.output[0]], weight_shape(node.input[0])
            macs += int(np.prod(out)) * a[-1]
    return macs


def pick_board(path: Path, scratch: Path) -> str:
    for board in BOARDS:
        try:
            compile_model(path, scratch / "fit", CompileOptions(board=board, tuning=scratch / "no-records"))
            return board
        except UserError:
            continue
    raise UserError(f"{path.name} fits none of {BOARDS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--llvm-trials", type=int, help="trials per kernel for the LLVM build (default: --trials; "
                        "each is a MetaSchedule search, ~10x a C setting's cost)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "tvmp-tuning-bench"),
                        help="records folder (a rerun resumes from it)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for key in args.models.split(","):
        name, onnx_name, reference = MODELS[key]
        path = model_file(name, out)
        board = pick_board(path, out)
        macs = count_macs(MODELS_DIR / onnx_name if onnx_name else path)
        c = tune_model(path, board, args.trials, out, args.workers, codegen="c").allowance
        llvm = tune_model(path, board, args.llvm_trials or args.trials, out, args.workers, codegen="llvm").allowance
        rows.append((key, path.stem, board, macs, c, llvm, reference))
        print(f"{key}: done", flush=True)
    print(f"\ninstructions per inference on the emulated board (QEMU -icount: instructions, NOT cycles), "
          f"{args.trials} trials per kernel (LLVM: {args.llvm_trials or args.trials})")
    head = (f"{'model':<6}{'board':<11}{'MACs':>11}{'untuned C':>13}{'tuned C':>13}{'untuned LLVM':>13}{'tuned LLVM':>13}"
            f"{'C t/u':>7}{'LLVM t/u':>9}{'ins/MAC u':>10}{'t':>6}{'LLVM':>6}{'MLPerf M7 cycles':>18}"
            f"{'peak SRAM u->t (C)':>22}")
    print(head)
    for key, _, board, macs, c, llvm, reference in rows:
        ref = f"{reference / 1e6:.2f} M" if reference else "n/a"
        print(f"{key:<6}{board:<11}{macs:>11,}{c.untuned_instructions:>13,}{c.tuned_instructions:>13,}"
              f"{llvm.untuned_instructions:>13,}{llvm.tuned_instructions:>13,}"
              f"{c.tuned_instructions / c.untuned_instructions:>7.2f}"
              f"{llvm.tuned_instructions / c.untuned_instructions:>9.2f}{c.untuned_instructions / macs:>10.2f}"
              f"{c.tuned_instructions / macs:>6.2f}{llvm.tuned_instructions / macs:>6.2f}{ref:>18}"
              f"{f'{c.untuned_peak_sram_bytes:,}->{c.tuned_peak_sram_bytes:,}':>22}")
    print("t/u: tuned / untuned C instructions (target <= 0.5); LLVM t/u: tuned LLVM / untuned C. Reference: best MLPerf Tiny v1.1 cycles on an "
          "STM32F746 (Cortex-M7 @ 216 MHz); not the same unit as emulated instructions.")


if __name__ == "__main__":
    main()
