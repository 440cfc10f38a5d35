"""Data augmentation with kornia: images for classification, and images whose boxes and masks move with them.

Two pipelines share one set of parameters (:class:`AugmentConfig`, presets ``light``, ``default``, ``strong``):

- :class:`ClassificationAugment`: random resized crop to a fixed size, flips, rotation/scale, colour; for a
  classifier's training images (PIL in, PIL out; or a tensor batch through :meth:`ClassificationAugment.tensor`).
- :class:`Augment`: the image keeps its size, and every geometric transform (flip, rotation, scale, translation,
  crop) is applied to the boxes (``xyxy`` or COCO ``xywh``) and masks too, through
  ``kornia.augmentation.AugmentationSequential(data_keys=[...])``. Colour transforms touch the pixels only.

Every call is seeded: the same seed gives the same image, boxes and masks. :func:`augment_dataset` writes
augmented copies of a whole dataset (an ImageFolder tree, a CSV/JSONL manifest with optional masks, or a COCO
JSON file) as new files plus a manifest, and never changes a source file; :func:`preview_grid` draws a PNG of
an image and its augmented copies with their boxes and masks, to check the settings by eye.

>>> from lmt.data.augment import Augment
>>> augment = Augment("default", seed=0)
>>> # sample = augment("street.jpg", boxes=[(10, 20, 110, 90)], labels=["car"])
>>> # sample.image, sample.boxes, sample.labels
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import json
import logging
import math
import random
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmt.errors import InvalidInputError, missing_dependency
from lmt.images import ImageInput, load_image

logger = logging.getLogger(__name__)

BoxFormat = Literal["xyxy", "xywh"]
Box = tuple[float, float, float, float]
BOX_FORMATS = ("xyxy", "xywh")


def _error(message: str, message_zh: str) -> InvalidInputError:
    return InvalidInputError(f"Augmentation: {message}", f"数据增强：{message_zh}")


# ---- the parameters -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentConfig:
    """What to randomise, and how much. Probabilities are per image; ranges are sampled uniformly."""

    #: Probability of a left-right / top-bottom flip.
    hflip: float = 0.5
    vflip: float = 0.0
    #: Largest rotation, in degrees, either way.
    rotate: float = 0.0
    #: Zoom factor range (1 = unchanged): below 1 shrinks the content, above 1 enlarges it.
    scale: tuple[float, float] = (1.0, 1.0)
    #: Largest shift, as a fraction of the width and the height.
    translate: float = 0.0
    #: Random resized crop: range of the cropped area as a fraction of the image; None for no crop.
    crop_scale: tuple[float, float] | None = None
    crop_p: float = 0.5
    #: Colour jitter strengths (0 = off) and the probability of applying the jitter.
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    color_p: float = 0.8
    #: Probabilities of a Gaussian blur and of turning the image grey.
    blur_p: float = 0.0
    grayscale_p: float = 0.0
    #: A box keeps its object when at least this share of its (transformed) area is still inside the image.
    min_visibility: float = 0.3

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip", "crop_p", "color_p", "blur_p", "grayscale_p", "min_visibility"):
            _check_number(name, getattr(self, name), 0.0, 1.0)
        _check_number("rotate", self.rotate, 0.0, 180.0)
        _check_number("translate", self.translate, 0.0, 0.5)
        for name in ("brightness", "contrast", "saturation"):
            _check_number(name, getattr(self, name), 0.0, 1.0)
        _check_number("hue", self.hue, 0.0, 0.5)
        _check_range("scale", self.scale, 0.1, 10.0)
        if self.crop_scale is not None:
            _check_range("crop_scale", self.crop_scale, 0.05, 1.0)

    @property
    def has_affine(self) -> bool:
        return self.rotate > 0 or self.translate > 0 or tuple(self.scale) != (1.0, 1.0)

    @property
    def has_color(self) -> bool:
        return self.color_p > 0 and any((self.brightness, self.contrast, self.saturation, self.hue))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_number(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not low <= value <= high:
        raise _error(f"{name} must be a number in [{low:g}, {high:g}]; got {value!r:.40}.",
                     f"{name} 必须是 [{low:g}, {high:g}] 之间的数，收到的是 {value!r:.40}。")


def _check_range(name: str, value: Any, low: float, high: float) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise _error(f"{name} must be two numbers (low, high); got {value!r:.40}.",
                     f"{name} 必须是两个数 (下限, 上限)，收到的是 {value!r:.40}。")
    for part in value:
        _check_number(name, part, low, high)
    if value[0] > value[1]:
        raise _error(f"{name} must be (low, high) with low <= high; got {tuple(value)}.",
                     f"{name} 须为 (下限, 上限) 且下限不大于上限，收到的是 {tuple(value)}。")


#: Ready-made settings. ``light`` barely changes an image; ``strong`` may cut objects at the border.
PRESETS: dict[str, AugmentConfig] = {
    "light": AugmentConfig(hflip=0.5, rotate=5.0, scale=(0.95, 1.05), translate=0.03,
                           brightness=0.1, contrast=0.1, color_p=0.5),
    "default": AugmentConfig(hflip=0.5, rotate=15.0, scale=(0.85, 1.15), translate=0.08,
                             crop_scale=(0.7, 1.0), crop_p=0.5,
                             brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, color_p=0.8, blur_p=0.1),
    "strong": AugmentConfig(hflip=0.5, vflip=0.1, rotate=30.0, scale=(0.7, 1.3), translate=0.15,
                            crop_scale=(0.5, 1.0), crop_p=0.7,
                            brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05, color_p=0.8,
                            blur_p=0.2, grayscale_p=0.1),
}


def augment_config(preset: str | AugmentConfig = "default", **overrides: Any) -> AugmentConfig:
    """A preset (or a config) with some parameters replaced; an unknown parameter name is an error."""
    if isinstance(preset, AugmentConfig):
        base = preset
    elif isinstance(preset, str) and preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise _error(f"unknown preset {preset!r:.40}; use one of {', '.join(PRESETS)}.",
                     f"未知预设 {preset!r:.40}，请使用 {', '.join(PRESETS)} 之一。")
    names = [f.name for f in dataclasses.fields(AugmentConfig)]
    for key in overrides:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise _error(f"unknown parameter '{key}'.{hint} Parameters: {', '.join(names)}.",
                         f"未知参数 '{key}'。{hint} 可用参数：{', '.join(names)}。")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return dataclasses.replace(base, **values)


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["rotate=30", "scale=0.5,1.5", "crop_scale=none"]`` -> parameter values (for the CLI)."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise _error(f"'{pair}' is not KEY=VALUE (e.g. rotate=30 or scale=0.8,1.2).",
                         f"'{pair}' 不是 KEY=VALUE 形式（例如 rotate=30 或 scale=0.8,1.2）。")
        text = text.strip()
        try:
            if text.lower() == "none":
                value: Any = None
            elif "," in text:
                value = tuple(float(part) for part in text.split(","))
            else:
                value = float(text)
        except ValueError:
            raise _error(f"'{pair}': the value must be a number, two numbers 'a,b', or none.",
                         f"'{pair}'：值必须是一个数、两个数 'a,b' 或 none。") from None
        values[key.strip()] = value
    return values


# ---- kornia --------------------------------------------------------------------------------------------------------
def _kornia() -> Any:
    try:
        import kornia.augmentation as kornia_augmentation
    except ImportError as exc:
        raise missing_dependency("kornia", "data", "Data augmentation", "数据增强") from exc
    return kornia_augmentation


def _geometric_ops(config: AugmentConfig, size: tuple[int, int]) -> list[Any]:
    """Flips, affine, then a random crop resized back to ``size`` (height, width)."""
    K = _kornia()
    ops: list[Any] = []
    if config.hflip > 0:
        ops.append(K.RandomHorizontalFlip(p=config.hflip))
    if config.vflip > 0:
        ops.append(K.RandomVerticalFlip(p=config.vflip))
    if config.has_affine:
        translate = (config.translate, config.translate) if config.translate > 0 else None
        # padding zeros, not reflection: a reflected object would appear in the image without a box
        ops.append(K.RandomAffine(degrees=config.rotate, translate=translate, scale=tuple(config.scale), p=1.0))
    if config.crop_scale is not None and config.crop_p > 0:
        ops.append(K.RandomResizedCrop(size, scale=tuple(config.crop_scale), p=config.crop_p))
    return ops


def _photometric_ops(config: AugmentConfig) -> list[Any]:
    K = _kornia()
    ops: list[Any] = []
    if config.has_color:
        ops.append(K.ColorJitter(config.brightness, config.contrast, config.saturation, config.hue, p=config.color_p))
    if config.blur_p > 0:
        ops.append(K.RandomGaussianBlur((3, 3), (0.1, 1.5), p=config.blur_p))
    if config.grayscale_p > 0:
        ops.append(K.RandomGrayscale(p=config.grayscale_p))
    return ops


def _run_seeded(seed: int, function: Any, *args: Any) -> Any:
    """Run ``function`` with torch's CPU generator seeded, restoring the caller's generator state after.

    kornia draws its parameters from torch's global generator; forking it keeps each call reproducible and
    leaves the caller's random stream untouched. (Not safe to interleave with other threads seeding torch.)
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return function(*args)


