"""lmt.apps.traffic on drawn scenes with known ground truth, then end to end with tiny OWLv2 and BLIP-2.

The scene: coloured rectangles ("vehicles") on a grey road, 400x300 px, 12 frames 0.5 s apart. A ground-truth
detector finds each rectangle by its exact colour and returns its true box through the ZeroShotObjectDetection
interface, so every count, id, crossing, violation and CSV cell below is known exactly.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from lmt.apps import traffic
from lmt.errors import InvalidImageError, InvalidInputError
from lmt.images import load_image
from lmt.results import Detection, Detections, GeneratedText

SIZE = (400, 300)
ROAD = (90, 90, 90)
COLOURS = {"car": (200, 30, 30), "bus": (240, 210, 30), "truck": (240, 140, 20), "motorcycle": (150, 50, 200)}
FRAMES = 12
FRAME_S = 0.5

# name -> (label, box at frame k, or None when it is not in the picture)
VEHICLES = {
    "A": ("car", lambda k: (20 + 25 * k, 20, 60 + 25 * k, 40)),  # drives right, crosses x=200 at frame 7
    "B": ("truck", lambda k: (335 - 20 * k, 50, 395 - 20 * k, 80)),  # drives left, crosses x=200 at frame 9
    "C": (
        "car",
        lambda k: (300 + k % 2, 240, 340 + k % 2, 260),
    ),  # parked in the no-parking zone (1 px jitter)
    "D": (
        "car",
        lambda k: (20 + 25 * k, 265, 60 + 25 * k, 285),
    ),  # drives through the zone, crosses x=200 at 7
    "E": ("motorcycle", lambda k: (100, 80 + 12 * k, 120, 100 + 12 * k)),  # down over y=150 at frame 5 (red)
    "F": ("bus", lambda k: (140, 70 + 6 * k, 190, 100 + 6 * k)),  # down over y=150 at frame 9 (green)
    "G": (
        "car",
        lambda k: (40, 155 - 15 * k, 80, 175 - 15 * k) if k <= 9 else None,
    ),  # up over y=150 at frame 2
}
COUNTING_LINE = "200,0,200,300"  # top to bottom: crossings are "right" or "left"
STOP_LINE = traffic.Line((0, 150), (400, 150), "stop")  # crossings are "down" or "up"
ZONE = {"name": "no parking", "points": [[260, 200], [390, 200], [390, 290], [260, 290]]}
PHASES = [{"start": 0, "end": 2.75, "state": "red"}, {"start": 2.75, "end": 10, "state": "green"}]


def box_at(name: str, k: int):
    return VEHICLES[name][1](k)


def draw_frame(k: int) -> Image.Image:
    image = Image.new("RGB", SIZE, ROAD)
    draw = ImageDraw.Draw(image)
    for name, (label, _) in VEHICLES.items():
        box = box_at(name, k)
        if box is not None:
            x0, y0, x1, y1 = box
            draw.rectangle(
                [x0, y0, x1 - 1, y1 - 1], fill=COLOURS[label]
            )  # covers pixels x0..x1-1: box (x0, .., x1)
    return image


class ColourDetector:
    """The true boxes: each rectangle found by its exact colour. Called like lmt.ZeroShotObjectDetection."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image, queries, *, threshold=0.1, nms_threshold=0.3, top_k=None, clip_boxes=True):
        self.calls += 1
        picture = load_image(image)
        pixels = np.asarray(picture)
        found = []
        for label in queries:
            if label not in COLOURS:
                continue
            labelled, _ = ndimage.label(np.all(pixels == COLOURS[label], axis=-1))
            for rows, cols in ndimage.find_objects(labelled):
                found.append(
                    Detection(
                        label, 1.0, (float(cols.start), float(rows.start), float(cols.stop), float(rows.stop))
                    )
                )
        return Detections(tuple(found), picture.size)


@pytest.fixture(scope="module")
def gif(tmp_path_factory):
    path = tmp_path_factory.mktemp("traffic") / "clip.gif"
    frames = [draw_frame(k) for k in range(FRAMES)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(FRAME_S * 1000), loop=0)
    return path


@pytest.fixture(scope="module")
def report(gif):
    return traffic.analyze_video(
        gif,
        detector=ColourDetector(),
        fps=2.0,
        zones=[ZONE],
        counting_line=COUNTING_LINE,
        no_parking=[traffic.NoParkingRule("no parking", min_stopped_s=2.0, max_displacement=5.0)],
        red_light=traffic.RedLightRule(STOP_LINE, traffic.parse_phases(json.dumps(PHASES)), direction="down"),
    )


