"""Training: the optimisation step lowers the loss, the CLI writes a resumable run, and torchrun works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest
import torch
from torch import nn

from tvm_pipeline.data.shapes import ShapesDataset
from tvm_pipeline.errors import UserError
from tvm_pipeline.models.export import relative_error
from tvm_pipeline.models.tunnel import TunnelNet
from tvm_pipeline.models.tunnel_config import config_from_dict, load_config
from tvm_pipeline.train import build_optimizer, cosine_schedule, main, train_one_epoch

REPO = Path(__file__).resolve().parents[1]
QUICK = "--model tiny --data shapes --train-size 48 --val-size 16 --batch-size 16 --workers 0 --threads 1".split()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_training_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    model = TunnelNet(load_config("tiny"))
    data = ShapesDataset(32, model.config.resolution, num_classes=8)
    images = torch.stack([data[i][0] for i in range(32)])
    labels = torch.tensor([data[i][1] for i in range(32)])
    loss_fn = nn.CrossEntropyLoss()

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return loss_fn(model(images), labels).item()

    before = loss()
    optimizer = build_optimizer(model, "adamw", 3e-3, 0.0)
    train_one_epoch(model, [(images, labels)] * 30, optimizer, cosine_schedule(optimizer, 10**6, 0), loss_fn)
    assert loss() < 0.7 * before


def test_cosine_schedule_warms_up_then_decays() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = cosine_schedule(optimizer, total_steps=12, warmup_steps=2)
    rates = []
    for _ in range(12):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert rates[:3] == pytest.approx([0.5, 1.0, 1.0]) and rates[7] == pytest.approx(0.5)
    assert rates[3:] == sorted(rates[3:], reverse=True)


def test_cli_writes_a_resumable_run_and_its_onnx(tmp_path) -> None:
    run = tmp_path / "run"
    assert main([*QUICK, "--epochs", "1", "-o", str(run)]) == 0
    assert main([*QUICK, "--epochs", "2", "-o", str(run), "--resume"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in records] == [1, 2]
    assert {"train_loss", "val_loss", "top1", "top5"} <= set(records[0])
    config = config_from_dict(json.loads((run / "config.json").read_text()))
    model = TunnelNet(config).eval()
    model.load_state_dict(torch.load(run / "best.pt")["model"])
    image = torch.randn(model.input_shape)
    session = onnxruntime.InferenceSession(str(run / "best.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        assert relative_error(session.run(None, {"input": image.numpy()})[0], model(image).numpy()) <= 1e-5
    with pytest.raises(UserError, match=r"--resume: .* another config"):
        main([*QUICK, "--epochs", "3", "-o", str(run), "--resume", "--shape-classes", "4"])


def test_cli_user_errors(tmp_path) -> None:
    with pytest.raises(UserError, match=r"--resume: .*last.pt does not exist"):
        main([*QUICK, "--epochs", "1", "-o", str(tmp_path / "new"), "--resume"])
    with pytest.raises(UserError, match="--data: 'nowhere'"):
        main(["--model", "tiny", "--data", "nowhere", "--epochs", "1", "-o", str(tmp_path)])
    with pytest.raises(UserError, match="--batch-size: 64 is more than"):
        main([*QUICK, "--epochs", "1", "--batch-size", "64", "-o", str(tmp_path)])


def test_torchrun_two_processes_with_gloo(tmp_path) -> None:
    run = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command = [*launcher, "-m", "tvm_pipeline.train", *QUICK, "--epochs", "1", "-o", str(run)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert (run / "best.onnx").is_file()
