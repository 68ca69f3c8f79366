"""`tvmp tune --sweep KEY=V1,V2 ...`: tune one model under the product of settings, write one table and one plot.

    --sweep boards=stm32f746,nrf52840 --sweep codegen=c,llvm   ->  4 settings, each a `tune_model` run

Every setting writes its records under the same folder (records are kept per board and code generator, so settings
never collide, and a stopped sweep resumes). The table has one row per (setting, kernel) plus one per setting for the
whole model (instructions per inference measured on the board, untuned and tuned): `sweep.csv`, `sweep.json`, and
`sweep.png` (instructions per kernel per setting, log scale).
"""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tvm_pipeline.errors import UserError
from tvm_pipeline.tuning.measure import CODEGENS
from tvm_pipeline.tuning.model import tune_model

#: --sweep keys and the tune_model argument each sets.
SWEEP_KEYS = {"boards": "board", "board": "board", "codegen": "codegen", "trials": "trials"}


@dataclass(frozen=True)
class SweepRow:
    board: str
    codegen: str
    trials: int
    kernel: str  # "(model)" for the whole-model row
    untuned_instructions: int | None
    tuned_instructions: int | None
    speedup: float | None
    stack_bytes: str  # "untuned->tuned"


def parse_sweeps(items: list[str], defaults: dict) -> list[dict]:
    """`["boards=a,b", "codegen=c,llvm"]` -> the product of settings, each a dict of tune_model arguments."""
    axes: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or key not in SWEEP_KEYS or not values:
            raise UserError(f"--sweep expects KEY=V1,V2,... with KEY one of {', '.join(SWEEP_KEYS)}; got {item!r}")
        parsed = [v.strip() for v in values.split(",") if v.strip()]
        if SWEEP_KEYS[key] == "trials":
            try:
                parsed = [int(v) for v in parsed]
            except ValueError:
                raise UserError(f"--sweep trials= takes integers, got {values!r}") from None
        if SWEEP_KEYS[key] == "codegen" and set(parsed) - set(CODEGENS):
            raise UserError(f"--sweep codegen= takes {', '.join(CODEGENS)}; got {values!r}")
        axes[SWEEP_KEYS[key]] = parsed
    names = list(axes)
    return [{**defaults, **dict(zip(names, combo))} for combo in itertools.product(*(axes[n] for n in names))]


def run_sweep(model_path: Path, settings: list[dict], out_dir: Path, workers: int = 2, seed: int = 0,
              progress: bool = True, disabled_passes: frozenset[str] = frozenset()) -> list[SweepRow]:
    """Tunes the model under every setting; writes sweep.csv, sweep.json and sweep.png into `out_dir`."""
    rows: list[SweepRow] = []
    for setting in settings:
        board, codegen, trials = setting["board"], setting["codegen"], setting["trials"]
        tuning = tune_model(model_path, board, trials, out_dir, workers=workers, codegen=codegen, seed=seed,
                            progress=progress, disabled_passes=disabled_passes)
        for r in tuning.records:
            rows.append(SweepRow(board, codegen, trials, r.tir_name, r.untuned_instructions, r.tuned_instructions,
                                 round(r.speedup, 3), f"{r.untuned_stack_bytes}->{r.stack_bytes}"))
        allowance = tuning.allowance
        if allowance is not None:
            u, t = allowance.untuned_instructions, allowance.tuned_instructions
            rows.append(SweepRow(board, codegen, trials, "(model)", u, t, round(u / t, 3) if u and t else None,
                                 f"{allowance.untuned_stack_bytes}->peak SRAM {allowance.tuned_peak_sram_bytes}"))
    write_table(rows, Path(model_path).name, Path(out_dir))
    return rows


def write_table(rows: list[SweepRow], model: str, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(SweepRow.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    (out_dir / "sweep.json").write_text(json.dumps({"model": model, "rows": [asdict(r) for r in rows]}, indent=1) + "\n")
    plot(rows, model, out_dir / "sweep.png")


def plot(rows: list[SweepRow], model: str, png: Path) -> Path:
    """Grouped bars: tuned instructions per kernel, one bar per setting; a dash marks each kernel's untuned count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kernel_rows = [r for r in rows if r.kernel != "(model)"]
    kernels = list(dict.fromkeys(r.kernel for r in kernel_rows))
    settings = list(dict.fromkeys((r.board, r.codegen, r.trials) for r in kernel_rows))
    width = 0.8 / max(len(settings), 1)
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(kernels) + 3), 5.5))
    for i, setting in enumerate(settings):
        by_kernel = {r.kernel: r for r in kernel_rows if (r.board, r.codegen, r.trials) == setting}
        xs = [k + (i - (len(settings) - 1) / 2) * width for k in range(len(kernels))]
        tuned = [by_kernel[k].tuned_instructions if k in by_kernel else 0 for k in kernels]
        untuned = [by_kernel[k].untuned_instructions if k in by_kernel else 0 for k in kernels]
        bars = ax.bar(xs, tuned, width, label=f"{setting[0]} / {setting[1]} ({setting[2]} trials)")
        ax.scatter(xs, untuned, marker="_", s=120, color=bars.patches[0].get_facecolor() if bars.patches else None,
                   zorder=3)
    ax.set_yscale("log")
    ax.set_xticks(range(len(kernels)))
    ax.set_xticklabels(kernels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("instructions per call (emulated, -icount)")
    ax.set_title(f"{model}: tuned instructions per kernel per setting (dash: untuned)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def format_sweep(rows: list[SweepRow]) -> str:
    lines = [f"{'board':<11}{'codegen':<8}{'kernel':<40}{'untuned':>13}{'tuned':>13}{'speedup':>9}"]
    for r in rows:
        speed = f"{r.speedup:.2f}x" if r.speedup else "n/a"
        u = f"{r.untuned_instructions:,}" if r.untuned_instructions is not None else "n/a"
        t = f"{r.tuned_instructions:,}" if r.tuned_instructions is not None else "n/a"
        lines.append(f"{r.board:<11}{r.codegen:<8}{r.kernel[:39]:<40}{u:>13}{t:>13}{speed:>9}")
    return "\n".join(lines)
