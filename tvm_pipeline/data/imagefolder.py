"""A folder of class subfolders holding JPEG/PNG images (the ImageNet layout), with standard augmentation.

Layouts: ROOT/train/CLASS/*.jpg with ROOT/val/CLASS/*.jpg, or ROOT/CLASS/*.jpg alone, in which case a
seeded tenth of each class is held out for validation. Classes are the sorted subfolder names of the
training part. Training items get a random resized crop and a horizontal flip; validation items the
resize + centre crop of ImageNet evaluation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from tvm_pipeline.data.transforms import (
    random_horizontal_flip,
    random_resized_crop,
    resize_center_crop,
    to_normalized_tensor,
)
from tvm_pipeline.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
HOLDOUT_FRACTION = 0.1

Sample = tuple[Path, int]


class ImageFolderDataset(Dataset):
    """Images with labels; `train` selects augmentation (random crop + flip) over the evaluation crop."""

    def __init__(self, samples: list[Sample], classes: list[str], resolution: int, train: bool) -> None:
        self.samples, self.classes, self.resolution, self.train = samples, classes, resolution, train

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        if self.train:
            image = random_horizontal_flip(random_resized_crop(image, self.resolution))
        else:
            image = resize_center_crop(image, self.resolution)
        return to_normalized_tensor(image), label


def image_folder_splits(
    root: str | Path, resolution: int, seed: int = 0
) -> tuple[ImageFolderDataset, ImageFolderDataset]:
    """(train, val) datasets of an image folder tree, in either layout described above."""
    root = Path(root)
    if (root / "train").is_dir():
        if not (root / "val").is_dir():
            raise UserError(
                f"--data: {root} has a train/ folder but no val/ folder; add val/CLASS/ images, "
                f"or put the class folders directly in {root}"
            )
        classes = _class_names(root / "train")
        train, val = _samples(root / "train", classes), _samples(root / "val", classes)
    else:
        classes = _class_names(root)
        train, val = _hold_out(_samples(root, classes), seed)
    return ImageFolderDataset(train, classes, resolution, True), ImageFolderDataset(val, classes, resolution, False)


def _class_names(folder: Path) -> list[str]:
    """Sorted names of the subfolders of `folder`; at least two are needed to classify."""
    classes = sorted(entry.name for entry in folder.iterdir() if entry.is_dir())
    if len(classes) < 2:
        raise UserError(f"--data: {folder} needs at least two class subfolders of images, found {classes}")
    return classes


def _samples(folder: Path, classes: list[str]) -> list[Sample]:
    """(image path, class index) for every image under folder/CLASS/, sorted; an empty class is an error."""
    samples: list[Sample] = []
    for label, name in enumerate(classes):
        files = sorted(path for path in (folder / name).rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"--data: class folder {folder / name} holds no {sorted(IMAGE_SUFFIXES)} images")
        samples += [(path, label) for path in files]
    return samples


def _hold_out(samples: list[Sample], seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split off a seeded HOLDOUT_FRACTION of each class (at least one image) for validation."""
    rng = np.random.default_rng(seed)
    train: list[Sample] = []
    val: list[Sample] = []
    for label in sorted({label for _, label in samples}):
        members = [sample for sample in samples if sample[1] == label]
        picked = set(rng.permutation(len(members))[: max(1, int(len(members) * HOLDOUT_FRACTION))].tolist())
        for position, sample in enumerate(members):
            (val if position in picked else train).append(sample)
    return train, val
