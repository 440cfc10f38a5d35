"""The traffic Space answers /detect, /scene and /video through gradio_client with tiny weights.

Tiny models give random boxes and words, so these tests check shapes, types and that the rules given reach the
report; the exact behaviour of counting, tracking and the rules is tested in tests/apps/test_traffic.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from gradio_client import handle_file
from PIL import Image, ImageDraw

from lmt.apps import traffic
from tests.spaces.conftest import app_error

pytestmark = pytest.mark.parametrize("space_client", ["traffic"], indirect=True)

OWL = "owlv2-b16 (tiny)"
BLIP = "blip2-opt-2.7b (tiny)"
SPACE_EXAMPLES = Path(__file__).resolve().parents[2] / "spaces" / "traffic" / "examples"
STREET = SPACE_EXAMPLES / "street.png"  # 480 x 320
ZONES = json.dumps([{"name": "near lane", "points": [[0, 240], [480, 240], [480, 320], [0, 320]]}])
QUERIES = "car, bus, person"


@pytest.fixture(scope="module")
def small_gif(tmp_path_factory) -> Path:
    """Three frames, 160x120, a square driving right: small enough for tiny OWLv2 on two CPU cores."""
    frames = []
    for k in range(3):
        image = Image.new("RGB", (160, 120), (90, 90, 90))
        ImageDraw.Draw(image).rectangle([10 + 40 * k, 60, 40 + 40 * k, 80], fill=(200, 30, 30))
        frames.append(image)
    path = tmp_path_factory.mktemp("traffic-space") / "clip.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=500, loop=0)
    return path


def video_args(files, **overrides):
    args = {
        "files": files,
        "counting_line": "80,0,80,120",
        "fps": 2,
        "stop_line": "0,70,160,70",
        "phases": '[{"start": 0, "end": 1, "state": "red"}]',
        "direction": "any",
        "zones": '[{"name": "kerb", "points": [[100, 50], [160, 50], [160, 120], [100, 120]]}]',
        "no_parking_zones": "kerb",
        "min_stopped_s": 0.5,
        "max_displacement": 5,
        "queries": QUERIES,
        "threshold": 0.5,
        "model": OWL,
    }
    args.update(overrides)
    return list(args.values())


def test_api_names(space_client):
    endpoints = space_client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/detect", "/scene", "/video"}


def test_detect(space_client):
    annotated, counts = space_client.predict(
        handle_file(STREET), ZONES, QUERIES, 0.5, OWL, api_name="/detect"
    )
    assert (counts["width"], counts["height"]) == (480, 320) and counts["anchor"] == "bottom_center"
    assert list(counts["counts"]) == ["car", "bus", "person"]
    assert counts["total"] == sum(counts["counts"].values())
    assert [zone["name"] for zone in counts["zones"]] == ["near lane"]
    assert counts["zones"][0]["total"] <= counts["total"]
    labels = [a["label"] for a in annotated["annotations"]]
    assert labels[0] == "zone: near lane"  # the zone is drawn, then at most 100 boxes
    assert len(labels) == 1 + min(100, len(counts["detections"]))
    _, empty = space_client.predict(handle_file(STREET), "", "car", 1.0, OWL, api_name="/detect")
    assert empty["counts"] == {"car": 0} and empty["zones"] == [] and empty["detections"] == []


def test_detect_refuses_bad_zones(space_client):
    street = handle_file(STREET)
    message = app_error(lambda: space_client.predict(street, "[{", QUERIES, 0.1, OWL, api_name="/detect"))
    assert "JSON" in message and "合法" in message
    outside = json.dumps([{"name": "far", "points": [[0, 0], [900, 0], [900, 900]]}])
    message = app_error(lambda: space_client.predict(street, outside, QUERIES, 0.1, OWL, api_name="/detect"))
    assert "480x320" in message and "超出" in message
    message = app_error(lambda: space_client.predict(street, "", QUERIES, 0.1, BLIP, api_name="/detect"))
    assert "不是本 Space" in message


def test_scene(space_client):
    caption, table, raw = space_client.predict(handle_file(STREET), BLIP, api_name="/scene")
    assert isinstance(caption, str) and caption == raw["caption"]
    assert [row[0] for row in table["data"]] == [topic for topic, _ in traffic.SCENE_QUESTIONS]
    assert [a["answer"] for a in raw["answers"]] == [row[2] for row in table["data"]]
    assert "unverified" in raw["source"] and "未经核实" in raw["source_zh"]
    message = app_error(lambda: space_client.predict(None, BLIP, api_name="/scene"))
    assert "请先上传" in message


def test_video(space_client, small_gif):
    summary, violations, csv_path = space_client.predict(
        *video_args([handle_file(small_gif)]), api_name="/video"
    )
    assert summary["frames"] == 3 and summary["fps"] == 2
    assert set(summary["crossings"]) == {"left", "right"} and set(summary["crossings"]["right"]) == {
        "car",
        "bus",
        "person",
    }
    assert summary["stop_line"]["name"] == "stop line" and summary["zones"][0]["name"] == "kerb"
    assert isinstance(violations, list) and all(v["kind"] in ("no_parking", "red_light") for v in violations)
    with open(csv_path, encoding="utf-8") as file:
        rows = list(csv.reader(file))
    assert rows[0][:6] == ["frame", "source_frame", "time_s", "car", "bus", "person"]
    assert "zone:kerb" in rows[0] and "signal" in rows[0]
    assert [row[2] for row in rows[1:]] == ["0.000", "0.500", "1.000"]
    assert [row[rows[0].index("signal")] for row in rows[1:]] == ["red", "red", "unknown"]


def test_video_from_frame_files(space_client, small_gif, tmp_path):
    gif = Image.open(small_gif)
    paths = []
    for k in (2, 0, 1):  # uploaded out of order: frames are taken in file-name order
        gif.seek(k)
        paths.append(tmp_path / f"frame{k}.png")
        gif.convert("RGB").save(paths[-1])
    summary, _, csv_path = space_client.predict(
        *video_args([handle_file(p) for p in paths], stop_line="", phases="", no_parking_zones=""),
        api_name="/video",
    )
    assert summary["frames"] == 3 and summary["stop_line"] is None
    with open(csv_path, encoding="utf-8") as file:
        rows = list(csv.reader(file))
    assert [row[1] for row in rows[1:]] == ["0", "1", "2"] and "signal" not in rows[0]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"counting_line": "1,2,3"}, "x0,y0,x1,y1"),
        ({"counting_line": "0,0,999,0"}, "160x120"),
        ({"phases": "[{"}, "JSON"),
        ({"phases": ""}, "停止线"),
        ({"direction": "sideways"}, "direction"),
        ({"no_parking_zones": "nowhere"}, "nowhere"),
        ({"fps": "NaN"}, "fps"),
        ({"min_stopped_s": -1}, "min_stopped_s"),
        ({"model": "owlvit-b32 (tiny)"}, "不是本 Space"),
    ],
    ids=[
        "short-line",
        "line-outside",
        "bad-phases",
        "stop-line-without-phases",
        "direction",
        "unknown-zone",
        "fps",
        "negative-seconds",
        "foreign-model",
    ],
)
def test_video_errors(space_client, small_gif, overrides, needle):
    message = app_error(
        lambda: space_client.predict(*video_args([handle_file(small_gif)], **overrides), api_name="/video")
    )
    assert needle in message


def test_video_refuses_non_animations(space_client, tmp_path):
    fake = tmp_path / "clip.gif"
    fake.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)  # an MP4 header under a .gif name
    message = app_error(lambda: space_client.predict(*video_args([handle_file(fake)]), api_name="/video"))
    assert "ffmpeg" in message and "无法" in message
    message = app_error(lambda: space_client.predict(*video_args([]), api_name="/video"))
    assert "请上传" in message
