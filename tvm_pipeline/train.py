"""Train a patch-tunnel network (or the MobileNetV2 baseline) and export its best checkpoint to ONNX.

    python -m tvm_pipeline.train --model tiny --data shapes --epochs 5 -o runs/tiny
    torchrun --nproc_per_node=2 -m tvm_pipeline.train --model paper --data /data/imagenet --epochs 150 -o runs/paper

`--model` names a shipped config (tvm_pipeline/models/configs: paper, tiny, mobilenetv2_baseline); `--config FILE`
builds from a JSON config instead. The config's `num_classes` is replaced by the data set's class count.
RUN/ receives config.json, metrics.jsonl, last.pt (every epoch; `--resume` continues from it), best.pt (best
validation top-1) and, at the end, best.onnx. Under torchrun each process trains on its shard of every epoch
(DistributedDataParallel, gloo backend, CPU); BatchNorm statistics stay per process; rank 0 writes the files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from tvm_pipeline.data.datasets import make_datasets
from tvm_pipeline.errors import UserError
from tvm_pipeline.models.export import export_onnx
from tvm_pipeline.models.tunnel import TunnelNet
from tvm_pipeline.models.tunnel_config import TunnelConfig, config_from_dict, load_config

# (learning rate, weight decay) used when the command line gives none; SGD is MobileNetV2's recipe.
OPTIMIZER_DEFAULTS = {"sgd": (0.05, 4e-5), "adamw": (2e-3, 0.05)}


@dataclass(frozen=True)
class Process:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int
    world: int

    @property
    def main(self) -> bool:
        """Whether this process writes files and shows progress."""
        return self.rank == 0


@dataclass(frozen=True)
class Metrics:
    """Validation loss and top-1 / top-5 accuracy in percent."""

    val_loss: float
    top1: float
    top5: float


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line described in the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m tvm_pipeline.train", description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", help="shipped config name (default: paper)")
    which.add_argument("--config", type=Path, help="JSON config file instead of a shipped one")
    parser.add_argument("--data", required=True, help="'shapes', 'digits' or an image folder (class subfolders)")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True, help="run folder")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZER_DEFAULTS), default="sgd")
    parser.add_argument("--lr", type=float, help="peak learning rate (default depends on --optimizer)")
    parser.add_argument(
        "--weight-decay", type=float, help="on conv / linear weights only (default depends on --optimizer)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="per process")
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--warmup-epochs", type=float, default=0.0, help="linear warm-up before the cosine decay")
    parser.add_argument("--workers", type=int, default=2, help="data loader processes per training process")
    parser.add_argument("--threads", type=int, help="torch threads per training process (default: cores / processes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=5000, help="shapes only: training images")
    parser.add_argument("--val-size", type=int, default=1000, help="shapes only: validation images")
    parser.add_argument("--shape-classes", type=int, default=8, help="shapes only: number of classes")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')}: must be at least 1, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the training described by `argv` (sys.argv[1:] when None); returns the exit status."""
    args = parse_args(argv)
    process = _start_process_group()
    try:
        _train(args, process)
        if process.world > 1:
            # Rank 0 still exports ONNX after the last epoch. A rank that tore gloo down while its peer was busy
            # aborted in gloo's teardown ("terminate called without an active exception"): 1 run in 8 on a loaded
            # 2-core machine without this barrier, 0 in 16 with it.
            dist.barrier()
    finally:
        if process.world > 1:
            dist.destroy_process_group()
    return 0


def _train(args: argparse.Namespace, process: Process) -> None:
    """Everything between argument parsing and process-group teardown."""
    torch.manual_seed(args.seed)
    # Small models on a busy machine train several times faster on one thread than on contended ones.
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // process.world))
    base = load_config(args.config if args.config else args.model or "paper")
    data = make_datasets(args.data, base.resolution, args.seed, (args.train_size, args.val_size), args.shape_classes)
    config = dataclasses.replace(base, num_classes=len(data.classes))
    model = TunnelNet(config)
    trained = DistributedDataParallel(model) if process.world > 1 else model
    sampler = DistributedSampler(data.train, process.world, process.rank, shuffle=True, seed=args.seed, drop_last=True)
    loader = DataLoader(data.train, args.batch_size, sampler=sampler, num_workers=args.workers, drop_last=True)
    if len(loader) == 0:
        raise UserError(f"--batch-size: {args.batch_size} is more than this process's {len(sampler)} training images")
    optimizer = build_optimizer(model, args.optimizer, args.lr, args.weight_decay)
    scheduler = cosine_schedule(optimizer, args.epochs * len(loader), round(args.warmup_epochs * len(loader)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    run = args.output
    first_epoch, best_top1 = 0, -1.0
    if args.resume:
        first_epoch, best_top1 = _resume(run / "last.pt", config, model, optimizer, scheduler)
    elif process.main:
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    for epoch in range(first_epoch, args.epochs):
        sampler.set_epoch(epoch)
        progress = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not process.main, dynamic_ncols=True)
        train_loss = train_one_epoch(trained, progress, optimizer, scheduler, loss_fn)
        metrics = evaluate(model, data.val, args.batch_size, loss_fn, process)
        if process.main:
            best_top1 = max(best_top1, metrics.top1)
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,
                "best_top1": best_top1,
                "config": config.to_dict(),
                "classes": data.classes,
            }
            _record_epoch(run, state, train_loss, metrics)
    if process.main:
        _export_best(run, config)


