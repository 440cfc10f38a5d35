"""Intelligent traffic: vehicle counts in zones, scene questions, and rule-based violations over tracked
detections.

Everything here is geometry and bookkeeping over the SDK's task calls; the models only find boxes and answer
questions. A detector is anything called like :class:`lmt.ZeroShotObjectDetection`
(``detector(image, queries=[...], threshold=...) -> Detections``), so the same code runs with OWLv2 and with a
ground-truth stand-in in the tests.

- Each detection is reduced to one *reference point*: the bottom centre of its box by default (where a vehicle
  touches the road, which is what zones painted on the road mean), or the box centre (``anchor="center"``).
  A detection is in a zone when its reference point lies inside the zone's polygon (edges count as inside).
- Tracks come from a Hungarian matcher on box overlap (IoU), with a centroid-distance fallback for vehicles
  that moved further than their overlap between sampled frames. Boxes of different labels are never matched.
- A track crosses a line when its reference point moves from one side of the line *segment* to the other.
  The direction is the screen direction of the crossing (``"right"``, ``"left"``, ``"down"``, ``"up"``): for a
  line drawn from top to bottom the two directions are ``"right"`` and ``"left"``. Each track counts once per
  line.

>>> from lmt.apps import traffic
>>> zones = traffic.parse_zones('[{"name": "lane", "points": [[0, 200], [480, 200], [480, 320], [0, 320]]}]')
>>> counts = traffic.count_vehicles("street.png", zones=zones, weights="tiny")  # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import logging
import math
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from lmt.errors import InvalidImageError, InvalidInputError
from lmt.images import ImageInput, load_image
from lmt.results import Box, Detection, Detections, GeneratedText
from lmt.validate import check_float_range, check_labels, check_positive_int, check_probability, check_text

logger = logging.getLogger(__name__)

Point = tuple[float, float]
Detector = Callable[..., Detections]
TextGenerator = Callable[..., GeneratedText]

#: What OWLv2 is asked to find by default (English: the model's text tower was trained on English).
VEHICLE_QUERIES = ("car", "bus", "truck", "motorcycle", "bicycle", "person")
#: Labels the violation rules never apply to, unless ``vehicle_labels`` says otherwise.
NOT_VEHICLES = frozenset({"person", "pedestrian"})
ANCHORS = ("bottom_center", "center")
DIRECTIONS = ("right", "left", "down", "up")
SIGNAL_STATES = ("red", "yellow", "green")
DEFAULT_DETECTOR = "owlv2-b16"
DEFAULT_SCENE_MODEL = "blip2-opt-2.7b"

#: The questions asked about a scene; BLIP-2 answers them in English, and we report its words as they are.
SCENE_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("weather", "What is the weather like?"),
    ("congestion", "Is the traffic congested?"),
    ("incident", "Is there a traffic accident?"),
)

MAX_QUERIES = 20
MAX_ZONES = 20
MAX_ZONE_POINTS = 100
MAX_NAME_CHARS = 100
MAX_JSON_CHARS = 100_000
MAX_FRAMES = 300  # sampled frames analysed per video
MAX_SOURCE_FRAMES = 5000  # frames decoded from one animated file
MAX_FRAME_PIXELS = 4_000_000  # per frame: a video decodes many of them
MAX_VIDEO_BYTES = 200 * 1024 * 1024
MAX_FPS = 30.0
DEFAULT_GIF_FRAME_MS = 100  # browsers show a frame with no (or zero) duration for about 100 ms


# ---- geometry ----------------------------------------------------------------------------------------------
def anchor_point(box: Box, anchor: str = "bottom_center") -> Point:
    """The reference point of a box: its bottom centre (default) or its centre."""
    x0, y0, x1, y1 = box
    if anchor == "center":
        return ((x0 + x1) / 2, (y0 + y1) / 2)
    return ((x0 + x1) / 2, y1)


def _cross(origin: Point, a: Point, b: Point) -> float:
    """z of (a - origin) x (b - origin); > 0 when b is clockwise from a on screen (y points down)."""
    return (a[0] - origin[0]) * (b[1] - origin[1]) - (a[1] - origin[1]) * (b[0] - origin[0])


def _on_segment(point: Point, a: Point, b: Point) -> bool:
    length = math.hypot(b[0] - a[0], b[1] - a[1])
    if abs(_cross(a, b, point)) > 1e-9 * max(1.0, length):
        return False
    return min(a[0], b[0]) <= point[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= point[1] <= max(a[1], b[1])


def point_in_polygon(point: Point, polygon: Sequence[Point]) -> bool:
    """Even-odd ray casting. A point on an edge or a vertex counts as inside."""
    x, y = point
    inside = False
    for index, a in enumerate(polygon):
        b = polygon[(index + 1) % len(polygon)]
        if _on_segment(point, a, b):
            return True
        if (a[1] > y) != (b[1] > y):
            x_at_y = a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
            if x < x_at_y:
                inside = not inside
    return inside


def box_iou(a: Box, b: Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0


@dataclass(frozen=True)
class Zone:
    """A named polygon in image pixels (x right, y down)."""

    name: str
    points: tuple[Point, ...]

    def contains(self, point: Point) -> bool:
        return point_in_polygon(point, self.points)

    def mask(self, image_size: tuple[int, int]) -> np.ndarray:
        """The zone as a boolean (H, W) mask, e.g. to draw it."""
        canvas = Image.new("1", image_size, 0)
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in self.points], fill=1, outline=1)
        return np.asarray(canvas, dtype=bool)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "points": [list(p) for p in self.points]}


@dataclass(frozen=True)
class Line:
    """A line segment from ``start`` to ``end`` in image pixels, e.g. a counting line or a stop line."""

    start: Point
    end: Point
    name: str = "line"

    def side(self, point: Point) -> int:
        """+1 or -1 for the two sides of the line, 0 on it."""
        value = _cross(self.start, self.end, point)
        length = math.hypot(self.end[0] - self.start[0], self.end[1] - self.start[1])
        if abs(value) <= 1e-9 * max(1.0, length):
            return 0
        return 1 if value > 0 else -1

    def crosses(self, before: Point, after: Point) -> bool:
        """Whether the move ``before -> after`` goes from one side to the other through the segment itself."""
        if self.side(before) * self.side(after) >= 0:
            return False
        return _cross(before, after, self.start) * _cross(before, after, self.end) <= 0

    def direction(self, to_side: int) -> str:
        """The screen direction ("right", "left", "down", "up") of a crossing onto side ``to_side``."""
        nx, ny = -(self.end[1] - self.start[1]), self.end[0] - self.start[0]  # points to side +1
        nx, ny = nx * to_side, ny * to_side
        if abs(nx) >= abs(ny):
            return "right" if nx > 0 else "left"
        return "down" if ny > 0 else "up"

    def directions(self) -> tuple[str, str]:
        """The two directions a track can cross this line in."""
        return self.direction(1), self.direction(-1)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "start": list(self.start), "end": list(self.end)}


# ---- parsing user input (JSON text or Python values) -------------------------------------------------------
def _json_value(value: Any, name: str) -> Any:
    """``value`` itself, or parsed from JSON when it is text; None for empty text."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return None
    if len(text) > MAX_JSON_CHARS:
        raise InvalidInputError(
            f"{name} is {len(text)} characters long; the limit is {MAX_JSON_CHARS}.",
            f"{name} 长达 {len(text)} 个字符，上限为 {MAX_JSON_CHARS}。",
        )
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        where = f" (line {err.lineno}, column {err.colno})" if isinstance(err, json.JSONDecodeError) else ""
        raise InvalidInputError(
            f"{name} is not valid JSON{where}. Write it like the example in the documentation.",
            f"{name} 不是合法的 JSON{where}，请参照文档中的示例书写。",
        ) from None


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(
            f"{what} must be a finite number; got {value!r:.40}.", f"{what} 必须是有限的数，收到的是 {value!r:.40}。"
        )
    return float(value)


