"""Dataset folders: typed Hugging Face ``datasets`` saved with ``save_to_disk``, as ``lmt data import`` writes them.

A dataset folder is a ``DatasetDict`` (one sub-folder per split: ``train``, ``validation``, ``test``) whose images
are stored *inside* the Arrow files, byte for byte as they came in (``Image()`` features holding the original
PNG/JPEG bytes and file name), so the folder is self-contained and an export writes identical image files.
Its kind follows from its columns:

- ``classification``: ``image`` + ``label`` (``ClassLabel``; names in the order the trainer numbers them);
- ``detection``: ``image``, ``image_id``, ``file_name``, ``width``, ``height`` and ``objects``, a list of COCO
  annotations (``id``, ``category`` as ``ClassLabel``, ``bbox`` as absolute ``[x, y, w, h]`` floats, ``area``,
  ``iscrowd``, ``segmentation`` as its JSON text, polygons or RLE as they came). Keys COCO files carry beyond
  these are kept as JSON text in ``extra``;
- ``segmentation``: ``image`` + ``mask`` (both ``Image()``; any non-zero mask pixel is foreground);
- ``vqa`` (``question`` + ``answer``), ``caption`` (``caption``), else ``images``.

Next to the Arrow data, ``lmt_dataset.json`` records the source format and, for COCO, each split's top-level
``info``, ``licenses`` and ``categories`` (ids and supercategories), which a COCO export writes back.

>>> from lmt.data.formats import load_dataset_dir, dataset_kind
>>> # dataset = load_dataset_dir("data/digits-ds"); dataset_kind(dataset["train"].features)  # 'classification'
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmt.errors import InvalidInputError, missing_dependency

logger = logging.getLogger(__name__)

META_FILE = "lmt_dataset.json"
META_VERSION = 1
#: Folder and file names taken as splits, and the split each becomes (Hugging Face's names).
SPLIT_NAMES = {"train": "train", "val": "validation", "valid": "validation", "validation": "validation",
               "dev": "validation", "test": "test"}
SPLIT_ORDER = ("train", "validation", "test")
KINDS = ("classification", "detection", "segmentation", "vqa", "caption", "images")
#: What ``lmt data import`` reads and ``lmt data export`` writes (defined here so the CLI imports nothing heavy).
IMPORT_FORMATS = ("imagefolder", "csv", "jsonl", "coco", "yolo", "masks")
EXPORT_FORMATS = ("imagefolder", "coco", "yolo")
_COMPLETE_MARKER = ".lmt-files-complete"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def error(message: str, message_zh: str) -> InvalidInputError:
    return InvalidInputError(f"Dataset: {message}", f"数据集：{message_zh}")


def require_datasets() -> Any:
    """The ``datasets`` package, or a bilingual error naming the extra that brings it."""
    try:
        import datasets
    except ImportError as exc:
        raise missing_dependency("datasets", "train", "Dataset import/export", "数据集导入/导出") from exc
    return datasets


def split_name(name: str) -> str:
    """``val``/``valid``/``dev`` -> ``validation``; other names as they are."""
    return SPLIT_NAMES.get(name.lower(), name)


def ordered_splits(names: Iterable[str]) -> list[str]:
    """train, validation, test first, then any other split alphabetically."""
    names = list(names)
    return [n for n in SPLIT_ORDER if n in names] + sorted(n for n in names if n not in SPLIT_ORDER)


def natural_key(label: str) -> tuple:
    """The order the classification objective numbers labels in, so ``ClassLabel`` ids equal its label ids."""
    from lmt.train.objectives.classification import _label_sort_key

    return _label_sort_key(label)


def safe_relative(name: str, what: str) -> Path:
    """``name`` as a relative path that stays inside its folder (no absolute path, no ``..``)."""
    path = Path(name)
    if not name or path.is_absolute() or ".." in path.parts or name.startswith(("/", "\\")) or "\\" in name:
        raise error(f"{what} '{name[:100]}' is not a plain relative file name; it could escape the output folder.",
                    f"{what} '{name[:100]}' 不是普通的相对文件名，可能写到输出目录之外。")
    return path


# ---- features ------------------------------------------------------------------------------------------------------
def detection_features(names: Sequence[str]) -> Any:
    datasets = require_datasets()
    Value, List = datasets.Value, datasets.List
    return datasets.Features({
        "image": datasets.Image(),
        "image_id": Value("int64"),
        "file_name": Value("string"),
        "width": Value("int64"),
        "height": Value("int64"),
        "extra": Value("string"),
        "objects": List({
            "id": Value("int64"),
            "category": datasets.ClassLabel(names=list(names)),
            "bbox": List(Value("float64"), length=4),
            "area": Value("float64"),
            "iscrowd": Value("int64"),
            "segmentation": Value("string"),
            "extra": Value("string"),
        }),
    })


def dataset_kind(features: Mapping[str, Any]) -> str:
    """What a dataset holds, from its columns (see the module docstring)."""
    if "objects" in features:
        return "detection"
    if "mask" in features:
        return "segmentation"
    if "label" in features:
        return "classification"
    if "question" in features and "answer" in features:
        return "vqa"
    if "caption" in features:
        return "caption"
    return "images"


def class_names(features: Mapping[str, Any]) -> list[str]:
    """The ``ClassLabel`` names of ``label`` (classification) or ``objects.category`` (detection); else []."""
    datasets = require_datasets()
    feature = features.get("label")
    if feature is None and "objects" in features:
        objects = features["objects"]
        inner = getattr(objects, "feature", objects)
        feature = inner.get("category") if isinstance(inner, Mapping) else None
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else []


def class_counts(dataset: Any) -> dict[str, int]:
    """Images per label (classification) or objects per category (detection) of one split; {} without classes.
    Reads the label or objects column only, never the images."""
    from collections import Counter

    names = class_names(dataset.features)
    if not names:
        return {}
    if "objects" in dataset.features:
        counts = Counter(names[o["category"]] for row in dataset.select_columns(["objects"])["objects"] for o in row)
    else:
        counts = Counter(names[i] for i in dataset.select_columns(["label"])["label"])
    return dict(sorted(counts.items()))


def image_columns(features: Mapping[str, Any]) -> list[str]:
    datasets = require_datasets()
    return [name for name, feature in features.items() if isinstance(feature, datasets.Image)]


# ---- reading -------------------------------------------------------------------------------------------------------
def is_dataset_dir(path: str | Path) -> bool:
    """A folder written by ``save_to_disk``: a DatasetDict (``dataset_dict.json``) or one split (``state.json``)."""
    path = Path(path).expanduser()
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or
                              ((path / "state.json").is_file() and (path / "dataset_info.json").is_file()))


def load_dataset_dir(path: str | Path) -> Any:
    """The ``DatasetDict`` in ``path``; a single split's folder comes back as ``{<its name>: dataset}``."""
    datasets = require_datasets()
    path = Path(path).expanduser()
    if not is_dataset_dir(path):
        raise error(f"'{path}' is not a dataset folder (no dataset_dict.json or state.json). Write one with "
                    "`lmt data import SOURCE --out FOLDER`.",
                    f"'{path}' 不是数据集目录（没有 dataset_dict.json 或 state.json）。请先用 "
                    "`lmt data import SOURCE --out FOLDER` 生成。")
    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError, KeyError) as exc:
        raise error(f"'{path}' cannot be read as a dataset folder ({type(exc).__name__}: {str(exc)[:200]}).",
                    f"无法把 '{path}' 当作数据集目录读取（{type(exc).__name__}）。") from exc
    if isinstance(loaded, datasets.Dataset):
        return datasets.DatasetDict({split_name(path.name): loaded})
    return loaded


