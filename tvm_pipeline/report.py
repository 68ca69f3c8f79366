"""Human-readable memory reports of a compiled folder: the buffer table, live bytes per step, the arena timeline."""

from __future__ import annotations

from pathlib import Path

from tvm_pipeline.evaluate import model_metadata
from tvm_pipeline.planner import Buffer, Plan, format_timeline


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def live_bytes_per_step(memory: dict) -> list[int]:
    """Bytes of buffers live at each step of the execution order."""
    steps = len(memory["order"])
    live = [0] * max(steps, 1)
    for b in memory["buffers"]:
        for t in range(b["first"], min(b["last"], steps - 1) + 1):
            live[t] += b["size"]
    return live


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
    buffers = [Buffer(b["name"], b["size"], b["first"], b["last"]) for b in memory["buffers"]]
    plan = Plan({b["name"]: b["offset"] for b in memory["buffers"]}, memory["arena_bytes"],
                memory["lower_bound_bytes"], memory["planner"], memory.get("planner_candidates", {}))
    lines.append(format_timeline(plan, buffers))
    if meta.get("notes"):
        lines += ["", "passes:", *("  " + n for n in meta["notes"])]
    return "\n".join(lines)
