"""Small synthetic sources for the import/export tests: a COCO file (boxes, polygons, compressed and uncompressed
RLE, crowd, extra keys, an unused category, an image without annotations), a YOLO folder and image+mask pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

COCO_CATEGORIES = [
    {"id": 1, "name": "cat", "supercategory": "animal"},
    {"id": 3, "name": "dog", "supercategory": "animal"},
    {"id": 7, "name": "car", "supercategory": "vehicle"},
    {"id": 9, "name": "unused", "supercategory": "none"},
]
YOLO_NAMES = ["person", "bike", "car"]


def noise_image(seed: int, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode)


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


def write_coco(root: Path) -> Path:
    """``root/annotations.json`` with images under ``root/imgs/``; returns the JSON file."""
    from pycocotools import mask as mask_utils

    (root / "imgs").mkdir(parents=True)
    sizes = {1: (40, 30), 2: (50, 40), 3: (32, 32), 4: (36, 28)}
    names = {1: "imgs/a.png", 2: "imgs/b.jpg", 3: "imgs/c.png", 4: "imgs/d.png"}
    for image_id, name in names.items():
        noise_image(image_id, sizes[image_id]).save(root / name)
    blob = np.zeros((40, 50), dtype=np.uint8, order="F")
    blob[8:20, 10:30] = 1
    compressed = mask_utils.encode(np.asfortranarray(blob))
    compressed["counts"] = compressed["counts"].decode("ascii")
    square = np.zeros((30, 40), dtype=np.uint8)
    square[5:15, 20:35] = 1
    document = {
        "info": {"description": "lmt test set", "year": 2026, "version": "1.0"},
        "licenses": [{"id": 1, "name": "CC-BY-4.0", "url": "https://creativecommons.org/licenses/by/4.0/"}],
        "images": [{"id": i, "file_name": names[i], "width": sizes[i][0], "height": sizes[i][1], "license": 1,
                    "date_captured": "2026-01-0" + str(i)} for i in names],
        # out of image order on purpose; ids not contiguous
        "annotations": [
            {"id": 12, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 8], "area": 80, "iscrowd": 0,
             "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]]},
            {"id": 10, "image_id": 2, "category_id": 3, "bbox": [10.0, 8.0, 20.0, 12.0], "area": 240.0,
             "iscrowd": 1, "segmentation": compressed},
            {"id": 11, "image_id": 1, "category_id": 7, "bbox": [20, 5, 15, 10], "area": 150, "iscrowd": 1,
             "segmentation": _uncompressed_rle(square)},
            {"id": 13, "image_id": 4, "category_id": 3, "bbox": [1.5, 2.25, 20.125, 10.5], "iscrowd": 0,
             "attributes": {"occluded": True}},
            {"id": 14, "image_id": 2, "category_id": 7, "bbox": [30.5, 20.25, 12.5, 9.75], "area": 60.9375,
             "iscrowd": 0, "segmentation": [[30.5, 20.25, 43.0, 20.25, 43.0, 30.0, 30.5, 30.0]]},
        ],
        "categories": COCO_CATEGORIES,
    }
    path = root / "annotations.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def write_yolo(root: Path) -> Path:
    """An Ultralytics layout: data.yaml, images/{train,val}, labels/{train,val}; one image has no label file."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    noise_image(1, (64, 48)).save(root / "images" / "train" / "x1.png")
    noise_image(2, (40, 40)).save(root / "images" / "train" / "x2.jpg")  # background: no label file
    noise_image(3, (30, 50)).save(root / "images" / "val" / "v1.png")
    (root / "labels" / "train" / "x1.txt").write_text(
        "0 0.5 0.5 0.25 0.5\n2 0.123456789 0.87654321 0.1 0.2\n", encoding="utf-8")
    (root / "labels" / "val" / "v1.txt").write_text("1 0.3333333333 0.6666666667 0.2 0.14\n", encoding="utf-8")
    config = {"path": ".", "train": "images/train", "val": "images/val", "names": dict(enumerate(YOLO_NAMES))}
    (root / "data.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return root


def write_mask_pairs(root: Path) -> Path:
    """images/ and masks/ with a nested pair and a JPEG image (masks are PNG)."""
    (root / "images" / "sub").mkdir(parents=True)
    (root / "masks" / "sub").mkdir(parents=True)
    for index, name in enumerate(("1.png", "2.jpg", "sub/3.png")):
        noise_image(index, (24, 20)).save(root / "images" / name)
        mask = np.zeros((20, 24), dtype=np.uint8)
        mask[2 + index:10, 3:12 + index] = 255
        Image.fromarray(mask, mode="L").save(root / "masks" / Path(name).with_suffix(".png"))
    return root
