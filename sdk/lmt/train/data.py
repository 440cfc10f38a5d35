"""Training examples: read an ImageFolder tree, a CSV/JSONL file or a dataset folder into records, split, serve them.

A record is a plain dict: ``{"image": <path>, "label": "cat"}``, ``{"image": ..., "caption": ...}``,
``{"image": ..., "question": ..., "answer": ...}``, ``{"image": ..., "mask": <path>}`` or, for a conversation,
``{"image": [<path>, ...], "messages": [{"role": ..., "content": ...}, ...]}``. Image paths in a
CSV/JSONL file are relative to that file's folder unless absolute.
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lmt.errors import InvalidInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _data_error(message: str, message_zh: str) -> InvalidInputError:
    return InvalidInputError(f"Training data: {message}", f"训练数据：{message_zh}")


def read_image_folder(root: Path) -> list[dict[str, Any]]:
    """``root/<label>/<image>`` → records with ``image`` and ``label`` (the sub-folder name)."""
    records = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for image in sorted(label_dir.rglob("*")):
            if image.suffix.lower() in IMAGE_SUFFIXES and image.is_file():
                records.append({"image": str(image), "label": label_dir.name})
    if not records:
        raise _data_error(
            f"'{root}' holds no images in class sub-folders (expected {root}/<class>/<image>.png).",
            f"'{root}' 的类别子目录中没有图片（应为 {root}/<类别>/<图片>.png）。",
        )
    return records


def read_table(path: Path) -> list[dict[str, Any]]:
    """Rows of a .csv (with a header) or a .jsonl file, as dicts."""
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        else:
            rows = []
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    if line.strip():
                        row = json.loads(line)
                        if not isinstance(row, dict):
                            raise _data_error(f"{path.name} line {number} is not a JSON object.",
                                              f"{path.name} 第 {number} 行不是 JSON 对象。")
                        rows.append(row)
    except json.JSONDecodeError as exc:
        raise _data_error(f"{path.name} line {exc.lineno}: invalid JSON ({exc.msg}).",
                          f"{path.name} 第 {exc.lineno} 行：JSON 无效（{exc.msg}）。") from exc
    except UnicodeDecodeError as exc:
        raise _data_error(f"{path.name} is not UTF-8 text.", f"{path.name} 不是 UTF-8 文本。") from exc
    if not rows:
        raise _data_error(f"{path.name} has no rows.", f"{path.name} 没有数据行。")
    return rows


def read_records(source: str | Path, columns: dict[str, str]) -> list[dict[str, Any]]:
    """Records from an ImageFolder tree or a CSV/JSONL file; ``columns`` maps record keys to column names.

    Every column named in ``columns`` must be present in every row; image (and mask) paths must exist.
    A dataset folder written by ``lmt data import`` (``save_to_disk``) gives its ``train`` split, or the split
    whose folder is named (``ds/validation``); see :func:`lmt.data.formats.dataset_records`.
    """
    from lmt.data.formats import dataset_records, is_dataset_dir

    path = Path(source).expanduser()
    if is_dataset_dir(path):
        return dataset_records(path, columns)
    if path.is_dir():
        if set(columns) - {"image", "label"}:
            raise _data_error(
                f"'{path}' is a folder, which gives (image, label) pairs only; this task needs "
                f"{', '.join(columns)}: give a .csv or .jsonl file.",
                f"'{path}' 是目录，只能提供（图片，标签）对；该任务需要 {', '.join(columns)}，请提供 .csv 或 .jsonl 文件。",
            )
        return read_image_folder(path)
    if path.suffix.lower() not in (".csv", ".jsonl", ".json"):
        raise _data_error(f"'{path.name}' is neither a folder nor a .csv/.jsonl file.",
                          f"'{path.name}' 既不是目录，也不是 .csv/.jsonl 文件。")
    records = []
    for number, row in enumerate(read_table(path), start=1):
        record = {}
        for key, column in columns.items():
            value = row.get(column)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise _data_error(f"{path.name} row {number} has no '{column}'.",
                                  f"{path.name} 第 {number} 行缺少 '{column}'。")
            if key == "image" and isinstance(value, list):  # several images (a conversation about them)
                value = [_existing_file(path, number, item) for item in value]
            elif key in ("image", "mask"):
                value = _existing_file(path, number, value)
            # JSONL lists and objects (a conversation's messages) stay as parsed
            record[key] = value if key == "image" or isinstance(value, (list, dict)) else str(value)
        records.append(record)
    return records


def _existing_file(table: Path, number: int, value: Any) -> str:
    """A file path from row ``number`` of ``table``, relative to the table's folder unless absolute; it must exist."""
    file = Path(str(value)).expanduser()
    file = file if file.is_absolute() else table.parent / file
    if not file.is_file():
        raise _data_error(f"{table.name} row {number}: file '{value}' not found.",
                          f"{table.name} 第 {number} 行：找不到文件 '{value}'。")
    return str(file)


def stratified_split(
    records: Sequence[dict[str, Any]], fraction: float, seed: int, key: str | None = "label"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, val): ``fraction`` of each label's records (at least one when it has two) go to val, seeded."""
    rng = random.Random(seed)
    groups: dict[Any, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        groups[record.get(key) if key else None].append(index)
    val_indices: set[int] = set()
    for indices in groups.values():
        shuffled = indices[:]
        rng.shuffle(shuffled)
        count = round(len(shuffled) * fraction)
        if fraction > 0 and count == 0 and len(shuffled) > 1:
            count = 1
        val_indices.update(shuffled[:count])
    train = [r for i, r in enumerate(records) if i not in val_indices]
    val = [r for i, r in enumerate(records) if i in val_indices]
    return train, val


class RecordDataset:
    """A map-style dataset of records; images are opened (and validated) when an item is read."""

    def __init__(self, records: Sequence[dict[str, Any]]) -> None:
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from lmt.images import load_image

        record = dict(self.records[index])
        image = record["image"]
        record["image"] = [load_image(i) for i in image] if isinstance(image, list) else load_image(image)
        if "mask" in record:
            record["mask"] = load_mask(record["mask"])
        return record


def load_mask(path: str) -> Any:
    """A binary mask (bool numpy array) from a PNG: any non-zero pixel is foreground."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 0


class EpochSampler:
    """Indices in a seeded order that depends only on (seed, epoch): a resumed run sees the same order."""

    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        import torch

        if not self.shuffle:
            return iter(range(self.size))
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())