def _point(value: Any, what: str) -> Point:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise InvalidInputError(
            f"{what} must be a pair [x, y]; got {value!r:.60}.",
            f"{what} 必须是 [x, y] 形式的坐标，收到的是 {value!r:.60}。",
        )
    return (_number(value[0], what), _number(value[1], what))


def _zone_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError('Each zone needs a non-empty "name".', '每个区域都需要非空的 "name"。')
    name = value.strip()
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInputError(
            f"The zone name '{name[:40]}...' is longer than {MAX_NAME_CHARS} characters.",
            f"区域名称 '{name[:40]}...' 超过 {MAX_NAME_CHARS} 个字符。",
        )
    return name


def _polygon_area(points: Sequence[Point]) -> float:
    return abs(sum(_cross((0.0, 0.0), a, points[(i + 1) % len(points)]) for i, a in enumerate(points))) / 2


def parse_points(value: Any, what: str = "points") -> list[Point]:
    """Points from JSON text or a list, ``[[x, y], [x, y], ...]`` (at most 100); empty input gives []."""
    data = _json_value(value, what)
    if data is None:
        return []
    if not isinstance(data, (list, tuple)) or len(data) > MAX_ZONE_POINTS:
        raise InvalidInputError(
            f"{what} must be a list of at most {MAX_ZONE_POINTS} points [[x, y], ...].",
            f"{what} 必须是最多 {MAX_ZONE_POINTS} 个点组成的列表 [[x, y], ...]。",
        )
    return [_point(item, f"a point of {what}") for item in data]


def parse_zones(value: Any) -> tuple[Zone, ...]:
    """Zones from JSON text or a list: ``[{"name": "lane 1", "points": [[x, y], [x, y], [x, y], ...]}, ...]``.

    Empty text or None gives no zones. Names must be unique; a polygon needs 3 to 100 points and a non-zero
    area.
    """
    data = _json_value(value, "zones")
    if data is None:
        return ()
    if not isinstance(data, (list, tuple)):
        raise InvalidInputError(
            'zones must be a list: [{"name": "lane 1", "points": [[x, y], [x, y], [x, y]]}].',
            'zones 必须是列表：[{"name": "lane 1", "points": [[x, y], [x, y], [x, y]]}]。',
        )
    if len(data) > MAX_ZONES:
        raise InvalidInputError(
            f"{len(data)} zones given; at most {MAX_ZONES} are allowed.",
            f"给出了 {len(data)} 个区域，最多 {MAX_ZONES} 个。",
        )
    zones: list[Zone] = []
    for index, item in enumerate(data):
        if isinstance(item, Zone):
            zones.append(item)
            continue
        if not isinstance(item, dict) or set(item) != {"name", "points"}:
            raise InvalidInputError(
                f'Zone #{index} must be an object with just the keys "name" and "points"; got {item!r:.60}',
                f'第 {index} 个区域必须是只含 "name" 和 "points" 两个键的对象，收到的是 {item!r:.80}。',
            )
        name = _zone_name(item["name"])
        raw = item["points"]
        if not isinstance(raw, list) or not 3 <= len(raw) <= MAX_ZONE_POINTS:
            raise InvalidInputError(
                f"Zone '{name}' needs a list of 3 to {MAX_ZONE_POINTS} points [x, y].",
                f"区域 '{name}' 需要 3 到 {MAX_ZONE_POINTS} 个 [x, y] 点。",
            )
        points = tuple(parse_points(raw, f"zone '{name}'"))
        if _polygon_area(points) <= 0:
            raise InvalidInputError(
                f"Zone '{name}' has no area (its points lie on one line). Give the corners of the region.",
                f"区域 '{name}' 的面积为零（所有点在一条直线上），请给出区域的各个顶点。",
            )
        zones.append(Zone(name, points))
    names = [zone.name for zone in zones]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInputError(
            f"Zone names must be unique; repeated: {', '.join(duplicates)}.",
            f"区域名称不能重复：{', '.join(duplicates)}。",
        )
    return tuple(zones)


def parse_line(value: Any, name: str = "line") -> Line | None:
    """A line from ``"x0,y0,x1,y1"``, ``[x0, y0, x1, y1]`` or ``[[x0, y0], [x1, y1]]``; None when empty."""
    if isinstance(value, Line):
        return value
    data = _json_value(value, name) if not _is_comma_text(value) else _comma_numbers(value, name)
    if data is None:
        return None
    if isinstance(data, (list, tuple)) and len(data) == 2:
        start, end = _point(data[0], f"{name} start"), _point(data[1], f"{name} end")
    elif isinstance(data, (list, tuple)) and len(data) == 4:
        x0, y0, x1, y1 = (_number(v, name) for v in data)
        start, end = (x0, y0), (x1, y1)
    else:
        raise InvalidInputError(
            f"{name} must be four numbers x0,y0,x1,y1 (the two ends, in pixels); got {value!r:.60}.",
            f"{name} 必须是四个数 x0,y0,x1,y1（两个端点的像素坐标），收到的是 {value!r:.60}。",
        )
    if start == end:
        raise InvalidInputError(
            f"The two ends of {name} are the same point; give two different points.",
            f"{name} 的两个端点相同，请给出两个不同的点。",
        )
    return Line(start, end, name)


