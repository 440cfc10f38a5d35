"""Import a dataset into a typed Hugging Face ``datasets`` folder (``lmt data import``).

Layouts read (``format="auto"`` picks one from what the source holds; the kinds are in :mod:`lmt.data.formats`):

- ``imagefolder``: ``root/<class>/<image>``, or ``root/<split>/<class>/<image>`` when every sub-folder of root
  is a split name (``train``, ``val``/``valid``/``validation``/``dev``, ``test``). Labels become a ``ClassLabel``.
- ``csv`` / ``jsonl``: one file, or a folder of ``<split>.csv`` / ``<split>.jsonl`` (what ``lmt data split``
  writes). An ``image`` column plus ``label`` (-> ``ClassLabel``), ``caption``, ``question`` + ``answer`` or
  ``mask`` (-> ``Image``); other columns are kept as text. Paths are relative to the file's folder.
- ``coco``: a COCO JSON file with its images relative to the file's folder (or ``images=``), or a folder of
  ``<split>/<one>.json`` with each split's images beside its JSON (what a COCO export writes). An image
  entry without ``width``/``height`` gets them from the file's header (an export then writes them).
- ``yolo``: ``data.yaml`` (``names``; ``train``/``val``/``test`` image folders) or ``classes.txt`` beside
  ``images/[<split>/]`` and ``labels/[<split>/]``. A label file sits where its image does, with ``images``
  replaced by ``labels`` and the suffix by ``.txt``; each line is ``class cx cy w h``, normalised to the image
  size. An image without a label file has no objects; a label file without an image is an error.
- ``masks``: ``images/`` and ``masks/`` (or ``<split>/images`` and ``<split>/masks``). An image and a mask pair
  when their paths below those folders are equal without the suffix (``images/a/1.jpg`` <-> ``masks/a/1.png``).
  Masks must be PNG (lossless) and of their image's size; every unpaired file is listed in the error.

Image files are stored byte for byte; nothing is decoded or re-encoded (``lmt data validate`` checks decoding).

>>> from lmt.data.importers import import_dataset
>>> # dataset = import_dataset("data/digits", "data/digits-ds")   # DatasetDict({'train': ...})
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmt.data.formats import (
    IMPORT_FORMATS,
    SPLIT_NAMES,
    FileRef,
    detection_features,
    error,
    is_dataset_dir,
    natural_key,
    new_folder,
    ordered_splits,
    require_datasets,
    split_name,
    write_dataset,
)
from lmt.train.data import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

FORMATS = IMPORT_FORMATS
YOLO_FILES = ("data.yaml", "data.yml", "dataset.yaml")
#: csv/jsonl columns that must hold a value in every row when the column exists.
REQUIRED_WHEN_PRESENT = ("image", "label", "caption", "question", "answer", "mask")
_LISTED = 20  # files named in an error before "and N more"


@dataclass(frozen=True)
class ImportPlan:
    """What a reader found: rows per split (images as ``FileRef``), their features, metadata to keep."""

    rows: dict[str, list[dict[str, Any]]]
    features: Any
    meta: dict[str, Any] = field(default_factory=dict)


def _listing(paths: Sequence[Any]) -> str:
    shown = ", ".join(str(p) for p in paths[:_LISTED])
    return shown + (f" and {len(paths) - _LISTED} more" if len(paths) > _LISTED else "")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _subfolders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _split_folders(root: Path) -> dict[str, Path]:
    """Sub-folders of ``root`` named like splits, by split name."""
    return {split_name(p.name): p for p in _subfolders(root) if p.name.lower() in SPLIT_NAMES}


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise error(f"'{path}' cannot be read as an image ({type(exc).__name__}).",
                    f"无法把 '{path}' 当作图片读取（{type(exc).__name__}）。") from exc


# ---- auto-detection -----------------------------------------------------------------------------------------------
def _has_masks_layout(root: Path) -> bool:
    pairs = [root, *_split_folders(root).values()]
    return any((p / "images").is_dir() and (p / "masks").is_dir() for p in pairs)


def detect_format(source: str | Path) -> str:
    """The format ``source`` is in, from its suffix or what the folder holds (see the module docstring)."""
    source = Path(source).expanduser()
    if source.is_file():
        suffix = source.suffix.lower()
        by_suffix = {".json": "coco", ".csv": "csv", ".jsonl": "jsonl", ".yaml": "yolo", ".yml": "yolo"}
        if suffix not in by_suffix:
            raise error(f"cannot tell the format of '{source.name}': give a folder, a .json (COCO), .csv, .jsonl or "
                        "data.yaml (YOLO), or name it with --format.",
                        f"无法判断 '{source.name}' 的格式：请给出目录、.json（COCO）、.csv、.jsonl 或 data.yaml（YOLO），"
                        "或用 --format 指定。")
        return by_suffix[suffix]
    if not source.is_dir():
        raise error(f"'{source}' does not exist.", f"'{source}' 不存在。")
    if is_dataset_dir(source):
        raise error(f"'{source}' is already a dataset folder; export it with `lmt data export`.",
                    f"'{source}' 已经是数据集目录；请用 `lmt data export` 导出。")
    if any((source / name).is_file() for name in (*YOLO_FILES, "classes.txt")) or (
            (source / "images").is_dir() and (source / "labels").is_dir()):
        return "yolo"
    if _has_masks_layout(source):
        return "masks"
    tables = [p.suffix.lower() for p in source.iterdir() if p.is_file() and p.stem.lower() in SPLIT_NAMES]
    for suffix, name in ((".csv", "csv"), (".jsonl", "jsonl")):
        if suffix in tables:
            return name
    if list(source.glob("*.json")) or any(list(p.glob("*.json")) for p in _split_folders(source).values()):
        return "coco"
    return "imagefolder"


# ---- imagefolder ----------------------------------------------------------------------------------------------------
def read_imagefolder(root: Path, split: str) -> ImportPlan:
    from lmt.train.data import read_image_folder

    datasets = require_datasets()
    splits = _split_folders(root)
    folders = splits if splits and len(splits) == len(_subfolders(root)) else {split: root}
    records = {name: read_image_folder(folder) for name, folder in folders.items()}
    names = sorted({r["label"] for rs in records.values() for r in rs}, key=natural_key)
    index = {name: i for i, name in enumerate(names)}
    rows = {}
    for name, split_records in records.items():
        folder = folders[name]
        rows[name] = [{"image": FileRef(Path(r["image"]), Path(r["image"]).relative_to(folder / r["label"]).as_posix()),
                       "label": index[r["label"]]} for r in split_records]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    return ImportPlan(rows, features)


# ---- csv / jsonl ----------------------------------------------------------------------------------------------------
def _table_files(source: Path, suffix: str, split: str) -> dict[str, Path]:
    if source.is_file():
        return {split: source}
    files = {split_name(p.stem): p for p in sorted(source.iterdir())
             if p.is_file() and p.suffix.lower() == suffix and p.stem.lower() in SPLIT_NAMES}
    if not files:
        raise error(f"'{source}' holds no train{suffix}, val{suffix} or test{suffix}.",
                    f"'{source}' 中没有 train{suffix}、val{suffix} 或 test{suffix}。")
    return files


def _cell_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def read_table_dataset(source: Path, fmt: str, split: str) -> ImportPlan:
    from lmt.train.data import read_table

    datasets = require_datasets()
    files = _table_files(source, "." + fmt, split)
    tables = {name: read_table(path) for name, path in files.items()}
    columns: list[str] = []
    for rows in tables.values():
        for row in rows:
            columns += [key for key in row if key not in columns]
    if "image" not in columns:
        raise error(f"{', '.join(p.name for p in files.values())} has no 'image' column (columns: "
                    f"{', '.join(columns)}).", f"{', '.join(p.name for p in files.values())} 没有 'image' 列。")
    missing: list[str] = []
    rows_out: dict[str, list[dict[str, Any]]] = {}
    for name, rows in tables.items():
        path = files[name]
        rows_out[name] = []
        for number, row in enumerate(rows, start=1):
            record: dict[str, Any] = {}
            for column in columns:
                value = row.get(column)
                if column in REQUIRED_WHEN_PRESENT and (value is None or not str(value).strip()):
                    raise error(f"{path.name} row {number} has no '{column}'.", f"{path.name} 第 {number} 行缺少 '{column}'。")
                if column in ("image", "mask"):
                    file = Path(str(value)).expanduser()
                    file = file if file.is_absolute() else path.parent / file
                    if not file.is_file():
                        missing.append(f"{path.name}:{number}:{value}")
                    record[column] = FileRef(file, file.name)
                else:
                    record[column] = str(value) if column == "label" else _cell_text(value)
            rows_out[name].append(record)
    if missing:
        raise error(f"{len(missing)} image files named in the table do not exist: {_listing(missing)}.",
                    f"表格中有 {len(missing)} 个图片文件不存在：{_listing(missing)}。")
    spec: dict[str, Any] = {}
    for column in columns:
        if column in ("image", "mask"):
            spec[column] = datasets.Image()
        elif column == "label":
            names = sorted({r["label"] for rows in rows_out.values() for r in rows}, key=natural_key)
            spec[column] = datasets.ClassLabel(names=names)
            index = {label: i for i, label in enumerate(names)}
            for rows in rows_out.values():
                for r in rows:
                    r["label"] = index[r["label"]]
        else:
            spec[column] = datasets.Value("string")
    return ImportPlan(rows_out, datasets.Features(spec))


# ---- COCO ---------------------------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return type(value) is int or (type(value) is float and value.is_integer())


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _coco_files(source: Path, split: str, images: Path | None) -> dict[str, tuple[Path, Path]]:
    """{split: (json file, images folder)}."""
    if source.is_file():
        return {split: (source, images or source.parent)}
    per_split = {}
    for name, folder in _split_folders(source).items():
        found = sorted(folder.glob("*.json"))
        if len(found) == 1:
            per_split[name] = (found[0], folder)
    if per_split:
        return per_split
    top = sorted(source.glob("*.json"))
    if len(top) == 1:
        return {split: (top[0], images or source)}
    raise error(f"'{source}' needs one COCO .json, or split folders (train/, val/ ...) holding one each; found "
                f"{len(top)} at the top.", f"'{source}' 中应有一个 COCO .json，或各含一个 .json 的划分目录（train/、val/ ...）。")


def _coco_list(data: dict, key: str, path: Path) -> list[dict]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise error(f"{path.name}: '{key}' must be a list of objects.", f"{path.name}：'{key}' 必须是对象列表。")
    return value


def _load_coco(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise error(f"{path.name} is not readable JSON ({type(exc).__name__}: {str(exc)[:120]}).",
                    f"{path.name} 不是可读取的 JSON（{type(exc).__name__}）。") from exc
    if not isinstance(data, dict) or "images" not in data:
        raise error(f"{path.name} is not a COCO file: it needs an 'images' list.",
                    f"{path.name} 不是 COCO 文件：缺少 'images' 列表。")
    return data


def _coco_categories(files: Mapping[str, tuple[Path, Path]], data: Mapping[str, dict]) -> dict[int, str]:
    """Every split's categories, by id; one id must keep one name and one name one id."""
    by_id: dict[int, str] = {}
    for split, content in data.items():
        path = files[split][0]
        for category in _coco_list(content, "categories", path):
            cid, name = category.get("id"), category.get("name")
            if type(cid) is not int or not isinstance(name, str) or not name:
                raise error(f"{path.name}: every category needs an integer 'id' and a 'name' ({category!r:.100}).",
                            f"{path.name}：每个类别都需要整数 'id' 和 'name'（{category!r:.100}）。")
            if by_id.setdefault(cid, name) != name:
                raise error(f"category id {cid} is '{by_id[cid]}' in one file and '{name}' in another.",
                            f"类别 id {cid} 在不同文件中分别叫 '{by_id[cid]}' 和 '{name}'。")
    names = list(by_id.values())
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise error(f"category names {repeated} are used by more than one id.", f"类别名 {repeated} 对应多个 id。")
    return dict(sorted(by_id.items()))


