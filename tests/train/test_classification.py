"""Image-classification fine-tuning on the tiny ViT/ResNet: runs, run folders, reload, merge, cards, refusals."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

import lmt
from lmt.errors import InvalidInputError, UnsupportedDeviceError
from lmt.train import config_from_dict, train
from tests.hub.test_publish import fake_hub  # noqa: F401  (a fixture)

from .conftest import tiny_config


def _val_images(folder, count=12):
    paths = sorted(folder.rglob("*.png"))[::25][:count]
    return [Image.open(p).convert("RGB") for p in paths]


def _logits(model, processor, images):
    with torch.no_grad():
        return model(pixel_values=processor(images=images, return_tensors="pt")["pixel_values"]).logits


@pytest.fixture(scope="module")
def lora_run(digits_small, tmp_path_factory):
    output = tmp_path_factory.mktemp("runs")
    config = config_from_dict(tiny_config(digits_small, output, card={"dataset_id": "sklearn/digits"}))
    return train(config)


def test_lora_run_folder_is_hub_ready(lora_run):
    run = lora_run.run_dir
    assert run.name == "vit-b16-tiny_lora-r16_bs16_2ep_digits"
    for name in ("README.md", "adapter_config.json", "adapter_model.safetensors", "preprocessor_config.json",
                 "train_config.yaml", "metrics.jsonl", "lmt_run.json", "plots/loss.png", "plots/accuracy.png",
                 "plots/confusion_matrix.png"):
        assert (run / name).is_file(), name
    assert not (run / "model.safetensors").exists()  # an adapter run writes the adapter, not the base
    info = json.loads((run / "lmt_run.json").read_text())
    assert info["library_name"] == "peft" and info["method"] == "lora" and info["base_model"] is None
    assert info["labels"] == [str(d) for d in range(10)]
    assert set(info["metrics"]) == {"loss", "accuracy", "macro_f1"}
    assert 0.0 <= info["metrics"]["accuracy"] <= 1.0
    assert info["metrics"] == lora_run.metrics
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["split"] == "val"] == [0, 1]
    assert all(r["loss"] > 0 for r in records)
    adapter_config = json.loads((run / "adapter_config.json").read_text())
    assert not adapter_config["base_model_name_or_path"].startswith("/")  # no local path is ever written
    assert set(adapter_config["target_modules"]) == {"q_proj", "v_proj"}
    assert adapter_config["modules_to_save"] == ["classifier"]


def test_lora_trains_only_the_adapter_and_the_head(lora_run):
    trainable = [name for name, p in lora_run.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name or "classifier" in name for name in trainable)
    assert lora_run.trainable_parameters < lora_run.total_parameters * 0.25
    saved = load_file(str(lora_run.run_dir / "adapter_model.safetensors"))
    assert all("lora_" in key or "classifier" in key for key in saved)


def test_card_carries_every_field(lora_run):
    card = ModelCard.load(lora_run.run_dir / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "peft" and data["pipeline_tag"] == "image-classification"
    assert data["license"] == "mit" and data["datasets"] == ["sklearn/digits"]
    assert "base_model" not in data  # the tiny base is not on the Hub: no path pretends to be a Hub id
    assert {"large-model-tutorial", "lora", "vit", "tiny-random-weights"} <= set(data["tags"])
    metrics = {m["type"]: m["value"] for m in data["model-index"][0]["results"][0]["metrics"]}
    assert metrics["accuracy"] == pytest.approx(lora_run.metrics["accuracy"])
    assert "PeftModel.from_pretrained" in card.text and "num_labels=10" in card.text
    assert "lmt.pipeline" in card.text


def test_reload_by_path_gives_identical_predictions(lora_run, digits_small):
    images = _val_images(digits_small)
    trained = lora_run.model
    processor = lmt.load("vit", weights="tiny", task="image-classification").processor
    expected = _logits(trained, processor, images).softmax(-1)
    classify = lmt.ImageClassification("vit", weights="tiny", adapter=str(lora_run.run_dir))
    results = classify(images, top_k=10)
    for row, result in zip(expected, results, strict=True):
        scores = {p.label: p.score for p in result.predictions}
        assert [scores[str(i)] for i in range(10)] == pytest.approx(row.tolist(), abs=1e-6)


def test_plain_peft_load_and_merge_match(lora_run, digits_small):
    from peft import PeftModel
    from transformers import AutoImageProcessor, ViTForImageClassification

    from lmt.tiny import tiny_model_path

    run = lora_run.run_dir
    labels = json.loads((run / "lmt_run.json").read_text())["labels"]
    base = ViTForImageClassification.from_pretrained(
        tiny_model_path("vit"), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)}, ignore_mismatched_sizes=True,
    )
    model = PeftModel.from_pretrained(base, str(run)).eval()
    processor = AutoImageProcessor.from_pretrained(run)
    images = _val_images(digits_small)
    expected = _logits(lora_run.model, processor, images)
    adapter_logits = _logits(model, processor, images)
    assert torch.allclose(adapter_logits, expected, atol=1e-6)
    merged = model.merge_and_unload()
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    assert torch.allclose(_logits(merged, processor, images), expected, atol=1e-5)


def test_full_resnet_run_reloads_as_a_model(digits_small, tmp_path):
    config = config_from_dict(tiny_config(digits_small, tmp_path, model="resnet", method="full",
                                          optim={"epochs": 1}))
    result = train(config)
    run = result.run_dir
    assert (run / "model.safetensors").is_file() and (run / "config.json").is_file()
    assert not (run / "adapter_config.json").exists()
    card = ModelCard.load(run / "README.md").data.to_dict()
    assert card["library_name"] == "transformers"
    images = _val_images(digits_small)
    classify = lmt.ImageClassification(str(run))
    processor = classify.processor
    expected = _logits(result.model, processor, images).softmax(-1)
    for row, got in zip(expected, classify(images, top_k=10), strict=True):
        scores = {p.label: p.score for p in got.predictions}
        assert [scores[str(i)] for i in range(10)] == pytest.approx(row.tolist(), abs=1e-6)


def test_resnet_lora_keeps_frozen_batchnorm_statistics(digits_small, tmp_path):
    """A LoRA adapter carries no BatchNorm buffers, so training must not move the frozen base's statistics."""
    config = config_from_dict(tiny_config(digits_small, tmp_path, model="resnet", optim={"epochs": 1}))
    result = train(config)
    base = lmt.load("resnet", weights="tiny", task="image-classification").model
    base_buffers = dict(base.named_buffers())
    for name, buffer in result.model.get_base_model().named_buffers():
        if "running_" in name and "classifier" not in name:
            assert torch.equal(buffer, base_buffers[name]), name


