"""The OWLv2 Space answers every api_name through gradio_client with tiny weights."""

from __future__ import annotations

import pytest
from gradio_client import handle_file

from tests.spaces.conftest import EXAMPLES, app_error

pytestmark = pytest.mark.parametrize("space_client", ["owlv2"], indirect=True)

TINY = "owlv2-b16 (tiny)"
STREET = EXAMPLES / "street.png"  # 480 x 320


def test_api_names(space_client):
    assert set(space_client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {"/detect"}


def test_detect(space_client):
    annotated, counts, raw = space_client.predict(
        handle_file(STREET), "car, bus\nperson", 0.7, 0.3, TINY, api_name="/detect"
    )
    detections = raw["detections"]
    assert (raw["width"], raw["height"]) == (480, 320)
    assert 1 <= len(detections) == len(annotated["annotations"]) <= 50
    assert all(d["score"] > 0.7 for d in detections)
    assert [row[0] for row in counts["data"]] == ["car", "bus", "person"]
    assert sum(row[1] for row in counts["data"]) == len(detections)
    assert all(0 <= d["box"]["xmin"] < d["box"]["xmax"] <= 480 for d in detections)
    assert annotated["annotations"][0]["label"].startswith(detections[0]["label"] + " ")
    _, counts, raw = space_client.predict(handle_file(STREET), "car", 1.0, 1.0, TINY, api_name="/detect")
    assert raw["detections"] == [] and counts["data"] == [["car", 0]]


def test_errors_are_bilingual_and_clean(space_client):
    street = handle_file(STREET)
    message = app_error(lambda: space_client.predict(None, "car", 0.1, 0.3, TINY, api_name="/detect"))
    assert "请先上传" in message and "upload an image" in message
    message = app_error(lambda: space_client.predict(street, "car", "NaN", 0.3, TINY, api_name="/detect"))
    assert "threshold" in message and "之间" in message
    message = app_error(lambda: space_client.predict(street, "car", 0.1, 7, TINY, api_name="/detect"))
    assert "nms_threshold" in message
    message = app_error(lambda: space_client.predict(street, " , \n", 0.1, 0.3, TINY, api_name="/detect"))
    assert "No querys given" in message or "没有提供查询词" in message
    message = app_error(lambda: space_client.predict(street, "car, car", 0.1, 0.3, TINY, api_name="/detect"))
    assert "重复" in message
    message = app_error(lambda: space_client.predict(street, "car", 0.1, 0.3, "google/evil", api_name="/detect"))
    assert "不是本 Space" in message
