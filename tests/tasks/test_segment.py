"""SAM: prompted and automatic masks match transformers; the image embedding is computed once per image."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline as hf_pipeline
from transformers.models.sam import image_processing_pil_sam

import lmt


@pytest.fixture(scope="module")
def segment():
    return lmt.pipeline("mask-generation", model="sam-vit-base", weights="tiny")


@pytest.fixture(scope="module")
def cat():
    return Image.open("examples/images/cat.png").convert("RGB")


def _reference_prompted(segment, image, **prompts):
    """SamProcessor + SamModel.forward + post_process_masks: the transformers way, end to end."""
    processor, model = segment.processor, segment.model
    inputs = processor(images=image, return_tensors="pt", **prompts)
    with torch.inference_mode():
        outputs = model(**inputs, multimask_output=prompts.pop("multimask", True))
    masks = processor.image_processor.post_process_masks(
        outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )[0]
    return masks.numpy(), outputs.iou_scores[0].numpy()


def test_point_prompt_matches_transformers(segment, cat):
    ours = segment(cat, points=[(120, 80, 1)])
    masks, scores = _reference_prompted(segment, cat, input_points=[[[[120, 80]]]], input_labels=[[[1]]])
    order = np.argsort(-scores[0])
    assert len(ours) == 3
    for mask, index in zip(ours, order, strict=True):
        assert mask.score == pytest.approx(float(scores[0][index]), abs=1e-5)
        assert np.array_equal(mask.mask, masks[0][index])
        assert mask.mask.shape == (cat.height, cat.width)


def test_points_with_negative_and_box_match_transformers(segment, cat):
    ours = segment(cat, points=[(120, 80, 1), (300, 200, 0)], boxes=[(50, 20, 350, 280)])
    masks, scores = _reference_prompted(
        segment, cat, input_points=[[[[120, 80], [300, 200]]]], input_labels=[[[1, 0]]],
        input_boxes=[[[50, 20, 350, 280]]], multimask=False,
    )
    assert len(ours) == 1
    assert ours.masks[0].score == pytest.approx(float(scores[0][0]), abs=1e-5)
    assert np.array_equal(ours.masks[0].mask, masks[0][0])


def test_several_boxes_give_one_mask_each(segment, cat):
    boxes = [(10, 10, 200, 200), (150, 50, 420, 290)]
    ours = segment(cat, boxes=boxes)
    masks, scores = _reference_prompted(segment, cat, input_boxes=[[list(b) for b in boxes]], multimask=False)
    assert len(ours) == 2
    for i, mask in enumerate(ours):
        assert mask.score == pytest.approx(float(scores[i][0]), abs=1e-5)
        assert np.array_equal(mask.mask, masks[i][0])


def test_reprompt_reuses_the_image_embedding(segment, cat):
    segment.loaded.cache("image_embeddings", 1).clear()
    calls = []
    handle = segment.model.vision_encoder.register_forward_hook(lambda *args: calls.append(1))
    decoder_calls = []
    decoder_handle = segment.model.mask_decoder.register_forward_hook(lambda *args: decoder_calls.append(1))
    try:
        first = segment(cat, points=[(100, 100, 1)])
        second = segment(cat.copy(), points=[(200, 150, 1)])  # an equal image, another object
        third = segment(cat, boxes=[(20, 20, 300, 250)])
        assert len(calls) == 1, "re-prompting the same image ran SAM's vision encoder again"
        assert len(decoder_calls) == 3
        assert first.masks[0].score != second.masks[0].score
        assert len(third) == 1
        segment(cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT), points=[(100, 100, 1)])
        assert len(calls) == 2, "a different image must be encoded"
    finally:
        handle.remove()
        decoder_handle.remove()


def test_single_equals_batched(segment, cat, rgb_image):
    batch = segment([rgb_image, cat], points=[(30, 20, 1)])
    single = segment(cat, points=[(30, 20, 1)])
    assert [m.score for m in batch[1]] == pytest.approx([m.score for m in single], abs=1e-5)
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(batch[1], single, strict=True))


def _naive_batched_nms(boxes, scores, idxs, iou_threshold):
    """A deliberately simple O(n^2) NMS, independent of lmt.ops, standing in for torchvision's."""

    def iou(a, b):
        inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    keep = []
    for i in sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i)):
        if all(idxs[i] != idxs[k] or iou(boxes[i].tolist(), boxes[k].tolist()) <= iou_threshold for k in keep):
            keep.append(i)
    return torch.tensor(keep, dtype=torch.long)


def test_automatic_masks_match_transformers_pipeline(segment, cat, monkeypatch):
    reference = hf_pipeline("mask-generation", model=segment.loaded.source)
    boxes_module = types.ModuleType("torchvision.ops.boxes")
    boxes_module.batched_nms = _naive_batched_nms
    monkeypatch.setitem(sys.modules, "torchvision.ops.boxes", boxes_module)
    monkeypatch.setattr(
        reference.image_processor,
        "post_process_for_mask_generation",
        lambda *args: image_processing_pil_sam._post_process_for_mask_generation(*args),
    )
    options = {"points_per_batch": 16}
    theirs = reference(cat, points_per_crop=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, **options)
    ours = segment(cat, points_per_side=4, pred_iou_threshold=0.0, stability_threshold=0.0, **options)
    assert len(ours) == len(theirs["masks"]) > 1
    assert [m.score for m in ours] == pytest.approx(theirs["scores"].tolist(), abs=1e-5)
    for mask, their_mask in zip(ours, theirs["masks"], strict=True):
        assert np.array_equal(mask.mask, np.asarray(their_mask))
    # masks round-trip through the JSON form
    from lmt.results import rle_to_mask

    assert np.array_equal(rle_to_mask(ours.masks[0].to_dict()["rle"]), ours.masks[0].mask)


def test_automatic_thresholds_filter(segment, cat):
    loose = segment(cat, points_per_side=4, pred_iou_threshold=0.0, stability_threshold=0.0)
    strict = segment(cat, points_per_side=4, pred_iou_threshold=1.0, stability_threshold=0.0)
    assert len(strict) < len(loose)
    assert all(m.score > 1.0 for m in strict)  # random tiny weights can predict IoU scores above 1
    assert len(segment(cat, points_per_side=4, pred_iou_threshold=0.0, stability_threshold=0.0, top_k=2)) == 2