def read_meta(path: str | Path) -> dict[str, Any]:
    """``lmt_dataset.json`` of a dataset folder (or of the folder above a split's folder); {} when absent."""
    path = Path(path).expanduser()
    for candidate in (path / META_FILE, path.parent / META_FILE):
        if candidate.is_file():
            try:
                meta = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise error(f"{candidate} is unreadable ({type(exc).__name__}).",
                            f"{candidate} 无法读取（{type(exc).__name__}）。") from exc
            return meta if isinstance(meta, dict) else {}
    return {}


def stored_image(value: Mapping[str, Any] | None, where: str) -> tuple[bytes, str]:
    """(bytes, file name) of an ``Image(decode=False)`` cell; a cell that only names a file is read from it."""
    if not value or (value.get("bytes") is None and not value.get("path")):
        raise error(f"{where} has no image.", f"{where} 没有图片。")
    name = str(value.get("path") or "")
    if value.get("bytes") is not None:
        return bytes(value["bytes"]), name
    file = Path(name).expanduser()
    if not file.is_file():
        raise error(f"{where} names the image file '{name}', which does not exist.",
                    f"{where} 指向的图片文件 '{name}' 不存在。")
    return file.read_bytes(), file.name


def undecoded(dataset: Any) -> Any:
    """``dataset`` with every image column giving ``{"bytes", "path"}`` instead of a decoded PIL image."""
    datasets = require_datasets()
    for column in image_columns(dataset.features):
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


