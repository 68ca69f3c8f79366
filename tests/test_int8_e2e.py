"""int8 end to end: `tvmp quantize` a zoo model -> compile -> run; exact vs the NumPy integer reference, within 1 LSB
of onnxruntime on the same QDQ model, no float in the Cortex-M0 object, ~4x less SRAM than the float build."""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from tvm_pipeline.board.boards import load_board
from tvm_pipeline.board.toolchain import find_arm_toolchain
from tvm_pipeline.cli import main as tvmp
from tvm_pipeline.compiler import CompileOptions, compile_model
from tvm_pipeline.errors import UserError
from tvm_pipeline.evaluate import INT_WITHIN_1LSB, evaluate, random_input
from tvm_pipeline.int8_reference import run_reference
from tvm_pipeline.quantize import quantize_model

#: Symbols of the soft-float runtime (libgcc): any of them in an object means float arithmetic.
FLOAT_HELPER_PREFIXES = ("__aeabi_f", "__aeabi_d", "__aeabi_i2f", "__aeabi_ui2f", "__aeabi_l2f", "__aeabi_ul2f",
                         "__aeabi_i2d", "__aeabi_ui2d", "__aeabi_l2d", "__aeabi_ul2d")


@pytest.fixture(scope="session")
def compiled_int8(int8_onnx, tmp_path_factory):
    root = tmp_path_factory.mktemp("compiled-int8")
    cache: dict[tuple, Path] = {}

    def get(name: str, board: str = "stm32f746") -> Path:
        if (name, board) not in cache:
            cache[name, board] = root / f"{name}-{board}"
            compile_model(int8_onnx(name), cache[name, board], CompileOptions(board=board))
        return cache[name, board]

    return get


def _check_int8(out: Path, board: str | None, seed: int):
    """Run once on a seeded random input: see `check_int8_output`."""
    return check_int8_output(out, random_input(out, seed), board)


def check_int8_output(out: Path, x: np.ndarray, board: str | None = None):
    """Run once; the output must equal the NumPy integer reference and satisfy the 1-LSB rule vs onnxruntime."""
    result = evaluate(out, load_board(board) if board else None, x)
    expected = run_reference(out / "reference.onnx", x).reshape(-1)
    assert np.array_equal(np.asarray(result.output, dtype=np.int64), expected.astype(np.int64)), "not bit-exact"
    assert result.over_1lsb_fraction <= 1 - INT_WITHIN_1LSB and result.within_tolerance(0.0)
    assert result.argmax_match
    return result


@pytest.mark.parametrize("name", ["inverted_residual", "mbv2_tiny", "conv_stack", "pool_linear"])
def test_host_build_is_exact_and_within_1lsb_of_onnxruntime(compiled_int8, name):
    out = compiled_int8(name)
    model = json.loads((out / "model.json").read_text())
    assert model["inputs"][0]["dtype"] == "int8" and model["outputs"][0]["dtype"] == "int8"
    assert "fold-qdq: integer only, no float op left" in model["notes"]
    if name in ("inverted_residual", "mbv2_tiny"):  # the skip-adds run in the projection conv's epilogue
        assert any("conv2d+add" in note for note in model["notes"])
    for seed in range(3):
        _check_int8(out, None, seed)


def test_stm32f746_board_is_exact_and_reports_lsb_figures(compiled_int8):
    result = _check_int8(compiled_int8("mbv2_tiny"), "stm32f746", seed=7)
    data = result.to_json()
    assert {"max_abs_diff_lsb", "mismatch_fraction", "over_1lsb_fraction", "argmax_match"} <= set(data)
    assert data["max_abs_diff_lsb"] <= 1 and result.peak_sram_bytes is not None


def _undefined_symbols(out: Path, board_name: str, tmp_path: Path) -> set[str]:
    """Compile the model's C with the board's CPU flags; the symbols the objects need from elsewhere."""
    toolchain = find_arm_toolchain()
    board = load_board(board_name)
    objects = []
    for source in ("kernels", "model", "weights"):
        obj = tmp_path / f"{source}.o"
        subprocess.run([str(toolchain.gcc), "-O2", "-std=gnu11", "-ffp-contract=off", *board.cpu_flags, f"-I{out}",
                        "-c", str(out / f"{source}.c"), "-o", str(obj)], check=True)
        objects.append(str(obj))
    listing = subprocess.run([str(toolchain.nm), "-u", *objects], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in listing.splitlines() if line.strip() and not line.endswith(":")}