def derive_seed(seed: int, *keys: Any) -> int:
    """A 63-bit seed from a base seed and keys (an image index, a copy number): independent of call order."""
    return random.Random(":".join(str(k) for k in (seed, *keys))).getrandbits(63)


def _to_tensor(image: Any) -> Any:
    import torch

    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def _to_pil(tensor: Any) -> Any:
    import torch
    from PIL import Image

    array = (tensor.detach().clamp(0, 1) * 255.0).round().to(dtype=torch.uint8)
    return Image.fromarray(array.squeeze(0).permute(1, 2, 0).cpu().numpy(), mode="RGB")


def _new_seeds(seed: int | None) -> random.Random:
    return random.Random(seed) if seed is not None else random.Random()


# ---- boxes and masks -----------------------------------------------------------------------------------------------
def to_xyxy(box: Sequence[float], box_format: BoxFormat) -> Box:
    x0, y0, a, b = (float(v) for v in box)
    return (x0, y0, x0 + a, y0 + b) if box_format == "xywh" else (x0, y0, a, b)


def from_xyxy(box: Box, box_format: BoxFormat) -> Box:
    x0, y0, x1, y1 = box
    return (x0, y0, x1 - x0, y1 - y0) if box_format == "xywh" else (x0, y0, x1, y1)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``xyxy`` boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def mask_to_box(mask: np.ndarray) -> Box | None:
    """Tight ``xyxy`` box of a mask's non-zero pixels (x1/y1 exclusive), or None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def _check_boxes(boxes: Any, box_format: str, size: tuple[int, int]) -> list[Box]:
    """Boxes as ``xyxy`` floats, clipped to the image; a box that is empty once clipped is an error."""
    if box_format not in BOX_FORMATS:
        raise _error(f"box_format must be 'xyxy' or 'xywh' (COCO), not {box_format!r:.20}.",
                     f"box_format 只能是 'xyxy' 或 'xywh'（COCO），而不是 {box_format!r:.20}。")
    if not isinstance(boxes, Sequence) or isinstance(boxes, str):
        raise _error("boxes must be a list of 4 numbers each.", "boxes 必须是列表，每个框 4 个数。")
    width, height = size
    checked = []
    for index, box in enumerate(boxes):
        if (not isinstance(box, Sequence) or isinstance(box, str) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)):
            raise _error(f"box #{index} is {box!r:.60}; write it as 4 numbers ({box_format}).",
                         f"第 {index} 个框 {box!r:.60} 格式不对，应为 4 个数（{box_format}）。")
        x0, y0, x1, y1 = to_xyxy(box, box_format)  # type: ignore[arg-type]
        clipped = (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
        if clipped[2] - clipped[0] <= 0 or clipped[3] - clipped[1] <= 0:
            raise _error(f"box #{index} {tuple(box)} ({box_format}) is empty or outside the {width}x{height} image.",
                         f"第 {index} 个框 {tuple(box)}（{box_format}）为空或在 {width}x{height} 图像之外。")
        checked.append(clipped)
    return checked


def _check_masks(masks: Any, size: tuple[int, int]) -> list[np.ndarray]:
    """Masks as 2-D arrays of the image's size: a list of them, an (N, H, W) array, or one (H, W) array."""
    width, height = size
    if isinstance(masks, np.ndarray):
        masks = [masks] if masks.ndim == 2 else list(masks)
    if not isinstance(masks, Sequence) or isinstance(masks, str):
        raise _error("masks must be a list of 2-D arrays (one per object) or one 2-D array.",
                     "masks 必须是二维数组的列表（每个物体一个），或一个二维数组。")
    checked = []
    for index, mask in enumerate(masks):
        array = np.asarray(mask)
        if array.shape != (height, width) or not (array.dtype == bool or np.issubdtype(array.dtype, np.integer)):
            raise _error(f"mask #{index} has shape {array.shape} and dtype {array.dtype}; it must be an integer or "
                         f"boolean array of the image's size ({height}, {width}).",
                         f"第 {index} 个掩码的形状为 {array.shape}、类型为 {array.dtype}；应为与图像同尺寸 "
                         f"({height}, {width}) 的整数或布尔数组。")
        checked.append(array)
    return checked


