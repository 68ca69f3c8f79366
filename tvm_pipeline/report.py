"""Human-readable memory reports of a compiled folder: the buffer table, live bytes per step, the arena timeline."""

from __future__ import annotations

from pathlib import Path

from tvm_pipeline.evaluate import model_metadata
from tvm_pipeline import planner
from tvm_pipeline.planner import Buffer, Plan, format_timeline


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def _buffers(memory: dict) -> list[Buffer]:
    """The planner's buffers of a memory.json."""
    return [Buffer(b["name"], b["size"], b["first"], b["last"]) for b in memory["buffers"]]


def live_bytes_per_step(memory: dict) -> list[int]:
    """Bytes of buffers live at each step of the execution order (of a memory.json)."""
    return planner.live_bytes_per_step(_buffers(memory), len(memory["order"]))


def plot_timeline(model_dir: Path, png: Path, baseline_dir: Path | None = None) -> Path:
    """A PNG of the arena over the execution order: one rectangle per buffer (offset x live range), the live
    bytes per step, the peak marked; with `baseline_dir`, that build's live bytes are drawn for comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta, memory = model_metadata(model_dir)
    fig, (ax_arena, ax_live) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, height_ratios=[3, 2])
    colors = {"input": "tab:green", "output": "tab:red", "activation": "tab:blue", "scratch": "tab:orange"}
    for b in memory["buffers"]:
        ax_arena.add_patch(plt.Rectangle((b["first"] - 0.45, b["offset"] / 1024), b["last"] - b["first"] + 0.9,
                                         b["size"] / 1024, color=colors.get(b["kind"], "tab:gray"), alpha=0.7))
    ax_arena.set_xlim(-1, len(memory["order"]))
    ax_arena.set_ylim(0, memory["arena_bytes"] / 1024 * 1.05)
    ax_arena.set_ylabel("arena offset (KiB)")
    ax_arena.set_title(f"{meta['source_model']} on {meta['board']}: arena {memory['arena_bytes']:,} B, "
                       f"lower bound {memory['lower_bound_bytes']:,} B")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.7) for c in colors.values()]
    ax_arena.legend(handles, list(colors), loc="upper right", fontsize=8)
    live = live_bytes_per_step(memory)
    ax_live.step(range(len(live)), [v / 1024 for v in live], where="mid", label="this build")
    peak_step = max(range(len(live)), key=live.__getitem__)
    ax_live.annotate(f"peak {live[peak_step]:,} B", (peak_step, live[peak_step] / 1024),
                     xytext=(0, 8), textcoords="offset points", ha="center", color="tab:red")
    ax_live.plot([peak_step], [live[peak_step] / 1024], "o", color="tab:red")
    if baseline_dir is not None:
        _, base = model_metadata(baseline_dir)
        base_live = live_bytes_per_step(base)
        ax_live.step(range(len(base_live)), [v / 1024 for v in base_live], where="mid", linestyle="--",
                     label=f"baseline ({Path(baseline_dir).name}), peak {max(base_live):,} B")
    ax_live.set_xlabel("step (kernel call in execution order)")
    ax_live.set_ylabel("live KiB")
    ax_live.legend(fontsize=8)
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def comparison_report(model_dir: Path, baseline_dir: Path) -> str:
    """Live bytes per step of this build next to another build of the same model (e.g. --disable-pass ...).

    The two builds may have different steps (passes merge and split kernels), so each column lists its own
    execution order; the last line compares the peaks.
    """
    _, memory = model_metadata(model_dir)
    _, base = model_metadata(baseline_dir)
    live, base_live = live_bytes_per_step(memory), live_bytes_per_step(base)
    rows = []
    for i in range(max(len(live), len(base_live))):
        ours = (memory["order"][i], f"{live[i]:,}") if i < len(live) else ("", "")
        theirs = (base["order"][i], f"{base_live[i]:,}") if i < len(base_live) else ("", "")
        rows.append([str(i), *theirs, *ours])
    header = ["step", f"baseline ({Path(baseline_dir).name})", "live bytes", f"this build ({Path(model_dir).name})",
              "live bytes"]
    summary = (f"peak live bytes: baseline {max(base_live):,} B -> this build {max(live):,} B "
               f"({max(base_live) / max(max(live), 1):.2f}x lower)")
    return _table(rows, header) + "\n" + summary


def memory_report(model_dir: Path) -> str:
    """The text `tvmp report` prints: summary, per-step live bytes, buffer table, arena timeline."""
    meta, memory = model_metadata(model_dir)
    ratio = memory["arena_bytes"] / max(memory["lower_bound_bytes"], 1)
    lines = [
        f"model {meta['source_model']} for board {meta['board']}: {meta['steps']} kernel calls, "
        f"{meta['weight_bytes']:,} B of weights (flash)",
        f"arena {memory['arena_bytes']:,} B / lower bound {memory['lower_bound_bytes']:,} B = {ratio:.2f} "
        f"(planner: {memory['planner']}{', optimal' if memory.get('optimal') else ''})",
        "",
    ]
    live = live_bytes_per_step(memory)
    peak = max(live)
    step_rows = [[str(i), name, f"{live[i]:,}", "<- peak" if live[i] == peak else ""]
                 for i, name in enumerate(memory["order"])]
    lines += [_table(step_rows, ["step", "output", "live bytes", ""]), ""]
    buffer_rows = [[b["name"], b["kind"], f"{b['size']:,}", f"{b['offset']:,}", f"{b['first']}..{b['last']}"]
                   for b in memory["buffers"]]
    lines += [_table(buffer_rows, ["buffer", "kind", "bytes", "offset", "live"]), ""]
    buffers = _buffers(memory)
    plan = Plan({b["name"]: b["offset"] for b in memory["buffers"]}, memory["arena_bytes"],
                memory["lower_bound_bytes"], memory["planner"], memory.get("planner_candidates", {}))
    lines.append(format_timeline(plan, buffers))
    if meta.get("tuning", {}).get("kernels"):
        lines += ["", tuning_report(meta["tuning"])]
    if meta.get("notes"):
        lines += ["", "passes:", *("  " + n for n in meta["notes"])]
    return "\n".join(lines)


def tuning_report(tuning: dict) -> str:
    """Per kernel with a tuning record: instructions of one call untuned vs tuned (measured on the board when it was
    tuned), the kernel call's own stack, whether the record was applied and what it chose (model.json "tuning")."""
    rows, total_u, total_t = [], 0, 0
    for k in tuning["kernels"]:
        total_u, total_t = total_u + k["untuned_instructions"], total_t + k["tuned_instructions"]
        rows.append([k["kernel"], f"{k['untuned_instructions']:,}", f"{k['tuned_instructions']:,}",
                     f"{k['untuned_instructions'] / max(k['tuned_instructions'], 1):.2f}x",
                     f"{k['untuned_stack_bytes']} -> {k['stack_bytes']}", str(k["trials"]),
                     "yes" if k["applied"] else "no", k.get("schedule", "")])  # older model.json: no schedule
    rows.append(["total (one call each)", f"{total_u:,}", f"{total_t:,}", f"{total_u / max(total_t, 1):.2f}x",
                 "", "", "", ""])
    head = (f"tuned kernels ({tuning['codegen']} code generator, records {tuning['records']}; kernel stack allowed "
            f"{tuning.get('kernel_stack_cap')} B):")
    return head + "\n" + _table(rows, ["kernel", "untuned instr", "tuned instr", "speedup", "stack B", "trials",
                                         "applied", "schedule"])
