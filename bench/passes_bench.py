"""Benchmark the memory passes on MobileNetV2: peak SRAM and instructions measured on the emulated board.

For each model (seeded random weights: memory and speed do not depend on their values) and each pass set
(none: the plain build, no pass and `--inplace-depthwise off`; in-place depthwise only; reorder-bottleneck;
reorder-bottleneck + patch-stage; int8 models also that with `--input-mode stream`), run exactly what a user runs:

    tvmp compile MODEL.onnx --board generic-m7 -o OUT [--disable-pass ...] [--inplace-depthwise off]
        [--input-mode stream]
    tvmp run OUT --json

and print one table row with the figures `tvmp run` measured (peak SRAM = static RAM + painted-stack high-water
mark, instructions = SysTick ticks x instructions per tick under `qemu -icount`), and the planner's arena. A build
the board cannot hold is not run; its row gives the planner's arena (same passes, lowering and planner, no board)
and the reason. Targets (issue #3): peak SRAM with both passes >= 4x lower than without; instructions <= 1.3x.

    .venv/bin/python bench/passes_bench.py [--models w0.35@144,w1.0@224] [--board NAME] [--out DIR]

Float32 models, and MobileNetV2-0.35 quantized to int8 by `tvmp quantize` (16 seeded random-normal calibration
samples; the int8 reorder pass is reorder-bottleneck-int8). The classifier head has 10 classes: with 1000, the float
weights of MobileNetV2-0.35 alone (6.7 MB) exceed generic-m7's 4 MB of flash. No real part holds the float models
without the passes, so they run on generic-m7 (4 MB + 4 MB) and generic-m7-16mb (QEMU's 16 MB RAM: 10 MB "flash",
6 MB RAM); the int8 model runs on generic-m7 too, so that its rows compare with the float ones. Its `max rel err`
is against onnxruntime, which a random-weight MobileNetV2 sets apart by amplifying 1-LSB rounding differences layer
by layer (docs/int8.md); the builds themselves equal the NumPy integer reference bit for bit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TVMP = str(REPO / ".venv" / "bin" / "tvmp")
#: name -> (width, resolution, board, int8). generic-m7 holds MobileNetV2-0.35 without the passes (no real part
#: does); MobileNetV2-1.0 needs generic-m7-16mb: 8.9 MB of float weights, and 6 MB of arena without the passes.
MODELS = {"w0.35@144": (0.35, 144, "generic-m7", False), "w1.0@224": (1.0, 224, "generic-m7-16mb", False),
          "w0.35@144-int8": (0.35, 144, "generic-m7", True)}
CLASSES = 10
_ALL_PASSES = ["reorder-bottleneck", "reorder-bottleneck-int8", "patch-stage"]
#: pass set -> (passes disabled, extra compile arguments). "none" is the plain build: no pass and no in-place
#: depthwise (a planner feature that also shrinks a build without the passes: its own row shows by how much).
PASS_SETS = {"none": (_ALL_PASSES, ["--inplace-depthwise", "off"]), "in-place dw only": (_ALL_PASSES, []),
             "reorder": (["patch-stage"], []), "reorder+patch": ([], []),
             "reorder+patch, stream": ([], ["--input-mode", "stream"])}
#: The stream row needs patch-stage on a plain CNN; it is run for the int8 models (the issue's stream target).
FLOAT_SETS, INT8_SETS = ("none", "in-place dw only", "reorder", "reorder+patch"), tuple(PASS_SETS)


def export(width: float, resolution: int, path: Path) -> None:
    """MobileNetV2 (torchvision's layout, BN folded by the exporter) with seeded random weights, as ONNX."""
    from tvm_pipeline.models.export import export_onnx
    from tvm_pipeline.models.init import randomize_weights_
    from tvm_pipeline.models.mobilenetv2 import MobileNetV2

    model = randomize_weights_(MobileNetV2(width_mult=width, resolution=resolution, num_classes=CLASSES), 0).eval()
    export_onnx(model, model.input_shape, path)


def quantize(path: Path, out: Path) -> None:
    """`tvmp quantize` of the float model with 16 seeded random-normal calibration samples."""
    import numpy as np

    from tvm_pipeline.frontend.onnx_loader import input_specs, load_onnx
    from tvm_pipeline.quantize import quantize_model

    (spec,) = input_specs(load_onnx(path))
    calibration = out.with_suffix(".calibration.npy")
    np.save(calibration, np.random.default_rng(1).standard_normal((16, *spec.shape[1:])).astype(np.float32))
    quantize_model(path, calibration, out)


def planned_arena(path: Path, disabled: list[str], extra: list[str]) -> int:
    """The arena the compiler plans for these passes (for builds no board can hold)."""
    from schedules import pattern_rules
    from tvm_pipeline.arena import plan_arena
    from tvm_pipeline.compiler import CompileOptions, fused_graph
    from tvm_pipeline.frontend import load_model
    from tvm_pipeline.lowering.lower import lower_program

    options = CompileOptions(disabled_passes=frozenset(disabled), inplace_depthwise="off" not in extra,
                             input_mode="stream" if "stream" in extra else "ram")
    fused = fused_graph(load_model(path, {}), options)[0]
    return plan_arena(lower_program(fused, rules=pattern_rules(options.inplace_depthwise)), 16).layout.arena_bytes


def measure(path: Path, out: Path, board: str, disabled: list[str], extra: list[str]) -> dict:
    """Compile and run one configuration; the row's figures."""
    command = [TVMP, "compile", str(path), "--board", board, "-o", str(out), *extra]
    for name in disabled:
        command += ["--disable-pass", name]
    start = time.monotonic()
    compiled = subprocess.run(command, capture_output=True, text=True)
    row = {"compile_s": time.monotonic() - start, "command": " ".join(command[1:])}
    if compiled.returncode != 0:
        row.update(error=compiled.stderr.strip().splitlines()[-1], arena=planned_arena(path, disabled, extra))
        return row
    notes = json.loads((out / "model.json").read_text())["notes"]
    row["patch_note"] = next((n for n in notes if n.startswith("patch-stage: layers")), "")
    row["arena"] = json.loads((out / "memory.json").read_text())["arena_bytes"]
    ran = subprocess.run([TVMP, "run", str(out), "--json", "--timeout", "1200"], capture_output=True, text=True)
    if ran.returncode not in (0, 1):
        row["error"] = (ran.stderr.strip().splitlines() or ["tvmp run failed"])[-1]
        return row
    row.update(json.loads(ran.stdout.strip().splitlines()[-1]))
    return row


def table(rows: list[tuple[str, str, dict]]) -> str:
    header = ["model", "board", "passes", "peak SRAM (measured)", "vs none", "arena (planned)",
              "instructions", "vs none", "max rel err", "compile"]
    lines, base = [], {}
    for model, passes, row in rows:
        if passes == "none":
            base = row
        peak, instr = row.get("peak_sram_bytes"), row.get("instructions")
        lines.append([
            model, row["board_name"], passes,
            f"{peak:,} B" if peak else "does not fit",
            f"{base['peak_sram_bytes'] / peak:.2f}x lower" if peak and base.get("peak_sram_bytes") and row is not base
            else "",
            f"{row['arena']:,} B",
            f"{instr:,}" if instr else "-",
            f"{instr / base['instructions']:.3f}x" if instr and base.get("instructions") and row is not base else "",
            f"{row['max_rel_error']:.1e}" if "max_rel_error" in row else "-",
            f"{row['compile_s']:.0f} s",
        ])
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    fmt = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, lines)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {list(MODELS)}")
    parser.add_argument("--board", help="run every model on this board (default: each model's, see MODELS)")
    parser.add_argument("--out", default=str(REPO / "build" / "passes_bench"))
    args = parser.parse_args()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    rows, notes = [], []
    for name in args.models.split(","):
        width, resolution, board, int8 = MODELS[name]
        board = args.board or board
        path = root / f"mobilenetv2_w{width}_{resolution}.onnx"
        if not path.exists():
            export(width, resolution, path)
        if int8:
            path, source = path.with_suffix(".int8.onnx"), path
            if not path.exists():
                quantize(source, path)
        for passes in INT8_SETS if int8 else FLOAT_SETS:
            disabled, extra = PASS_SETS[passes]
            label = passes.replace("+", "_").replace(", ", "_")
            row = measure(path, root / f"{path.stem.replace('.', '_')}_{label}", board, disabled, extra)
            rows.append((f"MobileNetV2 {name}", passes, {**row, "board_name": board}))
            print(f"{name} {passes}: {json.dumps({k: v for k, v in row.items() if k != 'patch_note'})}",
                  file=sys.stderr, flush=True)
            if row.get("error"):
                notes.append(f"{name}, {passes}: {row['error']}")
            if row.get("patch_note"):
                notes.append(f"{name}, {passes}: {row['patch_note']}")
    print(table(rows))
    print()
    for (model, passes, both) in (r for r in rows if r[1].startswith("reorder+patch")):
        base = next(r[2] for r in rows if r[0] == model and r[1] == "none")
        inplace = next(r[2] for r in rows if r[0] == model and r[1] == "in-place dw only")
        if base.get("peak_sram_bytes") and both.get("peak_sram_bytes"):
            ratio = base["peak_sram_bytes"] / both["peak_sram_bytes"]
            slower = both["instructions"] / base["instructions"]
            versus = (f"; {inplace['peak_sram_bytes'] / both['peak_sram_bytes']:.2f}x below in-place depthwise alone"
                      if inplace.get("peak_sram_bytes") else "")
            print(f"{model}, {passes}: peak SRAM {ratio:.2f}x lower (target >= 4x: "
                  f"{'met' if ratio >= 4 else 'NOT met'}), instructions {slower:.3f}x (target <= 1.3x: "
                  f"{'met' if slower <= 1.3 else 'NOT met'}){versus}")
        else:
            print(f"{model}, {passes}: targets not measurable on {both['board_name']} (see the notes)")
    print("\n".join(["", "notes:", *(f"  {n}" for n in notes)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