@dataclass(frozen=True)
class AugmentedSample:
    """An augmented image with its boxes (in the format they came in), labels and masks.

    ``kept`` lists, for each box left, the index of the input box it came from: boxes (and their masks) whose
    object was moved out of the image are dropped.
    """

    image: Any
    boxes: tuple[Box, ...] = ()
    labels: tuple[Any, ...] = ()
    masks: tuple[np.ndarray, ...] = ()
    kept: tuple[int, ...] = ()
    box_format: str = "xyxy"
    seed: int = 0

    @property
    def size(self) -> tuple[int, int]:
        return (self.image.width, self.image.height)

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "boxes": [[round(v, 2) for v in box] for box in self.boxes],
                "labels": list(self.labels), "kept": list(self.kept), "box_format": self.box_format,
                "masks": len(self.masks), "seed": self.seed}


# ---- the pipelines -------------------------------------------------------------------------------------------------
class Augment:
    """Augment an image together with its boxes and masks, seeded.

    ``preset`` is ``light``, ``default``, ``strong`` or an :class:`AugmentConfig`; keyword ``overrides`` replace
    single parameters (``Augment("default", rotate=30)``). Each call draws its seed from ``seed`` (so a second
    ``Augment`` with the same seed repeats the same sequence); ``seed=`` on the call fixes that one call.

    Boxes of a rotated object are the box around its rotated box: exact for box-shaped objects, larger for round
    ones. With ``boxes_from_masks=True`` (and one mask per box) the boxes are re-measured from the moved masks.
    """

    def __init__(self, preset: str | AugmentConfig = "default", *, seed: int | None = 0, **overrides: Any) -> None:
        self.config = augment_config(preset, **overrides)
        self._seeds = _new_seeds(seed)
        self._sequences: dict[tuple[int, int, tuple[str, ...]], Any] = {}

    def __repr__(self) -> str:
        return f"Augment({self.config})"

    def _sequence(self, size: tuple[int, int], data_keys: tuple[str, ...]) -> Any:
        key = (*size, data_keys)
        if key not in self._sequences:
            K = _kornia()
            ops = _geometric_ops(self.config, size) + _photometric_ops(self.config)
            self._sequences[key] = K.AugmentationSequential(*ops, data_keys=list(data_keys)) if ops else None
        return self._sequences[key]

    def __call__(
        self,
        image: ImageInput,
        *,
        boxes: Sequence[Sequence[float]] | None = None,
        masks: Sequence[np.ndarray] | np.ndarray | None = None,
        labels: Sequence[Any] | None = None,
        box_format: BoxFormat = "xyxy",
        boxes_from_masks: bool = False,
        seed: int | None = None,
    ) -> AugmentedSample:
        import torch

        picture = load_image(image)
        size = (picture.width, picture.height)
        checked_boxes = _check_boxes(boxes, box_format, size) if boxes is not None else None
        checked_masks = _check_masks(masks, size) if masks is not None else None
        if labels is not None and (checked_boxes is None or len(labels) != len(checked_boxes)):
            raise _error("labels need boxes, one label per box.", "labels 需要与 boxes 一一对应。")
        paired = checked_boxes is not None and checked_masks is not None
        if paired and len(checked_masks) != len(checked_boxes):
            raise _error(f"{len(checked_boxes)} boxes and {len(checked_masks)} masks: with boxes, give one mask per "
                         "box (instance masks), or no masks.",
                         f"{len(checked_boxes)} 个框、{len(checked_masks)} 个掩码：同时给出框时，每个框对应一个掩码。")
        if boxes_from_masks and not paired:
            raise _error("boxes_from_masks needs boxes and one mask per box.",
                         "boxes_from_masks 需要同时给出框和与之一一对应的掩码。")
        call_seed = self._seeds.getrandbits(63) if seed is None else int(seed)

        data_keys = ["input"]
        inputs: list[Any] = [_to_tensor(picture)]
        if checked_boxes is not None:
            data_keys.append("bbox_xyxy")
            # kornia works in pixel-centre coordinates (pixel i at i); boxes here are edges (pixel i spans [i, i+1])
            inputs.append(torch.tensor(checked_boxes, dtype=torch.float32).reshape(1, -1, 4) - 0.5)
        if checked_masks:
            data_keys.append("mask")
            inputs.append(torch.from_numpy(np.stack(checked_masks).astype(np.float32)).unsqueeze(0))
        sequence = self._sequence((size[1], size[0]), tuple(data_keys))
        outputs = _run_seeded(call_seed, sequence, *inputs) if sequence is not None else inputs
        if len(data_keys) == 1:
            outputs = [outputs] if sequence is not None else outputs
        results = dict(zip(data_keys, outputs, strict=True))

        out_masks = []
        if checked_masks:
            moved = results["mask"][0].cpu().numpy()
            for original, array in zip(checked_masks, moved, strict=True):
                out_masks.append(array > 0.5 if original.dtype == bool else np.rint(array).astype(original.dtype))
        out_boxes: list[Box] = []
        kept: list[int] = []
        if checked_boxes is not None:
            moved_boxes = (results["bbox_xyxy"].reshape(-1, 4) + 0.5).tolist()
            for index, box in enumerate(moved_boxes):
                if boxes_from_masks:
                    box = mask_to_box(out_masks[index]) or (0.0, 0.0, 0.0, 0.0)
                visible = _visible_part(box, size, self.config.min_visibility)
                if visible is not None:
                    out_boxes.append(from_xyxy(visible, box_format))
                    kept.append(index)
        if paired:
            out_masks = [out_masks[i] for i in kept]
        return AugmentedSample(
            image=_to_pil(results["input"]),
            boxes=tuple(out_boxes),
            labels=tuple(labels[i] for i in kept) if labels is not None else (),
            masks=tuple(out_masks),
            kept=tuple(kept),
            box_format=box_format,
            seed=call_seed,
        )


