"""Export a dataset folder (or a ``DatasetDict``) to ImageFolder, COCO or YOLO (``lmt data export``).

Layouts written (each one ``lmt data import`` reads back):

- ``imagefolder`` (classification): ``out/<split>/<label>/<file>``.
- ``coco`` (detection): ``out/<split>/annotations.json`` with the split's images beside it at their
  ``file_name``. A dataset imported from COCO comes back *identical*: the same images (byte for byte), ids,
  categories (with supercategories), ``info``, ``licenses``, ``iscrowd``, ``area``, ``bbox``, ``segmentation``
  (polygons or RLE, as they came) and any other keys; compare the JSON after sorting keys, and images and
  annotations by id (annotations are written grouped by image, in their original order within an image).
  Without COCO metadata (a YOLO import), category ids are the class index + 1.
- ``yolo`` (detection): ``out/data.yaml`` (``names``; ``train``/``val``/``test``), ``out/classes.txt``,
  ``out/images/<split>/<file>`` and ``out/labels/<split>/<stem>.txt`` with ``class cx cy w h`` normalised to
  the image size (written exactly, ``repr`` of each float). YOLO holds boxes and classes only: no ids,
  ``iscrowd``, ``area`` or ``segmentation``, no supercategories. Crowd annotations (``iscrowd=1``) are left out,
  as Ultralytics' own converter does, and counted in the result. COCO -> YOLO -> COCO therefore keeps, for
  every image (by file name), the classes (names, in order) and every non-crowd box within 1e-6 of the image
  size; YOLO -> COCO -> YOLO keeps the label files' numbers within the same tolerance.

>>> from lmt.data.exporters import export_dataset
>>> # export_dataset("data/det-ds", "coco", "exports/det-coco")
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmt.data.formats import (
    EXPORT_FORMATS,
    class_names,
    dataset_kind,
    error,
    load_dataset_dir,
    new_folder,
    ordered_splits,
    read_meta,
    require_datasets,
    safe_relative,
    stored_image,
    undecoded,
)

logger = logging.getLogger(__name__)

COCO_FILE = "annotations.json"
#: The split names Ultralytics' data.yaml uses for ours.
YOLO_KEYS = {"train": "train", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class ExportResult:
    """Where the export went, how many images each split wrote, and what the format could not hold."""

    format: str
    out_dir: Path
    images: dict[str, int]
    annotations: dict[str, int]
    skipped_crowd: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "out_dir": str(self.out_dir), "images": dict(self.images),
                "annotations": dict(self.annotations), "skipped_crowd": self.skipped_crowd}


def _open(dataset: Any, meta: Mapping[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    datasets = require_datasets()
    if isinstance(dataset, (str, Path)):
        return load_dataset_dir(dataset), dict(meta) if meta is not None else read_meta(dataset)
    if isinstance(dataset, datasets.Dataset):
        dataset = datasets.DatasetDict({"train": dataset})
    if not isinstance(dataset, datasets.DatasetDict):
        raise error(f"export needs a dataset folder or a DatasetDict, not {type(dataset).__name__}.",
                    f"导出需要数据集目录或 DatasetDict，而不是 {type(dataset).__name__}。")
    return dataset, dict(meta or {})


def _need(kind: str, wanted: str, fmt: str) -> None:
    if kind != wanted:
        raise error(f"{fmt} export needs a {wanted} dataset; this one is {kind}.",
                    f"{fmt} 导出需要 {wanted} 类型的数据集，而该数据集是 {kind} 类型。")


def _write(path: Path, data: bytes) -> None:
    if path.exists():
        raise error(f"two images would be written to '{path}'; their names collide.",
                    f"两张图片会写到同一个文件 '{path}'：文件名冲突。")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _rows(dataset: Any, split: str, columns: list[str] | None = None) -> Any:
    from tqdm.auto import tqdm

    part = undecoded(dataset if columns is None else dataset.select_columns(columns))
    return tqdm(part, desc=f"export {split}", unit="image", leave=False)


# ---- ImageFolder --------------------------------------------------------------------------------------------------
def _safe_name(name: str, index: int, used: set[str]) -> str:
    """The stored file name, or ``<index>.png`` when it has none or repeats within its folder."""
    chosen = name if name and name not in used else f"{index:06d}{Path(name).suffix or '.png'}"
    used.add(chosen)
    return chosen


def export_imagefolder(dataset: Any, out: Path) -> ExportResult:
    datasets = require_datasets()
    counts = {}
    for split in ordered_splits(dataset):
        part = dataset[split]
        label = part.features["label"]
        used: dict[str, set[str]] = {}
        for index, row in enumerate(_rows(part, split, ["image", "label"])):
            data, name = stored_image(row["image"], f"{split} row {index + 1}")
            text = label.int2str(row["label"]) if isinstance(label, datasets.ClassLabel) else str(row["label"])
            folder = safe_relative(text, "label")
            if len(folder.parts) != 1:
                raise error(f"label '{text}' cannot be a folder name.", f"标签 '{text}' 不能用作目录名。")
            relative = safe_relative(_safe_name(name, index, used.setdefault(text, set())), "image name")
            _write(out / split / folder / relative, data)
        counts[split] = len(part)
    return ExportResult("imagefolder", out, counts, {})


# ---- COCO ---------------------------------------------------------------------------------------------------------
def _category_ids(names: list[str], meta: Mapping[str, Any]) -> list[int]:
    """The COCO id of each class index: those recorded at import, else index + 1."""
    ids = meta.get("category_ids")
    if isinstance(ids, list) and len(ids) == len(names) and all(type(i) is int for i in ids):
        return ids
    return list(range(1, len(names) + 1))


def _coco_document(part: Any, split: str, ids: list[int], names: list[str], meta: Mapping[str, Any],
                   out: Path) -> dict[str, Any]:
    recorded = (meta.get("coco") or {}).get(split) or {}
    images, annotations = [], []
    for index, row in enumerate(_rows(part, split)):
        data, _ = stored_image(row["image"], f"{split} row {index + 1}")
        _write(out / safe_relative(row["file_name"], "file_name"), data)
        image = {"id": row["image_id"], "file_name": row["file_name"], "width": row["width"],
                 "height": row["height"]}
        images.append({**image, **json.loads(row["extra"] or "{}")})
        for obj in row["objects"]:
            ann: dict[str, Any] = {"id": obj["id"], "image_id": row["image_id"],
                                   "category_id": ids[obj["category"]], "bbox": list(obj["bbox"])}
            if obj["area"] is not None:
                ann["area"] = obj["area"]
            if obj["iscrowd"] is not None:
                ann["iscrowd"] = obj["iscrowd"]
            if obj["segmentation"] is not None:
                ann["segmentation"] = json.loads(obj["segmentation"])
            annotations.append({**ann, **json.loads(obj["extra"] or "{}")})
    categories = recorded.get("categories") or [{"id": i, "name": n} for i, n in zip(ids, names, strict=True)]
    document = {**recorded.get("top", {}), "images": images, "categories": categories}
    if annotations or recorded.get("has_annotations", True):
        document["annotations"] = annotations
    return document


def export_coco(dataset: Any, out: Path, meta: Mapping[str, Any]) -> ExportResult:
    images, annotations = {}, {}
    for split in ordered_splits(dataset):
        part = dataset[split]
        names = class_names(part.features)
        document = _coco_document(part, split, _category_ids(names, meta), names, meta, out / split)
        (out / split / COCO_FILE).write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
        images[split], annotations[split] = len(document["images"]), len(document.get("annotations", []))
    return ExportResult("coco", out, images, annotations)


# ---- YOLO ---------------------------------------------------------------------------------------------------------
def _yolo_line(category: int, bbox: list[float], width: int, height: int) -> str:
    x, y, w, h = bbox
    values = ((x + w / 2) / width, (y + h / 2) / height, w / width, h / height)
    return " ".join([str(category), *(repr(float(v)) for v in values)])


def export_yolo(dataset: Any, out: Path) -> ExportResult:
    import yaml

    names: list[str] = []
    images, annotations, crowd = {}, {}, 0
    for split in ordered_splits(dataset):
        part = dataset[split]
        names = names or class_names(part.features)
        written = 0
        for index, row in enumerate(_rows(part, split)):
            data, _ = stored_image(row["image"], f"{split} row {index + 1}")
            relative = safe_relative(row["file_name"], "file_name")
            if row["width"] <= 0 or row["height"] <= 0:
                raise error(f"{split} image {row['file_name']} has no size (width/height).",
                            f"{split} 图片 {row['file_name']} 没有尺寸（width/height）。")
            _write(out / "images" / split / relative, data)
            lines = []
            for obj in row["objects"]:
                if obj["iscrowd"] == 1:
                    crowd += 1
                    continue
                lines.append(_yolo_line(obj["category"], obj["bbox"], row["width"], row["height"]))
            label = out / "labels" / split / relative.with_suffix(".txt")
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            written += len(lines)
        images[split], annotations[split] = len(part), written
    config: dict[str, Any] = {"path": "."}
    for split in ordered_splits(dataset):
        config[YOLO_KEYS.get(split, split)] = f"images/{split}"
    config["names"] = dict(enumerate(names))
    (out / "data.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    (out / "classes.txt").write_text("".join(n + "\n" for n in names), encoding="utf-8")
    if crowd:
        logger.warning("YOLO export: %d crowd annotations (iscrowd=1) left out; YOLO cannot mark them", crowd)
    return ExportResult("yolo", out, images, annotations, skipped_crowd=crowd)


# ---- the entry point ----------------------------------------------------------------------------------------------
def export_dataset(
    dataset: str | Path | Any, format: str, out: str | Path, *, meta: Mapping[str, Any] | None = None  # noqa: A002
) -> ExportResult:
    """Write ``dataset`` (a dataset folder, or a DatasetDict with its ``meta``) to the new folder ``out``."""
    if format not in EXPORT_FORMATS:
        raise error(f"unknown export format '{format}'; choose one of {', '.join(EXPORT_FORMATS)}.",
                    f"未知的导出格式 '{format}'；请选择 {', '.join(EXPORT_FORMATS)} 之一。")
    data, meta = _open(dataset, meta)
    kinds = {dataset_kind(part.features) for part in data.values()}
    kind = kinds.pop() if len(kinds) == 1 else "mixed"
    _need(kind, "classification" if format == "imagefolder" else "detection", format)
    out = new_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    if format == "imagefolder":
        result = export_imagefolder(data, out)
    elif format == "coco":
        result = export_coco(data, out, meta)
    else:
        result = export_yolo(data, out)
    logger.info("exported %s as %s to %s: %s", dataset if isinstance(dataset, (str, Path)) else "dataset",
                format, out, result.images)
    return result