def _is_comma_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip()) and not value.strip().startswith("[")


def _comma_numbers(text: str, name: str) -> list[float]:
    """``"10, 20, 300, 20"`` -> [10.0, 20.0, 300.0, 20.0]; anything else is a format error."""
    parts = text.split(",") if len(text) <= 200 else []
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) != 4:
        raise InvalidInputError(
            f"{name} must be four numbers x0,y0,x1,y1 (the two ends, in pixels); got {text!r:.60}.",
            f"{name} 必须是四个数 x0,y0,x1,y1（两个端点的像素坐标），收到的是 {text!r:.60}。",
        )
    return numbers


def check_fits(
    image_size: tuple[int, int], zones: Sequence[Zone] = (), lines: Sequence[Line | None] = ()
) -> None:
    """Refuse zones and lines that reach outside the image: coordinates meant for another resolution."""
    width, height = image_size
    shapes = [(f"zone '{z.name}'", z.points) for z in zones]
    shapes += [(line.name, (line.start, line.end)) for line in lines if line is not None]
    for what, points in shapes:
        for x, y in points:
            if not (0 <= x <= width and 0 <= y <= height):
                raise InvalidInputError(
                    f"The {what} has the point ({x:g}, {y:g}), outside the {width}x{height} image. "
                    "Coordinates are pixels from the top-left corner of this image.",
                    f"{what} 含有点 ({x:g}, {y:g})，超出了 {width}x{height} 的图像（坐标以该图像左上角为原点，单位为像素）。",
                )


@dataclass(frozen=True)
class SignalSchedule:
    """The signal phase declared by the user: ``intervals`` of (start_s, end_s, state), end excluded, or one
    state per sampled frame (``frame_states``). Times and frames not covered have no known state
    ("unknown")."""

    intervals: tuple[tuple[float, float, str], ...] = ()
    frame_states: tuple[str, ...] = ()

    def state_at(self, frame_index: int, time_s: float) -> str:
        if self.frame_states:
            return self.frame_states[frame_index] if frame_index < len(self.frame_states) else "unknown"
        for start, end, state in self.intervals:
            if start <= time_s < end:
                return state
        return "unknown"

    def to_dict(self) -> dict[str, Any]:
        if self.frame_states:
            return {"frame_states": list(self.frame_states)}
        return {"intervals": [{"start": s, "end": e, "state": state} for s, e, state in self.intervals]}


def _state(value: Any, what: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in SIGNAL_STATES:
        raise InvalidInputError(
            f"{what} must be one of red, yellow, green; got {value!r:.40}.",
            f"{what} 必须是 red、yellow 或 green 之一，收到的是 {value!r:.40}。",
        )
    return value.strip().lower()


def parse_phases(value: Any) -> SignalSchedule | None:
    """A signal schedule from JSON text or a list; None for empty input.

    Either intervals in seconds of the video, ``[{"start": 0, "end": 2.5, "state": "red"}, ...]`` (end
    excluded, no overlaps), or one state per sampled frame, ``["red", "red", "green", ...]``.
    """
    if isinstance(value, SignalSchedule):
        return value
    data = _json_value(value, "phases")
    if data is None:
        return None
    if not isinstance(data, (list, tuple)) or not data:
        raise InvalidInputError(
            'phases must be a list: [{"start": 0, "end": 2.5, "state": "red"}, ...] or ["red", "green"].',
            'phases 必须是列表：[{"start": 0, "end": 2.5, "state": "red"}, ...] 或 ["red", "green", ...]。',
        )
    if len(data) > MAX_SOURCE_FRAMES:
        raise InvalidInputError(
            f"phases has {len(data)} entries; the limit is {MAX_SOURCE_FRAMES}.",
            f"phases 共 {len(data)} 项，上限为 {MAX_SOURCE_FRAMES}。",
        )
    if all(isinstance(item, str) for item in data):
        states = tuple(_state(item, f"phase of frame {i}") for i, item in enumerate(data))
        return SignalSchedule(frame_states=states)
    intervals = []
    for index, item in enumerate(data):
        if not isinstance(item, dict) or set(item) != {"start", "end", "state"}:
            raise InvalidInputError(
                f'Phase #{index} must be like {{"start": 0, "end": 2.5, "state": "red"}}; got {item!r:.50}',
                f'第 {index} 个相位必须形如 {{"start": 秒, "end": 秒, "state": "red"}}，收到的是 {item!r:.80}。',
            )
        start, end = _number(item["start"], "phase start"), _number(item["end"], "phase end")
        if not 0 <= start < end:
            raise InvalidInputError(
                f"Phase #{index} runs from {start:g} s to {end:g} s; use 0 <= start < end.",
                f"第 {index} 个相位从 {start:g} 秒到 {end:g} 秒，需满足 0 <= start < end。",
            )
        intervals.append((start, end, _state(item["state"], f"the state of phase #{index}")))
    intervals.sort()
    for (_, end, _), (start, _, _) in zip(intervals, intervals[1:], strict=False):
        if start < end:
            raise InvalidInputError(
                f"Signal phases overlap at {start:g} s; each moment can have one state.",
                f"信号相位在 {start:g} 秒处重叠，每个时刻只能有一种状态。",
            )
    return SignalSchedule(intervals=tuple(intervals))


def check_anchor(anchor: Any) -> str:
    if anchor not in ANCHORS:
        raise InvalidInputError(
            f"anchor must be 'bottom_center' or 'center'; got {anchor!r:.40}.",
            f"anchor 必须是 'bottom_center' 或 'center'，收到的是 {anchor!r:.40}。",
        )
    return anchor


def _check_direction(direction: Any) -> str | None:
    if direction is not None and direction not in DIRECTIONS:
        raise InvalidInputError(
            f"direction must be one of right, left, down, up (or None for both); got {direction!r:.40}.",
            f"direction 必须是 right、left、down、up 之一（None 表示两个方向都算），收到的是 {direction!r:.40}。",
        )
    return direction


# ---- counting on one image ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZoneCount:
    """How many detections of each label have their reference point inside one zone."""

    name: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "counts": dict(self.counts), "total": self.total}


