"""Auto-annotation: a text ontology drives an open-vocabulary detector, SAM turns each box into a mask, COCO out.

The ontology maps prompt texts (what the detector is asked) to class names (what the dataset calls them), so
several prompts can feed one class: ``{"a photo of a car": "car", "a truck": "car", "person": "person"}``. For each
image, in sorted file-name order:

1. the detector (any ``zero-shot-object-detection`` model: OWLv2, OWL-ViT) scores every prompt; boxes above
   ``box_threshold`` are kept and named by their class; overlapping boxes of one class are merged by NMS
   (``nms_threshold``), best ``max_detections`` kept;
2. the segmenter (any ``mask-generation`` model, SAM) gets every box as a prompt and returns one mask per box; the
   mask is cut to its box (the box says where the object is, the mask its shape inside it) and a box whose mask
   comes back empty is dropped; with ``segmenter=None`` the boxes are the annotations;
3. the result is COCO: categories from the ontology in order of first appearance, ``bbox`` as [x, y, w, h],
   the detector's ``score`` (and SAM's ``mask_score``) as extra fields, ``segmentation`` as compressed RLE
   (pycocotools) and its ``area``; image ids are 1 + the position in the sorted file list.

Runs are sharded and resumable (:mod:`lmt.data.sharding`): ``accelerate launch ... -m lmt.cli data annotate`` gives
the same file as one process.

>>> from lmt.data.annotate import Ontology
>>> Ontology.parse("car:a photo of a car, person").to_dict()
{'a photo of a car': 'car', 'person': 'person'}
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmt.data.sharding import (
    ProcessSlot,
    ShardRun,
    current_process,
    list_image_files,
    run_sharded,
    write_atomic,
)
from lmt.errors import InvalidImageError, InvalidInputError, missing_dependency
from lmt.validate import check_float_range, check_labels, check_positive_int, check_probability, check_text

logger = logging.getLogger(__name__)

ANNOTATION_FORMAT = 1
MAX_DETECTIONS = 1000
COCO_FILE = "annotations.json"
SCORE_DECIMALS = 5
BOX_DECIMALS = 2


def _error(message: str, message_zh: str) -> InvalidInputError:
    return InvalidInputError(f"Auto-annotation: {message}", f"自动标注：{message_zh}")


# ---- the ontology ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ontology:
    """Prompt texts and the class each one names: ``prompts[i]`` is a ``classes[i]``."""

    prompts: tuple[str, ...]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.prompts) != len(self.classes):
            raise _error("every prompt needs exactly one class.", "每个提示词都需要且只需要一个类别。")
        from lmt.tasks.detect import MAX_QUERIES

        check_labels(list(self.prompts), what="query", max_count=MAX_QUERIES)
        for name in self.classes:
            check_text(name, "class name", max_chars=200)

    @property
    def categories(self) -> tuple[str, ...]:
        """The distinct class names, in order of first appearance: category ``i`` has COCO id ``i + 1``."""
        return tuple(dict.fromkeys(self.classes))

    def category_id(self, name: str) -> int:
        return self.categories.index(name) + 1

    def to_dict(self) -> dict[str, str]:
        return dict(zip(self.prompts, self.classes, strict=True))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str]) -> Ontology:
        """``{prompt: class}``; every key and value must be a non-empty string."""
        if not isinstance(mapping, Mapping) or not mapping:
            raise _error("the ontology must be a non-empty mapping of prompt text to class name.",
                         "本体（ontology）必须是非空的“提示词 → 类别名”映射。")
        pairs = []
        for prompt, name in mapping.items():
            if not isinstance(prompt, str) or not isinstance(name, str) or not prompt.strip() or not name.strip():
                raise _error(f"'{prompt}: {name}' is not a pair of texts; write 'prompt text: class name'.",
                             f"'{prompt}: {name}' 不是一对文本，应写成“提示词: 类别名”。")
            pairs.append((prompt.strip(), name.strip()))
        return cls(tuple(p for p, _ in pairs), tuple(c for _, c in pairs))

    @classmethod
    def parse(cls, text: str) -> Ontology:
        """``"car:a photo of a car, person"``: comma-separated ``class:prompt`` entries; a bare entry is both."""
        from lmt.validate import split_labels

        entries = split_labels(check_text(text, "classes", max_chars=20_000))
        mapping: dict[str, str] = {}
        for entry in entries:
            name, separator, prompt = entry.replace("：", ":").partition(":")
            name, prompt = name.strip(), (prompt.strip() if separator else name.strip())
            if not name or not prompt:
                raise _error(f"'{entry}' has an empty class or prompt; write 'class:prompt' or just 'class'.",
                             f"'{entry}' 的类别或提示词为空，应写成“类别:提示词”或只写“类别”。")
            if prompt in mapping:
                raise _error(f"the prompt '{prompt}' is given twice.", f"提示词 '{prompt}' 出现了两次。")
            mapping[prompt] = name
        return cls.from_mapping(mapping)

    @classmethod
    def from_file(cls, path: str | Path) -> Ontology:
        """A YAML or JSON file holding one mapping ``prompt text: class name``."""
        import yaml

        path = Path(path).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise _error(f"cannot read the ontology file '{path}': {exc.strerror}.",
                         f"无法读取本体文件 '{path}'：{exc.strerror}。") from None
        try:
            mapping = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise _error(f"'{path}' is not valid {path.suffix.lstrip('.').upper() or 'YAML'}: {exc}.",
                         f"'{path}' 不是有效的 JSON/YAML：{exc}。") from None
        return cls.from_mapping(mapping)


def load_ontology(spec: Ontology | Mapping[str, str] | str | Path) -> Ontology:
    """An :class:`Ontology` from itself, a mapping, a ``.yaml``/``.yml``/``.json`` file, or ``class:prompt`` text."""
    if isinstance(spec, Ontology):
        return spec
    if isinstance(spec, Mapping):
        return Ontology.from_mapping(spec)
    if isinstance(spec, Path) or (isinstance(spec, str) and spec.lower().endswith((".yaml", ".yml", ".json"))):
        return Ontology.from_file(spec)
    if isinstance(spec, str):
        return Ontology.parse(spec)
    raise _error(f"cannot read an ontology from {type(spec).__name__}.", f"无法从 {type(spec).__name__} 读取本体。")


# ---- settings -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnnotateSettings:
    """Everything that decides an image's annotations; a shard computed with other settings is recomputed."""

    ontology: Ontology
    detector: dict[str, Any]
    segmenter: dict[str, Any] | None
    box_threshold: float = 0.1
    nms_threshold: float = 0.5
    mask_threshold: float = 0.0
    max_detections: int = 100

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "annotate", "format": ANNOTATION_FORMAT,
            # pairs, not a mapping: their order decides the category ids, and the digest sorts mapping keys
            "ontology": [list(pair) for pair in zip(self.ontology.prompts, self.ontology.classes, strict=True)],
            "detector": self.detector, "segmenter": self.segmenter, "box_threshold": self.box_threshold,
            "nms_threshold": self.nms_threshold, "mask_threshold": self.mask_threshold,
            "max_detections": self.max_detections,
        }