def _visible_part(box: Sequence[float], size: tuple[int, int], min_visibility: float) -> Box | None:
    """The box clipped to the image, or None when less than ``min_visibility`` of it (or under a pixel) is left."""
    x0, y0, x1, y1 = box
    area = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    clipped = (max(0.0, x0), max(0.0, y0), min(float(size[0]), x1), min(float(size[1]), y1))
    width, height = clipped[2] - clipped[0], clipped[3] - clipped[1]
    if area <= 0 or width < 1 or height < 1 or width * height < min_visibility * area:
        return None
    return clipped


class ClassificationAugment:
    """Training-time augmentation for a classifier: random resized crop (or a resize) to ``size``, then the
    flips, affine and colour transforms of the preset.

    ``__call__`` takes one image or a list (PIL out); :meth:`tensor` takes a float batch (B, 3, H, W) in [0, 1]
    and augments each image differently, on whatever device the batch is on.
    """

    def __init__(
        self, preset: str | AugmentConfig = "default", *, size: int | tuple[int, int] = 224, seed: int | None = 0,
        **overrides: Any,
    ) -> None:
        self.config = augment_config(preset, **overrides)
        sides = (size, size) if isinstance(size, int) else tuple(size)
        for side in sides:
            if isinstance(side, bool) or not isinstance(side, int) or not 8 <= side <= 4096:
                raise _error(f"size must be whole pixels in [8, 4096]; got {size!r:.40}.",
                             f"size 必须是 [8, 4096] 之间的整数像素，收到的是 {size!r:.40}。")
        self.size: tuple[int, int] = (int(sides[0]), int(sides[1]))  # (height, width)
        self._seeds = _new_seeds(seed)
        K = _kornia()
        crop = self.config.crop_scale
        first = (K.RandomResizedCrop(self.size, scale=tuple(crop), p=1.0) if crop is not None
                 else K.Resize(self.size))
        # the crop already resizes; the geometric ops' own crop is left out
        geometric = _geometric_ops(dataclasses.replace(self.config, crop_scale=None), self.size)
        self.sequence = K.AugmentationSequential(first, *geometric, *_photometric_ops(self.config),
                                                 data_keys=["input"])

    def __repr__(self) -> str:
        return f"ClassificationAugment(size={self.size}, {self.config})"

    def tensor(self, batch: Any, *, seed: int | None = None) -> Any:
        """Augment a float batch (B, 3, H, W) in [0, 1]; returns (B, 3, *size)."""
        import torch

        if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or batch.shape[1] != 3:
            raise _error("tensor() takes a float batch of shape (B, 3, H, W).",
                         "tensor() 需要形状为 (B, 3, H, W) 的浮点批次。")
        call_seed = self._seeds.getrandbits(63) if seed is None else int(seed)
        return _run_seeded(call_seed, self.sequence, batch.float())

    def __call__(self, image: ImageInput | Sequence[ImageInput], *, seed: int | None = None) -> Any:
        batched = isinstance(image, (list, tuple))
        pictures = [load_image(item) for item in (image if batched else [image])]
        call_seed = self._seeds.getrandbits(63) if seed is None else int(seed)
        outputs = [_to_pil(self.tensor(_to_tensor(p), seed=derive_seed(call_seed, i)))
                   for i, p in enumerate(pictures)]
        return outputs if batched else outputs[0]


