"""The paper's network against its baselines, measured on the emulated board (issue #7's table).

For each model: export (random weights, or trained ones with --weights-dir), quantize to int8 (random-normal
calibration unless --calibration), compile in RAM and stream input mode, run on the board, and print

    model | input | patches | params | MACs | flash | analytic peak (paper convention, int8) |
    measured peak SRAM (ram / stream) | instructions | top-1 after a short CPU run on `shapes` (--train-epochs)

Measured figures come from `tvmp run` on the board (static RAM + .data/.bss + stack high-water mark); the analytic
peak is max over operators of input + output bytes, as the paper (and MCUNet) count it. A model whose build does
not fit the board's flash or RAM is reported as such, with the bytes, and measured on generic-m7 instead.

    .venv/bin/python bench/paper_bench.py [--models paper,tiny,...] [--board stm32f746] [--train-epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from tvm_pipeline.board.boards import load_board
from tvm_pipeline.compiler import CompileOptions, compile_model
from tvm_pipeline.errors import UserError
from tvm_pipeline.evaluate import evaluate, random_input
from tvm_pipeline.models.analysis import analyze
from tvm_pipeline.models.export import export_onnx
from tvm_pipeline.models.zoo import get_model
from tvm_pipeline.quantize import quantize_model

MODELS = {  # row name -> (zoo name, shipped config name for training or None)
    "paper": ("tunnel_paper", "paper"),
    "tiny": ("tunnel_tiny", "tiny"),
    "mobilenetv2_baseline": ("mobilenetv2_baseline", "mobilenetv2_baseline"),
    "mobilenetv2_w035_144": ("mobilenetv2_w035_144", None),
}


def _measure(model_path: Path, work: Path, mode: str, board: str) -> str:
    """'peak B (instructions)' of one build on the board, or why it could not run there."""
    out = work / f"{model_path.stem}-{mode}-{board}"
    try:
        compile_model(model_path, out, CompileOptions(board=board, input_mode=mode))
        result = evaluate(out, load_board(board), random_input(out))
    except UserError as err:
        return f"n/a: {str(err).splitlines()[0][:60]}"
    ok = "" if result.within_tolerance(1e-5) else " MISMATCH"
    return f"{result.peak_sram_bytes:,} B / {result.instructions / 1e6:,.0f} M instr{ok}"


def _accuracy(config: str | None, epochs: int, work: Path) -> str:
    if not epochs or config is None:
        return "-"
    from tvm_pipeline.train import main as train

    run = work / f"train-{config}"
    train(["--model", config, "--data", "shapes", "--epochs", str(epochs), "-o", str(run), "--threads", "2"])
    import json

    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return f"{max(m.get('val_top1', 0.0) for m in metrics):.1%}"


def bench_row(name: str, board: str, epochs: int, work: Path) -> list[str]:
    """One table row for model `name`."""
    zoo_name, config = MODELS[name]
    model, shape = get_model(zoo_name)
    facts = analyze(model, shape)
    float_path = work / f"{name}.onnx"
    export_onnx(model, shape, float_path)
    calibration = work / f"{name}.calibration.npy"
    np.save(calibration, np.random.default_rng(0).standard_normal((8, *shape[1:])).astype(np.float32))
    int8_path = quantize_model(float_path, calibration, work / f"{name}.int8.onnx", samples=8).path
    patches = len(getattr(model, "windows", [])) or 1
    stream = _measure(int8_path, work, "stream", board) if patches > 1 else "(whole image)"
    return [
        name, "x".join(map(str, shape[2:])), str(patches), f"{facts.params / 1e6:.2f} M", f"{facts.macs / 1e6:.0f} M",
        f"{facts.weight_bytes_int8:,} B", f"{facts.paper_peak_elems:,} B",
        _measure(int8_path, work, "ram", board), stream, _accuracy(config, epochs, work),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--board", default="stm32f746")
    parser.add_argument("--train-epochs", type=int, default=0, help="short CPU training on shapes for top-1 (0: skip)")
    args = parser.parse_args(argv)
    header = ["model", "input", "patches", "params", "MACs", "int8 weights (analytic)", "paper-convention peak",
              f"int8 RAM input on {args.board}: peak / instr", "int8 stream input: peak / instr", "top-1 shapes"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="tvmp-paper-bench-") as tmp:
        for name in args.models.split(","):
            rows.append(bench_row(name, args.board, args.train_epochs, Path(tmp)))
            print(" | ".join(rows[-1]), flush=True)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, ["-" * w for w in widths], *rows]:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))
    print("\nMeasured on the emulated board (QEMU -icount): instructions, not cycles. Random weights and random "
          "calibration: memory and speed are those of the trained network; accuracy needs training (README).")


if __name__ == "__main__":
    main()
