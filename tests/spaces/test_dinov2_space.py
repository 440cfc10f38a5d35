"""The DINOv2 Space answers every api_name through gradio_client with tiny weights."""

from __future__ import annotations

import pytest
from gradio_client import handle_file

from tests.spaces.conftest import EXAMPLES, app_error

pytestmark = pytest.mark.parametrize("space_client", ["dinov2"], indirect=True)

TINY = "dinov2-small (tiny)"
GALLERY = ("cat.png", "coffee.jpg", "rocket.jpg", "astronaut.jpg")


def test_api_names(space_client):
    assert set(space_client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
        "/search", "/embed",
    }


def test_search(space_client):
    gallery = [handle_file(EXAMPLES / name) for name in GALLERY]
    matches, hits = space_client.predict(
        handle_file(EXAMPLES / "cat.png"), gallery, 3, TINY, api_name="/search"
    )
    assert len(matches) == len(hits) == 3
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    # the query is itself in the gallery: it is the best match, with cosine similarity 1
    assert hits[0]["id"] == "cat.png" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert "1.000" in matches[0]["caption"]


def test_embed(space_client):
    raw = space_client.predict(handle_file(EXAMPLES / "cat.png"), TINY, api_name="/embed")
    assert raw["model"] == "dinov2-small"
    assert raw["dim"] == raw["length"] == 64  # the tiny variant's hidden size
    assert len(raw["first_16"]) == 16


def test_errors_are_bilingual_and_clean(space_client, tmp_path):
    cat = handle_file(EXAMPLES / "cat.png")
    message = app_error(lambda: space_client.predict(None, [cat], 3, TINY, api_name="/search"))
    assert "请先上传" in message and "upload an image" in message
    message = app_error(lambda: space_client.predict(cat, [], 3, TINY, api_name="/search"))
    assert "图库" in message and "gallery" in message
    message = app_error(lambda: space_client.predict(cat, [cat], "NaN", TINY, api_name="/search"))
    assert "top_k" in message and "必须" in message
    for other in ("openai/evil", "clip-vit-b32 (tiny)", "vit-b16"):
        message = app_error(lambda other=other: space_client.predict(cat, other, api_name="/embed"))
        assert "不是本 Space" in message and "not one of this Space" in message
    fake = tmp_path / "not-an-image.jpg"
    fake.write_bytes(b"definitely not a JPEG")
    message = app_error(lambda: space_client.predict(handle_file(fake), TINY, api_name="/embed"))
    assert "无法解码" in message and "cannot be decoded" in message