# ---- the preview ---------------------------------------------------------------------------------------------------
_PALETTE = ((230, 60, 60), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


def draw_annotations(image: Any, boxes: Sequence[Sequence[float]] = (), labels: Sequence[Any] = (),
                     masks: Sequence[np.ndarray] = (), box_format: BoxFormat = "xyxy", scale: float = 1.0) -> Any:
    """A copy of ``image`` (resized by ``scale``) with masks tinted and boxes outlined, one colour per object."""
    from PIL import Image, ImageDraw

    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    smooth = Image.BILINEAR if scale < 1 else Image.NEAREST  # small images blown up stay crisp
    canvas = image.convert("RGB").resize(size, smooth)
    for index, mask in enumerate(masks):
        colour = Image.new("RGB", size, _PALETTE[index % len(_PALETTE)])
        alpha = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 110, mode="L").resize(size, Image.NEAREST)
        canvas = Image.composite(colour, canvas, alpha)
    draw = ImageDraw.Draw(canvas)
    for index, box in enumerate(boxes):
        x0, y0, x1, y1 = (v * scale for v in to_xyxy(box, box_format))
        colour = _PALETTE[index % len(_PALETTE)]
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=colour, width=2)
        if index < len(labels):
            draw.text((x0 + 3, y0 + 2), str(labels[index]), fill=colour)
    return canvas