def _model_spec(model: Any, weights: str, revision: str | None) -> dict[str, Any]:
    """What identifies a model in the settings: a task object's loaded name, or the name asked for."""
    loaded = getattr(model, "loaded", None)
    if loaded is not None:
        return {"name": loaded.name, "weights": loaded.weights, "revision": loaded.revision, "adapter": loaded.adapter}
    if not isinstance(model, str) or not model.strip():
        raise _error(f"a model must be a registry name, Hub id, folder or task object; got {model!r:.60}.",
                     f"模型必须是注册名、Hub id、目录或任务对象，收到的是 {model!r:.60}。")
    return {"name": model.strip(), "weights": weights, "revision": revision, "adapter": None}


# ---- one image ----------------------------------------------------------------------------------------------------
def _rle(mask: np.ndarray) -> dict[str, Any]:
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise missing_dependency("pycocotools", "data", "Writing masks as COCO RLE", "把掩码写成 COCO RLE ") from None
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def _box_pixels(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """The pixel rectangle [c0, c1) x [r0, r1) a box touches."""
    x0, y0, x1, y1 = box
    return (max(0, math.floor(x0)), max(0, math.floor(y0)), min(width, math.ceil(x1)), min(height, math.ceil(y1)))


def _class_detections(detections: Any, ontology: Ontology, settings: AnnotateSettings) -> list[tuple[int, float, Any]]:
    """(category id, score, box) named by class, NMS within each class, best first, at most max_detections."""
    import torch

    from lmt.ops import batched_nms

    classes = ontology.to_dict()
    found = [(ontology.category_id(classes[d.label]), d.score, d.box) for d in detections
             if d.box[2] - d.box[0] >= 1 and d.box[3] - d.box[1] >= 1]  # a box thinner than a pixel holds no object
    if not found:
        return []
    boxes = torch.tensor([box for _, _, box in found], dtype=torch.float64)
    scores = torch.tensor([score for _, score, _ in found], dtype=torch.float64)
    groups = torch.tensor([category for category, _, _ in found])
    keep = batched_nms(boxes, scores, groups, settings.nms_threshold).tolist()
    return [found[i] for i in keep[: settings.max_detections]]


def annotate_image(image: Any, detector: Any, segmenter: Any, settings: AnnotateSettings) -> dict[str, Any]:
    """One loaded RGB image -> ``{"width", "height", "annotations": [...]}`` (annotations without ids)."""
    ontology = settings.ontology
    detections = detector(image, queries=list(ontology.prompts), threshold=settings.box_threshold,
                          nms_threshold=None)
    kept = _class_detections(detections, ontology, settings)
    masks: list[Any] = [None] * len(kept)
    if segmenter is not None and kept:
        segmentation = segmenter(image, boxes=[box for _, _, box in kept], threshold=settings.mask_threshold,
                                 multimask=False)
        masks = list(segmentation.masks)
    annotations = []
    for (category, score, box), mask in zip(kept, masks, strict=True):
        x0, y0, x1, y1 = box
        annotation: dict[str, Any] = {
            "category_id": category,
            "bbox": [round(x0, BOX_DECIMALS), round(y0, BOX_DECIMALS), round(x1 - x0, BOX_DECIMALS),
                     round(y1 - y0, BOX_DECIMALS)],
            "score": round(score, SCORE_DECIMALS),
        }
        if mask is None:
            annotation["area"] = round((x1 - x0) * (y1 - y0), BOX_DECIMALS)
        else:
            c0, r0, c1, r1 = _box_pixels(box, image.width, image.height)
            inside = np.zeros_like(mask.mask, dtype=bool)
            inside[r0:r1, c0:c1] = mask.mask[r0:r1, c0:c1]
            if not inside.any():
                continue
            annotation.update(area=int(inside.sum()), segmentation=_rle(inside),
                              mask_score=round(mask.score, SCORE_DECIMALS))
        annotation["iscrowd"] = 0
        annotations.append(annotation)
    return {"width": image.width, "height": image.height, "annotations": annotations,
            "dropped_empty_masks": len(kept) - len(annotations)}


# ---- COCO ---------------------------------------------------------------------------------------------------------
def build_coco(records: Sequence[tuple[str, dict[str, Any]]], settings: AnnotateSettings) -> dict[str, Any]:
    """The COCO document for merged (file name, record) pairs in file-name order. Nothing in it depends on the
    process count, chunk size, time or machine, so equal inputs give equal bytes."""
    images, annotations, skipped = [], [], []
    dropped = 0
    for index, (file_name, record) in enumerate(records):
        image_id = index + 1
        if "skipped" in record:
            skipped.append({"file_name": file_name, "reason": record["skipped"]})
            continue
        images.append({"id": image_id, "file_name": file_name, "width": record["width"], "height": record["height"]})
        dropped += record["dropped_empty_masks"]
        for annotation in record["annotations"]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **annotation})
    info = {
        "description": "Auto-annotated by lmt data annotate", "version": str(ANNOTATION_FORMAT),
        "contributor": "lmt", "detector": settings.detector, "segmenter": settings.segmenter,
        "ontology": settings.ontology.to_dict(), "box_threshold": settings.box_threshold,
        "nms_threshold": settings.nms_threshold, "mask_threshold": settings.mask_threshold,
        "max_detections": settings.max_detections, "dropped_empty_masks": dropped, "skipped": skipped,
    }
    categories = [{"id": i + 1, "name": name, "supercategory": "object"}
                  for i, name in enumerate(settings.ontology.categories)]
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def coco_bytes(coco: dict[str, Any]) -> bytes:
    return json.dumps(coco, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# ---- the run ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnnotationRun:
    """One process's part of an annotation run; ``coco_path`` is set by the process that wrote the merged file."""

    out_dir: Path
    shards: ShardRun
    coco_path: Path | None = None
    images: int = 0
    annotations: int = 0
    skipped: int = 0
    gallery: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir), "coco": str(self.coco_path) if self.coco_path else None,
            "images": self.images, "annotations": self.annotations, "skipped": self.skipped,
            "gallery": str(self.gallery) if self.gallery else None, "shards": self.shards.to_dict(),
        }


