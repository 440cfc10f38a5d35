"""Small typed results: frozen dataclasses with ``to_dict()`` for JSON. Boxes are (x0, y0, x1, y1) in pixels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Box = tuple[float, float, float, float]


def _box_to_dict(box: Box) -> dict[str, float]:
    x0, y0, x1, y1 = box
    return {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1}


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score}


@dataclass(frozen=True)
class Classification:
    """Labels with scores, best first. ``label``/``score`` are the top-1."""

    predictions: tuple[LabelScore, ...]

    @property
    def label(self) -> str:
        return self.predictions[0].label

    @property
    def score(self) -> float:
        return self.predictions[0].score

    def as_label_dict(self) -> dict[str, float]:
        """``{label: score}``, the shape ``gr.Label`` takes."""
        return {p.label: p.score for p in self.predictions}

    def to_dict(self) -> dict[str, Any]:
        return {"predictions": [p.to_dict() for p in self.predictions]}


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: Box

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "box": _box_to_dict(self.box)}


@dataclass(frozen=True)
class Detections:
    """Detections on one image, best first, with the image size (width, height) they refer to."""

    detections: tuple[Detection, ...]
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.detections)

    def __iter__(self):
        return iter(self.detections)

    def count_by_label(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for detection in self.detections:
            counts[detection.label] = counts.get(detection.label, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        width, height = self.image_size
        return {"width": width, "height": height, "detections": [d.to_dict() for d in self.detections]}


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO-style uncompressed RLE (column-major runs, starting with background)."""
    height, width = mask.shape
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    boundaries = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(boundaries).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [height, width], "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`mask_to_rle`."""
    height, width = rle["size"]
    values = np.zeros(len(rle["counts"]), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, rle["counts"])
    return flat.reshape((width, height)).T


@dataclass(frozen=True)
class Mask:
    """One binary mask (H, W) with the model's quality score and its bounding box."""

    mask: np.ndarray = field(repr=False)
    score: float
    box: Box

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "box": _box_to_dict(self.box), "area": self.area, "rle": mask_to_rle(self.mask)}


@dataclass(frozen=True)
class Segmentation:
    """Masks for one image, best score first."""

    masks: tuple[Mask, ...]
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.masks)

    def __iter__(self):
        return iter(self.masks)

    def to_dict(self) -> dict[str, Any]:
        width, height = self.image_size
        return {"width": width, "height": height, "masks": [m.to_dict() for m in self.masks]}


@dataclass(frozen=True)
class GeneratedText:
    """A caption or an answer. ``prompt`` is the question or prompt it answers, if any."""

    text: str
    prompt: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "prompt": self.prompt}


@dataclass(frozen=True)
class Embedding:
    """An L2-normalised feature vector."""

    vector: np.ndarray = field(repr=False)

    @property
    def dim(self) -> int:
        return int(self.vector.shape[-1])

    def to_dict(self) -> dict[str, Any]:
        return {"dim": self.dim, "vector": self.vector.astype(float).tolist()}


@dataclass(frozen=True)
class SearchHit:
    """One gallery item found by a search: its position, its id and the cosine similarity."""

    index: int
    id: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "score": self.score}
