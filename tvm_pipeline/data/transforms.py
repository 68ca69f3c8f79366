"""The few image transforms training needs, on PIL images and torch tensors (torchvision is not installable
next to the pinned torch). Randomness comes from torch's RNG, which DataLoader seeds per worker."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP_FRACTION = 0.875  # resize to size / 0.875, then centre-crop: the usual ImageNet evaluation


def to_normalized_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 (PIL or numpy) -> 3xHxW float32, scaled to [0, 1] and normalised with ImageNet statistics."""
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (tensor - mean) / std


def random_resized_crop(
    image: Image.Image, size: int, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> Image.Image:
    """Crop a random area fraction in `scale` with aspect ratio in `ratio`, resized to size x size.

    Same sampling as torchvision's RandomResizedCrop: ten tries, then a centre crop at the nearest valid ratio.
    """
    width, height = image.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(*scale).item()
        aspect = math.exp(torch.empty(1).uniform_(*log_ratio).item())
        crop_w = round(math.sqrt(target_area * aspect))
        crop_h = round(math.sqrt(target_area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            left = int(torch.randint(0, width - crop_w + 1, (1,)).item())
            top = int(torch.randint(0, height - crop_h + 1, (1,)).item())
            return image.resize((size, size), Image.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    aspect = min(max(width / height, ratio[0]), ratio[1])
    crop_w, crop_h = (width, round(width / aspect)) if width / height < aspect else (round(height * aspect), height)
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return image.resize((size, size), Image.BILINEAR, box=(left, top, left + crop_w, top + crop_h))


def random_horizontal_flip(image: Image.Image, probability: float = 0.5) -> Image.Image:
    """Mirror left-right with the given probability."""
    return image.transpose(Image.FLIP_LEFT_RIGHT) if torch.rand(1).item() < probability else image


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Scale the short side to size / 0.875, then cut the central size x size square."""
    width, height = image.size
    short = round(size / EVAL_CROP_FRACTION)
    scale = short / min(width, height)
    resized = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BILINEAR)
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))
