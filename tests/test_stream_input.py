"""`--input-mode stream`: the input is read window by window through read_patch and is never whole in SRAM.

Tolerance: outputs equal to the RAM-mode build bit for bit (same kernels, same order of arithmetic), and within
1e-5 (max |ours - ort| / max |ort|) of onnxruntime.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tvm_pipeline.board.boards import load_board
from tvm_pipeline.errors import UserError
from tvm_pipeline.evaluate import evaluate, random_input
from tvm_pipeline.frontend import load_model
from tvm_pipeline.passes import stream_input


def test_slices_of_the_input_become_window_reads(zoo_onnx):
    """Before: chains of strided_slice on the input. After: one read_window call per tensor a tunnel consumes."""
    mod = load_model(zoo_onnx("tunnel_tiny"), {}).mod
    notes: list[str] = []
    after = stream_input.run(mod, notes)
    text = after["main"].script()
    assert "strided_slice" not in text
    assert text.count("read_window_") == 5  # 4 grid patches + the central patch
    assert "5 window(s)" in notes[0]


def test_window_of_a_slice_chain_is_composed_in_input_coordinates(zoo_onnx):
    from tvm_pipeline import tvm_adapter
    from tvm_pipeline.models.tunnel_config import load_config

    config = load_config("tiny")
    size = config.segmentation.patch
    after = stream_input.run(load_model(zoo_onnx("tunnel_tiny"), {}).mod, [])
    windows = sorted(tvm_adapter.input_window(after, gv.name_hint) for gv in after.get_global_vars()
                     if gv.name_hint.startswith("read_window"))
    expected = sorted(((0, 0, top, left), (1, 3, top + size, left + size)) for top, left in config.windows())
    assert windows == expected


def test_a_model_reading_the_whole_input_is_refused(zoo_onnx):
    mod = load_model(zoo_onnx("conv_stack"), {}).mod
    with pytest.raises(UserError, match="reads the whole input; use --input-mode ram"):
        stream_input.run(mod, [])


def test_stream_build_matches_ram_build_on_the_board_with_less_sram(compiled):
    ram = compiled("tunnel_tiny")
    stream = compiled("tunnel_tiny", input_mode="stream")
    x = random_input(ram, seed=2)
    board = load_board("stm32f746")
    a, b = evaluate(ram, board, x), evaluate(stream, board, x)
    assert b.input_mode == "stream" and a.input_mode == "ram"
    assert b.max_rel_error <= 1e-5
    assert np.array_equal(np.float32(a.output), np.float32(b.output))
    image_bytes = x.nbytes
    assert b.peak_sram_bytes < a.peak_sram_bytes
    assert b.arena_bytes < image_bytes  # the whole image would not even fit in the arena
    memory = json.loads((stream / "memory.json").read_text())
    assert not any(buf["kind"] == "input" for buf in memory["buffers"])
