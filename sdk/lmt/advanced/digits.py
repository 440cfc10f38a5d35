"""scikit-learn's handwritten digits (1797 real 8x8 images, bundled with scikit-learn: no download), split once,
for the advanced experiments."""

from __future__ import annotations

from typing import Any

import numpy as np


def digits_split(test_fraction: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train digits, test images, test digits): 8x8 images with values 0-16, split by image and
    stratified by digit, so that no test image is ever seen in training."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    train, test = [], []
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(digits.target == digit))
        cut = int(round(len(members) * test_fraction))
        test.extend(members[:cut].tolist())
        train.extend(members[cut:].tolist())
    train_index, test_index = np.array(sorted(train)), np.array(sorted(test))
    return (digits.images[train_index], digits.target[train_index], digits.images[test_index],
            digits.target[test_index])


def digit_images(images: np.ndarray, size: int = 32) -> list[Any]:
    """8x8 digits (values 0-16) as ``size`` px RGB PIL images, the input the image models take."""
    from PIL import Image

    return [Image.fromarray((np.asarray(image) * (255.0 / 16.0)).astype(np.uint8), mode="L")
            .resize((size, size), Image.BILINEAR).convert("RGB") for image in images]
