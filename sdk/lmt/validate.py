"""Argument checks shared by every task call. Each raises :class:`InvalidInputError` with the fix in it."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from lmt.errors import InvalidInputError

MAX_LABELS = 1000
MAX_LABEL_CHARS = 200
MAX_TEXT_CHARS = 2000


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def split_labels(labels: str | Sequence[str]) -> list[str]:
    """``"cat, dog\\ncar"`` or ``["cat", "dog"]`` -> ``["cat", "dog", "car"]`` (stripped, empties dropped)."""
    if isinstance(labels, str):
        items = re.split(r"[,\n，、]", labels)
    elif isinstance(labels, Sequence):
        items = list(labels)
    else:
        raise InvalidInputError(
            f"Labels must be a list of strings or one comma-separated string, not {type(labels).__name__}.",
            f"标签必须是字符串列表或以逗号分隔的字符串，而不是 {type(labels).__name__}。",
        )
    cleaned = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidInputError(
                f"Every label must be a string; got {type(item).__name__} ({item!r:.40}).",
                f"每个标签都必须是字符串，收到的是 {type(item).__name__}。",
            )
        if item.strip():
            cleaned.append(item.strip())
    return cleaned


def check_labels(labels: str | Sequence[str], *, what: str = "label", max_count: int = MAX_LABELS) -> list[str]:
    """Labels (or detection queries) as a clean list: 1..max_count unique, non-empty, not too long."""
    cleaned = split_labels(labels)
    if not cleaned:
        raise InvalidInputError(
            f"No {what}s given. Pass at least one {what}, e.g. ['cat', 'dog'] or 'cat, dog'.",
            f"没有提供{'标签' if what == 'label' else '查询词'}。请至少提供一个，例如 'cat, dog'。",
        )
    if len(cleaned) > max_count:
        raise InvalidInputError(
            f"{len(cleaned)} {what}s given; at most {max_count} are allowed per call. Split them into several calls.",
            f"提供了 {len(cleaned)} 个{'标签' if what == 'label' else '查询词'}，每次最多 {max_count} 个，请分批调用。",
        )
    too_long = [item for item in cleaned if len(item) > MAX_LABEL_CHARS]
    if too_long:
        raise InvalidInputError(
            f"A {what} is {len(too_long[0])} characters long; the limit is {MAX_LABEL_CHARS}. Shorten it.",
            f"有一项长达 {len(too_long[0])} 个字符，上限为 {MAX_LABEL_CHARS}，请缩短。",
        )
    seen: set[str] = set()
    duplicates = [item for item in cleaned if item in seen or seen.add(item)]
    if duplicates:
        raise InvalidInputError(
            f"Duplicate {what}s: {', '.join(sorted(set(duplicates)))}. Give each {what} once.",
            f"存在重复项：{', '.join(sorted(set(duplicates)))}，每项只需给出一次。",
        )
    return cleaned


def check_template(template: str) -> str:
    if not isinstance(template, str) or template.count("{}") != 1:
        raise InvalidInputError(
            f"The prompt template must contain '{{}}' exactly once, e.g. 'a photo of a {{}}.'; got {template!r:.80}.",
            "提示模板必须恰好包含一个 '{}'，例如 'a photo of a {}.'。",
        )
    if len(template) > MAX_LABEL_CHARS:
        raise InvalidInputError(
            f"The prompt template is longer than {MAX_LABEL_CHARS} characters. Shorten it.",
            f"提示模板超过 {MAX_LABEL_CHARS} 个字符，请缩短。",
        )
    return template


def check_probability(value: Any, name: str) -> float:
    """A threshold in [0, 1]; NaN, infinities, strings and negatives are refused."""
    if not _is_number(value) or math.isnan(value) or not 0.0 <= value <= 1.0:
        raise InvalidInputError(
            f"{name} must be a number between 0 and 1; got {value!r:.40}.",
            f"{name} 必须是 0 到 1 之间的数，收到的是 {value!r:.40}。",
        )
    return float(value)


def check_positive_int(value: Any, name: str, *, maximum: int | None = None, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not _is_number(value) or isinstance(value, float) and (math.isnan(value) or value != int(value)):
        raise InvalidInputError(
            f"{name} must be a whole number; got {value!r:.40}.", f"{name} 必须是整数，收到的是 {value!r:.40}。"
        )
    value = int(value)
    if value < 1 or (maximum is not None and value > maximum):
        limit = f" and at most {maximum}" if maximum is not None else ""
        raise InvalidInputError(
            f"{name} must be at least 1{limit}; got {value}.",
            f"{name} 必须不小于 1{f'且不大于 {maximum}' if maximum is not None else ''}，收到的是 {value}。",
        )
    return value


def check_float_range(value: Any, name: str, low: float, high: float) -> float:
    if not _is_number(value) or math.isnan(value) or not low <= value <= high:
        raise InvalidInputError(
            f"{name} must be a number between {low} and {high}; got {value!r:.40}.",
            f"{name} 必须是 {low} 到 {high} 之间的数，收到的是 {value!r:.40}。",
        )
    return float(value)


def check_text(text: Any, name: str, *, allow_empty: bool = False, max_chars: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(text, str):
        raise InvalidInputError(
            f"{name} must be text; got {type(text).__name__}.", f"{name} 必须是文本，收到的是 {type(text).__name__}。"
        )
    text = text.strip()
    if not text and not allow_empty:
        raise InvalidInputError(f"{name} is empty. Type some text.", f"{name} 为空，请输入文本。")
    if len(text) > max_chars:
        raise InvalidInputError(
            f"{name} is {len(text)} characters long; the limit is {max_chars}. Shorten it.",
            f"{name} 长达 {len(text)} 个字符，上限为 {max_chars}，请缩短。",
        )
    return text


def check_points(points: Any, image_size: tuple[int, int]) -> list[tuple[float, float, int]]:
    """Points as ``(x, y, label)`` with label 1 (include) or 0 (exclude), inside the image (width, height)."""
    width, height = image_size
    if not isinstance(points, Sequence) or isinstance(points, str) or not points:
        raise InvalidInputError(
            "points must be a non-empty list of (x, y, label) with label 1 (include) or 0 (exclude).",
            "points 必须是非空的 (x, y, label) 列表，label 为 1（前景）或 0（背景）。",
        )
    checked = []
    for index, point in enumerate(points):
        if not isinstance(point, Sequence) or len(point) not in (2, 3) or not all(_is_number(v) for v in point):
            raise InvalidInputError(
                f"Point #{index} is {point!r:.60}; write each point as (x, y) or (x, y, label).",
                f"第 {index} 个点 {point!r:.60} 格式不对，应为 (x, y) 或 (x, y, label)。",
            )
        x, y = float(point[0]), float(point[1])
        label = point[2] if len(point) == 3 else 1
        if not all(math.isfinite(v) for v in (x, y)) or not (0 <= x <= width and 0 <= y <= height):
            raise InvalidInputError(
                f"Point #{index} ({x:g}, {y:g}) lies outside the {width}x{height} image. "
                "Coordinates are pixels from the top-left corner.",
                f"第 {index} 个点 ({x:g}, {y:g}) 超出了 {width}x{height} 的图像范围（坐标以左上角为原点，单位为像素）。",
            )
        if label not in (0, 1) or isinstance(label, bool):
            raise InvalidInputError(
                f"Point #{index} has label {point[2]!r}; use 1 to include the spot, 0 to exclude it.",
                f"第 {index} 个点的标签为 {point[2]!r}，请用 1 表示前景、0 表示背景。",
            )
        checked.append((x, y, int(label)))
    return checked


def check_boxes(boxes: Any, image_size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
    """Boxes as ``(x0, y0, x1, y1)`` pixels with x0 < x1, y0 < y1, inside the image (width, height)."""
    width, height = image_size
    if not isinstance(boxes, Sequence) or isinstance(boxes, str) or not boxes:
        raise InvalidInputError(
            "boxes must be a non-empty list of (x0, y0, x1, y1) in pixels.",
            "boxes 必须是非空的 (x0, y0, x1, y1) 像素坐标列表。",
        )
    checked = []
    for index, box in enumerate(boxes):
        if not isinstance(box, Sequence) or len(box) != 4 or not all(_is_number(v) for v in box):
            raise InvalidInputError(
                f"Box #{index} is {box!r:.60}; write each box as (x0, y0, x1, y1).",
                f"第 {index} 个框 {box!r:.60} 格式不对，应为 (x0, y0, x1, y1)。",
            )
        x0, y0, x1, y1 = (float(v) for v in box)
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or not (
            0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        ):
            raise InvalidInputError(
                f"Box #{index} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is empty or outside the {width}x{height} image. "
                "Use x0 < x1 and y0 < y1, in pixels within the image.",
                f"第 {index} 个框 ({x0:g}, {y0:g}, {x1:g}, {y1:g}) 为空或超出 {width}x{height} 图像，需满足 x0<x1、y0<y1。",
            )
        checked.append((x0, y0, x1, y1))
    return checked
