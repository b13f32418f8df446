"""Image coverage on the real Twitter-2017 splits: reported per split, and a wrong data.image_dir fails the run before
training instead of silently training without images."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from components.config import DataConfig
from components.training.data import load_training_data


def _config(data_dir, image_dir, rate):
    return DataConfig(
        dataset="twitter2017",
        data_dir=data_dir,
        context_generator="none",
        image_dir=image_dir,
        max_examples={"train": 8, "dev": 4, "test": 4},
        max_missing_image_rate=rate,
    )


def test_coverage_is_logged_per_split_and_too_many_missing_images_fail(data_dir, tmp_path, caplog):
    images = tmp_path / "images"
    images.mkdir()
    full = load_training_data(_config(data_dir, None, 0.05))
    for example in full.splits["train"][:6] + full.splits["dev"] + full.splits["test"]:  # 2 of 8 train images missing
        Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(images / f"{example.image_id}.jpg")

    with caplog.at_level(logging.INFO, logger="components.training.data"):
        data = load_training_data(_config(data_dir, images, 0.3))
    assert data.image_coverage() == {"train": 0.75, "dev": 1.0, "test": 1.0}
    assert "images: train split 75.0% of 8 examples have an image in" in caplog.text

    with pytest.raises(
        ValueError,
        match=r"25.0% of the train split's images are missing, over "
        r"data.max_missing_image_rate=0.05",
    ):
        load_training_data(_config(data_dir, images, 0.05))
    with pytest.raises(ValueError, match=r"100.0% of the train split's images are missing"):
        load_training_data(_config(data_dir, tmp_path, 0.05))  # the wrong directory