@dataclass(frozen=True)
class TrafficCounts:
    """Counts per label on one image, and per zone; ``anchor`` says which point of a box decides its zone."""

    counts: dict[str, int]
    zones: tuple[ZoneCount, ...]
    detections: Detections
    anchor: str

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        width, height = self.detections.image_size
        return {
            "width": width,
            "height": height,
            "anchor": self.anchor,
            "counts": dict(self.counts),
            "total": self.total,
            "zones": [zone.to_dict() for zone in self.zones],
            "detections": [d.to_dict() for d in self.detections],
        }


def _label_counts(labels: Sequence[str], queries: Sequence[str]) -> dict[str, int]:
    """Counts in query order, zeros included; a label outside the queries is added after them."""
    counts = dict.fromkeys(queries, 0)
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return counts


def count_in_zones(
    detections: Detections,
    queries: Sequence[str],
    zones: Sequence[Zone] = (),
    *,
    anchor: str = "bottom_center",
) -> TrafficCounts:
    """Count ``detections`` per label, and per zone by their reference point."""
    anchor = check_anchor(anchor)
    points = [(d.label, anchor_point(d.box, anchor)) for d in detections]
    zone_counts = tuple(
        ZoneCount(zone.name, _label_counts([label for label, at in points if zone.contains(at)], queries))
        for zone in zones
    )
    counts = _label_counts([d.label for d in detections], queries)
    return TrafficCounts(counts, zone_counts, detections, anchor)


def _detector(detector: Detector | None, model: str, weights: str) -> Detector:
    if detector is not None:
        return detector
    from lmt.tasks import ZeroShotObjectDetection

    return ZeroShotObjectDetection(model, weights=weights)


def _check_queries(queries: str | Sequence[str]) -> list[str]:
    return check_labels(queries, what="query", max_count=MAX_QUERIES)


def count_vehicles(
    image: ImageInput,
    *,
    detector: Detector | None = None,
    queries: str | Sequence[str] = VEHICLE_QUERIES,
    zones: Any = (),
    threshold: float = 0.1,
    anchor: str = "bottom_center",
    model: str = DEFAULT_DETECTOR,
    weights: str = "real",
) -> TrafficCounts:
    """Detect road users on one image and count them per label and per zone.

    ``zones`` is what :func:`parse_zones` takes (JSON text or a list). ``detector`` defaults to
    ``lmt.ZeroShotObjectDetection(model, weights=weights)``.
    """
    queries = _check_queries(queries)
    zones = parse_zones(zones)
    threshold = check_probability(threshold, "threshold")
    anchor = check_anchor(anchor)
    picture = load_image(image)
    check_fits(picture.size, zones)
    detections = _detector(detector, model, weights)(picture, queries=queries, threshold=threshold)
    return count_in_zones(detections, queries, zones, anchor=anchor)


# ---- scene questions ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneAnswer:
    topic: str
    question: str
    answer: str

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "question": self.question, "answer": self.answer}


@dataclass(frozen=True)
class SceneReport:
    """A caption and the answers to fixed questions, exactly as the model wrote them. Nothing is inferred from
    them here: an answer "no" about an accident is the model's guess, not a check."""

    caption: str
    answers: tuple[SceneAnswer, ...]
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": "model output (image captioning and visual question answering), unverified",
            "source_zh": "模型输出（看图说话与视觉问答），未经核实",
            "model": self.model,
            "caption": self.caption,
            "answers": [answer.to_dict() for answer in self.answers],
        }


def _model_name(generator: Any) -> str | None:
    loaded = getattr(generator, "loaded", None)
    return getattr(loaded, "name", None)


def describe_scene(
    image: ImageInput,
    *,
    captioner: TextGenerator | None = None,
    answerer: TextGenerator | None = None,
    questions: Sequence[tuple[str, str]] = SCENE_QUESTIONS,
    max_new_tokens: int = 20,
    model: str = DEFAULT_SCENE_MODEL,
    weights: str = "real",
) -> SceneReport:
    """Caption a traffic scene and ask ``questions`` ((topic, question) pairs) about it with BLIP-2.

    ``captioner`` is called like :class:`lmt.ImageToText`, ``answerer`` like
    :class:`lmt.VisualQuestionAnswering`.
    """
    if not questions or len(questions) > MAX_QUERIES:
        raise InvalidInputError(
            f"Give 1 to {MAX_QUERIES} (topic, question) pairs.", f"请给出 1 到 {MAX_QUERIES} 个 (主题, 问题)。"
        )
    asked = [(check_text(topic, "topic", max_chars=MAX_NAME_CHARS), check_text(q, "question", max_chars=300))
             for topic, q in questions]
    max_new_tokens = check_positive_int(max_new_tokens, "max_new_tokens", maximum=64)
    picture = load_image(image)
    if captioner is None or answerer is None:
        from lmt.tasks import ImageToText, VisualQuestionAnswering

        captioner = captioner or ImageToText(model, weights=weights)
        answerer = answerer or VisualQuestionAnswering(model, weights=weights)
    caption = captioner(picture, max_new_tokens=max_new_tokens).text
    answers = tuple(
        SceneAnswer(topic, question, answerer(picture, question=question, max_new_tokens=max_new_tokens).text)
        for topic, question in asked
    )
    return SceneReport(caption, answers, _model_name(answerer))


# ---- video frames ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Frame:
    """One sampled frame: its position among the sampled frames, in the source, and its time in the video."""

    index: int
    source_index: int
    time_s: float
    image: Image.Image = field(repr=False)


def _check_fps(fps: Any, name: str) -> float:
    return check_float_range(fps, name, 0.01, MAX_FPS)


def _sample(starts: Sequence[float], duration: float, fps: float, max_frames: int) -> list[int]:
    """Source frame indices shown at t = 0, 1/fps, 2/fps ... < duration, each frame at most once."""
    chosen: list[int] = []
    step = 0
    while step / fps < duration and len(chosen) < max_frames:
        index = bisect.bisect_right(starts, step / fps + 1e-9) - 1
        if not chosen or index != chosen[-1]:
            chosen.append(index)
        step += 1
    return chosen


