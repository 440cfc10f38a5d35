"""Zero-shot and supervised classification: parity with transformers pipelines, batching, label cache."""

from __future__ import annotations

import pytest
from transformers import pipeline as hf_pipeline

import lmt

LABELS = ["cat", "dog", "car", "a red bus"]


@pytest.fixture(scope="module")
def zero_shot():
    return lmt.pipeline("zero-shot-image-classification", model="clip-vit-b32", weights="tiny")


def _as_dict(classification):
    return {p.label: p.score for p in classification.predictions}


def test_zero_shot_matches_transformers_pipeline(zero_shot, rgb_image, other_image):
    reference = hf_pipeline("zero-shot-image-classification", model=zero_shot.loaded.source)
    for image in (rgb_image, other_image):
        ours = _as_dict(zero_shot(image, labels=LABELS))
        theirs = {r["label"]: r["score"] for r in reference(image, candidate_labels=LABELS)}
        assert ours.keys() == theirs.keys()
        for label in LABELS:
            assert ours[label] == pytest.approx(theirs[label], abs=1e-5)


def test_zero_shot_custom_template_matches_pipeline(zero_shot, rgb_image):
    reference = hf_pipeline("zero-shot-image-classification", model=zero_shot.loaded.source)
    ours = _as_dict(zero_shot(rgb_image, labels="cat, dog", template="a photo of a {}."))
    theirs = {
        r["label"]: r["score"]
        for r in reference(rgb_image, candidate_labels=["cat", "dog"], hypothesis_template="a photo of a {}.")
    }
    for label in theirs:
        assert ours[label] == pytest.approx(theirs[label], abs=1e-5)


def test_zero_shot_single_equals_batched(zero_shot, rgb_image, other_image, cat_path):
    batch = zero_shot([other_image, rgb_image, str(cat_path)], labels=LABELS)
    assert len(batch) == 3
    single = zero_shot(rgb_image, labels=LABELS)
    for label, score in _as_dict(single).items():
        assert _as_dict(batch[1])[label] == pytest.approx(score, abs=1e-5)


def test_zero_shot_results_are_ranked_and_sum_to_one(zero_shot, rgb_image):
    result = zero_shot(rgb_image, labels=LABELS)
    scores = [p.score for p in result.predictions]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)
    assert result.label == result.predictions[0].label
    assert len(zero_shot(rgb_image, labels=LABELS, top_k=2).predictions) == 2
    assert result.to_dict()["predictions"][0]["label"] == result.label


def test_repeated_label_set_skips_the_text_tower(rgb_image):
    classify = lmt.pipeline("zero-shot-image-classification", model="clip-vit-b32", weights="tiny")
    classify.loaded.cache("label_embeddings", 1).clear()
    calls = []
    handle = classify.model.text_model.register_forward_hook(lambda *args: calls.append(1))
    vision_calls = []
    vision_handle = classify.model.vision_model.register_forward_hook(lambda *args: vision_calls.append(1))
    try:
        first = classify(rgb_image, labels=["zebra", "lion"])
        assert len(calls) == 1
        second = classify(rgb_image, labels=["zebra", "lion"])
        assert len(calls) == 1, "the second call with the same labels ran the text tower again"
        assert len(vision_calls) == 2
        assert _as_dict(first) == _as_dict(second)
        classify(rgb_image, labels=["zebra", "lion"], template="a photo of a {}.")
        assert len(calls) == 2, "a new template must re-embed the labels"
    finally:
        handle.remove()
        vision_handle.remove()


@pytest.mark.parametrize("name", ["vit-b16", "resnet-50", "dinov2-small-imagenet1k"])
def test_classification_matches_transformers_pipeline(name, rgb_image, other_image):
    classify = lmt.pipeline("image-classification", model=name, weights="tiny")
    reference = hf_pipeline("image-classification", model=classify.loaded.source)
    for image in (rgb_image, other_image):
        ours = classify(image, top_k=3)
        theirs = reference(image, top_k=3)
        assert [p.label for p in ours.predictions] == [r["label"] for r in theirs]
        for p, r in zip(ours.predictions, theirs, strict=True):
            assert p.score == pytest.approx(r["score"], abs=1e-5)


def test_classification_single_equals_batched(rgb_image, other_image):
    classify = lmt.pipeline("image-classification", model="vit-b16", weights="tiny", batch_size=2)
    batch = classify([rgb_image, other_image, rgb_image], top_k=5)
    single = classify(other_image, top_k=5)
    assert [p.label for p in batch[1].predictions] == [p.label for p in single.predictions]
    for a, b in zip(batch[1].predictions, single.predictions, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-5)
    # top_k larger than the number of classes returns every class once
    num_labels = classify.model.config.num_labels
    assert len(classify(rgb_image, top_k=1000).predictions) == num_labels
