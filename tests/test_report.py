"""`tvmp report`: the table names every step and buffer, marks the peak, and the PNG is written."""

from __future__ import annotations

import json

from tvm_pipeline.cli import main as tvmp
from tvm_pipeline.report import live_bytes_per_step


def test_report_prints_plan_and_writes_png(compiled, tmp_path, capsys):
    out = compiled("inverted_residual")
    png = tmp_path / "m.png"
    assert tvmp(["report", str(out), "--png", str(png), "--baseline", str(out)]) == 0
    text = capsys.readouterr().out
    memory = json.loads((out / "memory.json").read_text())
    assert "<- peak" in text and f"lower bound {memory['lower_bound_bytes']:,} B" in text
    for name in memory["order"]:
        assert name in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    peak = max(live_bytes_per_step(memory))
    assert f"peak live bytes: baseline {peak:,} B -> this build {peak:,} B (1.00x lower)" in text
    # the planner's bound is the peak of live bytes over the order it chose
    assert max(live_bytes_per_step(memory)) == memory["lower_bound_bytes"]