def _frame_pixels_error(size: tuple[int, int], name: str) -> InvalidImageError:
    width, height = size
    return InvalidImageError(
        f"'{name}' has {width}x{height} frames; a video may have at most {MAX_FRAME_PIXELS / 1e6:g} "
        "megapixels per frame. Downscale it first (e.g. to 1280x720).",
        f"'{name}' 的帧尺寸为 {width}x{height}，视频每帧最多 {MAX_FRAME_PIXELS / 1e6:g} 百万像素。请先缩小（例如到 1280x720）。",
    )


def _open_animation(path: str) -> Image.Image:
    name = os.path.basename(path)
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        raise InvalidImageError(
            f"Video file '{name}' does not exist or cannot be read. Check the path.",
            f"视频文件 '{name}' 不存在或无法读取，请检查路径。",
        ) from None
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        raise InvalidImageError(
            f"'{name}' is not a non-empty file. Pass a GIF, an animated PNG/WebP, or a list of image files.",
            f"'{name}' 不是非空文件。请传入 GIF、动画 PNG/WebP，或图像文件列表。",
        )
    if info.st_size > MAX_VIDEO_BYTES:
        raise InvalidImageError(
            f"'{name}' is larger than {MAX_VIDEO_BYTES // 2**20} MiB. Cut or downscale the clip first.",
            f"'{name}' 超过 {MAX_VIDEO_BYTES // (1024 * 1024)} MiB，请先剪短或缩小视频。",
        )
    try:
        opened = Image.open(path)  # reads the header only
    except Image.DecompressionBombError:
        raise InvalidImageError(
            f"'{name}' claims frames far above {MAX_FRAME_PIXELS / 1e6:g} megapixels. Downscale it first.",
            f"'{name}' 声称的帧尺寸远超 {MAX_FRAME_PIXELS / 1e6:g} 百万像素，请先缩小。",
        ) from None
    except (OSError, SyntaxError, ValueError):
        raise InvalidImageError(
            f"'{name}' cannot be read as an animation. Supported: GIF, animated PNG or WebP, or a list of "
            "image files. Convert other videos first, e.g. ffmpeg -i clip.mp4 -vf fps=2 frames/%04d.png",
            f"无法把 '{name}' 读取为动画。支持 GIF、动画 PNG/WebP 或图像文件列表。其他视频请先转换，例如 "
            "ffmpeg -i clip.mp4 -vf fps=2 frames/%04d.png",
        ) from None
    if opened.width * opened.height > MAX_FRAME_PIXELS:
        opened.close()
        raise _frame_pixels_error(opened.size, name)
    return opened


def _read_animation(path: str, fps: float, max_frames: int) -> list[Frame]:
    """Sample an animated image in one pass; a source frame starts at the sum of earlier durations."""
    name = os.path.basename(path)
    frames: list[Frame] = []
    step = 0  # the next sample is at step / fps seconds
    start = 0.0
    with _open_animation(path) as animation:
        total = getattr(animation, "n_frames", 1)
        if total > MAX_SOURCE_FRAMES:
            raise InvalidImageError(
                f"'{name}' has {total} frames; at most {MAX_SOURCE_FRAMES} are read. Cut the clip first.",
                f"'{name}' 共 {total} 帧，最多读取 {MAX_SOURCE_FRAMES} 帧，请先剪短。",
            )
        for source_index in range(total):
            if len(frames) >= max_frames:
                break
            try:
                animation.seek(source_index)
                duration_ms = animation.info.get("duration") or DEFAULT_GIF_FRAME_MS
                end = start + float(duration_ms) / 1000.0
                if step / fps < end - 1e-9:
                    picture = load_image(animation.convert("RGB"))
                    frames.append(Frame(len(frames), source_index, round(start, 6), picture))
                    while step / fps < end - 1e-9:
                        step += 1
            except (OSError, SyntaxError, ValueError, EOFError) as err:
                reason = str(err)[:100] or type(err).__name__
                raise InvalidImageError(
                    f"Frame {source_index} of '{name}' cannot be decoded ({reason}). Is the file truncated?",
                    f"'{name}' 的第 {source_index} 帧无法解码（{reason}），文件是否被截断？",
                ) from None
            start = end
    return frames


def read_frames(
    video: ImageInput | Sequence[ImageInput],
    *,
    fps: float = 2.0,
    sequence_fps: float | None = None,
    max_frames: int = MAX_FRAMES,
) -> list[Frame]:
    """Frames sampled at ``fps`` from a GIF / animated PNG or WebP (a path), or from a sequence of images.

    A sequence (list or tuple of paths, PIL images or arrays) was taken at ``sequence_fps`` frames per second
    (default: ``fps``, i.e. every image is used). Each sampled frame keeps the time at which it appears in the
    source; at most ``max_frames`` frames are returned. MP4 and other containers are not decoded here: convert
    them to frames first (``ffmpeg -i clip.mp4 -vf fps=2 frames/%04d.png``).
    """
    fps = _check_fps(fps, "fps")
    max_frames = check_positive_int(max_frames, "max_frames", maximum=MAX_SOURCE_FRAMES)
    if isinstance(video, (list, tuple)):
        if not video or len(video) > MAX_SOURCE_FRAMES:
            raise InvalidInputError(
                f"Give 1 to {MAX_SOURCE_FRAMES} frames; got {len(video)}.",
                f"请给出 1 到 {MAX_SOURCE_FRAMES} 帧，收到 {len(video)} 帧。",
            )
        source_fps = fps if sequence_fps is None else _check_fps(sequence_fps, "sequence_fps")
        starts = [i / source_fps for i in range(len(video))]
        chosen = _sample(starts, len(video) / source_fps, fps, max_frames)
        frames = []
        for index, source_index in enumerate(chosen):
            picture = load_image(video[source_index], max_pixels=MAX_FRAME_PIXELS)
            if frames and picture.size != frames[0].image.size:
                raise InvalidInputError(
                    f"Frame {source_index} is {picture.width}x{picture.height}, the first is "
                    f"{frames[0].image.width}x{frames[0].image.height}. All frames must have one size.",
                    f"第 {source_index} 帧为 {picture.width}x{picture.height}，而第一帧为 "
                    f"{frames[0].image.width}x{frames[0].image.height}，所有帧的尺寸必须相同。",
                )
            frames.append(Frame(index, source_index, round(starts[source_index], 6), picture))
        return frames
    if isinstance(video, (str, os.PathLike)):
        return _read_animation(os.fspath(video), fps, max_frames)
    return [Frame(0, 0, 0.0, load_image(video, max_pixels=MAX_FRAME_PIXELS))]


