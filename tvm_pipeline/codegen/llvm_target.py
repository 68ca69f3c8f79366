"""The LLVM target for a board's CPU, read from the gcc flags in its board JSON (`--codegen llvm`).

    -mcpu=cortex-m7 -mfpu=fpv5-sp-d16 -mfloat-abi=hard  ->  {"kind": "llvm", "mtriple": "thumbv7em-none-eabihf",
                                                          "mcpu": "cortex-m7", "mfloat-abi": "hard",
                                                          "vector-width": 32, "mattr": ["-fp64"]}

The triple's architecture comes from the core, the `hf` suffix from the float ABI, and a single-precision FPU
(`-sp-` in -mfpu) turns LLVM's double-precision feature off, so nothing the real part cannot run is emitted.
"""

from __future__ import annotations

from tvm_pipeline.board.boards import Board
from tvm_pipeline.errors import UserError

#: Cortex-M core -> the architecture LLVM's Thumb triple names.
_ARCH = {
    "cortex-m0": "thumbv6m", "cortex-m0plus": "thumbv6m", "cortex-m3": "thumbv7m",
    "cortex-m4": "thumbv7em", "cortex-m7": "thumbv7em", "cortex-m33": "thumbv8m.main",
    "cortex-m55": "thumbv8.1m.main",
}  # fmt: skip


def llvm_target(board: Board) -> dict:
    """The LLVM target dict for `board`'s CPU; UserError for a core LLVM code generation is not set up for."""
    flags = dict(f[2:].split("=", 1) for f in board.cpu_flags if f.startswith("-m") and "=" in f)
    cpu = flags.get("cpu", "")
    if cpu not in _ARCH:
        raise UserError(f"--codegen llvm does not know board {board.name}'s CPU {cpu!r}; use --codegen c")
    hard_float = flags.get("float-abi") == "hard"
    mattr = ["-fp64"] if "-sp-" in flags.get("fpu", "") else []
    target = {"kind": "llvm", "mtriple": f"{_ARCH[cpu]}-none-eabi{'hf' if hard_float else ''}", "mcpu": cpu,
              "mfloat-abi": "hard" if hard_float else "soft",  # the object's VFP-arguments tag must match gcc's
              "vector-width": 32}  # no float SIMD on these cores (and TVM warns on every build when it is unset)
    if mattr:
        target["mattr"] = mattr
    return target