def preview_grid(
    image: ImageInput,
    out: str | Path,
    *,
    augment: str | AugmentConfig | Augment | ClassificationAugment = "default",
    boxes: Sequence[Sequence[float]] | None = None,
    masks: Sequence[np.ndarray] | np.ndarray | None = None,
    labels: Sequence[Any] | None = None,
    box_format: BoxFormat = "xyxy",
    boxes_from_masks: bool = False,
    count: int = 7,
    columns: int = 4,
    cell: int = 192,
    seed: int = 0,
) -> Path:
    """Write a PNG grid: the original (top left) and ``count`` augmented copies, with boxes and masks drawn.

    Returns the PNG's path. Look at it before training: boxes should sit on their objects in every cell.
    """
    from PIL import Image, ImageDraw

    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 63:
        raise _error(f"count must be a whole number in [1, 63]; got {count!r:.20}.",
                     f"count 必须是 [1, 63] 之间的整数，收到的是 {count!r:.20}。")
    if isinstance(columns, bool) or not isinstance(columns, int) or not 1 <= columns <= 16 or not 32 <= cell <= 1024:
        raise _error("columns must lie in [1, 16] and cell in [32, 1024] pixels.",
                     "columns 应在 [1, 16] 之内，cell 应在 [32, 1024] 像素之内。")
    picture = load_image(image)
    # each cell: (image, boxes, labels, masks, box format, title)
    cells: list[tuple[Any, Sequence[Any], Sequence[Any], Sequence[np.ndarray], BoxFormat, str]] = []
    if isinstance(augment, ClassificationAugment):
        if boxes is not None or masks is not None:
            raise _error("a ClassificationAugment moves no boxes or masks; use Augment for annotated images.",
                         "ClassificationAugment 不会移动框和掩码；带标注的图像请用 Augment。")
        cells.append((picture, (), (), (), "xyxy", "original"))
        cells += [(augment(picture, seed=derive_seed(seed, i)), (), (), (), "xyxy", f"seed {seed}/{i}")
                  for i in range(count)]
    else:
        augmenter = augment if isinstance(augment, Augment) else Augment(augment)
        original_boxes = _check_boxes(boxes, box_format, picture.size) if boxes is not None else []
        original_masks = _check_masks(masks, picture.size) if masks is not None else []
        cells.append((picture, original_boxes, list(labels or []), original_masks, "xyxy", "original"))
        for i in range(count):
            sample = augmenter(picture, boxes=boxes, masks=masks, labels=labels, box_format=box_format,
                               boxes_from_masks=boxes_from_masks, seed=derive_seed(seed, i))
            title = f"seed {seed}/{i}" + (f", boxes {len(sample.boxes)}" if boxes is not None else "")
            cells.append((sample.image, sample.boxes, sample.labels, sample.masks, box_format, title))
    rows = math.ceil(len(cells) / columns)
    title_height = 14
    grid = Image.new("RGB", (columns * cell, rows * (cell + title_height)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for index, (cell_image, cell_boxes, cell_labels, cell_masks, cell_format, title) in enumerate(cells):
        scale = (cell - 4) / max(cell_image.width, cell_image.height)
        thumb = draw_annotations(cell_image, cell_boxes, cell_labels, cell_masks, cell_format, scale)
        x, y = (index % columns) * cell, (index // columns) * (cell + title_height)
        grid.paste(thumb, (x + (cell - thumb.width) // 2, y + title_height + (cell - thumb.height) // 2))
        draw.text((x + 4, y + 1), title, fill=(0, 0, 0))
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out_path, format="PNG")
    return out_path


# ---- whole datasets ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentDatasetResult:
    """What :func:`augment_dataset` wrote. ``manifest`` is ``manifest.csv`` (classification, segmentation) or
    ``annotations.json`` (COCO detection); it lists the new files (relative paths) and, with
    ``include_originals``, the source images (absolute paths, never copied or changed)."""

    kind: str
    out_dir: str
    manifest: str
    written: int
    originals: int
    copies: int
    seed: int
    dropped_boxes: int = 0
    preview: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_out(out: str | Path, source: Path) -> Path:
    folder = Path(out).expanduser()
    resolved, source_resolved = folder.resolve(), source.expanduser().resolve()
    source_dir = source_resolved if source_resolved.is_dir() else source_resolved.parent
    if source_resolved.is_dir() and (resolved == source_dir or resolved.is_relative_to(source_dir)):
        raise _error(f"the output folder '{folder}' lies inside the source '{source}'; write it elsewhere so the "
                     "source stays as it was.",
                     f"输出目录 '{folder}' 位于源数据 '{source}' 之内；请写到别处，以免改动源数据。")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise _error(f"'{folder}' is not an empty folder; augmented data is written to a new or empty folder only.",
                     f"'{folder}' 不是空目录；增强数据只写入新目录或空目录。")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _check_copies(copies: Any) -> int:
    if isinstance(copies, bool) or not isinstance(copies, int) or not 1 <= copies <= 100:
        raise _error(f"copies must be a whole number in [1, 100]; got {copies!r:.20}.",
                     f"copies 必须是 [1, 100] 之间的整数，收到的是 {copies!r:.20}。")
    return copies


def _read_mask_file(path: str, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as mask:
            array = np.asarray(mask.convert("L"))
    except (UnidentifiedImageError, OSError) as exc:
        raise _error(f"the mask '{path}' cannot be read ({exc}).", f"无法读取掩码 '{path}'（{exc}）。") from exc
    if array.shape != (size[1], size[0]):
        raise _error(f"the mask '{Path(path).name}' is {array.shape[1]}x{array.shape[0]} px, its image "
                     f"{size[0]}x{size[1]} px; a mask must match its image.",
                     f"掩码 '{Path(path).name}' 为 {array.shape[1]}x{array.shape[0]} 像素，而图像为 "
                     f"{size[0]}x{size[1]} 像素；掩码必须与图像同尺寸。")
    return array


def _kind_of(source: Path) -> str:
    from lmt.train.data import read_table

    if source.is_dir():
        return "classification"
    if source.suffix.lower() == ".json":
        return "detection"
    if source.suffix.lower() in (".csv", ".jsonl"):
        return "segmentation" if "mask" in read_table(source)[0] else "classification"
    raise _error(f"'{source}' is not a folder, a .csv/.jsonl manifest or a COCO .json file.",
                 f"'{source}' 既不是目录，也不是 .csv/.jsonl 清单或 COCO .json 文件。")


def _write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _augment_records(source: Path, out: Path, kind: str, augmenter: Augment, copies: int, seed: int,
                     include_originals: bool) -> tuple[list[dict[str, Any]], int, tuple[Any, dict[str, Any]]]:
    """Classification and segmentation: new images (and masks) plus manifest rows; returns the first sample."""
    from PIL import Image
    from tqdm.auto import tqdm

    from lmt.train.data import read_records, read_table

    columns = {"image": "image", "label": "label"}
    if kind == "segmentation":
        header = read_table(source)[0]
        columns = {"image": "image", "mask": "mask", **({"label": "label"} if "label" in header else {})}
    records = read_records(source, columns)
    (out / "images").mkdir()
    if kind == "segmentation":
        (out / "masks").mkdir()
    rows: list[dict[str, Any]] = []
    first: tuple[Any, dict[str, Any]] | None = None
    for index, record in enumerate(tqdm(records, desc="augment", unit="image", leave=False)):
        picture = load_image(record["image"])
        mask = _read_mask_file(record["mask"], picture.size) if kind == "segmentation" else None
        if first is None:
            first = (picture, {"masks": [mask]} if mask is not None else {})
        source_path = str(Path(record["image"]).resolve())
        extra = {k: v for k, v in record.items() if k not in ("image", "mask")}
        if include_originals:
            original = {"image": source_path, **extra, "source": source_path, "copy": "", "seed": ""}
            if mask is not None:
                original = {"image": source_path, "mask": str(Path(record["mask"]).resolve()), **original}
            rows.append(original)
        for copy in range(copies):
            call_seed = derive_seed(seed, index, copy)
            sample = augmenter(picture, masks=[mask] if mask is not None else None, seed=call_seed)
            name = f"images/{index:05d}_{copy}.png"
            sample.image.save(out / name)
            row = {"image": name, **extra, "source": source_path, "copy": copy, "seed": call_seed}
            if mask is not None:
                mask_name = f"masks/{index:05d}_{copy}.png"
                Image.fromarray(sample.masks[0].astype(np.uint8), mode="L").save(out / mask_name)
                row = {"image": name, "mask": mask_name, **row}
            rows.append(row)
    return rows, len(records), first  # type: ignore[return-value]


def _coco_mask(annotation: Mapping[str, Any], height: int, width: int) -> np.ndarray | None:
    """An annotation's segmentation (polygons or RLE) as a bool mask, or None when it has none."""
    segmentation = annotation.get("segmentation")
    if not segmentation:
        return None
    try:
        from pycocotools import mask as mask_utils
    except ImportError as exc:
        raise missing_dependency("pycocotools", "data", "COCO segmentation masks", "COCO 分割掩码") from exc
    if isinstance(segmentation, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def _coco_rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _read_coco(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _error(f"'{path.name}' is not a readable JSON file ({exc}).",
                     f"'{path.name}' 不是可读取的 JSON 文件（{exc}）。") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise _error(f"'{path.name}' is not COCO: it needs 'images' and 'annotations' lists.",
                     f"'{path.name}' 不是 COCO 格式：需要 'images' 和 'annotations' 列表。")
    return data


def _augment_coco(source: Path, out: Path, augmenter: Augment, copies: int, seed: int, include_originals: bool,
                  image_root: Path | None) -> tuple[dict[str, Any], int, int, tuple[Any, dict[str, Any]]]:
    """COCO detection (boxes, optional segmentation): new images plus a new annotations file."""
    from tqdm.auto import tqdm

    data = _read_coco(source)
    root = image_root or source.parent
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for annotation in data["annotations"]:
        by_image.setdefault(annotation.get("image_id"), []).append(annotation)
    (out / "images").mkdir()
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    dropped = 0
    first: tuple[Any, dict[str, Any]] | None = None

    def add(file_name: str, size: tuple[int, int], anns: list[dict[str, Any]]) -> None:
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": file_name, "width": size[0], "height": size[1]})
        for ann in anns:
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": image_id})

    for index, entry in enumerate(tqdm(data["images"], desc="augment", unit="image", leave=False)):
        file = Path(str(entry.get("file_name", "")))
        file = file if file.is_absolute() else root / file
        picture = load_image(file)
        anns = by_image.get(entry.get("id"), [])
        masks = [_coco_mask(a, picture.height, picture.width) for a in anns]
        paired = bool(anns) and all(m is not None for m in masks)
        # with segmentations, boxes are re-measured from the moved masks: COCO's bbox is the mask's tight box
        arguments = {"boxes": [a.get("bbox") for a in anns], "labels": [a.get("category_id") for a in anns],
                     "masks": masks if paired else None, "box_format": "xywh", "boxes_from_masks": paired}
        if first is None:
            first = (picture, arguments)
        if include_originals:
            add(str(file.resolve()), picture.size, [{k: v for k, v in a.items() if k not in ("id", "image_id")}
                                                     for a in anns])
        for copy in range(copies):
            try:
                sample = augmenter(picture, seed=derive_seed(seed, index, copy), **arguments)
            except InvalidInputError as exc:
                raise _error(f"image '{entry.get('file_name')}' (COCO id {entry.get('id')}): {exc.message}",
                             f"图像 '{entry.get('file_name')}'（COCO id {entry.get('id')}）：{exc.message_zh}") from exc
            name = f"images/{index:05d}_{copy}.png"
            sample.image.save(out / name)
            dropped += len(anns) - len(sample.kept)
            new_anns = []
            for position, (box, kept) in enumerate(zip(sample.boxes, sample.kept, strict=True)):
                ann = {"category_id": anns[kept].get("category_id"), "bbox": [round(v, 2) for v in box],
                       "area": round(box[2] * box[3], 2), "iscrowd": anns[kept].get("iscrowd", 0)}
                if paired:
                    ann["segmentation"] = _coco_rle(sample.masks[position])
                    ann["area"] = float(sample.masks[position].sum())
                new_anns.append(ann)
            add(name, sample.size, new_anns)
    info = {**data.get("info", {}), "description": f"augmented from {source.name} by lmt.data.augment"}
    result = {"info": info, "images": images, "annotations": annotations, "categories": data.get("categories", [])}
    return result, len(data["images"]), dropped, first  # type: ignore[return-value]


def augment_dataset(
    source: str | Path,
    out: str | Path,
    *,
    augment: str | AugmentConfig = "default",
    copies: int = 2,
    seed: int = 0,
    include_originals: bool = True,
    image_root: str | Path | None = None,
    preview: bool = True,
    **overrides: Any,
) -> AugmentDatasetResult:
    """Write ``copies`` augmented versions of every image of ``source`` into ``out`` (a new or empty folder).

    ``source`` is an ImageFolder tree or a .csv/.jsonl manifest (image, label: classification; with a mask
    column: segmentation, the mask moved with its image) or a COCO .json file (boxes, and segmentations when
    every annotation of an image has one: then each box is re-measured from its moved mask; images relative to
    the file or to ``image_root``). Copy ``k`` of image ``i`` uses the seed
    ``derive_seed(seed, i, k)``, so a rerun writes the same files. ``overrides`` replace preset parameters.
    """
    source_path = Path(source).expanduser()
    if not source_path.exists():
        raise _error(f"the source '{source}' does not exist.", f"源数据 '{source}' 不存在。")
    copies = _check_copies(copies)
    config = augment_config(augment, **overrides)
    kind = _kind_of(source_path)
    folder = _check_out(out, source_path)
    augmenter = Augment(config, seed=seed)
    dropped = 0
    try:
        if kind == "detection":
            coco, originals, dropped, first = _augment_coco(
                source_path, folder, augmenter, copies, seed, include_originals,
                Path(image_root).expanduser() if image_root else None,
            )
            manifest = folder / "annotations.json"
            manifest.write_text(json.dumps(coco, ensure_ascii=False), encoding="utf-8")
        else:
            rows, originals, first = _augment_records(source_path, folder, kind, augmenter, copies, seed,
                                                      include_originals)
            manifest = folder / "manifest.csv"
            _write_manifest(manifest, rows)
    except BaseException:
        # the folder was new or empty: leave it so, or a rerun after the fix would find it "not empty"
        for child in list(folder.iterdir()):
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
        raise
    preview_path = None
    if preview and first is not None:
        picture, arguments = first
        preview_path = str(preview_grid(picture, folder / "preview.png", augment=augmenter, seed=seed, **arguments))
    logger.info("augmented %d %s images x %d copies into %s", originals, kind, copies, folder)
    return AugmentDatasetResult(
        kind=kind, out_dir=str(folder), manifest=str(manifest), written=originals * copies, originals=originals,
        copies=copies, seed=seed, dropped_boxes=dropped, preview=preview_path, config=config.to_dict(),
    )

