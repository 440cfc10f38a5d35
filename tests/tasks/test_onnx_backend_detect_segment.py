"""backend="onnx" for detection (OWLv2, OWL-ViT) and SAM segmentation gives the torch back-end's results.

The ONNX task objects export their graphs once into $LMT_HOME/onnx (the first run of this file pays for that).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import lmt

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

QUERIES = ["cat", "a photo of a dog", "car"]
SCORE_TOL = 1e-4
# SAM's IoU scores: see SAM_VS_TRANSFORMERS_TOL in tests/deploy/test_export_owlv2_sam.py (the torch back-end
# is SamModel.forward, whose prompt encoder rounds differently at the last bit on the tiny model).
SAM_SCORE_TOL = 1e-3


@pytest.fixture(scope="module")
def cat():
    return Image.open("examples/images/cat.png").convert("RGB")


@pytest.fixture(scope="module", params=["owlv2-b16", "owlvit-b32"])
def detectors(request):
    torch_backend = lmt.pipeline("zero-shot-object-detection", model=request.param, weights="tiny")
    onnx_backend = lmt.pipeline("zero-shot-object-detection", model=request.param, weights="tiny", backend="onnx")
    return torch_backend, onnx_backend


@pytest.fixture(scope="module")
def segmenters():
    torch_backend = lmt.pipeline("mask-generation", model="sam-vit-base", weights="tiny")
    onnx_backend = lmt.pipeline("mask-generation", model="sam-vit-base", weights="tiny", backend="onnx")
    return torch_backend, onnx_backend


def _count_runs(task, monkeypatch) -> list[str]:
    """The graph names the ONNX task object runs, in order."""
    calls: list[str] = []
    run = task.graphs.run

    def counting(name, **inputs):
        calls.append(name)
        return run(name, **inputs)

    monkeypatch.setattr(task.graphs, "run", counting)
    return calls


# ---- detection ----------------------------------------------------------------------------------------------------
def test_detection_onnx_equals_torch_on_every_box(detectors, cat, rgb_image):
    torch_backend, onnx_backend = detectors
    assert onnx_backend.graphs is not None and set(onnx_backend.graphs.names) == {"text", "detector"}
    images = [cat, rgb_image, cat.rotate(90, expand=True)]
    expected = torch_backend(images, queries=QUERIES, threshold=0.0, nms_threshold=None, clip_boxes=False)
    got = onnx_backend(images, queries=QUERIES, threshold=0.0, nms_threshold=None, clip_boxes=False)
    for ours, theirs in zip(got, expected, strict=True):
        assert len(ours) == len(theirs) > 0 and ours.image_size == theirs.image_size
        # same order (sorted by score) means the same boxes were found; equal labels box by box
        assert [d.label for d in ours] == [d.label for d in theirs]
        assert np.abs(np.array([d.score for d in ours]) - [d.score for d in theirs]).max() < SCORE_TOL
        # boxes are in pixels of images up to ~500 px: 1e-3 px is a relative 2e-6
        assert np.abs(np.array([d.box for d in ours]) - [d.box for d in theirs]).max() < 1e-3


def test_detection_onnx_with_thresholds_nms_and_top_k(detectors, cat):
    torch_backend, onnx_backend = detectors
    options = {"queries": QUERIES, "threshold": 0.2, "nms_threshold": 0.3, "top_k": 5}
    expected, got = torch_backend(cat, **options), onnx_backend(cat, **options)
    assert [d.label for d in got] == [d.label for d in expected] and len(got) == 5
    assert np.abs(np.array([d.score for d in got]) - [d.score for d in expected]).max() < SCORE_TOL
    assert all(0 <= d.box[0] <= d.box[2] <= cat.width for d in got)


def test_detection_onnx_encodes_a_query_set_once(detectors, cat, rgb_image, monkeypatch):
    _, onnx_backend = detectors
    queries = ["zebra", "bicycle"]  # not used by the other tests, so not cached yet
    calls = _count_runs(onnx_backend, monkeypatch)
    onnx_backend(cat, queries=queries)
    onnx_backend(rgb_image, queries=queries)
    assert calls == ["text", "detector", "detector"]


# ---- segmentation -------------------------------------------------------------------------------------------------
def _assert_same_masks(got, expected, score_tol=SAM_SCORE_TOL):
    assert len(got) == len(expected) > 0 and got.image_size == expected.image_size
    for ours, theirs in zip(got, expected, strict=True):
        assert abs(ours.score - theirs.score) < score_tol
        union = np.logical_or(ours.mask, theirs.mask).sum()
        iou = np.logical_and(ours.mask, theirs.mask).sum() / union if union else 1.0
        assert iou > 0.999, f"mask IoU {iou:.5f}"


@pytest.mark.parametrize(
    "prompts",
    [
        {"points": [(120, 80, 1)]},  # one click: SAM's three candidate masks
        {"points": [(120, 80, 1), (300, 200, 0)], "boxes": [(50, 20, 350, 280)]},
        {"boxes": [(10, 10, 200, 200), (150, 50, 420, 290)]},
        {"points": [(200, 100, 1)], "multimask": True, "threshold": 0.5},
    ],
    ids=["click", "clicks-and-box", "two-boxes", "multimask-threshold"],
)
def test_segmentation_onnx_equals_torch(segmenters, cat, prompts):
    torch_backend, onnx_backend = segmenters
    _assert_same_masks(onnx_backend(cat, **prompts), torch_backend(cat, **prompts))


def test_automatic_masks_onnx_equals_torch(segmenters, cat):
    torch_backend, onnx_backend = segmenters
    options = {"points_per_side": 4, "points_per_batch": 8, "pred_iou_threshold": 0.0, "stability_threshold": 0.0}
    got, expected = onnx_backend(cat, **options), torch_backend(cat, **options)
    _assert_same_masks(got, expected)
    assert [m.box for m in got] == [m.box for m in expected]


def test_segmentation_onnx_reprompting_runs_the_encoder_once(segmenters, cat, monkeypatch):
    _, onnx_backend = segmenters
    image = cat.transpose(Image.Transpose.FLIP_TOP_BOTTOM)  # not embedded by another test yet
    calls = _count_runs(onnx_backend, monkeypatch)
    first = onnx_backend(image, points=[(100, 100, 1)])
    second = onnx_backend(image.copy(), points=[(300, 150, 1)])
    third = onnx_backend(image, boxes=[(20, 20, 300, 250)])
    assert calls == ["image_encoder", "prompt_decoder", "prompt_decoder", "prompt_decoder"]
    assert first.masks[0].score != second.masks[0].score and len(third) == 1


def test_backends_keep_separate_embedding_caches(segmenters, cat):
    torch_backend, onnx_backend = segmenters
    assert torch_backend.loaded is onnx_backend.loaded  # one model in memory serves both
    torch_embedding = torch_backend.image_embedding(cat).embeddings
    onnx_embedding = onnx_backend.image_embedding(cat).embeddings
    assert torch_embedding is not onnx_embedding
    assert np.abs(torch_embedding.numpy() - onnx_embedding.numpy()).max() < SCORE_TOL
