"""The ViT and ResNet Spaces' /explain endpoint: a heat-map overlay at the image's size through gradio_client,
on the PyTorch back-end even when the Space classifies with ONNX, and bilingual errors for bad input."""

from __future__ import annotations

import pytest
from gradio_client import handle_file
from PIL import Image

from tests.spaces.conftest import EXAMPLES, app_error

SPACES = {"vit": ("vit-b16 (tiny)", ("gradcam", "rollout")), "resnet": ("resnet-50 (tiny)", ("gradcam",))}

pytestmark = pytest.mark.parametrize("space_client", list(SPACES), indirect=True)


def test_explain_returns_an_overlay(space_client, request):
    tiny, methods = SPACES[request.node.callspec.params["space_client"]]
    size = Image.open(EXAMPLES / "cat.png").size
    for method in methods:
        overlay, info = space_client.predict(handle_file(EXAMPLES / "cat.png"), method, tiny, api_name="/explain")
        assert Image.open(overlay).size == size
        assert info["method"] == method and info["size"] == list(size) and info["backend"] == "torch"
        assert 0 <= info["peak"][0] < size[0] and 0 <= info["peak"][1] < size[1]
        assert info["target"] in {"cat", "dog", "car", "bird", "tree"}


def test_explain_runs_on_torch_when_the_space_uses_onnx(space_client, request, monkeypatch):
    tiny, _ = SPACES[request.node.callspec.params["space_client"]]
    monkeypatch.setenv("LMT_BACKEND", "onnx")
    _, info = space_client.predict(handle_file(EXAMPLES / "cat.png"), "gradcam", tiny, api_name="/explain")
    assert info["backend"] == "torch" and info["classify_backend"] == "onnx"


def test_explain_errors_are_bilingual(space_client, request):
    tiny, _ = SPACES[request.node.callspec.params["space_client"]]
    message = app_error(lambda: space_client.predict(None, "gradcam", tiny, api_name="/explain"))
    assert "请先上传" in message and "upload an image" in message
    cat = handle_file(EXAMPLES / "cat.png")
    message = app_error(lambda: space_client.predict(cat, "saliency", tiny, api_name="/explain"))
    assert "method must be one of" in message and "必须" in message
    message = app_error(lambda: space_client.predict(cat, "gradcam", "openai/evil", api_name="/explain"))
    assert "不是本 Space" in message and "not one of this Space" in message
