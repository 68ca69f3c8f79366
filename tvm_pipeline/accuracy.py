"""Train configs identically on `shapes` and score them: the accuracy column of bench/paper_bench.py.

A comparison trains every config with one `ShapesRecipe` (train.py's recipe and defaults: SGD, cosine schedule,
label smoothing; same generated data, sizes, epochs, batch size and seed) and reads top-1 on the validation
split after the last epoch, so no net gets a best-epoch pick on the data it is scored on.

224x224 is too slow to train on a shared CPU (`paper`: ~8 s per batch of 64 on one thread), so a recipe may
train every config at one smaller resolution: `at_resolution` scales the segmentation's patch and overlap in
proportion, so a tunnel network keeps its grid, its central patch and the share of the image each patch sees.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from tvm_pipeline.errors import UserError
from tvm_pipeline.models.analysis import analyze
from tvm_pipeline.models.tunnel import TunnelNet
from tvm_pipeline.models.tunnel_config import TunnelConfig, config_from_dict, load_config
from tvm_pipeline.train import main as train_main


@dataclass(frozen=True)
class ShapesRecipe:
    """How every config of one comparison is trained; fields left None keep train.py's defaults."""

    epochs: int
    resolution: int | None = None  # None: each config's own input side
    train_size: int | None = None
    val_size: int | None = None
    batch_size: int | None = None
    seed: int = 0

    def argv(self) -> list[str]:
        """train.py's command line for this recipe, without the config and the run folder."""
        # One torch thread and no loader processes: the machines this runs on are shared, and one thread is
        # faster than contended ones for these small models.
        argv = ["--data", "shapes", "--epochs", str(self.epochs), "--seed", str(self.seed), "--threads", "1",
                "--workers", "0"]
        for flag, value in (("--train-size", self.train_size), ("--val-size", self.val_size),
                            ("--batch-size", self.batch_size)):
            if value is not None:
                argv += [flag, str(value)]
        return argv


@dataclass(frozen=True)
class Score:
    """One trained config: what it was at its training resolution, and its top-1 after the last epoch."""

    name: str  # e.g. "paper@112"
    resolution: int
    macs: int
    params: int
    top1: float  # percent, validation split, last epoch
    seconds: float  # wall time of the training run, evaluation and export included


def at_resolution(config: TunnelConfig, resolution: int) -> TunnelConfig:
    """`config` for `resolution`-px images, its segmentation's patch and overlap scaled in proportion."""
    seg = config.segmentation
    # The patch and overlap scale to whole pixels exactly when the resolution is a multiple of this step.
    step = config.resolution // math.gcd(config.resolution, seg.patch, seg.overlap)
    if resolution < 1 or resolution % step:
        raise UserError(
            f"resolution: {resolution} px would scale {config.name!r}'s {seg.patch}-px patches overlapping by "
            f"{seg.overlap} px (at {config.resolution} px) to fractions of a pixel; use a multiple of {step} px"
        )
    data = config.to_dict()
    data["name"] = f"{config.name}@{resolution}"
    data["resolution"] = resolution
    data["segmentation"] = {
        **data["segmentation"],
        "patch": seg.patch * resolution // config.resolution,
        "overlap": seg.overlap * resolution // config.resolution,
    }
    return config_from_dict(data, source=f"{config.name} at {resolution} px")


def train_and_score(config_name: str, recipe: ShapesRecipe, work: Path) -> Score:
    """Train shipped config `config_name` (scaled to the recipe's resolution) in `work`/NAME/ and score it."""
    config = load_config(config_name)
    if recipe.resolution is not None:
        config = at_resolution(config, recipe.resolution)
    work.mkdir(parents=True, exist_ok=True)
    config_file = work / f"{config.name}.json"
    config_file.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    run = work / config.name
    start = time.perf_counter()
    train_main(["--config", str(config_file), "-o", str(run), *recipe.argv()])
    seconds = time.perf_counter() - start
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    trained = config_from_dict(json.loads((run / "config.json").read_text()))  # its class count is the data's
    model = TunnelNet(trained)
    figures = analyze(model, model.input_shape)
    return Score(config.name, config.resolution, figures.macs, figures.params, last["top1"], seconds)


def compare(config_names: list[str], recipe: ShapesRecipe, work: Path) -> dict[str, Score]:
    """`train_and_score` for each config, one after another, with the same recipe: config name -> score."""
    return {name: train_and_score(name, recipe, work) for name in config_names}