def build_optimizer(model: nn.Module, name: str, lr: float | None, weight_decay: float | None) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum 0.9) or AdamW; weight decay applies to conv and linear weights, not BN or biases."""
    default_lr, default_decay = OPTIMIZER_DEFAULTS[name]
    decayed = [p for p in model.parameters() if p.ndim > 1]
    plain = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decayed, "weight_decay": default_decay if weight_decay is None else weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    lr = default_lr if lr is None else lr
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=lr)


def cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor: linear warm-up to 1, then a cosine down to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: nn.Module,
) -> float:
    """One pass over `batches` (an iterable of (images, labels)); returns the mean training loss."""
    model.train()
    total, count = 0.0, 0
    for images, labels in batches:
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total, count = total + loss.item(), count + 1
        if isinstance(batches, tqdm):
            batches.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
    return total / max(1, count)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int, loss_fn: nn.Module, process: Process) -> Metrics:
    """Loss and top-1 / top-5 accuracy over the whole `dataset`, each process scoring every world-th image."""
    model.eval()
    shard = Subset(dataset, range(process.rank, len(dataset), process.world))  # type: ignore[arg-type]
    sums = torch.zeros(4, dtype=torch.float64)  # loss sum, top-1 hits, top-5 hits, images
    for images, labels in DataLoader(shard, batch_size):
        logits = model(images)
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = ranked == labels[:, None]
        sums += torch.tensor(
            [loss_fn(logits, labels).item() * len(labels), hits[:, 0].sum(), hits.any(1).sum(), len(labels)]
        )
    if process.world > 1:
        dist.all_reduce(sums)
    loss, top1, top5, images = sums.tolist()
    images = max(images, 1.0)
    return Metrics(loss / images, 100 * top1 / images, 100 * top5 / images)


def _start_process_group() -> Process:
    """Join the torchrun job described by the environment, if any (gloo: CPU only)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Process(0, 1)
    dist.init_process_group("gloo")
    return Process(dist.get_rank(), dist.get_world_size())


def _resume(
    checkpoint: Path,
    config: TunnelConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[int, float]:
    """Load last.pt into the model, optimizer and schedule; returns (epochs done, best top-1)."""
    if not checkpoint.is_file():
        raise UserError(f"--resume: {checkpoint} does not exist; train without --resume first")
    state = torch.load(checkpoint)
    if config_from_dict(state["config"]) != config:
        raise UserError(
            f"--resume: {checkpoint} was trained with another config or class count "
            f"(config {state['config']['name']!r}); use the same --model/--config and --data as that run"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["epoch"], state["best_top1"]


def _record_epoch(run: Path, state: dict, train_loss: float, metrics: Metrics) -> None:
    """Checkpoint (last.pt, and best.pt when this epoch is the best so far), log and print one finished epoch."""
    _save(state, run / "last.pt")
    if metrics.top1 == state["best_top1"]:
        _save(state, run / "best.pt")
    record = {"epoch": state["epoch"], "train_loss": train_loss, **dataclasses.asdict(metrics)}
    with open(run / "metrics.jsonl", "a") as log:
        log.write(json.dumps(record) + "\n")
    accuracy = f"top-1 {metrics.top1:.2f} %  top-5 {metrics.top5:.2f} %"
    print(
        f"epoch {state['epoch']}: train loss {train_loss:.4f}  val loss {metrics.val_loss:.4f}  {accuracy}", flush=True
    )


def _save(state: dict, path: Path) -> None:
    """Write a checkpoint atomically, so an interrupted run never leaves a truncated file."""
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def _export_best(run: Path, config: TunnelConfig) -> None:
    """Rebuild the best checkpoint's model and write it as RUN/best.onnx (checked against onnxruntime)."""
    model = TunnelNet(config)
    model.load_state_dict(torch.load(run / "best.pt")["model"])
    export_onnx(model, model.input_shape, run / "best.onnx")
    print(f"best checkpoint exported to {run / 'best.onnx'}", flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