# ---- writing -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileRef:
    """An image file to store: where it is now, and the name it keeps inside the dataset (and on export)."""

    path: Path
    name: str


def new_folder(out: str | Path) -> Path:
    """``out`` checked to be new or empty: nothing is ever overwritten."""
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise error(f"'{out}' exists and is not an empty folder; write to a new folder (nothing is overwritten).",
                    f"'{out}' 已存在且不是空目录；请写到新目录（不会覆盖任何文件）。")
    return out


def _encode(value: Any) -> Any:
    if isinstance(value, FileRef):
        return {"bytes": value.path.read_bytes(), "path": value.name}
    return value


def write_dataset(
    rows: Mapping[str, Sequence[dict[str, Any]]], features: Any, out: str | Path, meta: Mapping[str, Any]
) -> Any:
    """Write each split's rows (``FileRef`` values become stored image bytes) as a ``DatasetDict`` in ``out``.

    The folder appears complete or not at all: it is built next to ``out`` and renamed into place.
    """
    from datasets.arrow_writer import ArrowWriter
    from tqdm.auto import tqdm

    datasets = require_datasets()
    out = new_folder(out)
    for split, split_rows in rows.items():
        if not split_rows:
            raise error(f"split '{split}' has no examples.", f"划分 '{split}' 没有样本。")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        parts = {}
        for split in ordered_splits(rows):
            arrow = staging / f"{split}.arrow"
            with ArrowWriter(features=features, path=str(arrow)) as writer:
                for row in tqdm(rows[split], desc=f"import {split}", unit="example", leave=False):
                    writer.write({key: _encode(value) for key, value in row.items()})
                writer.finalize()
            parts[split] = datasets.Dataset.from_file(str(arrow))
        datasets.DatasetDict(parts).save_to_disk(str(staging / "dataset"))
        full_meta = {"lmt_dataset": META_VERSION, **meta}
        (staging / "dataset" / META_FILE).write_text(json.dumps(full_meta, ensure_ascii=False, indent=2) + "\n",
                                                     encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty, checked above
        (staging / "dataset").rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("wrote dataset %s: %s", out, {split: len(r) for split, r in rows.items()})
    return load_dataset_dir(out)


# ---- records for the trainer --------------------------------------------------------------------------------------
def _split_for_records(path: Path) -> tuple[Any, Path]:
    """(the split's Dataset, its folder): ``train`` of a DatasetDict folder, or the split folder given."""
    dataset = load_dataset_dir(path)
    if (path / "dataset_dict.json").is_file():
        if "train" not in dataset:
            raise error(f"'{path}' has no 'train' split (it has {', '.join(dataset)}); name a split's folder, e.g. "
                        f"data.train={path / next(iter(dataset))}.",
                        f"'{path}' 没有 'train' 划分（只有 {', '.join(dataset)}）；请指定某个划分的目录，例如 "
                        f"data.train={path / next(iter(dataset))}。")
        return dataset["train"], path / "train"
    return next(iter(dataset.values())), path


def _files_folder(split_dir: Path) -> Path:
    """Where a split's images are written as files: ``$LMT_HOME/datasets/<name>-<hash of the split's data>``."""
    from lmt.tiny import lmt_home

    digest = hashlib.sha256(str(split_dir.resolve()).encode())
    for file in sorted(split_dir.iterdir()):
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    name = _UNSAFE_NAME.sub("_", f"{split_dir.parent.name}-{split_dir.name}")[-60:]
    return lmt_home() / "datasets" / f"{name}-{digest.hexdigest()[:12]}"


def _file_name(index: int, name: str) -> str:
    base = _UNSAFE_NAME.sub("_", Path(name).name)[-80:] or "image"
    return f"{index:06d}-{base}"


def _stored_paths(dataset: Any, column: str) -> list[str | None]:
    """The file names stored in an image column, read from Arrow without touching the image bytes."""
    import pyarrow.compute as pc

    cells = dataset.with_format("arrow").select_columns([column])[:][column]
    return pc.struct_field(cells, "path").to_pylist()


def _materialise(dataset: Any, columns: Sequence[str], folder: Path) -> list[dict[str, str]]:
    """Each row's images in ``columns`` written as files under ``folder`` once (safe across processes);
    returns each row's file paths by column."""
    from filelock import FileLock
    from tqdm.auto import tqdm

    cells = undecoded(dataset.select_columns(list(columns)))
    names = {c: [_file_name(i, str(p or "image")) for i, p in enumerate(_stored_paths(cells, c))] for c in columns}
    paths = [{c: str(folder / c / names[c][i]) for c in columns} for i in range(len(cells))]
    if (folder / _COMPLETE_MARKER).exists():
        return paths
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / _COMPLETE_MARKER).exists():  # another process wrote it while this one waited
            return paths
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            for column in columns:
                (staging / column).mkdir()
            for index, row in enumerate(tqdm(cells, desc="dataset files", unit="example", leave=False)):
                for column in columns:
                    data, _ = stored_image(row[column], f"row {index + 1}, column '{column}'")
                    (staging / column / names[column][index]).write_bytes(data)
            (staging / _COMPLETE_MARKER).write_text("ok")
            if folder.exists():  # half-written by a killed process
                shutil.rmtree(folder)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return paths