def track_of(report, name: str) -> int:
    """The track id that follows vehicle ``name``: the one whose box on its first frame is the true box."""
    (first,) = [o for o in report.frames[0].objects if o.box == box_at(name, 0)]
    return first.track_id


# ---- geometry and parsing ---------------------------------------------------------------------------------------
def test_point_in_polygon_including_edges_and_concave_shapes():
    square = [(0, 0), (10, 0), (10, 10), (0, 10)]
    assert traffic.point_in_polygon((5, 5), square)
    assert traffic.point_in_polygon((10, 5), square) and traffic.point_in_polygon(
        (0, 0), square
    )  # edge, vertex
    assert not traffic.point_in_polygon((10.01, 5), square) and not traffic.point_in_polygon((-1, -1), square)
    u_shape = [
        (0, 0),
        (3, 0),
        (3, 8),
        (7, 8),
        (7, 0),
        (10, 0),
        (10, 10),
        (0, 10),
    ]  # open at the bottom middle
    assert traffic.point_in_polygon((1, 1), u_shape) and traffic.point_in_polygon((5, 9), u_shape)
    assert not traffic.point_in_polygon((5, 4), u_shape)


def test_line_sides_directions_and_segment_ends():
    vertical = traffic.parse_line("200,0,200,300")
    assert vertical.directions() == ("left", "right")
    assert vertical.side((100, 50)) == 1 and vertical.side((300, 50)) == -1 and vertical.side((200, 50)) == 0
    assert vertical.crosses((190, 10), (210, 10)) and not vertical.crosses((190, 10), (195, 10))
    short = traffic.parse_line([[0, 150], [100, 150]])
    assert short.directions() == ("down", "up")
    assert short.crosses((50, 140), (50, 160)) and not short.crosses((150, 140), (150, 160))  # beyond its end
    assert traffic.parse_line("") is None and traffic.parse_line(None) is None


@pytest.mark.parametrize(
    "value",
    [
        "1,2,3",
        "a,b,c,d",
        "NaN,1,2,3",
        "1,1,1,1",
        "[[1, 2]]",
        "[1, 2, 3, 4",
        "9" * 100_000,
        '{"x": 1}',
        [True, 1, 2, 3],
    ],
)
def test_bad_lines_are_refused_in_both_languages(value):
    with pytest.raises(InvalidInputError) as info:
        traffic.parse_line(value, "counting line")
    assert info.value.message != info.value.message_zh


@pytest.mark.parametrize(
    "value",
    [
        '[{"name": "a"}]',
        '[{"name": "", "points": [[0,0],[1,0],[0,1]]}]',
        '[{"name": "a", "points": [[0,0],[1,1]]}]',
        '[{"name": "a", "points": [[0,0],[1,1],[2,2]]}]',
        '[{"name": "a", "points": [[0,0],[1,0],["x",1]]}]',
        '{"name": "a"}',
        "[{",
        '[{"name": "a", "points": [[0,0],[1,0],[0,1]], "colour": "red"}]',
        '[{"name": "a", "points": [[0,0],[1,0],[0,1]]}, {"name": "a", "points": [[0,0],[1,0],[0,1]]}]',
    ],
    ids=[
        "no-points",
        "empty-name",
        "two-points",
        "collinear",
        "not-a-number",
        "object",
        "bad-json",
        "unknown-key",
        "duplicate-names",
    ],
)
def test_bad_zones_are_refused(value):
    with pytest.raises(InvalidInputError):
        traffic.parse_zones(value)


@pytest.mark.parametrize(
    "value",
    [
        '[{"start": 0, "end": 1, "state": "purple"}]',
        '[{"start": 2, "end": 1, "state": "red"}]',
        '[{"start": 0, "end": 2, "state": "red"}, {"start": 1, "end": 3, "state": "green"}]',
        '["red", 5]',
        "[]",
        '[{"start": 0, "end": 1}]',
    ],
    ids=["unknown-state", "reversed", "overlap", "mixed", "empty", "no-state"],
)
def test_bad_phases_are_refused(value):
    with pytest.raises(InvalidInputError):
        traffic.parse_phases(value)


def test_phase_schedules():
    intervals = traffic.parse_phases(PHASES)
    assert [intervals.state_at(i, t) for i, t in ((0, 0.0), (5, 2.5), (6, 2.75), (9, 9.99), (20, 10.0))] == [
        "red",
        "red",
        "green",
        "green",
        "unknown",
    ]
    frames = traffic.parse_phases('["red", "Red", "green"]')
    assert [frames.state_at(i, 99.0) for i in range(4)] == ["red", "red", "green", "unknown"]


