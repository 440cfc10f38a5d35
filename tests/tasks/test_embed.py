"""Embeddings: equal to the models' own features, normalised; text-to-image and image search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lmt
from lmt.retrieval import EmbeddingIndex


@pytest.fixture(scope="module")
def clip_embed():
    return lmt.pipeline("image-feature-extraction", model="clip-vit-b32", weights="tiny")


@pytest.fixture(scope="module")
def dino_embed():
    return lmt.pipeline("image-feature-extraction", model="dinov2-small", weights="tiny")


def test_clip_image_and_text_features_match_the_model(clip_embed, rgb_image):
    embedding = clip_embed(rgb_image)
    pixel_values = clip_embed.processor(images=rgb_image, return_tensors="pt")["pixel_values"]
    text_inputs = clip_embed.processor(text=["a cat"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        outputs = clip_embed.model(pixel_values=pixel_values, **text_inputs)
    np.testing.assert_allclose(embedding.vector, outputs.image_embeds[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(clip_embed.embed_text("a cat").vector, outputs.text_embeds[0].numpy(), atol=1e-5)


def test_dinov2_features_are_the_normalised_cls_token(dino_embed, rgb_image):
    embedding = dino_embed(rgb_image)
    pixel_values = dino_embed.processor(images=rgb_image, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        pooled = dino_embed.model(pixel_values=pixel_values).pooler_output[0]
    np.testing.assert_allclose(embedding.vector, (pooled / pooled.norm()).numpy(), atol=1e-5)
    assert float(np.linalg.norm(embedding.vector)) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(lmt.UnsupportedTaskError, match="clip"):
        dino_embed.embed_text("a cat")


def test_vit_embeds_and_a_family_without_the_task_is_refused(rgb_image):
    embed = lmt.pipeline("image-feature-extraction", model="vit-b16", weights="tiny")
    assert embed(rgb_image).dim == embed.model.config.hidden_size
    with pytest.raises(lmt.UnsupportedTaskError, match="image-feature-extraction"):
        lmt.pipeline("image-feature-extraction", model="resnet-50", weights="tiny")


def test_single_equals_batched(dino_embed, rgb_image, other_image):
    batch = dino_embed([other_image, rgb_image])
    np.testing.assert_allclose(batch[1].vector, dino_embed(rgb_image).vector, atol=1e-5)


def test_search_finds_the_query_image_first(dino_embed, clip_embed, rgb_image, other_image, cat_path):
    gallery = [other_image, rgb_image, str(cat_path)]
    hits = dino_embed.search(rgb_image, gallery, top_k=2)
    assert hits[0].index == 1 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(hits) == 2
    index = clip_embed.build_index(gallery, ids=["noise-1", "noise-0", "cat"])
    text_hits = clip_embed.search("a photo of a cat", index, top_k=3)
    assert sorted(h.id for h in text_hits) == ["cat", "noise-0", "noise-1"]
    scores = [h.score for h in text_hits]
    assert scores == sorted(scores, reverse=True)


def test_embedding_index_save_load_and_errors(tmp_path):
    index = EmbeddingIndex()
    index.add(np.eye(4)[:3], ids=["a", "b", "c"])
    assert index.search(np.array([0.1, 1.0, 0.0, 0.0]), top_k=1)[0].id == "b"
    path = index.save(tmp_path / "gallery")
    loaded = EmbeddingIndex.load(path)
    assert loaded.ids == ["a", "b", "c"]
    np.testing.assert_array_equal(loaded.vectors, index.vectors)
    with pytest.raises(lmt.InvalidInputError, match="dimension"):
        index.add(np.ones((1, 5)))
    with pytest.raises(lmt.InvalidInputError, match="empty"):
        EmbeddingIndex().search(np.ones(3))
    with pytest.raises(lmt.InvalidInputError, match="finite"):
        index.add(np.array([[np.nan, 0, 0, 0]]))
