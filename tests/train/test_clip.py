"""CLIP fine-tuning on the tiny CLIP: clip-contrastive (retrieval recall@1) and clip-zero-shot-head (accuracy).

Runs, run folders, reload through the SDK (adapter and full model), learning, refusals. The data are write_shapes
scenes: captions.jsonl for the contrastive task, and (image, colour) pairs taken from the captions for the head,
an easy task on which even the tiny random-weight CLIP learns in a few steps.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

import lmt
from lmt.cli import main as cli_main
from lmt.data.samples import write_shapes
from lmt.errors import InvalidInputError
from lmt.train import config_from_dict, load_config, train
from lmt.train.objectives import clip as clip_objectives

from .conftest import with_sections

REPO = Path(__file__).resolve().parents[2]
COLOURS = ["blue", "green", "red"]
VAL_COUNT = 24
BATCH = 8


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # a ~60k-parameter model: a second thread only adds synchronisation (10x slower on a busy 2-core machine)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _colour_table(folder: Path) -> Path:
    """(image, colour) rows from write_shapes' captions ("a red circle" -> "red")."""
    rows = [json.loads(line) for line in (folder / "captions.jsonl").read_text().splitlines()]
    path = folder / "colours.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label"])
        writer.writerows([row["image"], row["caption"].split()[1]] for row in rows)
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clip-shapes")
    train_dir = write_shapes(root / "train", count=48, seed=0)
    val_dir = write_shapes(root / "val", count=VAL_COUNT, seed=1)
    return {
        "train_dir": train_dir, "val_dir": val_dir,
        "train_captions": train_dir / "captions.jsonl", "val_captions": val_dir / "captions.jsonl",
        "train_colours": _colour_table(train_dir), "val_colours": _colour_table(val_dir),
    }


def _config(task: str, train_file: Path, val_file: Path, output: Path, **sections) -> dict:
    config = {
        "task": task, "model": "clip", "weights": "tiny", "method": "lora",
        "data": {"train": str(train_file), "val": str(val_file)},
        "optim": {"epochs": 3, "batch_size": BATCH, "lr": 1e-2},
        "run": {"output_dir": str(output), "log_every_steps": 1},
    }
    return with_sections(config, **sections)


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    return [json.loads(line) for line in path.read_text().splitlines()]


def _images(path: Path) -> list[Image.Image]:
    return [Image.open(path.parent / row["image"]).convert("RGB") for row in _rows(path)]


def _info(run: Path) -> dict:
    return json.loads((run / "lmt_run.json").read_text())


def _best_extras(run: Path) -> dict:
    return json.loads((run / "extras" / f"epoch-{_info(run)['best_epoch']:03d}.json").read_text())


def _zero_shot_probabilities(model, processor, images, prompts) -> torch.Tensor:
    """What the trained model itself says: CLIPModel.forward's logits_per_image over the label prompts."""
    tokens = processor.tokenizer(prompts, return_tensors="pt", padding=True, truncation=True)
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixels)
    return out.logits_per_image.softmax(-1)


def _sdk_probabilities(classify, images, labels, template) -> torch.Tensor:
    results = classify(images, labels=labels, template=template)
    return torch.tensor([[r.as_label_dict()[label] for label in labels] for r in results])


# ------------------------------------------------------------------------------------------------ zero-shot head


@pytest.fixture(scope="module")
def head_run(shapes, tmp_path_factory):
    output = tmp_path_factory.mktemp("clip-head-runs")
    return train(config_from_dict(_config("clip-zero-shot-head", shapes["train_colours"], shapes["val_colours"],
                                          output, card={"dataset_name": "shapes colours"})))


def test_zero_shot_head_run_folder(head_run):
    run = head_run.run_dir
    assert run.name == "clip-vit-b32-tiny_lora-r16_bs8_3ep_colours"
    for name in ("README.md", "adapter_config.json", "adapter_model.safetensors", "processor_config.json",
                 "tokenizer.json", "train_config.yaml", "metrics.jsonl", "lmt_run.json", "plots/loss.png",
                 "plots/accuracy.png", "plots/macro_f1.png", "plots/confusion_matrix.png"):
        assert (run / name).is_file(), name
    assert not (run / "model.safetensors").exists()
    info = _info(run)
    assert info["task"] == "clip-zero-shot-head" and info["sdk_task"] == "zero-shot-image-classification"
    assert info["zero_shot_labels"] == COLOURS and info["label_template"] == "This is a photo of {}."
    assert "labels" not in info  # that key would make lmt.load build a classification head CLIP does not have
    assert set(info["metrics"]) == {"loss", "accuracy", "macro_f1"} and info["metrics"] == head_run.metrics
    assert 0.0 <= info["metrics"]["accuracy"] <= 1.0 and 0.0 <= info["metrics"]["macro_f1"] <= 1.0
    assert info["metrics"]["loss"] >= 0.0
    matrix = _best_extras(run)["confusion_matrix"]
    assert len(matrix) == 3 and sum(map(sum, matrix)) == VAL_COUNT
    # LoRA on q_proj/v_proj of both towers, nothing else trained
    adapter_config = json.loads((run / "adapter_config.json").read_text())
    assert set(adapter_config["target_modules"]) == {"q_proj", "v_proj"} and not adapter_config["modules_to_save"]
    saved = load_file(str(run / "adapter_model.safetensors"))
    assert all("lora_" in key for key in saved)
    assert any("text_model" in key for key in saved) and any("vision_model" in key for key in saved)
    card = ModelCard.load(run / "README.md")
    assert card.data.to_dict()["pipeline_tag"] == "zero-shot-image-classification"
    assert "zero-shot-image-classification" in card.text and "num_labels" not in card.text


