"""scikit-learn's 8x8 handwritten digits (1,797 images, shipped with the package), upscaled to the model's
resolution as 3-channel images; a seeded 80/20 split into train and val."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import Dataset

from tvm_pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from tvm_pipeline.errors import UserError

VAL_FRACTION = 0.2


class DigitsDataset(Dataset):
    """One split of the digits; items are (3 x resolution x resolution normalised float image, digit)."""

    def __init__(self, resolution: int, split: str = "train", seed: int = 0) -> None:
        if split not in ("train", "val"):
            raise UserError(f"split: expected 'train' or 'val', got {split!r}")
        images, labels = load_digits(return_X_y=True)
        order = np.random.default_rng(seed).permutation(len(labels))
        n_val = int(len(labels) * VAL_FRACTION)
        chosen = order[:n_val] if split == "val" else order[n_val:]
        # Pixels are 0..16; keep the small 8x8 arrays and upscale per item, so memory does not grow with resolution.
        self.images = torch.from_numpy(images[chosen].reshape(-1, 1, 8, 8) / 16.0).float()
        self.labels = labels[chosen].tolist()
        self.resolution = resolution
        self.classes = [str(digit) for digit in range(10)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        small = self.images[index : index + 1]
        large = F.interpolate(small, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)[0]
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return (large.expand(3, -1, -1) - mean) / std, self.labels[index]
