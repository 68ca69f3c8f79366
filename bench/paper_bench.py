"""The paper's network against its baselines, measured on the emulated board (issue #7's table).

For each model: export (seeded random weights), quantize to int8 (random-normal calibration), compile in RAM and
stream input mode, run on the board, and print

    model | input | patches | params | MACs | int8 weights (analytic) | analytic peak (paper convention, int8) |
    measured flash | measured peak SRAM / instructions (RAM input, stream input) | top-1 on `shapes` (--accuracy)

Measured figures come from `tvmp run` on the board (static RAM + .data/.bss + stack high-water mark); the analytic
peak is max over operators of input + output bytes, as the paper (and MCUNet) count it. A build that does not fit
the board's flash or RAM is measured on --fallback-board instead, marked [board] in its cell and explained below
the table.

--accuracy trains the tunnel network (`paper`) and its baseline of similar MACs (`mobilenetv2_baseline`) with
one recipe on the generated `shapes` set (tvm_pipeline/accuracy.py: same data, epochs, schedule and seed, one
torch thread) at --accuracy-resolution (both configs scaled: 224x224 is too slow to train on a CPU) and reports
top-1 after the last epoch. At the defaults that takes about 17 minutes on an idle core (30 measured on a
busy one).

    .venv/bin/python bench/paper_bench.py [--models paper,tiny,...] [--board stm32f746]
        [--fallback-board generic-m7-16mb] [--accuracy [--epochs 5] [--accuracy-resolution 112]] [--skip-board]
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvm_pipeline.accuracy import Score, ShapesRecipe, compare
from tvm_pipeline.board.boards import load_board
from tvm_pipeline.compiler import CompileOptions, compile_model
from tvm_pipeline.errors import UserError
from tvm_pipeline.evaluate import Evaluation, evaluate, random_input
from tvm_pipeline.models.analysis import analyze
from tvm_pipeline.models.export import export_onnx
from tvm_pipeline.models.zoo import get_model
from tvm_pipeline.quantize import quantize_model

MODELS = {  # row name -> zoo name
    "paper": "tunnel_paper",
    "tiny": "tunnel_tiny",
    "mobilenetv2_baseline": "mobilenetv2_baseline",
    "mobilenetv2_w035_144": "mobilenetv2_w035_144",
}
# Rows given a top-1 by --accuracy -> the shipped config trained: the tunnel network and its baseline of similar MACs.
ACCURACY_CONFIGS = {"paper": "paper", "mobilenetv2_baseline": "mobilenetv2_baseline"}


@dataclass(frozen=True)
class Measured:
    """One build run on a board, or why it did not run; `note` says why it is not on the board asked for."""

    evaluation: Evaluation | None
    board: str
    note: str = ""

    def cell(self, requested_board: str) -> str:
        """'peak B / instructions' with [board] when measured elsewhere, or n/a."""
        if self.evaluation is None:
            return "n/a (see below)"
        result = self.evaluation
        text = f"{result.peak_sram_bytes:,} B / {result.instructions / 1e6:,.0f} M instr"
        if not result.within_tolerance(1e-5):
            lsb = result.max_abs_diff_lsb
            text += f" MISMATCH ({lsb} LSB)" if lsb is not None else f" MISMATCH (rel. {result.max_rel_error:.1e})"
        return text + ("" if self.board == requested_board else f" [{self.board}]")


def _measure(model_path: Path, work: Path, mode: str, boards: list[str]) -> Measured:
    """Compile and run one build on the first of `boards` whose flash and RAM it fits."""
    note = ""
    for board in boards:
        out = work / f"{model_path.stem}-{mode}-{board}"
        try:
            compile_model(model_path, out, CompileOptions(board=board, input_mode=mode))
            return Measured(evaluate(out, load_board(board), random_input(out)), board, note)
        except UserError as err:
            note = str(err).splitlines()[0]
            if "does not fit" not in note:  # an error no bigger board cures
                return Measured(None, board, note)
    return Measured(None, boards[-1], note)


def bench_row(name: str, boards: list[str], work: Path) -> tuple[list[str], list[str]]:
    """Model `name`'s table cells up to the accuracy column, and its notes (builds measured elsewhere, errors)."""
    model, shape = get_model(MODELS[name])
    facts = analyze(model, shape)
    patches = len(getattr(model, "windows", [])) or 1
    cells = [name, "x".join(map(str, shape[2:])), str(patches), f"{facts.params / 1e6:.2f} M",
             f"{facts.macs / 1e6:.0f} M", f"{facts.weight_bytes_int8:,} B", f"{facts.paper_peak_elems:,} B"]
    if not boards:
        return cells + ["-", "-", "-"], []
    float_path = work / f"{name}.onnx"
    export_onnx(model, shape, float_path)
    calibration = work / f"{name}.calibration.npy"
    np.save(calibration, np.random.default_rng(0).standard_normal((8, *shape[1:])).astype(np.float32))
    int8_path = quantize_model(float_path, calibration, work / f"{name}.int8.onnx", samples=8).path
    builds = {mode: _measure(int8_path, work, mode, boards) for mode in (["ram", "stream"] if patches > 1 else ["ram"])}
    ram = builds["ram"].evaluation
    flash = f"{ram.flash_bytes:,} B" if ram else "n/a"
    cells += [flash + ("" if builds["ram"].board == boards[0] else f" [{builds['ram'].board}]"),
              builds["ram"].cell(boards[0]), builds["stream"].cell(boards[0]) if "stream" in builds else "(whole image)"]
    notes = [f"{name}, {mode} input: {b.note}" + (f" -> measured on {b.board}" if b.evaluation else "")
             for mode, b in builds.items() if b.note]
    return cells, notes


