"""lmt data stats: class counts per split, size distribution, mean/std of the train split's pixels (exact), CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lmt.cli import main
from lmt.data.importers import import_dataset
from lmt.data.stats import dataset_stats, stats_markdown, write_stats
from lmt.errors import InvalidInputError
from tests.data.format_sources import noise_image, write_coco


def _pixels(paths: list[Path]) -> np.ndarray:
    return np.concatenate([np.asarray(Image.open(p).convert("RGB"), dtype=np.float64).reshape(-1, 3) / 255.0
                           for p in paths])


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory) -> Path:
    """train/{a: 3 images, b: 1} of different sizes (one grey), val/{a: 1, b: 2}."""
    root = tmp_path_factory.mktemp("stats") / "src"
    layout = {"train": {"a": [(20, 10), (20, 10), (8, 30)], "b": [(16, 16)]}, "val": {"a": [(20, 10)], "b": [(5, 5)] * 2}}
    seed = 0
    for split, classes in layout.items():
        for label, sizes in classes.items():
            (root / split / label).mkdir(parents=True)
            for index, size in enumerate(sizes):
                seed += 1
                noise_image(seed, size, mode="L" if seed == 2 else "RGB").save(root / split / label / f"{index}.png")
    return root


def test_counts_sizes_and_exact_mean_std_of_train_only(split_folder, tmp_path):
    import_dataset(split_folder, tmp_path / "ds")
    stats = dataset_stats(tmp_path / "ds")
    assert stats.kind == "classification"
    assert [(s.split, s.images, s.class_counts) for s in stats.splits] == [
        ("train", 4, {"a": 3, "b": 1}), ("validation", 3, {"a": 1, "b": 2})]
    assert stats.sizes == {"20x10": 3, "5x5": 2, "8x30": 1, "16x16": 1}
    assert stats.width == {"min": 5, "max": 20, "mean": pytest.approx(94 / 7), "median": 16}
    pixels = _pixels(sorted((split_folder / "train").rglob("*.png")))
    assert stats.measured_split == "train" and stats.measured_images == 4 and stats.pixels == len(pixels)
    assert np.allclose(stats.mean, pixels.mean(axis=0), atol=1e-12)
    assert np.allclose(stats.std, pixels.std(axis=0), atol=1e-12)
    # the same numbers straight from the ImageFolder tree (one split there)
    direct = dataset_stats(split_folder / "train")
    assert np.allclose(direct.mean, stats.mean, atol=1e-12) and direct.splits[0].class_counts == {"a": 3, "b": 1}


def test_sample_is_seeded_and_bounded(split_folder):
    one = dataset_stats(split_folder / "train", max_images=2, seed=1)
    assert one.measured_images == 2 and one == dataset_stats(split_folder / "train", max_images=2, seed=1)
    with pytest.raises(InvalidInputError):
        dataset_stats(split_folder / "train", max_images=-1)


def test_detection_counts_objects(tmp_path):
    import_dataset(write_coco(tmp_path / "coco"), tmp_path / "ds")
    stats = dataset_stats(tmp_path / "ds")
    assert stats.kind == "detection" and stats.splits[0].counted == "objects"
    assert stats.splits[0].class_counts == {"car": 2, "cat": 1, "dog": 2}
    markdown = stats_markdown(stats)
    assert "objects per class" in markdown and "image_mean=" in markdown


def test_cli_help_and_run(split_folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["data", "stats", "--help"])
    assert caught.value.code == 0 and "mean/std" in capsys.readouterr().out
    assert main(["data", "stats", str(split_folder / "train"), "--out", str(tmp_path / "out"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "out" / "stats.json").read_text())
    assert printed["splits"][0]["class_counts"] == {"a": 3, "b": 1}
    assert "## Normalisation" in (tmp_path / "out" / "stats.md").read_text()
    assert main(["data", "stats", str(tmp_path / "missing")]) == 2


def test_write_stats_returns_the_json(split_folder, tmp_path):
    path = write_stats(dataset_stats(split_folder / "val"), tmp_path / "w")
    assert path.name == "stats.json" and json.loads(path.read_text())["sizes"] == {"5x5": 2, "20x10": 1}