# ---- tracking ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrackedObject:
    """A detection with the id of the track it belongs to, and its reference point."""

    track_id: int
    label: str
    score: float
    box: Box
    anchor: Point

    def to_dict(self) -> dict[str, Any]:
        x0, y0, x1, y1 = self.box
        return {
            "track_id": self.track_id,
            "label": self.label,
            "score": self.score,
            "box": {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1},
            "anchor": list(self.anchor),
        }


@dataclass
class _Track:
    track_id: int
    label: str
    box: Box
    missed: int = 0


class IouTracker:
    """Give detections stable ids across frames.

    Each frame, live tracks and detections of the same label are paired by the Hungarian method
    (``scipy.optimize.linear_sum_assignment``) on ``1 - IoU``. A pair with IoU below ``min_iou`` may still
    match when the box centres are at most ``max_distance`` box diagonals apart (cost ``1 + distance/limit``,
    so an overlap always wins): sampled frames can be far enough apart that a small vehicle no longer overlaps
    itself.
    A track unmatched for more than ``max_missed`` frames ends; a detection left over starts a new track.
    """

    def __init__(self, *, min_iou: float = 0.1, max_distance: float = 1.0, max_missed: int = 2) -> None:
        self.min_iou = check_probability(min_iou, "min_iou")
        self.max_distance = check_float_range(max_distance, "max_distance", 0.0, 10.0)
        if isinstance(max_missed, bool) or not isinstance(max_missed, int) or not 0 <= max_missed <= 1000:
            raise InvalidInputError(
                f"max_missed must be a whole number from 0 to 1000; got {max_missed!r:.40}.",
                f"max_missed 必须是 0 到 1000 之间的整数，收到的是 {max_missed!r:.40}。",
            )
        self.max_missed = max_missed
        self._tracks: list[_Track] = []
        self._next_id = 1

    def _cost(self, track: _Track, detection: Detection) -> float | None:
        if track.label != detection.label:
            return None
        iou = box_iou(track.box, detection.box)
        if iou >= self.min_iou and iou > 0:
            return 1.0 - iou
        x0, y0, x1, y1 = track.box
        limit = self.max_distance * math.hypot(x1 - x0, y1 - y0)
        a, b = anchor_point(track.box, "center"), anchor_point(detection.box, "center")
        distance = math.hypot(a[0] - b[0], a[1] - b[1])
        if limit > 0 and distance <= limit:
            return 1.0 + distance / limit
        return None

    def _match(self, detections: Sequence[Detection]) -> dict[int, int]:
        """detection index -> track index."""
        from scipy.optimize import linear_sum_assignment

        if not self._tracks or not detections:
            return {}
        unmatched = 1e6
        cost = np.full((len(detections), len(self._tracks)), unmatched)
        for i, detection in enumerate(detections):
            for j, track in enumerate(self._tracks):
                value = self._cost(track, detection)
                if value is not None:
                    cost[i, j] = value
        rows, cols = linear_sum_assignment(cost)
        return {int(i): int(j) for i, j in zip(rows, cols, strict=True) if cost[i, j] < unmatched}

    def update(self, detections: Sequence[Detection], anchor: str = "bottom_center") -> list[TrackedObject]:
        """The detections of the next frame, each with its track id, in the order given."""
        matches = self._match(detections)
        matched_tracks = set(matches.values())
        objects = []
        for i, detection in enumerate(detections):
            if i in matches:
                track = self._tracks[matches[i]]
                track.box, track.missed = detection.box, 0
            else:
                track = _Track(self._next_id, detection.label, detection.box)
                self._next_id += 1
                self._tracks.append(track)
                matched_tracks.add(len(self._tracks) - 1)
            objects.append(
                TrackedObject(track.track_id, detection.label, detection.score, detection.box,
                              anchor_point(detection.box, anchor))
            )
        for j, track in enumerate(self._tracks):
            if j not in matched_tracks:
                track.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= self.max_missed]
        return objects


# ---- rules -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoParkingRule:
    """A vehicle whose reference point stays inside ``zone`` for at least ``min_stopped_s`` seconds, moving at
    most ``max_displacement`` pixels from where it stopped, is parked there."""

    zone: str
    min_stopped_s: float = 5.0
    max_displacement: float = 10.0

    def __post_init__(self) -> None:
        check_float_range(self.min_stopped_s, "min_stopped_s", 0.0, 86_400.0)
        check_float_range(self.max_displacement, "max_displacement", 0.0, 10_000.0)


@dataclass(frozen=True)
class RedLightRule:
    """A vehicle crossing ``line`` (in ``direction``, or either way when None) while the signal is red."""

    line: Line
    schedule: SignalSchedule
    direction: str | None = None

    def __post_init__(self) -> None:
        _check_direction(self.direction)


@dataclass(frozen=True)
class Crossing:
    """A track's first crossing of a line, seen at the first frame after it (``frame``, ``time_s``)."""

    track_id: int
    label: str
    line: str
    direction: str
    frame: int
    time_s: float
    signal: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id, "label": self.label, "line": self.line, "direction": self.direction,
            "frame": self.frame, "time_s": self.time_s, "signal": self.signal,
        }


@dataclass(frozen=True)
class Violation:
    """A rule broken by one track: ``kind`` is "no_parking" (``since_s``: when it stopped) or "red_light"."""

    kind: str
    track_id: int
    label: str
    where: str
    frame: int
    time_s: float
    since_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "track_id": self.track_id, "label": self.label, "where": self.where,
            "frame": self.frame, "time_s": self.time_s, "since_s": self.since_s,
        }


class LineCounter:
    """Watches one line: a track counts once, at its first crossing; later jitter over the line is ignored."""

    def __init__(self, line: Line) -> None:
        self.line = line
        self._last: dict[int, tuple[int, Point]] = {}  # track -> (last side off the line, point there)
        self._crossed: set[int] = set()

    def update(self, track_id: int, point: Point) -> str | None:
        """The direction of the crossing when this move is the track's first crossing, else None."""
        side = self.line.side(point)
        if side == 0:  # on the line: wait until it is clearly on one side
            return None
        previous = self._last.get(track_id)
        self._last[track_id] = (side, point)
        if previous is None or previous[0] == side or track_id in self._crossed:
            return None
        if not self.line.crosses(previous[1], point):  # changed side beyond the segment's ends
            return None
        self._crossed.add(track_id)
        return self.line.direction(side)