# ---- one image: counts per class and per zone ------------------------------------------------------------------
def test_count_vehicles_per_class_and_zone():
    zones = [ZONE, {"name": "top band", "points": [[0, 0], [400, 0], [400, 45], [0, 45]]}]
    counts = traffic.count_vehicles(draw_frame(9), detector=ColourDetector(), zones=json.dumps(zones))
    assert counts.counts == {"car": 4, "bus": 1, "truck": 1, "motorcycle": 1, "bicycle": 0, "person": 0}
    assert counts.total == 7 and len(counts.detections) == 7
    by_zone = {zone.name: zone.counts for zone in counts.zones}
    # bottom centres: C (321, 260) and D (265, 285) are in the no-parking zone; A (265, 40) and G (60, 40) on the
    # top band's edge (edges count); B's (185, 80) is below it
    assert by_zone["no parking"] == {
        "car": 2,
        "bus": 0,
        "truck": 0,
        "motorcycle": 0,
        "bicycle": 0,
        "person": 0,
    }
    assert by_zone["top band"]["car"] == 2 and sum(by_zone["top band"].values()) == 2
    band = {"name": "top band", "points": [[0, 0], [400, 0], [400, 39], [0, 39]]}
    centred = traffic.count_vehicles(
        draw_frame(9), detector=ColourDetector(), zones=[ZONE, band], anchor="center"
    )
    # box centres: A (265, 30) and G (60, 30) are inside the narrower band, whose edge the bottoms (y=40) miss
    assert {zone.name: zone.total for zone in centred.zones} == {"no parking": 2, "top band": 2}
    bottoms = traffic.count_vehicles(draw_frame(9), detector=ColourDetector(), zones=[band])
    assert bottoms.zones[0].total == 0
    raw = counts.to_dict()
    assert raw["anchor"] == "bottom_center" and raw["zones"][0]["total"] == 2 and len(raw["detections"]) == 7


def test_zones_outside_the_image_are_refused():
    zone = {"name": "far", "points": [[0, 0], [4000, 0], [4000, 100]]}
    with pytest.raises(InvalidInputError, match="outside the 400x300 image"):
        traffic.count_vehicles(draw_frame(0), detector=ColourDetector(), zones=[zone])


# ---- frames from a GIF and from a sequence of files ------------------------------------------------------------
def test_read_frames_samples_at_the_asked_rate(gif, tmp_path):
    every = traffic.read_frames(gif, fps=2.0)
    assert [f.time_s for f in every] == [k * FRAME_S for k in range(FRAMES)]
    assert all(np.array_equal(np.asarray(f.image), np.asarray(draw_frame(k))) for k, f in enumerate(every))
    slow = traffic.read_frames(gif, fps=1.0)
    assert [(f.index, f.source_index, f.time_s) for f in slow] == [(i, 2 * i, float(i)) for i in range(6)]
    assert len(traffic.read_frames(gif, fps=30.0)) == FRAMES  # no frame is repeated
    assert len(traffic.read_frames(gif, fps=2.0, max_frames=3)) == 3
    paths = []
    for k in range(4):
        paths.append(tmp_path / f"frame{k}.png")
        draw_frame(k).save(paths[-1])
    sequence = traffic.read_frames(paths, fps=1.0, sequence_fps=2.0)
    assert [(f.source_index, f.time_s) for f in sequence] == [(0, 0.0), (2, 1.0)]


def test_bad_videos_are_refused(tmp_path):
    (tmp_path / "text.gif").write_text("not a gif")
    (tmp_path / "empty.gif").write_bytes(b"")
    for path in (tmp_path / "text.gif", tmp_path / "empty.gif", tmp_path / "missing.gif", tmp_path):
        with pytest.raises(InvalidImageError) as info:
            traffic.read_frames(path)
        assert str(tmp_path) not in info.value.message  # no server path
    with pytest.raises(InvalidInputError, match="one size"):
        traffic.read_frames([draw_frame(0), draw_frame(1).resize((200, 150))])
    with pytest.raises(InvalidInputError):
        traffic.read_frames([draw_frame(0)], fps=0)