def test_zero_shot_head_training_lowers_the_loss(head_run):
    records = [json.loads(line) for line in (head_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(train_losses) == 18  # 48 examples / batch 8 * 3 epochs, one line a step
    assert sum(train_losses[-3:]) < sum(train_losses[:3])


def test_zero_shot_head_adapter_reloads_with_the_same_predictions(head_run, shapes):
    images = _images(shapes["val_colours"])
    template = _info(head_run.run_dir)["label_template"]
    processor = lmt.load("clip", weights="tiny", task="zero-shot-image-classification").processor
    expected = _zero_shot_probabilities(head_run.model, processor, images, [template.format(c) for c in COLOURS])
    classify = lmt.ZeroShotImageClassification("clip", weights="tiny", adapter=str(head_run.run_dir))
    got = _sdk_probabilities(classify, images, COLOURS, template)
    assert torch.allclose(got, expected, atol=1e-5)
    # and the same numbers the run recorded for its best epoch
    targets = torch.tensor([COLOURS.index(row["label"]) for row in _rows(shapes["val_colours"])])
    matrix = torch.zeros(3, 3, dtype=torch.long)
    for target, prediction in zip(targets.tolist(), got.argmax(-1).tolist(), strict=True):
        matrix[target, prediction] += 1
    assert matrix.tolist() == _best_extras(head_run.run_dir)["confusion_matrix"]
    loss = float(-got[torch.arange(len(targets)), targets].log().mean())
    assert loss == pytest.approx(head_run.metrics["loss"], rel=1e-3, abs=1e-5)


def test_zero_shot_head_plain_peft_reload_matches(head_run, shapes):
    from peft import PeftModel
    from transformers import CLIPModel, CLIPProcessor

    from lmt.tiny import tiny_model_path

    model = PeftModel.from_pretrained(CLIPModel.from_pretrained(tiny_model_path("clip")), str(head_run.run_dir)).eval()
    processor = CLIPProcessor.from_pretrained(head_run.run_dir)
    images = _images(shapes["val_colours"])[:6]
    prompts = [f"This is a photo of {c}." for c in COLOURS]
    expected = _zero_shot_probabilities(head_run.model, processor, images, prompts)
    assert torch.allclose(_zero_shot_probabilities(model, processor, images, prompts), expected, atol=1e-6)


def test_zero_shot_head_beats_the_untrained_model(head_run, shapes):
    images = _images(shapes["val_colours"])
    targets = [row["label"] for row in _rows(shapes["val_colours"])]

    def accuracy(classify) -> float:
        return sum(r.label == t for r, t in zip(classify(images, labels=COLOURS), targets, strict=True)) / len(targets)

    untrained = accuracy(lmt.ZeroShotImageClassification("clip", weights="tiny"))
    trained = accuracy(lmt.ZeroShotImageClassification("clip", weights="tiny", adapter=str(head_run.run_dir)))
    assert trained == pytest.approx(head_run.metrics["accuracy"])
    assert trained >= 0.8 and trained >= untrained + 0.3, (untrained, trained)


def test_zero_shot_head_full_run_with_its_own_template_reloads_as_a_model(shapes, tmp_path):
    template = "a {} shape"
    config = load_config(REPO / "configs/train/clip-zero-shot-head.yaml", [
        "weights=tiny", "method=full", f"data.train={shapes['train_dir'] / 'shapes.csv'}",
        f"data.val={shapes['val_dir'] / 'shapes.csv'}", f"data.label_template={template}", "optim.epochs=1",
        f"optim.batch_size={BATCH}", "optim.lr=1e-3", "data.max_train_samples=16", f"run.output_dir={tmp_path}",
    ])
    result = train(config)
    run = result.run_dir
    assert (run / "model.safetensors").is_file() and (run / "config.json").is_file()
    assert not (run / "adapter_config.json").exists()
    info = _info(run)
    labels = info["zero_shot_labels"]
    assert info["library_name"] == "transformers" and info["label_template"] == template
    assert labels == sorted({row["label"] for row in _rows(shapes["train_dir"] / "shapes.csv")[:16]})
    images = _images(shapes["val_dir"] / "shapes.csv")[:8]
    classify = lmt.ZeroShotImageClassification(str(run))
    expected = _zero_shot_probabilities(result.model, classify.processor, images, [template.format(x) for x in labels])
    assert torch.allclose(_sdk_probabilities(classify, images, labels, template), expected, atol=1e-5)
    # full fine-tuning trained the towers: the model is no longer the tiny base
    base = lmt.load("clip", weights="tiny", task="zero-shot-image-classification").model
    assert not torch.equal(result.model.text_projection.weight, base.text_projection.weight)


# ------------------------------------------------------------------------------------------------ contrastive


def _embeddings(embed, images, captions) -> tuple[torch.Tensor, torch.Tensor]:
    """SDK image and caption embeddings, one row per (image, caption); embed_text takes each text once."""
    import numpy as np

    image_vectors = torch.from_numpy(np.stack([e.vector for e in embed(images)]))
    unique = sorted(set(captions))
    text_vectors = torch.from_numpy(np.stack([e.vector for e in embed.embed_text(unique)]))
    return image_vectors, text_vectors[[unique.index(c) for c in captions]]


def _in_batch_loss(images: torch.Tensor, texts: torch.Tensor, scale: float) -> float:
    """The mean per-example symmetric InfoNCE over the validation batches, as the run's evaluation computes it."""
    import torch.nn.functional as F

    losses = []
    for start in range(0, len(images), BATCH):
        logits = scale * images[start : start + BATCH] @ texts[start : start + BATCH].t()
        targets = torch.arange(len(logits))
        losses.append((F.cross_entropy(logits, targets, reduction="none")
                       + F.cross_entropy(logits.t(), targets, reduction="none")) / 2)
    return float(torch.cat(losses).mean())


def test_contrastive_through_the_cli_trains_and_reloads(shapes, tmp_path, capsys):
    code = cli_main([
        "train", str(REPO / "configs/train/clip-contrastive.yaml"), "weights=tiny",
        f"data.train={shapes['train_captions']}", f"data.val={shapes['val_captions']}", "optim.epochs=2",
        f"optim.batch_size={BATCH}", "optim.lr=1e-2", f"run.output_dir={tmp_path}", "--json",
    ])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    run = Path(result["run_dir"])
    assert run.name == "clip-vit-b32-tiny_lora-r16_bs8_2ep_captions"
    metrics = result["metrics"]
    assert set(metrics) == {"loss", "image_to_text_recall_at_1", "text_to_image_recall_at_1", "recall_at_1"}
    for name in ("image_to_text_recall_at_1", "text_to_image_recall_at_1"):
        assert 0.0 <= metrics[name] <= 1.0 and (metrics[name] * VAL_COUNT) == pytest.approx(
            round(metrics[name] * VAL_COUNT))
    assert metrics["recall_at_1"] == pytest.approx(
        (metrics["image_to_text_recall_at_1"] + metrics["text_to_image_recall_at_1"]) / 2)
    for name in ("adapter_model.safetensors", "adapter_config.json", "lmt_run.json", "plots/recall_at_1.png"):
        assert (run / name).is_file(), name
    info = _info(run)
    assert info["task"] == "clip-contrastive" and info["metric_for_best"] == "recall_at_1"
    unique = len({row["caption"] for row in _rows(shapes["val_captions"])})
    assert _best_extras(run) == {"validation_pairs": VAL_COUNT, "unique_captions": unique}

    # the adapter, reloaded through the SDK, gives back the run's own validation numbers
    images, captions = _images(shapes["val_captions"]), [row["caption"] for row in _rows(shapes["val_captions"])]
    caption_ids = torch.tensor([sorted(set(captions)).index(c) for c in captions])
    embed = lmt.ImageFeatureExtraction("clip", weights="tiny", adapter=str(run))
    image_vectors, text_vectors = _embeddings(embed, images, captions)
    image_to_text, text_to_image = clip_objectives.retrieval_recall_at_1(image_vectors, text_vectors, caption_ids)
    assert (image_to_text, text_to_image) == (metrics["image_to_text_recall_at_1"],
                                              metrics["text_to_image_recall_at_1"])
    scale = float(embed.model.logit_scale.exp())
    trained_loss = _in_batch_loss(image_vectors, text_vectors, scale)
    assert trained_loss == pytest.approx(metrics["loss"], rel=1e-4)
    # training lowered the validation loss below the untrained model's
    untrained = lmt.ImageFeatureExtraction("clip", weights="tiny")
    assert trained_loss < _in_batch_loss(*_embeddings(untrained, images, captions), scale) - 0.1


def test_contrastive_eval_matches_a_plain_peft_reload(shapes, tmp_path):
    from peft import PeftModel
    from transformers import CLIPModel

    from lmt.tiny import tiny_model_path

    config = config_from_dict(_config("clip-contrastive", shapes["train_captions"], shapes["val_captions"], tmp_path,
                                      method="lora", optim={"epochs": 1}, data={"max_train_samples": 16}))
    result = train(config)
    reloaded = PeftModel.from_pretrained(CLIPModel.from_pretrained(tiny_model_path("clip")), str(result.run_dir))
    embed = lmt.ImageFeatureExtraction("clip", weights="tiny", adapter=str(result.run_dir))
    images = _images(shapes["val_captions"])[:BATCH]
    captions = [row["caption"] for row in _rows(shapes["val_captions"])][:BATCH]
    tokens = embed.processor.tokenizer(captions, return_tensors="pt", padding=True, truncation=True)
    pixels = embed.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = result.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                                pixel_values=pixels)
        plain = reloaded.eval()(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                                pixel_values=pixels)
    assert torch.allclose(plain.logits_per_image, expected.logits_per_image, atol=1e-5)
    image_vectors, text_vectors = _embeddings(embed, images, captions)
    assert torch.allclose(image_vectors, expected.image_embeds, atol=1e-5)
    assert torch.allclose(text_vectors, expected.text_embeds, atol=1e-5)


# ------------------------------------------------------------------------------------------------ metrics and refusals


def test_recall_counts_a_duplicate_caption_as_a_hit(monkeypatch):
    # three images, captions "red", "red", "blue"; image 1 retrieves text 0 (also "red"): a hit, not a miss
    images = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    caption_ids = torch.tensor([0, 0, 1])
    assert clip_objectives.retrieval_recall_at_1(images, texts, caption_ids) == (1.0, 1.0)
    # with distinct caption texts the same retrievals are one miss in each direction (image 1 and text 1)
    assert clip_objectives.retrieval_recall_at_1(images, texts, torch.tensor([0, 1, 2])) == (2 / 3, 2 / 3)


def test_recall_in_chunks_equals_recall_in_one_piece(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    images, texts = torch.randn(37, 8, generator=generator), torch.randn(37, 8, generator=generator)
    caption_ids = torch.randint(0, 12, (37,), generator=generator)
    whole = clip_objectives.retrieval_recall_at_1(images, texts, caption_ids)
    monkeypatch.setattr(clip_objectives, "SIMILARITY_CHUNK", 5)
    assert clip_objectives.retrieval_recall_at_1(images, texts, caption_ids) == whole
    similarity = images @ texts.t()
    expected_t2i = float((caption_ids[similarity.argmax(0)] == caption_ids).float().mean())
    assert whole[1] == pytest.approx(expected_t2i)


def test_default_template_is_the_sdk_default():
    from lmt.tasks.classify import DEFAULT_TEMPLATE
    from lmt.train.config import DataConfig

    assert DataConfig().label_template == DEFAULT_TEMPLATE


@pytest.mark.parametrize("template", ["a photo of a {label}.", "no placeholder", "{} and {}", "{"])
def test_bad_label_template_is_refused(shapes, tmp_path, template):
    values = _config("clip-zero-shot-head", shapes["train_colours"], shapes["val_colours"], tmp_path,
                     data={"label_template": template})
    with pytest.raises(InvalidInputError, match="label_template") as info:
        config_from_dict(values)
    assert "label_template" in info.value.message_zh


def test_contrastive_refusals(shapes, tmp_path):
    output = tmp_path / "runs"
    with pytest.raises(InvalidInputError, match="batch_size to 2 or more"):
        train(config_from_dict(_config("clip-contrastive", shapes["train_captions"], shapes["val_captions"], output,
                                       optim={"batch_size": 1})))
    one_caption = tmp_path / "one.jsonl"
    row = _rows(shapes["val_captions"])[0]
    one_caption.write_text("".join(json.dumps({**row, "image": str(shapes["val_dir"] / row["image"])}) + "\n"
                                   for _ in range(3)))
    with pytest.raises(InvalidInputError, match="at least 2 different captions"):
        train(config_from_dict(_config("clip-contrastive", shapes["train_captions"], one_caption, output)))
    with pytest.raises(InvalidInputError, match="is a folder"):
        train(config_from_dict(_config("clip-contrastive", shapes["train_dir"], shapes["val_captions"], output)))
    with pytest.raises(InvalidInputError, match="trains clip models"):
        config_from_dict(_config("clip-contrastive", shapes["train_captions"], shapes["val_captions"], output,
                                 model="vit-b16"))
    assert not output.exists()  # every refusal came before a run folder was made