class StopWatch:
    """Watches one no-parking zone: fires once per track when it has stayed put inside long enough."""

    def __init__(self, rule: NoParkingRule, zone: Zone) -> None:
        self.rule = rule
        self.zone = zone
        self._since: dict[int, tuple[float, Point]] = {}  # track -> (time it stopped, point where it stopped)
        self._fired: set[int] = set()

    def update(self, track_id: int, point: Point, time_s: float) -> float | None:
        """When this observation completes a stop, the time the stop began; else None."""
        if track_id in self._fired:
            return None
        if not self.zone.contains(point):
            self._since.pop(track_id, None)
            return None
        since = self._since.get(track_id)
        moved = math.hypot(point[0] - since[1][0], point[1] - since[1][1]) if since is not None else math.inf
        if moved > self.rule.max_displacement:
            self._since[track_id] = (time_s, point)  # (re)starts the clock where it is now
            return None
        if time_s - since[0] >= self.rule.min_stopped_s - 1e-9:
            self._fired.add(track_id)
            return since[0]
        return None


# ---- the video pipeline ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameRecord:
    """What was seen on one sampled frame."""

    index: int
    source_index: int
    time_s: float
    objects: tuple[TrackedObject, ...]
    zones: tuple[ZoneCount, ...]
    signal: str | None = None

    def counts(self, queries: Sequence[str]) -> dict[str, int]:
        return _label_counts([o.label for o in self.objects], queries)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "source_index": self.source_index,
            "time_s": self.time_s,
            "signal": self.signal,
            "objects": [o.to_dict() for o in self.objects], "zones": [z.to_dict() for z in self.zones],
        }