class _Annotator:
    """The per-batch work: loads the models on first use, so a resumed run with nothing left loads none."""

    def __init__(self, root: Path, settings: AnnotateSettings, detector: Any, segmenter: Any, device: Any) -> None:
        self.root, self.settings, self.device = root, settings, device
        self._models = {"detector": detector, "segmenter": segmenter}

    def _task(self, role: str, task: str) -> Any:
        model = self._models[role]
        if model is None or not isinstance(model, str):
            return model
        from lmt.tasks import pipeline

        spec = self.settings.detector if role == "detector" else self.settings.segmenter
        self._models[role] = pipeline(task, model, weights=spec["weights"], revision=spec["revision"],
                                      device=self.device)
        return self._models[role]

    def __call__(self, items: Sequence[str]) -> list[dict[str, Any]]:
        from lmt.images import load_image

        detector = self._task("detector", "zero-shot-object-detection")
        segmenter = self._task("segmenter", "mask-generation")
        records = []
        for item in items:
            try:
                image = load_image(self.root / item)
            except InvalidImageError as err:
                logger.warning("Skipping %s: %s", item, err.message)
                records.append({"skipped": err.message})
                continue
            records.append(annotate_image(image, detector, segmenter, self.settings))
        return records


def annotate_folder(
    images: str | Path,
    out: str | Path,
    ontology: Ontology | Mapping[str, str] | str | Path,
    *,
    detector: Any = "owlv2-b16",
    segmenter: Any = "sam-vit-base",
    weights: str = "real",
    revision: str | None = None,
    device: Any = None,
    box_threshold: float = 0.1,
    nms_threshold: float = 0.5,
    mask_threshold: float = 0.0,
    max_detections: int = 100,
    chunk_size: int = 64,
    resume: bool = False,
    process_index: int | None = None,
    num_processes: int | None = None,
    gallery: int = 0,
) -> AnnotationRun:
    """Annotate every image under ``images`` into ``out/annotations.json`` (COCO), sharded and resumable.

    ``detector``/``segmenter`` are model names (with ``weights``/``revision``) or ready task objects
    (``lmt.pipeline(...)``); ``segmenter=None`` writes boxes only. ``gallery`` > 0 also writes a review gallery of
    the first that many images to ``out/gallery/``.

    >>> # run = annotate_folder("photos/", "labels/", "car:a photo of a car,person", weights="tiny")
    """
    settings = AnnotateSettings(
        ontology=load_ontology(ontology),
        detector=_model_spec(detector, weights, revision),
        segmenter=_model_spec(segmenter, weights, revision) if segmenter is not None else None,
        box_threshold=check_probability(box_threshold, "box_threshold"),
        nms_threshold=check_probability(nms_threshold, "nms_threshold"),
        mask_threshold=check_float_range(mask_threshold, "mask_threshold", -20.0, 20.0),
        max_detections=check_positive_int(max_detections, "max_detections", maximum=MAX_DETECTIONS),
    )
    gallery = check_positive_int(gallery + 1, "gallery + 1", maximum=10_001) - 1
    root, out_dir = Path(images).expanduser(), Path(out).expanduser()
    items = list_image_files(root, exclude=out_dir)
    slot: ProcessSlot = current_process(process_index, num_processes, device=device)
    annotator = _Annotator(root, settings, detector, segmenter, device if device is not None else slot.device)
    shards = run_sharded(items, annotator, out_dir, settings=settings.to_dict(), chunk_size=chunk_size, resume=resume,
                         process=slot, description="annotate")
    if shards.records is None:
        return AnnotationRun(out_dir, shards)
    coco = build_coco(shards.records, settings)
    coco_path = out_dir / COCO_FILE
    write_atomic(coco_path, coco_bytes(coco))
    gallery_path = None
    if gallery and coco["images"]:
        from lmt.data.gallery import write_gallery

        gallery_path = write_gallery(coco, root, out_dir / "gallery", limit=gallery).html
    return AnnotationRun(out_dir, shards, coco_path, len(coco["images"]), len(coco["annotations"]),
                         len(coco["info"]["skipped"]), gallery_path)
