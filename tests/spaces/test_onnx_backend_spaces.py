"""The OWLv2 and SAM Spaces run on the ONNX back-end when the operator sets LMT_BACKEND, with torch's answers."""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import handle_file

from tests.spaces.conftest import EXAMPLES

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.mark.parametrize("space_client", ["owlv2"], indirect=True)
def test_owlv2_space_on_onnx(space_client, monkeypatch):
    call = (handle_file(EXAMPLES / "street.png"), "car, bus\nperson", 0.0, 0.3, "owlv2-b16 (tiny)")
    monkeypatch.setenv("LMT_BACKEND", "torch")
    torch_raw = space_client.predict(*call, api_name="/detect")[2]
    monkeypatch.setenv("LMT_BACKEND", "onnx")
    onnx_raw = space_client.predict(*call, api_name="/detect")[2]
    torch_found, onnx_found = torch_raw["detections"], onnx_raw["detections"]
    assert torch_found and [d["label"] for d in onnx_found] == [d["label"] for d in torch_found]
    np.testing.assert_allclose([d["score"] for d in onnx_found], [d["score"] for d in torch_found], atol=1e-4)
    corners = ("xmin", "ymin", "xmax", "ymax")
    np.testing.assert_allclose([[d["box"][k] for k in corners] for d in onnx_found],
                               [[d["box"][k] for k in corners] for d in torch_found], atol=1e-2)


@pytest.mark.parametrize("space_client", ["sam"], indirect=True)
def test_sam_space_on_onnx(space_client, monkeypatch):
    call = (handle_file(EXAMPLES / "cat.png"), "200,150,1; 20,20,0", "", True, "sam-vit-base (tiny)")
    monkeypatch.setenv("LMT_BACKEND", "torch")
    torch_raw = space_client.predict(*call, api_name="/segment")[1]
    monkeypatch.setenv("LMT_BACKEND", "onnx")
    onnx_raw = space_client.predict(*call, api_name="/segment")[1]
    assert len(onnx_raw["masks"]) == len(torch_raw["masks"]) == 3
    np.testing.assert_allclose([m["score"] for m in onnx_raw["masks"]], [m["score"] for m in torch_raw["masks"]],
                               atol=1e-3)
    for ours, theirs in zip(onnx_raw["masks"], torch_raw["masks"], strict=True):
        assert abs(ours["area"] - theirs["area"]) <= max(2, 0.001 * theirs["area"])