def _coco_image(image: dict, path: Path, folder: Path, missing: list[str]) -> dict[str, Any]:
    iid, file_name = image.get("id"), image.get("file_name")
    if type(iid) is not int or not isinstance(file_name, str) or not file_name:
        raise error(f"{path.name}: every image needs an integer 'id' and a 'file_name' ({image!r:.100}).",
                    f"{path.name}：每张图片都需要整数 'id' 和 'file_name'（{image!r:.100}）。")
    file = folder / file_name
    if not file.is_file():
        missing.append(file_name)
        return {}
    if _is_int(image.get("width")) and _is_int(image.get("height")):
        width, height = int(image["width"]), int(image["height"])
    else:
        width, height = _image_size(file)
    extra = {k: v for k, v in image.items() if k not in ("id", "file_name", "width", "height")}
    return {"image": FileRef(file, file_name), "image_id": iid, "file_name": file_name, "width": width,
            "height": height, "extra": json.dumps(extra, ensure_ascii=False) if extra else None, "objects": []}


def _coco_object(ann: dict, path: Path, category_index: Mapping[int, int]) -> dict[str, Any]:
    aid, bbox = ann.get("id"), ann.get("bbox")
    where = f"{path.name}: annotation {aid!r:.40}"
    if type(aid) is not int:
        raise error(f"{path.name}: every annotation needs an integer 'id' ({ann!r:.100}).",
                    f"{path.name}：每个标注都需要整数 'id'（{ann!r:.100}）。")
    if ann.get("category_id") not in category_index:
        raise error(f"{where} has category_id {ann.get('category_id')!r}, which no category has.",
                    f"{where} 的 category_id {ann.get('category_id')!r} 不在类别列表中。")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox) and min(bbox[2:]) >= 0):
        raise error(f"{where} needs a bbox [x, y, width, height] of 4 finite numbers with width, height >= 0.",
                    f"{where} 需要由 4 个有限数组成的 bbox [x, y, 宽, 高]，且宽、高 >= 0。")
    area, crowd = ann.get("area"), ann.get("iscrowd")
    if (area is not None and not _is_number(area)) or (crowd is not None and crowd not in (0, 1)):
        raise error(f"{where}: area must be a number and iscrowd 0 or 1.", f"{where}：area 必须是数字，iscrowd 必须是 0 或 1。")
    extra = {k: v for k, v in ann.items()
             if k not in ("id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation")}
    return {"id": aid, "category": category_index[ann["category_id"]], "bbox": [float(v) for v in bbox],
            "area": None if area is None else float(area), "iscrowd": None if crowd is None else int(crowd),
            "segmentation": json.dumps(ann["segmentation"]) if "segmentation" in ann else None,
            "extra": json.dumps(extra, ensure_ascii=False) if extra else None}