# ---- tracking, crossings, violations, CSV ----------------------------------------------------------------------
def test_tracker_ids_are_stable(report):
    assert len(report.frames) == FRAMES
    ids = {name: track_of(report, name) for name in VEHICLES}
    assert sorted(ids.values()) == list(range(1, 8))
    for k, record in enumerate(report.frames):
        expected = {(ids[name], box_at(name, k)) for name in VEHICLES if box_at(name, k) is not None}
        assert {(o.track_id, o.box) for o in record.objects} == expected, k
    tracks = {t["track_id"]: t for t in report.tracks()}
    assert tracks[ids["G"]]["frames"] == 10 and tracks[ids["G"]]["last_s"] == 4.5
    assert report.unique_counts() == {
        "car": 4,
        "bus": 1,
        "truck": 1,
        "motorcycle": 1,
        "bicycle": 0,
        "person": 0,
    }


def test_unique_crossings_are_counted_once_with_direction(report):
    ids = {name: track_of(report, name) for name in VEHICLES}
    counting = [c for c in report.crossings if c.line == "counting line"]
    assert {(c.track_id, c.direction, c.frame) for c in counting} == {
        (ids["A"], "right", 7),
        (ids["D"], "right", 7),
        (ids["B"], "left", 9),
    }
    zeros = dict.fromkeys(traffic.VEHICLE_QUERIES, 0)
    assert report.crossing_counts() == {"left": {**zeros, "truck": 1}, "right": {**zeros, "car": 2}}
    stop = [c for c in report.crossings if c.line == "stop line"]
    assert {(c.track_id, c.direction, c.frame, c.signal) for c in stop} == {
        (ids["G"], "up", 2, "red"),
        (ids["E"], "down", 5, "red"),
        (ids["F"], "down", 9, "green"),
    }


def test_jitter_over_the_line_counts_once():
    counter = traffic.LineCounter(traffic.parse_line("100,0,100,100"))
    moves = [(90, 50), (101, 50), (99, 50), (102, 50), (100, 50), (98, 50)]
    assert [counter.update(1, point) for point in moves] == [None, "right", None, None, None, None]


def test_no_parking_fires_for_the_stopped_car_only(report):
    ids = {name: track_of(report, name) for name in VEHICLES}
    parked = [v for v in report.violations if v.kind == "no_parking"]
    assert [(v.track_id, v.label, v.where, v.frame, v.time_s, v.since_s) for v in parked] == [
        (ids["C"], "car", "no parking", 4, 2.0, 0.0)
    ]  # D drove through the zone: never fires


def test_red_light_fires_only_for_crossings_during_red(report, gif):
    ids = {name: track_of(report, name) for name in VEHICLES}
    red = [v for v in report.violations if v.kind == "red_light"]
    assert [(v.track_id, v.where, v.frame, v.time_s) for v in red] == [(ids["E"], "stop line", 5, 2.5)]
    # either direction: G going up during red is a violation too; F (green) never is
    per_frame = traffic.parse_phases(["red"] * 6 + ["green"] * 6)
    both = traffic.analyze_video(
        gif, detector=ColourDetector(), red_light=traffic.RedLightRule(STOP_LINE, per_frame)
    )
    assert [(v.track_id, v.frame) for v in both.violations] == [(ids["G"], 2), (ids["E"], 5)]
    # the same clip with the light green throughout: no violation
    green = traffic.RedLightRule(STOP_LINE, traffic.parse_phases(["green"] * FRAMES))
    assert traffic.analyze_video(gif, detector=ColourDetector(), red_light=green).violations == ()


