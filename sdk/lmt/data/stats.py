"""Dataset statistics (``lmt data stats``): class counts, the image-size distribution, mean/std for normalisation.

- Class counts per split: images per label (classification) or objects per category (detection).
- Sizes: every image's (width, height) from its header, over all splits: the distinct sizes with their counts,
  and min/max/mean/median of width and height.
- Mean/std: per RGB channel, over every pixel of the ``train`` split's images (scaled to [0, 1], after the RGB
  conversion every model sees), so the constants never look at validation or test data. These are what an
  image processor's ``image_mean``/``image_std`` take. Large images weigh more, as each pixel counts once.
  ``max_images`` measures a seeded random sample instead of every image.

>>> from lmt.data.stats import dataset_stats
>>> # stats = dataset_stats("data/digits-ds"); stats.mean, stats.std
"""

from __future__ import annotations

import json
import logging
import random
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmt.data.formats import (
    class_counts,
    dataset_kind,
    error,
    is_dataset_dir,
    load_dataset_dir,
    ordered_splits,
    stored_image,
    undecoded,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitStats:
    """One split: how many images, and how many images (or objects) each class has."""

    split: str
    images: int
    class_counts: dict[str, int]
    counted: str  # "images", "objects", or "" when the dataset has no classes

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "images": self.images, "class_counts": dict(self.class_counts),
                "counted": self.counted}


@dataclass(frozen=True)
class DatasetStats:
    """Class counts per split, size distribution over all images, and per-channel mean/std of one split."""

    kind: str
    splits: tuple[SplitStats, ...]
    sizes: dict[str, int]
    width: dict[str, float]
    height: dict[str, float]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    measured_split: str
    measured_images: int
    pixels: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "splits": [s.to_dict() for s in self.splits], "sizes": dict(self.sizes),
                "width": dict(self.width), "height": dict(self.height), "mean": list(self.mean),
                "std": list(self.std), "measured_split": self.measured_split,
                "measured_images": self.measured_images, "pixels": self.pixels}


# ---- reading the source -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Source:
    """What is measured: each split's data (a Dataset, or image paths) and class counts; images are read lazily."""

    kind: str
    counted: str
    data: dict[str, Any]
    classes: dict[str, dict[str, int]]


def _dataset_source(path: Path) -> _Source:
    dataset = load_dataset_dir(path)
    kinds = {dataset_kind(part.features) for part in dataset.values()}
    kind = kinds.pop() if len(kinds) == 1 else "mixed"
    splits = ordered_splits(dataset)
    for split in splits:
        if "image" not in dataset[split].features:
            raise error(f"split '{split}' of '{path}' has no 'image' column.", f"'{path}' 的划分 '{split}' 没有 'image' 列。")
    counted = {"detection": "objects", "classification": "images"}.get(kind, "")
    return _Source(kind, counted, {s: dataset[s] for s in splits}, {s: class_counts(dataset[s]) for s in splits})


def _record_source(path: Path) -> _Source:
    from lmt.train.data import read_records, read_table

    columns = {"image": "image"}
    is_table = path.suffix.lower() in (".csv", ".jsonl", ".json")
    if path.is_dir() or not is_table or "label" in read_table(path)[0]:
        columns["label"] = "label"  # a folder's labels are its sub-folders; other files are refused below
    records = read_records(path, columns)
    labelled = "label" in columns
    classes = dict(sorted(Counter(str(r["label"]) for r in records).items())) if labelled else {}
    return _Source("classification" if labelled else "images", "images" if labelled else "",
                   {"train": [r["image"] for r in records]}, {"train": classes})


def _images(data: Any, split: str, indices: Sequence[int] | None = None) -> Iterator[Any]:
    """The encoded bytes (dataset folders) or paths (files) of a split's images, one at a time."""
    if isinstance(data, list):
        yield from (data[i] for i in (range(len(data)) if indices is None else indices))
        return
    part = data if indices is None else data.select(indices)
    for index, row in enumerate(undecoded(part.select_columns(["image"]))):
        yield stored_image(row["image"], f"{split} row {index + 1}")[0]


# ---- measuring ----------------------------------------------------------------------------------------------------
def _header_size(image: Any) -> tuple[int, int]:
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as opened:
            return opened.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise error(f"an image cannot be read ({type(exc).__name__}); run `lmt data validate` to find it.",
                    f"有图片无法读取（{type(exc).__name__}）；请用 `lmt data validate` 找出它。") from exc


def _summary(values: Sequence[int]) -> dict[str, float]:
    return {"min": min(values), "max": max(values), "mean": statistics.fmean(values),
            "median": statistics.median(values)}


