"""Helpers for the dataset-tool tests: small synthetic image sets with no genuine near-duplicates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def smooth_image(rng: np.random.Generator, size: int = 48) -> Image.Image:
    """A random 6x6 colour grid upscaled bicubically: unrelated images land ~32 pHash bits apart (min ~14)."""
    return Image.fromarray(rng.integers(40, 216, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)


def write_clean_folder(root: Path, counts: dict[str, int], seed: int, size: int = 48) -> Path:
    """An ImageFolder tree ``root/<class>/NNN.png`` of distinct smooth images."""
    rng = np.random.default_rng(seed)
    for label, count in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            smooth_image(rng, size).save(root / label / f"{index:03d}.png")
    return root
