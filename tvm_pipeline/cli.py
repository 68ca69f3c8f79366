"""`tvmp`: compile ONNX/TFLite models for Cortex-M boards, run them on emulated boards, report their memory.

    tvmp compile MODEL.onnx|MODEL.tflite --board stm32f746 -o OUT/ [--input-mode ram|stream] [--order best|file]
    tvmp run OUT/ --board stm32f746 [--input x.npy] [--host] [--json]
    tvmp run OUT/ --serial /dev/ttyACM0 [--baud 115200]     (a real board flashed with `tvmp project flash`)
    tvmp report OUT/
    tvmp tune MODEL.onnx --board stm32f746 --trials N -o records/   (then: tvmp compile ... --tuning records/)
    tvmp tune MODEL.onnx --sweep boards=stm32f746,nrf52840 --sweep codegen=c,llvm --trials N -o records/
    tvmp project create OUT/ DIR --platform zephyr|arduino|bare [--board NAME] [--force]
    tvmp project build DIR
    tvmp project flash DIR [--port /dev/ttyACM0]
    tvmp quantize MODEL.onnx --calibration DIR_OR_NPY -o MODEL.int8.onnx   (then: tvmp compile MODEL.int8.onnx ...)
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


def _grid(text: str) -> tuple[int, int]:
    rows, _, cols = text.lower().partition("x")
    if not (rows.isdigit() and cols.isdigit()) or int(rows) < 1 or int(cols) < 1:
        raise argparse.ArgumentTypeError(f"expected RxC with positive sizes (e.g. 4x4), got {text!r}")
    return int(rows), int(cols)


def _cmd_compile(args: argparse.Namespace) -> int:
    from tvm_pipeline.compiler import CompileOptions, compile_model

    options = CompileOptions(
        board=args.board,
        planner=args.planner,
        disabled_passes=frozenset(args.disable_pass),
        input_shapes=dict(args.input_shape),
        input_mode=args.input_mode,
        order=args.order,
        tuning=Path(args.tuning) if args.tuning else None,
        codegen=args.codegen,
        patch_stage=args.patch_stage,
        patch_grid=args.patch_grid,
        inplace_depthwise=args.inplace_depthwise == "on",
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
    from tvm_pipeline.evaluate import evaluate, load_input, model_metadata, reference_name

    if args.serial and args.host:
        raise UserError("--serial reads a real board and --host runs on this machine: give one of them")
    meta, _ = model_metadata(Path(args.model_dir))
    board = None if args.host else load_board(args.board or meta["board"])
    x = load_input(Path(args.model_dir), Path(args.input) if args.input else None)
    runner = None if args.host else QemuRunner(timeout_s=args.timeout)
    if args.serial:
        from tvm_pipeline.board.serial_runner import SerialRunner

        runner = SerialRunner(args.serial, args.baud, args.timeout, expected_input=x)
    result = evaluate(Path(args.model_dir), board, x, runner)
    timing = getattr(runner, "last_timing", None)
    ok = result.within_tolerance(args.tolerance)
    if args.json:
        on_board = {"board_cycles": timing.cycles, "board_micros": timing.micros} if timing else {}
        print(json.dumps({**result.to_json(), **on_board, "within_tolerance": ok}))
    else:
        def fmt(v: int | None, unit: str = " B") -> str:
            return f"n/a ({'serial' if args.serial else 'host'})" if v is None else f"{v:,}{unit}"

        print(f"{'board':<18}{result.board}")
        versus = f"vs {reference_name(Path(args.model_dir))}"
        if result.max_abs_diff_lsb is not None:  # an integer (int8) output: the 1-LSB rule
            print(f"{versus:<18}max |diff| {result.max_abs_diff_lsb} LSB, {result.mismatch_fraction:.2%} of "
                  f"elements differ, {result.over_1lsb_fraction:.2%} by > 1 LSB ({'OK' if ok else 'FAIL'}, rule: "
                  f">= 99.9% within 1 LSB); argmax match: {result.argmax_match}")
        else:
            print(f"{versus:<18}max rel error {result.max_rel_error:.2e} "
                  f"({'OK' if ok else 'FAIL'}, tolerance {args.tolerance:g}); argmax match: {result.argmax_match}")
        print(f"{'peak SRAM':<18}{fmt(result.peak_sram_bytes)}  = static {fmt(result.static_ram_bytes)} "
              f"(arena {fmt(result.arena_bytes)}) + stack {fmt(result.stack_peak_bytes)}")
        print(f"{'flash':<18}{fmt(result.flash_bytes)}")
        print(f"{'instructions':<18}{fmt(result.instructions, '')} per inference")
        if timing:
            print(f"{'time on board':<18}{fmt(timing.micros, ' us')}, {fmt(timing.cycles, ' cycles')} per inference")
    return 0 if ok else 1


def _cmd_project_create(args: argparse.Namespace) -> int:
    from tvm_pipeline.project import ProjectOptions, create_project

    options = ProjectOptions(
        platform=args.platform,
        board=args.board,
        platform_board=args.platform_board,
        input=Path(args.input) if args.input else None,
        stack_bytes=args.stack_bytes,
        name=args.name,
        force=args.force,
    )
    spec = create_project(Path(args.model_dir), Path(args.project_dir), options)
    target = f" ({spec.platform_board})" if spec.platform_board else ""
    print(f"created {args.platform} project {spec.name} for {spec.board.name}{target} in {args.project_dir}/")
    if spec.main_stack_bytes is not None:
        print(f"  main stack {spec.main_stack_bytes} B: {spec.stack_reason}")
    print(f"  build it: tvmp project build {args.project_dir}   (see {args.project_dir}/README.md)")
    return 0


def _cmd_project_build(args: argparse.Namespace) -> int:
    from tvm_pipeline.project import build_project

    build_project(Path(args.project_dir), args.platform_board)
    return 0


def _cmd_project_flash(args: argparse.Namespace) -> int:
    from tvm_pipeline.project import flash_project

    flash_project(Path(args.project_dir), args.port, args.platform_board)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from tvm_pipeline.report import comparison_report, memory_report, plot_timeline

    print(memory_report(Path(args.model_dir)))
    if args.baseline:
        print("\n" + comparison_report(Path(args.model_dir), Path(args.baseline)))
    png = Path(args.png) if args.png else Path(args.model_dir) / "memory.png"
    plot_timeline(Path(args.model_dir), png, Path(args.baseline) if args.baseline else None)
    print(f"\nmemory timeline written to {png}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from tvm_pipeline.tuning.model import format_records, tune_model

    if args.trials < 1:
        raise UserError(f"--trials must be at least 1, got {args.trials}")
    if args.sweep:
        from tvm_pipeline.tuning.sweep import format_sweep, parse_sweeps, run_sweep

        settings = parse_sweeps(args.sweep, {"board": args.board, "codegen": args.codegen, "trials": args.trials})
        rows = run_sweep(Path(args.model), settings, Path(args.output), args.workers, args.seed,
                         disabled_passes=frozenset(args.disable_pass))
        print(format_sweep(rows))
        print(f"table: {args.output}/sweep.csv, sweep.json; plot: {args.output}/sweep.png")
        return 0
    tuning = tune_model(Path(args.model), args.board, args.trials, Path(args.output), args.workers,
                        codegen=args.codegen, seed=args.seed, disabled_passes=frozenset(args.disable_pass))
    print(format_records(tuning.records))
    if tuning.allowance is not None:
        a = tuning.allowance
        print(f"model on {args.board}: {a.untuned_instructions:,} -> {a.tuned_instructions:,} instructions per "
              f"inference; peak SRAM {a.untuned_peak_sram_bytes:,} -> {a.tuned_peak_sram_bytes:,} B"
              f"{'' if a.verified else ' (' + a.note + ')'}")
    disabled = "".join(f" --disable-pass {name}" for name in args.disable_pass)
    print(f"records in {args.output}/ (apply with: tvmp compile {args.model} --board {args.board} "
          f"--codegen {args.codegen}{disabled} --tuning {args.output})")
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from tvm_pipeline.quantize import quantize_model

    result = quantize_model(Path(args.model), Path(args.calibration), Path(args.output),
                            normalization=args.normalization, samples=args.samples, float_io=args.float_io,
                            activation_type=args.activation_type)
    print(f"quantized {args.model} -> {result.path} ({result.qdq_nodes} QuantizeLinear/DequantizeLinear nodes, "
          f"calibrated on {result.samples} sample(s))")
    for note in result.notes:
        print(f"  {note}")
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

    p = sub.add_parser("compile", help="compile an ONNX or TFLite model into a folder of standalone C")
    p.add_argument("model", help="the .onnx or .tflite file")
    p.add_argument("--board", default="stm32f746", help="target board (see `tvmp boards`)")
    p.add_argument("-o", "--output", required=True, help="output folder (replaced as a whole)")
    p.add_argument("--planner", default="auto",
                   help="arena placement: auto, greedy-by-size, greedy-by-conflicts, hill-climb, milp")
    p.add_argument("--disable-pass", action="append", default=[], metavar="NAME", help="switch a graph pass off")
    p.add_argument("--input-shape", action="append", default=[], type=_input_shape, metavar="NAME:D0,D1,...",
                   help="fix the shape of a dynamic input")
    p.add_argument("--order", choices=["best", "file"], default="best",
                   help="kernel execution order: best (searched for the least peak memory; runs patch tunnels one "
                        "after another) or file (the model file's order)")
    p.add_argument("--input-mode", choices=["ram", "stream"], default="ram",
                   help="ram: model_run copies the whole input into SRAM; stream: model_run_stream reads each "
                        "window the model slices out of the input (a plain CNN: the windows of the patches "
                        "patch-stage splits its first layers into) through a read_patch callback")
    p.add_argument("--tuning", metavar="DIR",
                   help="tuning records from `tvmp tune -o DIR` (default: the shipped ones in schedules/records/)")
    p.add_argument("--codegen", choices=["c", "llvm"], default="c",
                   help="c: kernels.c for gcc; llvm: kernels.o built by TVM's LLVM backend for the board's CPU "
                        "(fused multiply-add: outputs differ from C in the last bits; board runs only)")
    p.add_argument("--patch-stage", type=int, metavar="N",
                   help="patch-stage pass: run layers 0..N patch by patch (the split points are listed in the "
                        "compile notes; default: searched for the smallest arena)")
    p.add_argument("--patch-grid", type=_grid, metavar="RxC",
                   help="patch-stage pass: R rows x C columns of patches (default: searched)")
    p.add_argument("--inplace-depthwise", choices=["on", "off"], default="on",
                   help="on: each depthwise conv copies one input plane at a time into scratch, so the planner may "
                        "put its output over its input when the input dies there (TinyEngine); off: plain kernels")
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("tune", help="tune each kernel of a model, measured on the emulated board (resumable)")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--board", default="stm32f746", help="target board (see `tvmp boards`)")
    p.add_argument("--trials", type=int, default=64,
                   help="candidate schedules measured per kernel (for a kernel a tunable pattern rule schedules, "
                        "such as the int8 DSP convs: at most this many of its settings)")
    p.add_argument("-o", "--output", required=True, help="records folder (existing records are reused)")
    p.add_argument("--workers", type=int, default=2,
                   help="worker processes, each tuning one kernel (one kernel: threads measuring its candidates)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--codegen", choices=["c", "llvm"], default="c",
                   help="c: kernels as C built by gcc; llvm: an object from TVM's LLVM backend for the board's CPU")
    p.add_argument("--disable-pass", action="append", default=[], metavar="NAME",
                   help="as for compile: tune the kernels `tvmp compile --disable-pass NAME` produces")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="tune under the product of settings (keys: boards, codegen, trials); writes sweep.csv, "
                        "sweep.json and sweep.png into the records folder")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("run", help="build a compiled folder for a board, run it in QEMU, check and measure it")
    p.add_argument("model_dir")
    p.add_argument("--board", help="board to run on (default: the one it was compiled for)")
    p.add_argument("--input", help=".npy input (default: seeded random)")
    p.add_argument("--host", action="store_true", help="build and run with the host gcc instead of QEMU")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a hung firmware is stopped")
    p.add_argument("--tolerance", type=float, default=1e-5,
                   help="max relative error accepted for float outputs (exit 1 above it); integer outputs must be "
                        "within 1 LSB on >= 99.9%% of elements")
    p.add_argument("--serial", metavar="PORT", help="read a real board's report from this serial port instead "
                   "(flashed with `tvmp project flash`; needs pyserial)")
    p.add_argument("--baud", type=int, default=115200, help="baud rate for --serial")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("project", help="write, build and flash a Zephyr, Arduino or bare-metal project of a model")
    project = p.add_subparsers(dest="project_command", required=True)
    p = project.add_parser("create", help="write a project folder around a compiled folder")
    p.add_argument("model_dir", help="the folder written by `tvmp compile -o`")
    p.add_argument("project_dir", help="the project folder to write (written whole, or not at all)")
    p.add_argument("--platform", required=True, choices=["zephyr", "arduino", "bare"])
    p.add_argument("--board", help="our board (default: the one it was compiled for; see `tvmp boards`)")
    p.add_argument("--platform-board", help="the platform's board instead of the one mapped from ours "
                   "(Zephyr board, e.g. qemu_cortex_m3; Arduino FQBN)")
    p.add_argument("--input", help=".npy sample input (default: seeded random, as `tvmp run`)")
    p.add_argument("--stack-bytes", type=int, help="main thread stack to configure as is, instead of measuring "
                   "the model's stack peak in QEMU")
    p.add_argument("--name", help="project, library and sketch name (default: from the model file name)")
    p.add_argument("--force", action="store_true", help="replace an existing project folder")
    p.set_defaults(func=_cmd_project_create)
    p = project.add_parser("build", help="build a project with its platform's tool (west, arduino-cli, make)")
    p.add_argument("project_dir")
    p.add_argument("--platform-board", help="build for this platform board instead of the project's")
    p.set_defaults(func=_cmd_project_build)
    p = project.add_parser("flash", help="flash a real board with the platform's tool (west flash, arduino-cli)")
    p.add_argument("project_dir")
    p.add_argument("--port", help="the board's serial port (arduino-cli upload needs it)")
    p.add_argument("--platform-board", help="flash the build for this platform board")
    p.set_defaults(func=_cmd_project_flash)

    p = sub.add_parser("report", help="print the memory plan of a compiled folder and plot its timeline")
    p.add_argument("model_dir")
    p.add_argument("--png", help="where to write the timeline plot (default: MODEL_DIR/memory.png)")
    p.add_argument("--baseline", help="another compiled folder (e.g. built with --disable-pass) to compare with")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("quantize", help="post-training int8 quantization of a float ONNX model (QDQ, per channel)")
    p.add_argument("model", help="the float .onnx file")
    p.add_argument("--calibration", required=True, metavar="DIR_OR_NPY",
                   help="a folder of images (resized to the input, scaled to [0, 1]) or an .npy batch [N, ...]")
    p.add_argument("-o", "--output", required=True, help="the int8 QDQ .onnx file to write")
    p.add_argument("--samples", type=int, default=256, help="calibration samples used at most")
    p.add_argument("--normalization", choices=["unit", "imagenet"], default="unit",
                   help="image scaling: [0, 1], or ImageNet mean/std after that")
    p.add_argument("--float-io", action="store_true",
                   help="keep a float input and output (default: integer, the scales are printed)")
    p.add_argument("--activation-type", choices=["int8", "uint8"], default="int8",
                   help="integer type of activations, input and output (weights are int8 either way)")
    p.set_defaults(func=_cmd_quantize)

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
