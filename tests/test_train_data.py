"""Training data: the seeded shapes generator, the digits and the image-folder loaders, the transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tvm_pipeline.data.datasets import make_datasets
from tvm_pipeline.data.digits import DigitsDataset
from tvm_pipeline.data.imagefolder import image_folder_splits
from tvm_pipeline.data.shapes import SHAPES, ShapesDataset
from tvm_pipeline.data.transforms import random_resized_crop, resize_center_crop
from tvm_pipeline.errors import UserError


def test_shapes_are_deterministic_from_the_seed() -> None:
    first, again = ShapesDataset(16, 48, seed=3), ShapesDataset(16, 48, seed=3)
    other_seed, other_split = ShapesDataset(16, 48, seed=4), ShapesDataset(16, 48, seed=3, split="val")
    for index in range(16):
        image, label = first.render(index)
        assert np.array_equal(image, again.render(index)[0]) and label == again.render(index)[1]
    assert not np.array_equal(first.render(0)[0], other_seed.render(0)[0])
    assert not np.array_equal(first.render(0)[0], other_split.render(0)[0])


def test_shapes_items_and_classes() -> None:
    dataset = ShapesDataset(16, 40, num_classes=4)
    image, label = dataset[5]
    assert image.shape == (3, 40, 40) and image.dtype == torch.float32 and label == 1
    assert sorted({dataset[i][1] for i in range(16)}) == [0, 1, 2, 3]
    assert dataset.classes == list(SHAPES[:4])
    with pytest.raises(UserError, match="num_classes"):
        ShapesDataset(4, 32, num_classes=len(SHAPES) + 1)


def test_digits_are_upscaled_three_channel_images() -> None:
    train, val = DigitsDataset(24, "train"), DigitsDataset(24, "val")
    assert len(train) + len(val) == 1797 and len(val) == 359
    image, label = train[0]
    assert image.shape == (3, 24, 24) and 0 <= label <= 9
    assert image.std() > 0.1


def write_images(folder, count: int, suffix: str) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 255, (20 + index, 30, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}{suffix}")


def test_image_folder_with_train_and_val(tmp_path) -> None:
    for split, count in (("train", 4), ("val", 2)):
        write_images(tmp_path / split / "cat", count, ".png")
        write_images(tmp_path / split / "dog", count, ".jpg")
    train, val = image_folder_splits(tmp_path, 16)
    assert (len(train), len(val), train.classes) == (8, 4, ["cat", "dog"])
    image, label = train[7]
    assert image.shape == (3, 16, 16) and label == 1
    assert torch.equal(val[0][0], val[0][0])  # evaluation crops are not random


def test_image_folder_holds_out_a_tenth_when_there_is_no_val(tmp_path) -> None:
    write_images(tmp_path / "a", 20, ".png")
    write_images(tmp_path / "b", 10, ".png")
    splits = make_datasets(str(tmp_path), 16)
    assert (len(splits.train), len(splits.val), splits.classes) == (27, 3, ["a", "b"])


def test_image_folder_errors_name_the_problem(tmp_path) -> None:
    write_images(tmp_path / "train" / "a", 1, ".png")
    with pytest.raises(UserError, match="no val/ folder"):
        image_folder_splits(tmp_path, 16)
    (tmp_path / "val" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="at least two class subfolders"):
        image_folder_splits(tmp_path, 16)
    (tmp_path / "train" / "b").mkdir()
    with pytest.raises(UserError, match="holds no"):
        image_folder_splits(tmp_path, 16)
    with pytest.raises(UserError, match="neither 'shapes', 'digits' nor"):
        make_datasets(str(tmp_path / "missing"), 16)


def test_crops_have_the_requested_size() -> None:
    torch.manual_seed(0)
    image = Image.new("RGB", (64, 40))
    assert random_resized_crop(image, 24).size == (24, 24)
    assert random_resized_crop(image, 24, scale=(2.0, 3.0)).size == (24, 24)  # falls back to a centre crop
    assert resize_center_crop(image, 24).size == (24, 24)