def dataset_records(source: str | Path, columns: Mapping[str, str]) -> list[dict[str, Any]]:
    """Training records (``lmt.train.data``'s plain dicts) from a dataset folder; ``columns`` maps keys to columns.

    A DatasetDict folder gives its ``train`` split; a split's own folder (``ds/validation``) gives that split.
    Image and mask columns are written once as files under ``$LMT_HOME/datasets/`` (the records hold paths, as
    every objective expects); ``ClassLabel`` values become their names.
    """
    datasets = require_datasets()
    path = Path(source).expanduser()
    dataset, split_dir = _split_for_records(path)
    features = dataset.features
    missing = [column for column in columns.values() if column not in features]
    if missing:
        raise error(f"'{path}' has no column {', '.join(repr(m) for m in missing)}; its columns are "
                    f"{', '.join(features)}.",
                    f"'{path}' 没有列 {', '.join(repr(m) for m in missing)}；现有的列为 {', '.join(features)}。")
    images = [column for column in dict.fromkeys(columns.values()) if isinstance(features[column], datasets.Image)]
    files = _materialise(dataset, images, _files_folder(split_dir)) if images else [{} for _ in range(len(dataset))]
    plain = [column for column in dict.fromkeys(columns.values()) if column not in images]
    values = dataset.select_columns(plain)[:] if plain else {}
    records = []
    for index in range(len(dataset)):
        record = {}
        for key, column in columns.items():
            if column in images:
                record[key] = files[index][column]
                continue
            value = values[column][index]
            feature = features[column]
            if value is None or (isinstance(value, str) and not value.strip()):
                raise error(f"'{path}' row {index + 1} has no '{column}'.", f"'{path}' 第 {index + 1} 行缺少 '{column}'。")
            if isinstance(feature, datasets.ClassLabel):
                value = feature.int2str(value)
            elif not isinstance(feature, datasets.Value):
                raise error(f"column '{column}' of '{path}' holds {type(feature).__name__} values, not text or "
                            "labels; the trainer reads image, label, caption, question, answer and mask columns.",
                            f"'{path}' 的列 '{column}' 不是文本或标签；训练只读取图片、标签、描述、问答和掩码列。")
            record[key] = str(value)
        records.append(record)
    return records