def mean_std(images: Iterable[Any]) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """Per-channel mean and (population) std of every pixel, in [0, 1]; images (paths or bytes) are combined
    one by one with the pairwise update of Chan et al., so only one image is in memory at a time."""
    import numpy as np

    from lmt.images import load_image

    count, mean, m2 = 0, np.zeros(3), np.zeros(3)
    for image in images:
        # min_side=1: a tiny image is still part of the data the constants describe
        pixels = np.asarray(load_image(image, min_side=1), dtype=np.float64).reshape(-1, 3) / 255.0
        n, image_mean = len(pixels), pixels.mean(axis=0)
        image_m2 = ((pixels - image_mean) ** 2).sum(axis=0)
        delta = image_mean - mean
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + image_m2 + delta ** 2 * (count * n / total)
        count = total
    if not count:
        raise error("there are no images to measure.", "没有可统计的图片。")
    std = np.sqrt(m2 / count)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std), count


def dataset_stats(source: str | Path, *, max_images: int = 0, seed: int = 0) -> DatasetStats:
    """Statistics of a dataset folder (``lmt data import``), an ImageFolder tree or a .csv/.jsonl file."""
    from tqdm.auto import tqdm

    path = Path(source).expanduser()
    if not path.exists():
        raise error(f"'{path}' does not exist.", f"'{path}' 不存在。")
    if max_images < 0:
        raise error("max_images must be 0 (all) or positive.", "max_images 必须为 0（全部）或正数。")
    found = _dataset_source(path) if is_dataset_dir(path) else _record_source(path)
    splits = tuple(SplitStats(split, len(data), found.classes[split], found.counted)
                   for split, data in found.data.items())
    total = sum(len(data) for data in found.data.values())
    every = (image for split, data in found.data.items() for image in _images(data, split))
    sizes = [_header_size(image) for image in tqdm(every, total=total, desc="sizes", unit="image", leave=False)]
    size_counts = Counter(f"{w}x{h}" for w, h in sizes)
    measured_split = "train" if "train" in found.data else next(iter(found.data))
    data = found.data[measured_split]
    indices = sorted(random.Random(seed).sample(range(len(data)), max_images)) if 0 < max_images < len(data) else None
    measured = len(indices) if indices is not None else len(data)
    images = tqdm(_images(data, measured_split, indices), total=measured, desc="mean/std", unit="image", leave=False)
    mean, std, pixels = mean_std(images)
    logger.info("stats of %s: %d images, mean %s std %s", path, total, mean, std)
    return DatasetStats(
        kind=found.kind, splits=splits, sizes=dict(size_counts.most_common()),
        width=_summary([w for w, _ in sizes]), height=_summary([h for _, h in sizes]),
        mean=mean, std=std, measured_split=measured_split, measured_images=measured, pixels=pixels,
    )


# ---- the report ---------------------------------------------------------------------------------------------------
def _round(values: Sequence[float]) -> list[float]:
    return [round(v, 4) for v in values]


def stats_markdown(stats: DatasetStats, top_sizes: int = 10) -> str:
    """The statistics as markdown tables, ending with the processor arguments the mean/std give."""
    lines = ["# Dataset statistics", "", f"Kind: {stats.kind}", "", "| split | images |", "|---|---|"]
    lines += [f"| {s.split} | {s.images} |" for s in stats.splits]
    classes = sorted({c for s in stats.splits for c in s.class_counts})
    if classes:
        counted = stats.splits[0].counted
        lines += ["", f"## Classes ({counted} per class)", "",
                  "| class | " + " | ".join(s.split for s in stats.splits) + " |",
                  "|---|" + "---|" * len(stats.splits)]
        lines += [f"| {c} | " + " | ".join(str(s.class_counts.get(c, 0)) for s in stats.splits) + " |"
                  for c in classes]
    lines += ["", "## Image sizes", "", "| | min | max | mean | median |", "|---|---|---|---|---|"]
    for name, summary in (("width", stats.width), ("height", stats.height)):
        lines.append(f"| {name} | {summary['min']:g} | {summary['max']:g} | {summary['mean']:.1f} | "
                     f"{summary['median']:g} |")
    lines += ["", "| size (w x h) | images |", "|---|---|"]
    lines += [f"| {size} | {count} |" for size, count in list(stats.sizes.items())[:top_sizes]]
    if len(stats.sizes) > top_sizes:
        lines.append(f"| ({len(stats.sizes) - top_sizes} more sizes) | |")
    lines += ["", "## Normalisation", "",
              f"Over {stats.pixels:,} pixels of {stats.measured_images} images of '{stats.measured_split}':", "",
              f"- mean (R, G, B): {_round(stats.mean)}", f"- std (R, G, B): {_round(stats.std)}", "",
              f"Use as `image_mean={_round(stats.mean)}, image_std={_round(stats.std)}` in an image processor."]
    return "\n".join(lines) + "\n"


def write_stats(stats: DatasetStats, out_dir: str | Path) -> Path:
    """Write ``stats.json`` and ``stats.md`` into ``out_dir``; return stats.json."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / "stats.md").write_text(stats_markdown(stats), encoding="utf-8")
    path = out / "stats.json"
    path.write_text(json.dumps(stats.to_dict(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path