def _accuracy_notes(scores: dict[str, Score], recipe: ShapesRecipe) -> list[str]:
    """How the top-1 column was produced, one line per trained net."""
    lines = [f"top-1: {recipe.epochs} epochs on generated `shapes` (8 classes; train.py's SGD recipe, seed "
             f"{recipe.seed}, one torch thread), every net at {recipe.resolution}x{recipe.resolution}; "
             "validation top-1 after the last epoch:"]
    lines += [f"  {s.name}: {s.macs / 1e6:.1f} M MACs, {s.params / 1e6:.2f} M params, top-1 {s.top1:.2f} %, "
              f"trained in {s.seconds / 60:.1f} min" for s in scores.values()]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--board", default="stm32f746")
    parser.add_argument("--fallback-board", default="generic-m7-16mb", help="for builds that do not fit --board")
    parser.add_argument("--skip-board", action="store_true", help="analytic columns only (with --accuracy: no builds)")
    parser.add_argument("--accuracy", action="store_true", help="train paper and the baseline on shapes for top-1")
    parser.add_argument("--epochs", type=int, default=5, help="--accuracy: training epochs")
    parser.add_argument("--accuracy-resolution", type=int, default=112, help="--accuracy: input side for training")
    args = parser.parse_args(argv)
    names = args.models.split(",")
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    boards = [] if args.skip_board else [args.board, args.fallback_board]
    header = ["model", "input", "patches", "params", "MACs", "int8 weights (analytic)", "paper-convention peak",
              "flash (measured)", f"int8 RAM input on {args.board}: peak / instr", "int8 stream input: peak / instr",
              "top-1 shapes"]
    rows, notes = [], []
    recipe = ShapesRecipe(epochs=args.epochs, resolution=args.accuracy_resolution)
    with tempfile.TemporaryDirectory(prefix="tvmp-paper-bench-") as tmp:
        for name in names:
            cells, row_notes = bench_row(name, boards, Path(tmp))
            rows.append(cells)
            notes += row_notes
            print(" | ".join(cells), flush=True)
        trained = [ACCURACY_CONFIGS[name] for name in names if name in ACCURACY_CONFIGS] if args.accuracy else []
        scores = compare(trained, recipe, Path(tmp) / "accuracy")
    for name, row in zip(names, rows):
        score = scores.get(ACCURACY_CONFIGS.get(name, ""))
        row.append(f"{score.top1:.1f} % @{score.resolution}" if score else "-")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, ["-" * w for w in widths], *rows]:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))
    print()
    for line in notes + (_accuracy_notes(scores, recipe) if scores else []):
        print(line)
    print("\nMeasured on the emulated board (QEMU -icount): instructions, not cycles. Random weights and random "
          "calibration: memory and speed are those of the trained network.")


if __name__ == "__main__":
    main()