def read_coco(source: Path, split: str, images: Path | None) -> ImportPlan:
    files = _coco_files(source, split, images)
    data = {name: _load_coco(path) for name, (path, _) in files.items()}
    categories = _coco_categories(files, data)
    category_index = {cid: i for i, cid in enumerate(categories)}
    rows: dict[str, list[dict[str, Any]]] = {}
    meta: dict[str, Any] = {}
    for name, (path, folder) in files.items():
        content, missing = data[name], []
        by_id: dict[int, dict[str, Any]] = {}
        for image in _coco_list(content, "images", path):
            row = _coco_image(image, path, folder, missing)
            if row and by_id.setdefault(row["image_id"], row) is not row:
                raise error(f"{path.name}: image id {row['image_id']} is used twice.",
                            f"{path.name}：图片 id {row['image_id']} 出现了两次。")
        if missing:
            raise error(f"{path.name}: {len(missing)} image files are not in {folder}: {_listing(missing)}. Give the "
                        "images folder with --images.",
                        f"{path.name}：{folder} 中缺少 {len(missing)} 个图片文件：{_listing(missing)}。请用 --images "
                        "指定图片目录。")
        seen: set[int] = set()
        for ann in _coco_list(content, "annotations", path):
            obj = _coco_object(ann, path, category_index)
            if obj["id"] in seen:
                raise error(f"{path.name}: annotation id {obj['id']} is used twice.",
                            f"{path.name}：标注 id {obj['id']} 出现了两次。")
            seen.add(obj["id"])
            if ann.get("image_id") not in by_id:
                raise error(f"{path.name}: annotation {obj['id']} refers to image {ann.get('image_id')!r}, which "
                            "is not in 'images'.", f"{path.name}：标注 {obj['id']} 指向的图片 "
                            f"{ann.get('image_id')!r} 不在 'images' 中。")
            by_id[ann["image_id"]]["objects"].append(obj)
        rows[name] = list(by_id.values())
        top = {k: v for k, v in content.items() if k not in ("images", "annotations", "categories")}
        meta[name] = {"categories": content.get("categories", []), "top": top,
                      "has_annotations": "annotations" in content}
    return ImportPlan(rows, detection_features(list(categories.values())),
                      {"coco": meta, "category_ids": list(categories)})