def test_no_float_helper_in_the_cortex_m0_object(compiled_int8, compiled, tmp_path):
    """Soft-float Cortex-M0: float arithmetic would need libgcc's __aeabi_f*/__aeabi_d* helpers. The int8 build needs
    none (only integer helpers such as __aeabi_lmul); the float build of the same kind of model does, as a control."""
    int8 = _undefined_symbols(compiled_int8("mbv2_tiny"), "cortex-m0", tmp_path)
    assert not {s for s in int8 if s.startswith(FLOAT_HELPER_PREFIXES)}, sorted(int8)
    float_build = _undefined_symbols(compiled("conv_stack"), "cortex-m0", tmp_path)
    assert {s for s in float_build if s.startswith(FLOAT_HELPER_PREFIXES)}


def test_int8_model_runs_exactly_on_the_fpu_less_cortex_m0(compiled_int8):
    result = _check_int8(compiled_int8("mbv2_tiny", "cortex-m0"), "cortex-m0", seed=2)
    assert result.peak_sram_bytes < load_board("cortex-m0").ram.size


def test_int8_peak_sram_is_about_4x_below_float(zoo_onnx, int8_onnx, tmp_path):
    """Like for like: bottleneck reordering off on both sides (its int8 form adds an int32 accumulator)."""
    float_dir, int8_out = tmp_path / "float", tmp_path / "int8"
    compile_model(zoo_onnx("mbv2_tiny"), float_dir, CompileOptions(disabled_passes=frozenset({"reorder-bottleneck"})))
    compile_model(int8_onnx("mbv2_tiny"), int8_out,
                  CompileOptions(disabled_passes=frozenset({"reorder-bottleneck-int8"})))
    board = load_board("stm32f746")
    float_sram = evaluate(float_dir, board, random_input(float_dir)).peak_sram_bytes
    int8_sram = evaluate(int8_out, board, random_input(int8_out)).peak_sram_bytes
    print(f"mbv2_tiny peak SRAM on stm32f746: float32 {float_sram:,} B, int8 {int8_sram:,} B "
          f"({float_sram / int8_sram:.2f}x)")
    assert float_sram / int8_sram >= 3.5


def _qat_export(path: Path) -> None:
    """A small eager-mode PyTorch QAT model (int8 activations, per-channel symmetric weights), exported as QDQ ONNX."""
    import torch
    from torch import nn
    from torch.ao.quantization import (DeQuantStub, FakeQuantize, MovingAverageMinMaxObserver,
                                       MovingAveragePerChannelMinMaxObserver, QConfig, QuantStub, disable_observer,
                                       fuse_modules_qat, prepare_qat)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.quant, self.dequant = QuantStub(), DeQuantStub()
            self.conv1, self.relu1 = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()
            self.conv2, self.relu2 = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU6()
            self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 4)

        def forward(self, x):
            x = self.relu2(self.conv2(self.relu1(self.conv1(self.quant(x)))))
            return self.dequant(self.fc(self.pool(x).flatten(1)))

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.ao eager-mode QAT is deprecated
    torch.manual_seed(0)
    model = Net()
    act = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127,
                                 dtype=torch.qint8, qscheme=torch.per_tensor_affine)
    weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
                                    dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    model.qconfig = QConfig(activation=act, weight=weight)
    model.train()
    fuse_modules_qat(model, [["conv1", "relu1"]], inplace=True)
    prepare_qat(model, inplace=True)
    for _ in range(8):
        model(torch.randn(4, 3, 16, 16))
    model.eval()
    model.apply(disable_observer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), str(path), opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["output"])


def test_pytorch_qat_export_folds_to_integer_only(tmp_path):
    source = tmp_path / "qat.onnx"
    with warnings.catch_warnings():
        _qat_export(source)
    out = tmp_path / "qat"
    result = compile_model(source, out)
    notes = result.program.notes
    assert any(n.startswith("input input: int8") for n in notes) and any(n.startswith("output output: int8") for n in notes)
    assert "fold-qdq: integer only, no float op left" in notes
    for seed in range(3):
        _check_int8(out, None, seed)


def test_tvmp_quantize_from_an_image_folder_then_run(zoo_onnx, tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(images / f"{i}.png")
    quantized, out = tmp_path / "m.int8.onnx", tmp_path / "out"
    assert tvmp(["quantize", str(zoo_onnx("pool_linear")), "--calibration", str(images), "-o", str(quantized)]) == 0
    printed = capsys.readouterr().out
    assert "calibrated on 4 sample(s)" in printed and "input input: int8" in printed
    assert tvmp(["compile", str(quantized), "-o", str(out)]) == 0
    capsys.readouterr()
    assert tvmp(["run", str(out), "--host", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["within_tolerance"] and data["argmax_match"] and data["max_abs_diff_lsb"] <= 1
    assert 0.0 <= data["mismatch_fraction"] <= 1.0


def test_quantize_rejects_calibration_data_of_the_wrong_shape(zoo_onnx, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(UserError, match=r"has shape \[2, 3, 8, 8\]; expected \[N, 3, 16, 16\]"):
        quantize_model(zoo_onnx("conv_stack"), bad, tmp_path / "q.onnx")
