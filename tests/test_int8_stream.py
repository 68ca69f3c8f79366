"""int8 patch-tunnel models: one shared input quantization, slices on int8, streamed input windows.

Rule for int8 outputs (docs/int8.md): >= 99.9 % of elements within 1 LSB of onnxruntime, same argmax.
"""

from __future__ import annotations

import numpy as np
import onnx

from tvm_pipeline.board.boards import load_board
from tvm_pipeline.compiler import CompileOptions, compile_model
from tvm_pipeline.evaluate import evaluate, random_input


def test_quantized_tunnel_net_takes_int8_and_slices_it(int8_onnx):
    model = onnx.load(str(int8_onnx("tunnel_tiny")))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT8
    image = model.graph.input[0].name
    readers = [n.op_type for n in model.graph.node if image in n.input]
    assert readers and set(readers) == {"Slice"}
    assert not any(n.op_type == "QuantizeLinear" and n.input[0].startswith("/Slice") for n in model.graph.node)


def test_int8_stream_build_runs_on_the_board_in_less_sram(int8_onnx, tmp_path):
    ram, stream = tmp_path / "ram", tmp_path / "stream"
    compile_model(int8_onnx("tunnel_tiny"), ram)
    compile_model(int8_onnx("tunnel_tiny"), stream, CompileOptions(input_mode="stream"))
    x = random_input(ram, seed=4)
    board = load_board("stm32f746")
    a, b = evaluate(ram, board, x), evaluate(stream, board, x)
    assert b.within_tolerance(1e-5) and b.argmax_match
    assert np.array_equal(np.asarray(a.output), np.asarray(b.output))
    assert b.peak_sram_bytes < a.peak_sram_bytes
    assert b.arena_bytes < a.arena_bytes  # no whole-image buffer


def test_tunnels_one_at_a_time_need_less_sram_than_the_file_order(int8_onnx, tmp_path):
    """onnxruntime's quantizer writes the tunnels layer by layer; the searched order runs each tunnel to the end."""
    best, file = tmp_path / "best", tmp_path / "file"
    compile_model(int8_onnx("tunnel_tiny"), best, CompileOptions(input_mode="stream"))
    compile_model(int8_onnx("tunnel_tiny"), file, CompileOptions(input_mode="stream", order="file"))
    x = random_input(best, seed=5)
    board = load_board("stm32f746")
    searched, as_written = evaluate(best, board, x), evaluate(file, board, x)
    assert np.array_equal(np.asarray(searched.output), np.asarray(as_written.output))
    assert searched.peak_sram_bytes < as_written.peak_sram_bytes