def test_gradient_accumulation_and_max_steps(digits_small, tmp_path):
    config = config_from_dict(tiny_config(digits_small, tmp_path, optim={"grad_accum": 3, "max_steps": 4,
                                                                         "epochs": 5}))
    result = train(config)
    assert result.global_step == 4
    info = json.loads((result.run_dir / "lmt_run.json").read_text())
    assert info["epochs_run"] == 1 and info["global_step"] == 4


def test_early_stopping_stops(digits_small, tmp_path):
    # lr so small nothing improves after the first epoch: patience 1 stops at epoch 2 of 6
    config = config_from_dict(tiny_config(digits_small, tmp_path, optim={"epochs": 6, "lr": 1e-9},
                                          eval={"early_stopping_patience": 1, "metric_for_best": "accuracy"}))
    result = train(config)
    info = json.loads((result.run_dir / "lmt_run.json").read_text())
    assert info["epochs_run"] < 6 and info["best_epoch"] == 0


def test_qlora_is_refused_off_cuda(digits_small, tmp_path):
    config = config_from_dict(tiny_config(digits_small, tmp_path, method="qlora"))
    with pytest.raises(UnsupportedDeviceError) as info:
        train(config)
    assert "CUDA GPUs only" in str(info.value) and "method: lora" in str(info.value)
    assert not any(tmp_path.iterdir())  # refused before any folder was written


def test_existing_run_folder_is_never_clobbered(lora_run, digits_small):
    values = tiny_config(digits_small, lora_run.run_dir.parent)
    with pytest.raises(InvalidInputError, match="already holds a finished run"):
        train(config_from_dict(values))
    stranger = lora_run.run_dir.parent / "not-a-run"
    stranger.mkdir()
    (stranger / "precious.txt").write_text("keep me")
    values["run"]["name"], values["run"]["overwrite"] = "not-a-run", True
    with pytest.raises(InvalidInputError, match="files that are not a run"):
        train(config_from_dict(values))
    assert (stranger / "precious.txt").read_text() == "keep me"