# ---- YOLO ---------------------------------------------------------------------------------------------------------
def _yolo_names(root: Path, config: Mapping[str, Any] | None) -> list[str]:
    names: Any = (config or {}).get("names")
    if isinstance(names, dict):
        if all(isinstance(k, str) and k.isdigit() for k in names):  # quoted keys: '0': person
            names = {int(k): v for k, v in names.items()}
        if not all(type(k) is int for k in names) or sorted(names) != list(range(len(names))):
            raise error("data.yaml 'names' keys must be 0, 1, 2, ... without gaps.",
                        "data.yaml 中 'names' 的键必须是 0、1、2……且不能有空缺。")
        names = [names[k] for k in range(len(names))]
    if names is None and (root / "classes.txt").is_file():
        names = [line.strip() for line in (root / "classes.txt").read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise error(f"'{root}' names no classes: give data.yaml with 'names' or classes.txt (one name a line).",
                    f"'{root}' 没有类别名：请提供含 'names' 的 data.yaml，或 classes.txt（每行一个名称）。")
    if len(set(names)) != len(names):
        raise error(f"YOLO class names repeat: {names}.", f"YOLO 类别名有重复：{names}。")
    return names


def _labels_folder(images: Path) -> Path:
    parts = list(images.parts)
    if "images" not in parts:
        raise error(f"YOLO image folder '{images}' has no 'images' part, so its labels folder cannot be found.",
                    f"YOLO 图片目录 '{images}' 的路径中没有 'images'，无法找到对应的 labels 目录。")
    index = len(parts) - 1 - parts[::-1].index("images")
    parts[index] = "labels"
    return Path(*parts)


def _yolo_folders(root: Path, config: Mapping[str, Any] | None, split: str) -> dict[str, Path]:
    """{split: images folder}."""
    if config is not None:
        base = root / str(config.get("path") or "")
        base = base if base.is_dir() else root
        folders = {}
        for key in ("train", "val", "test"):
            value = config.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or value.endswith(".txt"):
                raise error(f"data.yaml '{key}' must name one image folder; lists and .txt image lists are not "
                            "supported.", f"data.yaml 的 '{key}' 必须是一个图片目录；不支持列表或 .txt 图片清单。")
            folders[split_name(key)] = base / value
        if folders:
            return folders
    images = root / "images"
    splits = _split_folders(images) if images.is_dir() else {}
    if splits:
        return splits
    if images.is_dir():
        return {split: images}
    raise error(f"'{root}' has no images/ folder and data.yaml names no train/val/test folders.",
                f"'{root}' 中没有 images/ 目录，data.yaml 也没有指定 train/val/test 目录。")


def _yolo_objects(label: Path, size: tuple[int, int], classes: int, first_id: int) -> list[dict[str, Any]]:
    width, height = size
    objects = []
    for number, line in enumerate(label.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{label.name} line {number}"
        if len(fields) != 5:
            raise error(f"{where} has {len(fields)} values; a YOLO detection line holds 5 (class cx cy w h). "
                        "Segmentation polygons (YOLO-seg) are not supported.",
                        f"{where} 有 {len(fields)} 个值；YOLO 检测标注每行 5 个（类别 cx cy w h）。不支持 YOLO-seg 多边形。")
        try:
            cls, values = int(fields[0]), [float(v) for v in fields[1:]]
        except ValueError as exc:
            raise error(f"{where} is not 'class cx cy w h' numbers: {line[:80]!r}.",
                        f"{where} 不是 '类别 cx cy w h' 数字：{line[:80]!r}。") from exc
        if not 0 <= cls < classes or not all(math.isfinite(v) for v in values) or min(values[2:]) < 0:
            raise error(f"{where}: class must lie in [0, {classes}) and cx, cy, w, h be finite with w, h >= 0.",
                        f"{where}：类别应在 [0, {classes}) 之内，cx、cy、w、h 须为有限数且 w、h >= 0。")
        cx, cy, w, h = values
        box = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
        objects.append({"id": first_id + len(objects), "category": cls, "bbox": box, "area": box[2] * box[3],
                        "iscrowd": 0, "segmentation": None, "extra": None})
    return objects


def read_yolo(source: Path, split: str) -> ImportPlan:
    import yaml

    root = source.parent if source.is_file() else source
    config_file = source if source.is_file() else next((root / n for n in YOLO_FILES if (root / n).is_file()), None)
    config = None
    if config_file is not None:
        try:
            config = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise error(f"{config_file.name} is not readable YAML ({type(exc).__name__}).",
                        f"{config_file.name} 不是可读取的 YAML（{type(exc).__name__}）。") from exc
        if not isinstance(config, dict):
            raise error(f"{config_file.name} must hold a mapping.", f"{config_file.name} 必须是键值映射。")
    names = _yolo_names(root, config)
    rows: dict[str, list[dict[str, Any]]] = {}
    for name, images in _yolo_folders(root, config, split).items():
        labels = _labels_folder(images)
        files = _image_files(images) if images.is_dir() else []
        if not files:
            raise error(f"YOLO split '{name}': no images in {images}.", f"YOLO 划分 '{name}'：{images} 中没有图片。")
        stems = {f.relative_to(images).with_suffix("").as_posix() for f in files}
        orphans = sorted(p.relative_to(labels).as_posix() for p in labels.rglob("*.txt")
                         if p.relative_to(labels).with_suffix("").as_posix() not in stems) if labels.is_dir() else []
        if orphans:
            raise error(f"YOLO split '{name}': {len(orphans)} label files in {labels} have no image: "
                        f"{_listing(orphans)}.", f"YOLO 划分 '{name}'：{labels} 中有 {len(orphans)} 个标注文件没有对应的图片："
                        f"{_listing(orphans)}。")
        rows[name], next_id = [], 1
        for image_id, file in enumerate(files, start=1):
            relative = file.relative_to(images)
            label = labels / relative.with_suffix(".txt")
            size = _image_size(file)
            objects = _yolo_objects(label, size, len(names), next_id) if label.is_file() else []
            next_id += len(objects)
            rows[name].append({"image": FileRef(file, relative.as_posix()), "image_id": image_id,
                               "file_name": relative.as_posix(), "width": size[0], "height": size[1],
                               "extra": None, "objects": objects})
    return ImportPlan(rows, detection_features(names))


# ---- image + mask pairs -------------------------------------------------------------------------------------------
def _by_stem(folder: Path, what: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for file in _image_files(folder):
        stem = file.relative_to(folder).with_suffix("").as_posix()
        if stem in found:
            raise error(f"{what} '{found[stem].name}' and '{file.name}' in {folder} share a name; pairing is by name "
                        "without the suffix, so keep one.",
                        f"{folder} 中的{what} '{found[stem].name}' 与 '{file.name}' 同名（不计后缀），只能保留一个。")
        found[stem] = file
    return found


def _mask_rows(folder: Path) -> list[dict[str, Any]]:
    images = _by_stem(folder / "images", "images")
    masks = _by_stem(folder / "masks", "masks")
    not_png = sorted(p.name for p in masks.values() if p.suffix.lower() != ".png")
    if not_png:
        raise error(f"masks must be PNG files (lossless; JPEG blurs the edges): {_listing(not_png)}.",
                    f"掩码必须是 PNG 文件（无损；JPEG 会让边缘模糊）：{_listing(not_png)}。")
    lonely_images = sorted(f"images/{s}" for s in images.keys() - masks.keys())
    lonely_masks = sorted(f"masks/{s}" for s in masks.keys() - images.keys())
    if lonely_images or lonely_masks:
        lonely = lonely_images + lonely_masks
        raise error(f"in {folder}, {len(lonely)} files have no partner (an image pairs with the mask of the same "
                    f"path below images/ and masks/, suffix aside): {_listing(lonely)}.",
                    f"{folder} 中有 {len(lonely)} 个文件没有配对（images/ 与 masks/ 下去掉后缀后路径相同的文件配成一对）："
                    f"{_listing(lonely)}。")
    if not images:
        raise error(f"{folder / 'images'} holds no images.", f"{folder / 'images'} 中没有图片。")
    mismatched = [f"{s} ({_image_size(images[s])} vs {_image_size(masks[s])})" for s in sorted(images)
                  if _image_size(images[s]) != _image_size(masks[s])]
    if mismatched:
        raise error(f"{len(mismatched)} masks differ in size from their image: {_listing(mismatched)}.",
                    f"有 {len(mismatched)} 个掩码与其图片尺寸不同：{_listing(mismatched)}。")
    return [{"image": FileRef(images[s], images[s].relative_to(folder / "images").as_posix()),
             "mask": FileRef(masks[s], masks[s].relative_to(folder / "masks").as_posix())} for s in sorted(images)]


def read_masks(source: Path, split: str) -> ImportPlan:
    datasets = require_datasets()
    if (source / "images").is_dir() and (source / "masks").is_dir():
        folders = {split: source}
    else:
        folders = {n: f for n, f in _split_folders(source).items() if (f / "images").is_dir() and (f / "masks").is_dir()}
    if not folders:
        raise error(f"'{source}' needs images/ and masks/ folders (or <split>/images and <split>/masks).",
                    f"'{source}' 中需要 images/ 与 masks/ 目录（或 <划分>/images 与 <划分>/masks）。")
    rows = {name: _mask_rows(folder) for name, folder in folders.items()}
    return ImportPlan(rows, datasets.Features({"image": datasets.Image(), "mask": datasets.Image()}))


# ---- the entry point ----------------------------------------------------------------------------------------------
def import_dataset(
    source: str | Path,
    out: str | Path,
    *,
    format: str = "auto",  # noqa: A002  (the CLI option's name)
    split: str = "train",
    images: str | Path | None = None,
) -> Any:
    """Read ``source`` in ``format`` and write it to the new folder ``out`` (``save_to_disk``); return the DatasetDict.

    ``split`` names the split when the source has no split folders or files; ``images`` is where a COCO file's
    images are when not beside it.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise error(f"'{source}' does not exist.", f"'{source}' 不存在。")
    new_folder(out)  # refuse a busy output folder before reading anything
    fmt = detect_format(source) if format == "auto" else format
    if fmt not in FORMATS:
        raise error(f"unknown format '{format}'; choose auto or one of {', '.join(FORMATS)}.",
                    f"未知的格式 '{format}'；请选择 auto 或 {', '.join(FORMATS)} 之一。")
    split = split_name(split)
    if not split.replace("_", "").replace("-", "").isalnum():
        raise error(f"split name '{split}' must be letters, digits, '_' or '-'.", f"划分名 '{split}' 只能含字母、数字、'_' 或 '-'。")
    if fmt in ("imagefolder", "masks") and not source.is_dir():
        raise error(f"format {fmt} reads a folder; '{source}' is a file.", f"格式 {fmt} 读取目录，而 '{source}' 是文件。")
    if fmt == "imagefolder":
        plan = read_imagefolder(source, split)
    elif fmt in ("csv", "jsonl"):
        plan = read_table_dataset(source, fmt, split)
    elif fmt == "coco":
        plan = read_coco(source, split, Path(images).expanduser() if images else None)
    elif fmt == "yolo":
        plan = read_yolo(source, split)
    else:
        plan = read_masks(source, split)
    logger.info("importing %s (%s): %s", source, fmt, {s: len(r) for s, r in plan.rows.items()})
    rows = {name: plan.rows[name] for name in ordered_splits(plan.rows)}
    return write_dataset(rows, plan.features, out, {"source_format": fmt, **plan.meta})
