"""The SAM Space answers every api_name through gradio_client with tiny weights, and re-prompts reuse the embedding."""

from __future__ import annotations

import pytest
from gradio_client import handle_file

import lmt
from tests.spaces.conftest import EXAMPLES, app_error

pytestmark = pytest.mark.parametrize("space_client", ["sam"], indirect=True)

TINY = "sam-vit-base (tiny)"
CAT = EXAMPLES / "cat.png"  # 451 x 300


def test_api_names(space_client):
    assert set(space_client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
        "/segment", "/segment_everything",
    }


def test_segment_points_and_boxes(space_client):
    annotated, raw = space_client.predict(
        handle_file(CAT), "200,150,1; 20,20,0", "", True, TINY, api_name="/segment"
    )
    assert (raw["width"], raw["height"]) == (451, 300)
    assert len(raw["masks"]) == len(annotated["annotations"]) == 3  # three candidates, best first
    assert raw["masks"][0]["score"] >= raw["masks"][1]["score"] >= raw["masks"][2]["score"]
    assert set(raw["masks"][0]) == {"score", "box", "area"}  # no RLE in the JSON
    annotated, raw = space_client.predict(
        handle_file(CAT), "", "[[10, 10, 200, 150], [220, 40, 440, 290]]", False, TINY, api_name="/segment"
    )
    assert len(raw["masks"]) == 2


def test_reprompt_reuses_the_image_embedding(space_client):
    loaded = lmt.load("sam-vit-base", weights="tiny")  # the Space runs in this process: the same cached model
    loaded.cache("image_embeddings", 8).clear()
    runs = []
    hook = loaded.model.vision_encoder.register_forward_hook(lambda *_: runs.append(1))
    try:
        image = handle_file(EXAMPLES / "coffee.jpg")
        first = space_client.predict(image, "100,100,1", "", False, TINY, api_name="/segment")[1]
        second = space_client.predict(image, "500,300,1; 100,100,0", "", False, TINY, api_name="/segment")[1]
    finally:
        hook.remove()
    assert len(runs) == 1 and len(loaded.caches["image_embeddings"]) == 1
    assert first["masks"][0] != second["masks"][0]


def test_segment_everything(space_client):
    annotated, raw = space_client.predict(handle_file(CAT), 4, 0.0, 0.0, TINY, api_name="/segment_everything")
    assert 1 <= len(raw["masks"]) == len(annotated["annotations"]) <= 16
    assert set(raw["masks"][0]) == {"score", "box", "area"}


def test_errors_are_bilingual_and_clean(space_client):
    cat = handle_file(CAT)
    message = app_error(lambda: space_client.predict(None, "10,10,1", "", True, TINY, api_name="/segment"))
    assert "请先上传" in message and "upload an image" in message
    message = app_error(lambda: space_client.predict(cat, "900,10,1", "", True, TINY, api_name="/segment"))
    assert "outside the 451x300 image" in message and "超出" in message
    message = app_error(lambda: space_client.predict(cat, "10,ten,1", "", True, TINY, api_name="/segment"))
    assert "x,y,label" in message and "格式不对" in message
    message = app_error(lambda: space_client.predict(cat, "", "", True, TINY, api_name="/segment"))
    assert "至少" in message and "at least one point" in message
    message = app_error(lambda: space_client.predict(cat, "10,10,1", "", True, "facebook/evil", api_name="/segment"))
    assert "不是本 Space" in message
    message = app_error(
        lambda: space_client.predict(cat, "NaN", 0.5, 0.5, TINY, api_name="/segment_everything")
    )
    assert "points_per_side" in message and "之间" in message
    message = app_error(lambda: space_client.predict(cat, 64, 0.5, 0.5, TINY, api_name="/segment_everything"))
    assert "got 64" in message


def test_clicks_write_the_prompt_boxes(space_client):
    import gradio as gr

    from lmt.ui.spaces import load_space

    app = load_space("sam")

    def click(x, y):
        return gr.SelectData(None, {"index": [x, y], "value": None})

    assert app.add_click("", "", None, "include", click(10, 20)) == ("10,20,1", "", None)
    assert app.add_click("10,20,1", "", None, "exclude", click(30, 40)) == ("10,20,1; 30,40,0", "", None)
    assert app.add_click("10,20,1", "", None, "box", click(50, 60)) == ("10,20,1", "", [50, 60])  # first corner
    second_corner = app.add_click("10,20,1", "1,2,3,4", [50, 60], "box", click(5, 90))
    assert second_corner == ("10,20,1", "1,2,3,4; 5,60,50,90", None)
