"""The ViT and ResNet Spaces (the same layout over different families) answer /classify through gradio_client
with tiny weights, and refuse bad input in both languages."""

from __future__ import annotations

import pytest
from gradio_client import handle_file

from tests.spaces.conftest import EXAMPLES, app_error

# space -> (its tiny model as the dropdown names it, models that are not this Space's)
SPACES = {
    "vit": ("vit-b16 (tiny)", ("openai/evil", "resnet-50 (tiny)", "vit-b16-384 (tiny)x")),
    "resnet": ("resnet-50 (tiny)", ("openai/evil", "vit-b16 (tiny)", "resnet-18 (tiny)x")),
}

pytestmark = pytest.mark.parametrize("space_client", list(SPACES), indirect=True)


def test_api_names(space_client):
    assert set(space_client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {"/classify", "/explain"}


def test_classify(space_client, request):
    tiny, _ = SPACES[request.node.callspec.params["space_client"]]
    label, raw = space_client.predict(handle_file(EXAMPLES / "cat.png"), 3, tiny, "", api_name="/classify")
    assert len(label["confidences"]) == len(raw["predictions"]) == 3
    assert {c["label"] for c in label["confidences"]} <= {"cat", "dog", "car", "bird", "tree"}
    scores = [p["score"] for p in raw["predictions"]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-5


def test_errors_are_bilingual_and_clean(space_client, request, tmp_path):
    tiny, others = SPACES[request.node.callspec.params["space_client"]]
    message = app_error(lambda: space_client.predict(None, 3, tiny, "", api_name="/classify"))
    assert "请先上传" in message and "upload an image" in message
    cat = handle_file(EXAMPLES / "cat.png")
    message = app_error(lambda: space_client.predict(cat, "NaN", tiny, "", api_name="/classify"))
    assert "top_k" in message and "必须" in message
    message = app_error(lambda: space_client.predict(cat, 11, tiny, "", api_name="/classify"))
    assert "1 到 10" in message and "between 1 and 10" in message
    for other in others:
        message = app_error(lambda other=other: space_client.predict(cat, 3, other, "", api_name="/classify"))
        assert "不是本 Space" in message and "not one of this Space" in message
    fake = tmp_path / "not-an-image.png"
    fake.write_bytes(b"definitely not a PNG")
    message = app_error(lambda: space_client.predict(handle_file(fake), 3, tiny, "", api_name="/classify"))
    assert "无法解码" in message and "cannot be decoded" in message
