"""A synthetic classification set: one textured shape on a textured background, drawn from a seed.

Sample i of a (seed, split) pair is always the same image: its random generator is keyed by
(seed, split, i), so the set needs no storage and DataLoader workers agree. The class is i mod N, so
classes are balanced. Shapes are placed anywhere in the image at radii of 12-35 % of its side, so they
often straddle patch borders and only the central or an overlapping patch sees them whole.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from tvm_pipeline.data.transforms import to_normalized_tensor
from tvm_pipeline.errors import UserError

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon")
SPLITS = {"train": 0, "val": 1}
MIN_CONTRAST = 100.0  # RGB distance between the mean colours of a shape and its background
SUPERSAMPLE = 2  # draw masks at twice the size and shrink them, for anti-aliased edges


class ShapesDataset(Dataset):
    """`size` images of `resolution` pixels, one of the first `num_classes` SHAPES each; items are (3xRxR, label)."""

    def __init__(
        self, size: int, resolution: int, num_classes: int = len(SHAPES), seed: int = 0, split: str = "train"
    ) -> None:
        if not 2 <= num_classes <= len(SHAPES):
            raise UserError(f"num_classes: shapes has 2 to {len(SHAPES)} classes, got {num_classes}")
        if split not in SPLITS:
            raise UserError(f"split: expected one of {sorted(SPLITS)}, got {split!r}")
        self.size, self.resolution, self.num_classes = size, resolution, num_classes
        self.key = (seed, SPLITS[split])
        self.classes = list(SHAPES[:num_classes])

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.render(index)
        return to_normalized_tensor(image), label

    def render(self, index: int) -> tuple[np.ndarray, int]:
        """Sample `index` as an RxRx3 uint8 image and its label."""
        if not 0 <= index < self.size:
            raise IndexError(index)
        rng = np.random.default_rng([*self.key, index])
        label = index % self.num_classes
        side = self.resolution
        background = _texture(rng, side, amplitude=100.0)
        foreground = _texture(rng, side, amplitude=60.0, away_from=background.mean(axis=(0, 1)))
        radius = rng.uniform(0.12, 0.35) * side
        centre = rng.uniform(radius, side - radius, size=2)
        mask = _shape_mask(SHAPES[label], centre, radius, rng.uniform(0, 2 * math.pi), side)[..., None]
        image = background * (1 - mask) + foreground * mask + rng.normal(0, 6, (side, side, 3))
        return np.clip(image, 0, 255).astype(np.uint8), label


def _texture(rng: np.random.Generator, side: int, amplitude: float, away_from: np.ndarray | None = None) -> np.ndarray:
    """A side x side x 3 float image blending two random colours by stripes, a checkerboard or smooth noise.

    The colours differ by at most `amplitude` per channel; with `away_from`, the texture's mean colour is at
    least MIN_CONTRAST from that colour, so a shape always stands out from its background.
    """
    y, x = np.mgrid[0:side, 0:side] / side
    kind = rng.integers(3)
    if kind == 0:
        angle, frequency = rng.uniform(0, math.pi), rng.uniform(2, 10)
        weight = 0.5 + 0.5 * np.sin(
            2 * math.pi * frequency * (x * math.cos(angle) + y * math.sin(angle)) + rng.uniform(0, 6.3)
        )
    elif kind == 1:
        cells = rng.integers(3, 12)
        weight = ((np.floor(x * cells) + np.floor(y * cells)) % 2).astype(np.float64)
    else:
        coarse = Image.fromarray((rng.random((5, 5)) * 255).astype(np.uint8))
        weight = np.asarray(coarse.resize((side, side), Image.BICUBIC), dtype=np.float64) / 255
    while True:
        low = rng.uniform(0, 255, 3)
        high = np.clip(low + rng.uniform(-amplitude, amplitude, 3), 0, 255)
        if away_from is None or np.linalg.norm((low + high) / 2 - away_from) >= MIN_CONTRAST:
            return low + weight[..., None] * (high - low)


# Star-shaped polygons: vertex radii (relative to the shape's radius) repeated `turns` times around the centre.
POLYGONS = {
    "square": ((1.0,), 4),
    "triangle": ((1.0,), 3),
    "star": ((1.0, 0.42), 5),
    "diamond": ((1.0, 0.55), 2),
    "hexagon": ((1.0,), 6),
}


def _shape_mask(shape: str, centre: np.ndarray, radius: float, angle: float, side: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of one shape, rotated by `angle`, as a side x side float array."""
    canvas = Image.new("L", (side * SUPERSAMPLE, side * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = centre[0] * SUPERSAMPLE, centre[1] * SUPERSAMPLE, radius * SUPERSAMPLE
    if shape in ("circle", "ring"):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        if shape == "ring":
            draw.ellipse((cx - 0.55 * r, cy - 0.55 * r, cx + 0.55 * r, cy + 0.55 * r), fill=0)
    elif shape == "cross":
        arm = r / 3
        outline = [(arm, r), (arm, arm), (r, arm), (r, -arm), (arm, -arm), (arm, -r)]
        outline += [(-u, -v) for u, v in outline]  # the other half, by point symmetry
        draw.polygon(_place(outline, cx, cy, angle), fill=255)
    else:
        radii, turns = POLYGONS[shape]
        steps = len(radii) * turns
        outline = [
            (
                radii[k % len(radii)] * r * math.cos(2 * math.pi * k / steps),
                radii[k % len(radii)] * r * math.sin(2 * math.pi * k / steps),
            )
            for k in range(steps)
        ]
        draw.polygon(_place(outline, cx, cy, angle), fill=255)
    return np.asarray(canvas.resize((side, side), Image.BOX), dtype=np.float64) / 255


def _place(points: list[tuple[float, float]], cx: float, cy: float, angle: float) -> list[tuple[float, float]]:
    """Rotate points about the origin by `angle`, then move the origin to (cx, cy)."""
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + u * cos - v * sin, cy + u * sin + v * cos) for u, v in points]