def test_per_frame_csv(report, tmp_path):
    path = report.write_csv(tmp_path / "frames.csv")
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert rows[0] == [
        "frame",
        "source_frame",
        "time_s",
        "car",
        "bus",
        "truck",
        "motorcycle",
        "bicycle",
        "person",
        "total",
        "zone:no parking",
        "crossed_left",
        "crossed_right",
        "signal",
        "violations",
        "track_ids",
    ]
    assert len(rows) == FRAMES + 1
    ids = {name: track_of(report, name) for name in VEHICLES}
    by_frame = {int(row[0]): dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    assert by_frame[0]["time_s"] == "0.000" and by_frame[11]["time_s"] == "5.500"
    assert [by_frame[k]["car"] for k in range(FRAMES)] == ["4"] * 10 + ["3"] * 2  # G leaves after frame 9
    assert [by_frame[k]["total"] for k in range(FRAMES)] == ["7"] * 10 + ["6"] * 2
    assert [by_frame[k]["zone:no parking"] for k in range(FRAMES)] == ["1"] * 9 + ["2"] * 3  # D enters at 9
    assert [by_frame[k]["crossed_right"] for k in range(FRAMES)] == ["0"] * 7 + ["2"] * 5
    assert [by_frame[k]["crossed_left"] for k in range(FRAMES)] == ["0"] * 9 + ["1"] * 3
    assert [by_frame[k]["signal"] for k in range(FRAMES)] == ["red"] * 6 + ["green"] * 6
    assert [by_frame[k]["violations"] for k in range(FRAMES)] == ["0"] * 4 + ["1"] + ["2"] * 7
    assert set(by_frame[10]["track_ids"].split()) == {str(ids[n]) for n in "ABCDEF"}


def test_report_to_dict_is_json(report):
    raw = json.loads(json.dumps(report.to_dict()))
    assert raw["frames"] == FRAMES and raw["crossings_total"] == 3
    assert {v["kind"] for v in raw["violations"]} == {"no_parking", "red_light"}
    assert raw["counting_line"]["start"] == [200.0, 0.0] and raw["stop_line"]["name"] == "stop line"


def test_csv_cells_cannot_become_formulas(gif):
    rows = traffic.analyze_video(
        gif, detector=ColourDetector(), queries="car, =HYPERLINK(1)", max_frames=2
    ).csv_rows()
    assert rows[0][3:5] == ["car", "'=HYPERLINK(1)"] and rows[1][3:5] == ["4", "0"]


def test_rule_errors(gif):
    with pytest.raises(InvalidInputError, match="not among the zones"):
        traffic.analyze_video(gif, detector=ColourDetector(), no_parking=[traffic.NoParkingRule("nowhere")])
    with pytest.raises(InvalidInputError, match="outside the 400x300 image"):
        traffic.analyze_video(gif, detector=ColourDetector(), counting_line="0,0,500,0")
    with pytest.raises(InvalidInputError):
        traffic.RedLightRule(STOP_LINE, traffic.parse_phases(["red"]), direction="north")
    with pytest.raises(InvalidInputError):
        traffic.NoParkingRule("zone", min_stopped_s=float("nan"))


# ---- scene questions (a stand-in model, then the tiny BLIP-2) ----------------------------------------------------
def test_describe_scene_reports_the_models_words():
    def captioner(image, *, max_new_tokens=20, **kwargs):
        return GeneratedText(f"a road ({load_image(image).size[0]} px wide)")

    def answerer(image, question, *, max_new_tokens=20, **kwargs):
        return GeneratedText(f"answer to: {question}", question)

    report = traffic.describe_scene(draw_frame(0), captioner=captioner, answerer=answerer)
    assert report.caption == "a road (400 px wide)"
    assert [(a.topic, a.answer) for a in report.answers] == [
        (topic, f"answer to: {question}") for topic, question in traffic.SCENE_QUESTIONS
    ]
    raw = report.to_dict()
    assert "unverified" in raw["source"] and "未经核实" in raw["source_zh"]
    with pytest.raises(InvalidInputError):
        traffic.describe_scene(draw_frame(0), captioner=captioner, answerer=answerer, questions=[])


# ---- end to end with the tiny real models -----------------------------------------------------------------------
def test_tiny_owlv2_counts_and_video(gif):
    counts = traffic.count_vehicles(draw_frame(0), zones=[ZONE], threshold=0.0, weights="tiny")
    assert set(counts.counts) == set(traffic.VEHICLE_QUERIES) and counts.total == len(counts.detections)
    assert isinstance(counts.zones[0], traffic.ZoneCount) and counts.zones[0].total <= counts.total
    report = traffic.analyze_video(
        gif,
        fps=1.0,
        max_frames=3,
        zones=[ZONE],
        counting_line=COUNTING_LINE,
        threshold=0.5,
        weights="tiny",
        no_parking=[traffic.NoParkingRule("no parking", 1.0, 5.0)],
        red_light=traffic.RedLightRule(STOP_LINE, traffic.parse_phases(PHASES)),
    )
    assert len(report.frames) == 3 and all(
        isinstance(o, traffic.TrackedObject) for f in report.frames for o in f.objects
    )
    assert all(isinstance(v, traffic.Violation) for v in report.violations)
    assert len(report.csv_rows()) == 4 and json.dumps(report.to_dict())


def test_tiny_blip2_scene():
    report = traffic.describe_scene(draw_frame(0), max_new_tokens=3, weights="tiny")
    assert isinstance(report.caption, str) and len(report.answers) == len(traffic.SCENE_QUESTIONS)
    assert all(isinstance(a.answer, str) for a in report.answers) and report.model == "blip2-opt-2.7b"