def test_bad_data_is_reported(tmp_path):
    (tmp_path / "one" / "cat").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "one" / "cat" / "a.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "one" / "cat" / "b.png")
    with pytest.raises(InvalidInputError, match="at least 2 classes"):
        train(config_from_dict(tiny_config(tmp_path / "one", tmp_path / "runs")))
    table = tmp_path / "rows.csv"
    table.write_text("image,label\nmissing.png,cat\n")
    with pytest.raises(InvalidInputError, match="not found"):
        train(config_from_dict(tiny_config(table, tmp_path / "runs")))


def test_a_trained_run_publishes_with_its_names_filled_in(lora_run, fake_hub, monkeypatch):  # noqa: F811
    """lmt train -> lmt hub push: the uploaded card names the repository and the Hub base model, never a path."""
    from lmt.hub import push_run

    monkeypatch.setenv("HF_TOKEN", "hf_" + "0" * 32)
    push_run(lora_run.run_dir, "alice/vit-digits-lora", base_model="google/vit-base-patch16-224")
    uploaded = fake_hub.staged
    assert not any(path.startswith("checkpoints/") or path.startswith(".") for path in uploaded)
    card = ModelCard(uploaded["README.md"].decode())
    assert card.data.base_model == "google/vit-base-patch16-224" and card.data.library_name == "peft"
    assert 'adapter="alice/vit-digits-lora"' in card.text
    assert 'from_pretrained("google/vit-base-patch16-224"' in card.text
    assert "<user>" not in card.text and "<path-or-hub-id" not in card.text and "/tmp" not in card.text
    adapter_config = json.loads(uploaded["adapter_config.json"])
    assert adapter_config["base_model_name_or_path"] == "google/vit-base-patch16-224"


def test_trained_adapter_by_hub_id_and_a_hub_base(lora_run, digits_small, tmp_path, monkeypatch):
    """The run folder, published as a Hub repository, loads by Hub id (pinned or not) to the trained predictions;
    and a base given by Hub id is written into the card as that id."""
    from lmt.tiny import tiny_model_path
    from tests.hubcache import lay_out_hub_repo, use_hub_cache

    cache = tmp_path / "hub"
    commit, base_commit = "a" * 40, "b" * 40
    lay_out_hub_repo(cache, "alice/vit-digits-lora", {commit: lora_run.run_dir}, {"main": commit, "v1": commit})
    lay_out_hub_repo(cache, "lmt-test/tiny-vit", {base_commit: tiny_model_path("vit")}, {"main": base_commit})
    use_hub_cache(monkeypatch, cache)

    images = _val_images(digits_small)
    processor = lmt.load("vit", weights="tiny", task="image-classification").processor
    expected = _logits(lora_run.model, processor, images).softmax(-1)
    for revision in (None, "v1", commit):
        classify = lmt.ImageClassification("vit", weights="tiny", adapter="alice/vit-digits-lora",
                                           adapter_revision=revision)
        for row, result in zip(expected, classify(images, top_k=10), strict=True):
            scores = {p.label: p.score for p in result.predictions}
            assert [scores[str(i)] for i in range(10)] == pytest.approx(row.tolist(), abs=1e-6)

    # an unregistered Hub base: its family comes from its config, and the card names it
    result = train(config_from_dict(tiny_config(digits_small, tmp_path / "runs", model="lmt-test/tiny-vit",
                                                weights="real", optim={"epochs": 1})))
    card = ModelCard.load(result.run_dir / "README.md").data.to_dict()
    assert card["base_model"] == "lmt-test/tiny-vit"
    assert json.loads((result.run_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "lmt-test/tiny-vit"


def test_dinov2_backbone_gets_a_new_head(digits_small, tmp_path):
    result = train(config_from_dict(tiny_config(digits_small, tmp_path, model="dinov2", optim={"epochs": 1})))
    info = json.loads((result.run_dir / "lmt_run.json").read_text())
    assert info["model_class"] == "Dinov2ForImageClassification" and len(info["labels"]) == 10
    trainable = [name for name, p in result.model.named_parameters() if p.requires_grad]
    assert any("classifier" in name for name in trainable) and any("lora_" in name for name in trainable)
    classify = lmt.ImageClassification("dinov2", weights="tiny", adapter=str(result.run_dir))
    assert len(classify(_val_images(digits_small, 2), top_k=3)) == 2