def _spreadsheet_safe(text: str) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (zone names and labels come from users)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@dataclass(frozen=True)
class VideoReport:
    """Everything :func:`analyze_video` found: per-frame records, line crossings and rule violations."""

    queries: tuple[str, ...]
    frames: tuple[FrameRecord, ...]
    crossings: tuple[Crossing, ...]
    violations: tuple[Violation, ...]
    zones: tuple[Zone, ...] = ()
    counting_line: Line | None = None
    stop_line: Line | None = None
    fps: float = 2.0
    anchor: str = "bottom_center"

    def crossing_counts(self) -> dict[str, dict[str, int]]:
        """Unique tracks across the counting line: {direction: {label: count}}, both directions present."""
        if self.counting_line is None:
            return {}
        result = {direction: dict.fromkeys(self.queries, 0) for direction in self.counting_line.directions()}
        for crossing in self.crossings:
            if crossing.line == self.counting_line.name:
                by_label = result[crossing.direction]
                by_label[crossing.label] = by_label.get(crossing.label, 0) + 1
        return result

    def tracks(self) -> list[dict[str, Any]]:
        """Each track: id, label, first and last time seen, and on how many sampled frames."""
        seen: dict[int, dict[str, Any]] = {}
        for record in self.frames:
            for obj in record.objects:
                first = {"track_id": obj.track_id, "label": obj.label, "first_s": record.time_s, "frames": 0}
                entry = seen.setdefault(obj.track_id, first)
                entry["last_s"] = record.time_s
                entry["frames"] += 1
        return [seen[track_id] for track_id in sorted(seen)]

    def unique_counts(self) -> dict[str, int]:
        """Distinct tracks per label (an upper bound: a vehicle lost and found again counts twice)."""
        return _label_counts([track["label"] for track in self.tracks()], self.queries)

    def to_dict(self) -> dict[str, Any]:
        duration = self.frames[-1].time_s if self.frames else 0.0
        crossing_counts = self.crossing_counts()
        return {
            "frames": len(self.frames),
            "fps": self.fps,
            "last_frame_s": duration,
            "anchor": self.anchor,
            "unique_tracks": self.unique_counts(),
            "counting_line": self.counting_line.to_dict() if self.counting_line else None,
            "crossings": crossing_counts,
            "crossings_total": sum(sum(by_label.values()) for by_label in crossing_counts.values()),
            "stop_line": self.stop_line.to_dict() if self.stop_line else None,
            "zones": [zone.to_dict() for zone in self.zones],
            "tracks": self.tracks(),
            "events": [crossing.to_dict() for crossing in self.crossings],
            "violations": [violation.to_dict() for violation in self.violations],
        }

    def csv_rows(self) -> list[list[str]]:
        """The per-frame table, header first: counts per label and zone, running crossings and violations."""
        directions = self.counting_line.directions() if self.counting_line else ()
        header = ["frame", "source_frame", "time_s", *self.queries, "total"]
        header += [f"zone:{zone.name}" for zone in self.zones]
        header += [f"crossed_{direction}" for direction in directions]
        header += ["signal"] if self.stop_line is not None else []
        header += ["violations", "track_ids"]
        rows = [[_spreadsheet_safe(cell) for cell in header]]
        crossed = dict.fromkeys(directions, 0)
        violations = 0
        counted = self.counting_line.name if self.counting_line else None
        for record in self.frames:
            counts = record.counts(self.queries)
            for crossing in self.crossings:
                if crossing.frame == record.index and crossing.line == counted:
                    crossed[crossing.direction] += 1
            violations += sum(1 for v in self.violations if v.frame == record.index)
            row = [str(record.index), str(record.source_index), f"{record.time_s:.3f}"]
            row += [str(counts[q]) for q in self.queries] + [str(len(record.objects))]
            row += [str(zone.total) for zone in record.zones]
            row += [str(crossed[direction]) for direction in directions]
            row += [record.signal or "unknown"] if self.stop_line is not None else []
            row += [str(violations), " ".join(str(o.track_id) for o in record.objects)]
            rows.append(row)
        return rows

    def to_csv(self) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(self.csv_rows())
        return buffer.getvalue()

    def write_csv(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(self.to_csv(), encoding="utf-8")
        return path


def _vehicle_labels(labels: Sequence[str] | None, queries: Sequence[str]) -> frozenset[str]:
    if labels is None:
        return frozenset(q for q in queries if q not in NOT_VEHICLES)
    return frozenset(check_labels(labels, what="label", max_count=MAX_QUERIES))


class _RuleChecker:
    """The lines and zones watched over one clip; :meth:`observe` sees each tracked object of each frame."""

    def __init__(
        self,
        line: Line | None,
        red_light: RedLightRule | None,
        watches: list[StopWatch],
        vehicles: frozenset[str],
    ) -> None:
        self.counter = LineCounter(line) if line is not None else None
        self.red_light = red_light
        self.stop_counter = LineCounter(red_light.line) if red_light is not None else None
        self.watches = watches
        self.vehicles = vehicles
        self.crossings: list[Crossing] = []
        self.violations: list[Violation] = []

    def signal(self, frame: Frame) -> str | None:
        return self.red_light.schedule.state_at(frame.index, frame.time_s) if self.red_light else None

    def observe(self, obj: TrackedObject, frame: Frame, signal: str | None) -> None:
        where = (frame.index, frame.time_s)
        counter, stop_counter = self.counter, self.stop_counter
        if counter is not None and (direction := counter.update(obj.track_id, obj.anchor)):
            self.crossings.append(Crossing(obj.track_id, obj.label, counter.line.name, direction, *where))
        if obj.label not in self.vehicles:
            return
        if stop_counter is not None and (direction := stop_counter.update(obj.track_id, obj.anchor)):
            stop = stop_counter.line.name
            self.crossings.append(Crossing(obj.track_id, obj.label, stop, direction, *where, signal))
            if signal == "red" and self.red_light.direction in (None, direction):
                self.violations.append(Violation("red_light", obj.track_id, obj.label, stop, *where))
        for watch in self.watches:
            since = watch.update(obj.track_id, obj.anchor, frame.time_s)
            if since is not None:
                self.violations.append(
                    Violation("no_parking", obj.track_id, obj.label, watch.zone.name, *where, since)
                )


def _watches(rules: Sequence[NoParkingRule], zones: Sequence[Zone]) -> list[StopWatch]:
    by_name = {zone.name: zone for zone in zones}
    for rule in rules:
        if rule.zone not in by_name:
            known = ", ".join(by_name)
            raise InvalidInputError(
                f"The no-parking rule names zone '{rule.zone[:60]}', which is not among the zones "
                f"({known or 'none given'}).",
                f"禁停规则引用的区域 '{rule.zone[:60]}' 不在给出的区域中（{known or '未给出区域'}）。",
            )
    return [StopWatch(rule, by_name[rule.zone]) for rule in rules]


def analyze_video(
    video: ImageInput | Sequence[ImageInput] | Sequence[Frame],
    *,
    detector: Detector | None = None,
    queries: str | Sequence[str] = VEHICLE_QUERIES,
    fps: float = 2.0,
    sequence_fps: float | None = None,
    threshold: float = 0.1,
    anchor: str = "bottom_center",
    zones: Any = (),
    counting_line: Any = None,
    no_parking: Sequence[NoParkingRule] = (),
    red_light: RedLightRule | None = None,
    vehicle_labels: Sequence[str] | None = None,
    tracker: IouTracker | None = None,
    max_frames: int = MAX_FRAMES,
    model: str = DEFAULT_DETECTOR,
    weights: str = "real",
) -> VideoReport:
    """Detect, track and count road users over a clip, and check the rules.

    ``video`` is what :func:`read_frames` takes (or frames it returned). ``counting_line`` is what
    :func:`parse_line` takes; crossings of it are counted once per track, per direction. ``no_parking`` rules
    name zones from ``zones``; ``red_light`` checks crossings of its line against the declared signal phases.
    The rules apply to ``vehicle_labels`` (default: every query but "person"). Progress shows with tqdm.
    """
    from tqdm.auto import tqdm

    queries = _check_queries(queries)
    zones = parse_zones(zones)
    line = parse_line(counting_line, "counting line")
    if line is not None:
        line = Line(line.start, line.end, "counting line")
    if red_light is not None:
        stop_line = Line(red_light.line.start, red_light.line.end, "stop line")
        red_light = RedLightRule(stop_line, red_light.schedule, red_light.direction)
    threshold = check_probability(threshold, "threshold")
    anchor = check_anchor(anchor)
    fps = _check_fps(fps, "fps")
    vehicles = _vehicle_labels(vehicle_labels, queries)
    rules = _RuleChecker(line, red_light, _watches(no_parking, zones), vehicles)
    if isinstance(video, (list, tuple)) and video and all(isinstance(f, Frame) for f in video):
        frames = list(video)
    else:
        frames = read_frames(video, fps=fps, sequence_fps=sequence_fps, max_frames=max_frames)
    stop_line = red_light.line if red_light is not None else None
    check_fits(frames[0].image.size, zones, [line, stop_line])

    detect = _detector(detector, model, weights)
    tracker = tracker or IouTracker()
    records: list[FrameRecord] = []
    for frame in tqdm(frames, desc="traffic video", unit="frame", leave=False, disable=len(frames) <= 1):
        objects = tracker.update(list(detect(frame.image, queries=queries, threshold=threshold)), anchor)
        signal = rules.signal(frame)
        for obj in objects:
            rules.observe(obj, frame, signal)
        seen = Detections(tuple(Detection(o.label, o.score, o.box) for o in objects), frame.image.size)
        zone_counts = count_in_zones(seen, queries, zones, anchor=anchor).zones
        records.append(
            FrameRecord(frame.index, frame.source_index, frame.time_s, tuple(objects), zone_counts, signal)
        )
    crossings, violations = tuple(rules.crossings), tuple(rules.violations)
    return VideoReport(
        tuple(queries), tuple(records), crossings, violations, zones, line, stop_line, fps, anchor
    )


__all__ = [
    "ANCHORS",
    "DIRECTIONS",
    "SCENE_QUESTIONS",
    "VEHICLE_QUERIES",
    "Crossing",
    "Frame",
    "FrameRecord",
    "IouTracker",
    "Line",
    "LineCounter",
    "NoParkingRule",
    "RedLightRule",
    "SceneAnswer",
    "SceneReport",
    "SignalSchedule",
    "StopWatch",
    "TrafficCounts",
    "TrackedObject",
    "Violation",
    "VideoReport",
    "Zone",
    "ZoneCount",
    "analyze_video",
    "anchor_point",
    "box_iou",
    "check_fits",
    "count_in_zones",
    "count_vehicles",
    "describe_scene",
    "parse_line",
    "parse_phases",
    "parse_points",
    "parse_zones",
    "point_in_polygon",
    "read_frames",
]
