"""Pick the training and validation sets from a `--data` spec: "shapes", "digits" or an image folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from tvm_pipeline.data.digits import DigitsDataset
from tvm_pipeline.data.imagefolder import image_folder_splits
from tvm_pipeline.data.shapes import SHAPES, ShapesDataset
from tvm_pipeline.errors import UserError


@dataclass(frozen=True)
class DataSplits:
    """Training and validation sets and their class names (index = label)."""

    train: Dataset
    val: Dataset
    classes: list[str]


def make_datasets(
    spec: str,
    resolution: int,
    seed: int = 0,
    shapes_sizes: tuple[int, int] = (5000, 1000),
    shapes_classes: int = len(SHAPES),
) -> DataSplits:
    """Data sets for `spec` at `resolution`; `shapes_sizes` (train, val) and `shapes_classes` apply to shapes only."""
    if spec == "shapes":
        train = ShapesDataset(shapes_sizes[0], resolution, shapes_classes, seed, "train")
        return DataSplits(train, ShapesDataset(shapes_sizes[1], resolution, shapes_classes, seed, "val"), train.classes)
    if spec == "digits":
        train = DigitsDataset(resolution, "train", seed)
        return DataSplits(train, DigitsDataset(resolution, "val", seed), train.classes)
    if not Path(spec).is_dir():
        raise UserError(f"--data: {spec!r} is neither 'shapes', 'digits' nor an existing image folder")
    train_folder, val_folder = image_folder_splits(spec, resolution, seed)
    return DataSplits(train_folder, val_folder, train_folder.classes)
