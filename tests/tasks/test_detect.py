"""Open-vocabulary detection: per-query parity with transformers' pipeline, one pass for all queries."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from transformers import pipeline as hf_pipeline

import lmt
from lmt.ops import box_iou

QUERIES = ["car", "person", "bus"]


@pytest.fixture(scope="module", params=["owlv2-b16", "owlvit-b32"])
def detect(request):
    return lmt.pipeline("zero-shot-object-detection", model=request.param, weights="tiny")


def test_detection_matches_pipeline_per_query(detect, rgb_image):
    reference = hf_pipeline("zero-shot-object-detection", model=detect.loaded.source)
    threshold = 0.0  # tiny random weights score low; keep every box so the comparison covers all of them
    ours = detect(rgb_image, queries=QUERIES, threshold=threshold, nms_threshold=None, clip_boxes=False)
    theirs = reference(rgb_image, candidate_labels=QUERIES, threshold=threshold)
    assert len(ours) == len(theirs) > 0
    # the pipeline truncates boxes to ints; compare multisets of (label, rounded score, int box)
    ours_set = Counter(
        (d.label, round(d.score, 5), tuple(int(v) for v in torch.tensor(d.box).int().tolist())) for d in ours
    )
    theirs_set = Counter(
        (r["label"], round(r["score"], 5), (r["box"]["xmin"], r["box"]["ymin"], r["box"]["xmax"], r["box"]["ymax"]))
        for r in theirs
    )
    mismatched = ours_set - theirs_set
    # rounding at the 5th decimal can split a pair; allow those only when the scores agree to 1e-5
    for label, score, box in mismatched:
        assert any(
            label == r["label"] and abs(score - r["score"]) <= 1e-5 for r in theirs
        ), f"detection {label} {score} {box} is not in the pipeline's output"


def test_detection_matches_model_forward_with_processor(detect, rgb_image):
    """All queries in one forward pass through the model, post-processed per query, as the reference."""
    model, processor = detect.model, detect.processor
    inputs = processor(text=[QUERIES], images=rgb_image, return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)
    ours = detect(rgb_image, queries=QUERIES, threshold=0.05, nms_threshold=None)
    expected = []
    for q, query in enumerate(QUERIES):
        scores = outputs.logits[0, :, q].sigmoid()
        keep = scores > 0.05
        expected.extend((query, s) for s in scores[keep].tolist())
    assert sorted(s for _, s in expected) == pytest.approx(sorted(d.score for d in ours), abs=1e-5)


def test_detection_single_equals_batched(detect, rgb_image, other_image):
    batch = detect([other_image, rgb_image], queries=QUERIES, threshold=0.05, nms_threshold=None)
    single = detect(rgb_image, queries=QUERIES, threshold=0.05, nms_threshold=None)
    assert len(batch[1]) == len(single)
    for a, b in zip(batch[1], single, strict=True):
        assert a.label == b.label
        assert a.score == pytest.approx(b.score, abs=1e-5)
        assert a.box == pytest.approx(b.box, abs=1e-3)
    assert batch[1].image_size == (rgb_image.width, rgb_image.height)


def test_detection_threshold_top_k_and_nms(detect, rgb_image):
    everything = detect(rgb_image, queries=QUERIES, threshold=0.0, nms_threshold=None)
    assert all(d.score > 0.0 for d in everything)
    scores = [d.score for d in everything]
    assert scores == sorted(scores, reverse=True)
    top = detect(rgb_image, queries=QUERIES, threshold=0.0, nms_threshold=None, top_k=3)
    assert [d.score for d in top] == scores[:3]
    suppressed = detect(rgb_image, queries=QUERIES, threshold=0.0, nms_threshold=0.3)
    assert 0 < len(suppressed) <= len(everything)
    for label in QUERIES:
        boxes = torch.tensor([d.box for d in suppressed if d.label == label])
        if len(boxes) > 1:
            iou = box_iou(boxes, boxes)
            iou.fill_diagonal_(0)
            assert float(iou.max()) <= 0.3 + 1e-6
    assert set(everything.count_by_label()) <= set(QUERIES)
    assert everything.to_dict()["detections"][0]["box"].keys() == {"xmin", "ymin", "xmax", "ymax"}


def test_repeated_queries_skip_the_text_tower(detect, rgb_image):
    detect.loaded.cache("query_embeddings", 1).clear()
    calls = []
    text_model = detect.model.base_model.text_model
    handle = text_model.register_forward_hook(lambda *args: calls.append(1))
    try:
        detect(rgb_image, queries=["tree", "sky"])
        detect(rgb_image, queries=["tree", "sky"])
        assert len(calls) == 1
    finally:
        handle.remove()


def test_nms_matches_greedy_reference():
    from lmt.ops import batched_nms, nms

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 9, 10], [21, 21, 30, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.1])
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert nms(boxes, scores, 0.99).tolist() == [3, 0, 1, 2, 4]
    groups = torch.tensor([0, 1, 0, 0, 1])
    assert sorted(batched_nms(boxes, scores, groups, 0.5).tolist()) == [1, 2, 3, 4]
    assert nms(torch.zeros((0, 4)), torch.zeros(0), 0.5).tolist() == []


def test_boxes_are_clipped_to_the_image_by_default(detect):
    from PIL import Image

    wide = Image.open("examples/images/street.png").convert("RGB")  # 480x320: OWLv2 pads it to a square
    raw = detect(wide, queries=QUERIES, threshold=0.0, nms_threshold=None, clip_boxes=False)
    clipped = detect(wide, queries=QUERIES, threshold=0.0, nms_threshold=None)
    assert len(raw) == len(clipped)
    for d in clipped:
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 <= x1 <= wide.width and 0 <= y0 <= y1 <= wide.height


def test_checkpoint_tasks_are_enforced():
    with pytest.raises(lmt.UnsupportedTaskError, match="dinov2-small-imagenet1k"):
        lmt.pipeline("image-classification", model="dinov2-small", weights="tiny")
