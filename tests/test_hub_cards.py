"""Model cards render from hub_cards/ and parse back with huggingface_hub.ModelCard, carrying every field."""

from __future__ import annotations

import pytest
from huggingface_hub import ModelCard

import lmt
from lmt.hub.cards import render_model_card


def test_adapter_card_round_trips(tmp_path):
    card = render_model_card(
        repo_id="someone/vit-b16.digits-lora", base_model="google/vit-base-patch16-224", library_name="peft",
        pipeline_tag="image-classification", task="image-classification", method="LoRA r16 on q_proj/v_proj",
        metrics={"accuracy": 0.9731, "f1": 0.9702}, dataset_name="scikit-learn digits", dataset_id="sklearn/digits",
        tags=["vit"], model_class="ViTForImageClassification",
    )
    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    data = loaded.data.to_dict()
    assert data["library_name"] == "peft"
    assert data["base_model"] == "google/vit-base-patch16-224"
    assert data["pipeline_tag"] == "image-classification"
    assert data["license"] == "mit"
    assert data["datasets"] == ["sklearn/digits"]
    assert {"large-model-tutorial", "lora", "vit"} <= set(data["tags"])
    results = data["model-index"][0]["results"][0]
    assert {m["type"]: m["value"] for m in results["metrics"]} == {"accuracy": 0.9731, "f1": 0.9702}
    assert 'adapter="someone/vit-b16.digits-lora"' in loaded.text
    assert "PeftModel.from_pretrained" in loaded.text and "| accuracy | 0.9731 |" in loaded.text


def test_full_model_card_and_no_results():
    card = render_model_card(
        repo_id="someone/resnet-50.flowers", base_model="microsoft/resnet-50", library_name="transformers",
        pipeline_tag="image-classification", task="image-classification", method="full fine-tuning",
    )
    assert card.data.library_name == "transformers"
    assert "No evaluation results yet" in card.text
    assert 'pipeline("image-classification", model="someone/resnet-50.flowers")' in card.text


def test_base_model_must_be_a_hub_id(tmp_path):
    with pytest.raises(lmt.InvalidInputError, match="Hub id"):
        render_model_card(
            repo_id="a/b", base_model=str(tmp_path), library_name="peft", pipeline_tag="image-classification",
            task="image-classification", method="LoRA",
        )
    with pytest.raises(lmt.InvalidInputError, match="library_name"):
        render_model_card(
            repo_id="a/b", base_model="google/vit-base-patch16-224", library_name="timm",
            pipeline_tag="image-classification", task="image-classification", method="LoRA",
        )
