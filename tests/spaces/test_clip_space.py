"""The CLIP Space answers every api_name through gradio_client with tiny weights."""

from __future__ import annotations

import pytest
from gradio_client import handle_file

from tests.spaces.conftest import EXAMPLES, app_error

pytestmark = pytest.mark.parametrize("space_client", ["clip"], indirect=True)

TINY = "clip-vit-b32 (tiny)"


def test_api_names(space_client):
    assert set(space_client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
        "/classify", "/search",
    }


def test_classify(space_client):
    label, raw = space_client.predict(
        handle_file(EXAMPLES / "cat.png"), "cat, dog\ncar", "a photo of a {}.", TINY, "", api_name="/classify"
    )
    assert {c["label"] for c in label["confidences"]} == {"cat", "dog", "car"}
    assert sum(p["score"] for p in raw["predictions"]) == pytest.approx(1.0, abs=1e-5)


def test_search(space_client):
    gallery = [handle_file(EXAMPLES / name) for name in ("cat.png", "coffee.jpg", "rocket.jpg")]
    matches, hits = space_client.predict(gallery, "a cup of coffee", 2, TINY, api_name="/search")
    assert len(matches) == len(hits) == 2
    assert hits[0]["score"] >= hits[1]["score"]


def test_errors_are_bilingual_and_clean(space_client):
    message = app_error(
        lambda: space_client.predict(None, "cat", "a photo of a {}.", TINY, "", api_name="/classify")
    )
    assert "请先上传" in message and "upload an image" in message
    message = app_error(
        lambda: space_client.predict(
            handle_file(EXAMPLES / "cat.png"), "", "a photo of a {}.", TINY, "", api_name="/classify"
        )
    )
    assert "labels" in message
    message = app_error(
        lambda: space_client.predict(
            handle_file(EXAMPLES / "cat.png"), "cat", "a photo of a {}.", "openai/evil", "", api_name="/classify"
        )
    )
    assert "不是本 Space" in message
    app_error(lambda: space_client.predict([], "coffee", 2, TINY, api_name="/search"))
    app_error(lambda: space_client.predict(
        [handle_file(EXAMPLES / "cat.png")], "coffee", "NaN", TINY, api_name="/search"
    ))
