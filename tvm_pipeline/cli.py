"""`tvmp`: compile ONNX models for Cortex-M boards, run them on emulated boards, report their memory.

    tvmp compile MODEL.onnx --board stm32f746 -o OUT/
    tvmp run OUT/ --board stm32f746 [--input x.npy] [--host] [--json]
    tvmp report OUT/
    tvmp boards
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tvm_pipeline.errors import UserError


def _input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, _, dims = text.rpartition(":")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not name or not shape or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"expected NAME:D0,D1,... with positive sizes, got {text!r}")
    return name, shape


def _cmd_compile(args: argparse.Namespace) -> int:
    from tvm_pipeline.compiler import CompileOptions, compile_model

    options = CompileOptions(
        board=args.board,
        planner=args.planner,
        disabled_passes=frozenset(args.disable_pass),
        input_shapes=dict(args.input_shape),
    )
    result = compile_model(Path(args.model), Path(args.output), options)
    memory = result.arena.plan
    print(f"compiled {args.model} for {result.board.name} -> {result.out_dir}/")
    print(f"  {len(result.program.steps)} kernel calls, {len(result.program.kernels)} kernels, "
          f"weights {result.program.weight_bytes:,} B (flash)")
    print(f"  arena {memory.arena_bytes:,} B, lower bound {memory.lower_bound_bytes:,} B "
          f"(planner: {memory.algorithm})")
    for note in result.program.notes:
        print(f"  {note}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from tvm_pipeline.board.boards import load_board
    from tvm_pipeline.board.runner import QemuRunner
    from tvm_pipeline.evaluate import evaluate, load_input, model_metadata

    meta, _ = model_metadata(Path(args.model_dir))
    board = None if args.host else load_board(args.board or meta["board"])
    x = load_input(Path(args.model_dir), Path(args.input) if args.input else None)
    runner = None if args.host else QemuRunner(timeout_s=args.timeout)
    result = evaluate(Path(args.model_dir), board, x, runner)
    ok = result.max_rel_error <= args.tolerance
    if args.json:
        print(json.dumps({**result.to_json(), "within_tolerance": ok}))
    else:
        def fmt(v: int | None, unit: str = " B") -> str:
            return "n/a (host)" if v is None else f"{v:,}{unit}"

        print(f"{'board':<18}{result.board}")
        print(f"{'vs onnxruntime':<18}max rel error {result.max_rel_error:.2e} "
              f"({'OK' if ok else 'FAIL'}, tolerance {args.tolerance:g}); argmax match: {result.argmax_match}")
        print(f"{'peak SRAM':<18}{fmt(result.peak_sram_bytes)}  = static {fmt(result.static_ram_bytes)} "
              f"(arena {fmt(result.arena_bytes)}) + stack {fmt(result.stack_peak_bytes)}")
        print(f"{'flash':<18}{fmt(result.flash_bytes)}")
        print(f"{'instructions':<18}{fmt(result.instructions, '')} per inference")
    return 0 if ok else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from tvm_pipeline.report import memory_report, plot_timeline

    print(memory_report(Path(args.model_dir)))
    png = Path(args.png) if args.png else Path(args.model_dir) / "memory.png"
    plot_timeline(Path(args.model_dir), png, Path(args.baseline) if args.baseline else None)
    print(f"\nmemory timeline written to {png}")
    return 0


def _cmd_boards(args: argparse.Namespace) -> int:
    from tvm_pipeline.board.boards import list_boards, load_board

    for name in list_boards():
        board = load_board(name)
        print(f"{name:<12} RAM {board.ram.size // 1024:>5} KB  flash {board.flash.size // 1024:>5} KB  "
              f"{board.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `tvmp`."""
    parser = argparse.ArgumentParser(prog="tvmp", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile an ONNX model into a folder of standalone C")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--board", default="stm32f746", help="target board (see `tvmp boards`)")
    p.add_argument("-o", "--output", required=True, help="output folder (replaced as a whole)")
    p.add_argument("--planner", default="auto",
                   help="arena placement: auto, greedy-by-size, greedy-by-conflicts, hill-climb, milp")
    p.add_argument("--disable-pass", action="append", default=[], metavar="NAME", help="switch a graph pass off")
    p.add_argument("--input-shape", action="append", default=[], type=_input_shape, metavar="NAME:D0,D1,...",
                   help="fix the shape of a dynamic input")
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("run", help="build a compiled folder for a board, run it in QEMU, check and measure it")
    p.add_argument("model_dir")
    p.add_argument("--board", help="board to run on (default: the one it was compiled for)")
    p.add_argument("--input", help=".npy input (default: seeded random)")
    p.add_argument("--host", action="store_true", help="build and run with the host gcc instead of QEMU")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a hung firmware is stopped")
    p.add_argument("--tolerance", type=float, default=1e-5, help="max relative error accepted (exit 1 above it)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("report", help="print the memory plan of a compiled folder and plot its timeline")
    p.add_argument("model_dir")
    p.add_argument("--png", help="where to write the timeline plot (default: MODEL_DIR/memory.png)")
    p.add_argument("--baseline", help="another compiled folder (e.g. built with --disable-pass) to compare with")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("boards", help="list the boards")
    p.set_defaults(func=_cmd_boards)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tvmp` console script; user errors print a message and exit 2, no traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        print(f"tvmp {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
