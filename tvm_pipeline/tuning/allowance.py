"""How deep a kernel call may go in one model without raising the model's measured peak SRAM, checked on the board.

A model's peak stack is `max(the harness's own deepest path, depth at model_run's kernel calls + the deepest kernel
call's stack)`, so any kernel whose own stack (measured per kernel, see `measure`) is at most

    allowance = untuned model's measured stack peak - depth at model_run's kernel calls

leaves the peak where it was. `tune_model` measures the untuned model on the board first, searches with that
allowance (the call depth estimated from the one-kernel firmwares), then compiles the model with the new records, runs
it, and lowers the allowance below the deepest tuned kernel until peak SRAM (static + stack) is at most the untuned
one. The result is written per model and read by `tvmp compile` (`lower_tuned`): a model without a verified file gets
the conservative allowance, its deepest untuned kernel's own stack.

File: `DIR/<board>/<codegen>/models/<digest>.json`; the digest names the sequence of kernels the model calls (their
structural keys, not their weights), which is what its stack depends on.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import tvm

from tvm_pipeline import tuning_adapter, tvm_adapter


@dataclass
class ModelAllowance:
    digest: str
    model: str
    kernel_stack_bytes: int  # the allowance: any kernel call up to this deep keeps the model's peak
    untuned_stack_bytes: int  # the untuned model's measured stack peak
    untuned_peak_sram_bytes: int
    tuned_peak_sram_bytes: int | None = None  # measured with the records applied (None: not verified yet)
    verified: bool = False
    note: str = ""
    untuned_instructions: int | None = None  # per inference, measured on the board
    tuned_instructions: int | None = None
    excluded: list[str] = field(default_factory=list)  # record keys not applied to this model (see `verify`)


def model_digest(fused: tvm.IRModule) -> str:
    """The kernels a fused model calls, in order, as one hash."""
    calls = [b.func_name for b in tvm_adapter.main_bindings(fused).bindings if b.func_name]
    keys = {name: tuning_adapter.kernel_key(tvm_adapter.prim_func(fused, name)) for name in dict.fromkeys(calls)}
    return hashlib.sha256("|".join(keys[name] for name in calls).encode()).hexdigest()[:16]


def allowance_path(root: Path, board: str, codegen: str, digest: str) -> Path:
    return Path(root) / board / codegen / "models" / f"{digest}.json"


def load_allowance(root: Path, board: str, codegen: str, digest: str) -> ModelAllowance | None:
    path = allowance_path(root, board, codegen, digest)
    return ModelAllowance(**json.loads(path.read_text())) if path.is_file() else None


def save_allowance(root: Path, board: str, codegen: str, allowance: ModelAllowance) -> Path:
    path = allowance_path(root, board, codegen, allowance.digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(allowance), indent=1) + "\n")
    return path


def measure_model(model_path: Path, board: str, codegen: str, records_dir: Path,
                  disabled_passes: frozenset[str] = frozenset()):
    """Compile the model with the records in `records_dir` (an empty folder: untuned), run it once on the emulated
    board; returns (Evaluation, model.json's "tuning")."""
    from tvm_pipeline.board.boards import load_board
    from tvm_pipeline.compiler import CompileOptions, compile_model
    from tvm_pipeline.evaluate import evaluate, random_input

    with tempfile.TemporaryDirectory(prefix="tvmp-model-check-") as tmp:
        out = Path(tmp) / "model"
        compile_model(Path(model_path), out, CompileOptions(board=board, tuning=Path(records_dir), codegen=codegen,
                                                            disabled_passes=frozenset(disabled_passes)))
        result = evaluate(out, load_board(board), random_input(out))
        return result, json.loads((out / "model.json").read_text())["tuning"]


def verify(model_path: Path, board: str, codegen: str, records_dir: Path, allowance: ModelAllowance,
           conservative: int, tolerance: float = 1e-5,
           disabled_passes: frozenset[str] = frozenset()) -> ModelAllowance:
    """Lower `allowance` until the model compiled with the records runs with peak SRAM <= untuned and its output
    within `tolerance` of the reference; save it. Peak SRAM can rise two ways: a kernel deeper than the call depth
    left room for (the allowance goes below it), or model_run's own frame growing because a kernel now takes a
    workspace pointer (those records are excluded for this model). Otherwise the allowance becomes -1: no record
    applies to this model.

    Each try compiles from a scratch copy of the records holding the allowance under test, so `records_dir` only
    ever holds a verified (or refused) allowance, even if the run is stopped half-way.
    """
    with tempfile.TemporaryDirectory(prefix="tvmp-allowance-") as scratch:
        trial_dir = Path(scratch) / "records"
        (Path(records_dir) / board / codegen).mkdir(parents=True, exist_ok=True)
        shutil.copytree(Path(records_dir) / board / codegen, trial_dir / board / codegen,
                        ignore=shutil.ignore_patterns("models"))
        while True:
            save_allowance(trial_dir, board, codegen, replace(allowance, verified=True))
            result, tuning = measure_model(model_path, board, codegen, trial_dir, disabled_passes)
            allowance.tuned_peak_sram_bytes, allowance.tuned_instructions = result.peak_sram_bytes, result.instructions
            fits = result.peak_sram_bytes <= allowance.untuned_peak_sram_bytes
            if fits and result.within_tolerance(tolerance):
                allowance.verified = True
                break
            deeper = [k["stack_bytes"] for k in tuning["kernels"] if k["applied"] and k["stack_bytes"] > conservative]
            # a kernel that now takes a workspace pointer changes model_run's code, and its frame may grow with it
            new_args = [k["key"] for k in tuning["kernels"] if k["applied"] and k["adds_workspace"]]
            if fits is False and not deeper and new_args:
                allowance.excluded = sorted(set(allowance.excluded) | set(new_args))
                continue
            if not deeper or not result.within_tolerance(tolerance):
                allowance.kernel_stack_bytes, allowance.verified = -1, True  # verified: nothing applies
                allowance.note = (f"records not applied: peak SRAM {result.peak_sram_bytes:,} B (untuned "
                                  f"{allowance.untuned_peak_sram_bytes:,} B), max rel error "
                                  f"{result.max_rel_error:.1e}")
                # what `tvmp compile` now builds for this model: the untuned schedules
                allowance.tuned_peak_sram_bytes = allowance.untuned_peak_sram_bytes
                allowance.tuned_instructions = allowance.untuned_instructions
                break
            allowance.kernel_stack_bytes = max(max(deeper) - 1, conservative)
    save_allowance(records_dir, board, codegen, allowance)
    return allowance
