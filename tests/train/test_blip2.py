"""BLIP-2 caption and VQA fine-tuning on the tiny BLIP-2 (OPT): batches, loss, metrics, run folders, SDK reload,
refusals, and (slow) a learning check against the untrained model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import lmt
from lmt.cli import main as cli_main
from lmt.errors import InvalidInputError
from lmt.loading import resolve
from lmt.train import config_from_dict, train
from lmt.train.objectives import objective_class
from lmt.train.objectives.blip2 import (
    GENERATE_MAX_NEW_TOKENS,
    IGNORE_INDEX,
    MAX_TARGET_TOKENS,
    corpus_bleu,
    normalize_answer,
    text_metrics,
)

REPO = Path(__file__).resolve().parents[2]
METRIC_KEYS = {"loss", "bleu", "chrf", "exact_match"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the tiny model's matrices are 32 wide: one thread is fastest, and on a busy 2-core machine two threads
    # mostly wait for each other (a 10 s run becomes a minute)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_split(folder: Path, count: int, n_val: int, colour_questions: bool = False) -> tuple[Path, Path]:
    """Shapes scenes as train.jsonl / val.jsonl (val in file order, so the run's extras line up with it).

    ``colour_questions``: every other record asks for the colour instead, so prompts differ in length.
    """
    from lmt.data.samples import write_shapes

    write_shapes(folder, count=count)
    rows = [json.loads(line) for line in (folder / "captions.jsonl").read_text().splitlines()]
    if colour_questions:
        for index, row in enumerate(rows):
            if index % 2:
                row["question"], row["answer"] = "what colour is the shape?", row["caption"].split()[1]
    train_file, val_file = folder / "train.jsonl", folder / "val.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in rows[:-n_val]))
    val_file.write_text("".join(json.dumps(r) + "\n" for r in rows[-n_val:]))
    return train_file, val_file


def val_rows(val_file: Path) -> list[dict]:
    return [json.loads(line) for line in val_file.read_text().splitlines()]


def val_images(val_file: Path) -> list[Image.Image]:
    return [Image.open(val_file.parent / r["image"]).convert("RGB") for r in val_rows(val_file)]


def blip2_config(task: str, train_file: Path, val_file: Path, output: Path, **sections) -> dict:
    config = {
        "task": task, "model": "blip2-opt-2.7b", "weights": "tiny", "method": "lora",
        "data": {"train": str(train_file), "val": str(val_file)},
        "optim": {"epochs": 2, "batch_size": 4, "lr": 2e-2},
        "run": {"output_dir": str(output), "log_every_steps": 1},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def best_predictions(run_dir: Path) -> list[str]:
    info = json.loads((run_dir / "lmt_run.json").read_text())
    extras = json.loads((run_dir / "extras" / f"epoch-{info['best_epoch']:03d}.json").read_text())
    return [e["prediction"] for e in extras["examples"]]


def val_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["split"] == "val"]


def logits_of(model, processor, images, text):
    inputs = processor(images=images, text=text, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits


@pytest.fixture(scope="module")
def caption_data(tmp_path_factory) -> tuple[Path, Path]:
    return write_split(tmp_path_factory.mktemp("shapes-caption") / "shapes", count=24, n_val=8)


@pytest.fixture(scope="module")
def vqa_data(tmp_path_factory) -> tuple[Path, Path]:
    return write_split(tmp_path_factory.mktemp("shapes-vqa") / "shapes", count=24, n_val=8, colour_questions=True)


@pytest.fixture(scope="module")
def caption_lora(caption_data, tmp_path_factory):
    train_file, val_file = caption_data
    return train(config_from_dict(blip2_config("blip2-caption", train_file, val_file, tmp_path_factory.mktemp("runs"))))


@pytest.fixture(scope="module")
def vqa_cli_run(vqa_data, tmp_path_factory) -> Path:
    """``lmt train configs/train/blip2-vqa-lora.yaml`` on the tiny model, through the CLI."""
    train_file, val_file = vqa_data
    output = tmp_path_factory.mktemp("runs")
    code = cli_main([
        "train", str(REPO / "configs/train/blip2-vqa-lora.yaml"), "weights=tiny", f"data.train={train_file}",
        f"data.val={val_file}", "optim.epochs=2", "optim.batch_size=4", "optim.grad_accum=1", "optim.lr=2e-2",
        f"run.output_dir={output}", "run.name=vqa",
    ])
    assert code == 0
    return output / "vqa"


# ---- batches -----------------------------------------------------------------------------------------------------
def test_vqa_batch_masks_everything_but_the_answer(vqa_data, tmp_path):
    train_file, val_file = vqa_data
    config = config_from_dict(blip2_config("blip2-vqa", train_file, val_file, tmp_path))
    objective = objective_class("blip2-vqa")(config, resolve(config.model, config.weights))
    model = objective.load_model()
    rows = val_rows(val_file)[:3]  # "what shape is it?", "what colour is the shape?", ...: different lengths
    examples = [{**r, "image": img} for r, img in zip(rows, val_images(val_file)[:3], strict=True)]
    batch = objective.collate(examples)
    tokenizer, image_id = objective.processor.tokenizer, model.config.image_token_index
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    for row, record in enumerate(rows):
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        assert int((ids == image_id).sum()) == model.config.num_query_tokens
        kept = labels != IGNORE_INDEX
        # the loss sees exactly " answer</s>"; image tokens, BOS, the prompt and the right padding get -100
        assert tokenizer.decode(labels[kept]) == f" {record['answer']}</s>"
        assert torch.equal(ids[kept], labels[kept]) and not kept[mask == 0].any()
        assert mask[: int(mask.sum())].all()  # right padding for training
        prompt = tokenizer.decode(ids[mask.bool() & ~kept], skip_special_tokens=True)
        assert prompt == f"Question: {record['question']} Answer:"
    assert batch["prompt_mask"][:, -1].all() and not batch["prompt_mask"].all()  # left padding for generation
    assert batch["reference_ids"].shape == (3, MAX_TARGET_TOKENS)
    with torch.no_grad():
        outputs = objective.eval_step(model.eval(), batch)
    assert outputs["loss"].shape == (3,) and torch.isfinite(outputs["loss"]).all()
    assert outputs["generated_ids"].shape == (3, GENERATE_MAX_NEW_TOKENS)  # fixed width: gathers across processes
    metrics, extras = objective.compute_metrics(outputs)
    assert set(metrics) == METRIC_KEYS
    assert [e["reference"] for e in extras["examples"]] == [r["answer"] for r in rows]


# ---- caption, LoRA, through the Python API -----------------------------------------------------------------------
def test_caption_lora_run_folder(caption_lora):
    run = caption_lora.run_dir
    for name in ("README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json",
                 "processor_config.json", "train_config.yaml", "metrics.jsonl", "lmt_run.json", "plots/loss.png",
                 "plots/bleu.png", "extras/epoch-000.json"):
        assert (run / name).is_file(), name
    assert not (run / "model.safetensors").exists()
    info = json.loads((run / "lmt_run.json").read_text())
    assert info["task"] == "blip2-caption" and info["sdk_task"] == "image-to-text"
    assert info["metric_for_best"] == "bleu" and info["library_name"] == "peft"
    assert info["generation"]["max_new_tokens"] == GENERATE_MAX_NEW_TOKENS
    assert set(info["metrics"]) == METRIC_KEYS and info["metrics"] == caption_lora.metrics
    for key in ("bleu", "chrf", "exact_match"):
        assert 0.0 <= info["metrics"][key] <= 1.0
    assert info["metrics"]["loss"] > 0
    adapter_config = json.loads((run / "adapter_config.json").read_text())
    assert set(adapter_config["target_modules"]) == {"q_proj", "v_proj", "query", "value"}
    saved = load_file(str(run / "adapter_model.safetensors"))
    assert saved and all("lora_" in key for key in saved)
    assert any("qformer" in key for key in saved) and any("language_model" in key for key in saved)
    assert not any("vision_model" in key for key in saved)


def test_caption_lora_lowers_the_loss(caption_lora):
    val = val_records(caption_lora.run_dir)
    assert [r["epoch"] for r in val] == [0, 1]
    assert val[1]["loss"] < val[0]["loss"]
    train_losses = [json.loads(line)["loss"] for line in (caption_lora.run_dir / "metrics.jsonl").read_text().splitlines()
                    if json.loads(line)["split"] == "train"]
    assert len(train_losses) == caption_lora.global_step == 8  # 16 examples / batch 4, 2 epochs
    assert all(math.isfinite(x) and x > 0 for x in train_losses)


def test_lora_trains_the_adapters_only(caption_lora):
    trainable = [name for name, p in caption_lora.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert not any("vision_model" in name for name in trainable)


def test_caption_adapter_reloads_through_the_sdk(caption_lora, caption_data):
    _, val_file = caption_data
    images = val_images(val_file)
    captioner = lmt.ImageToText(model="blip2", weights="tiny", adapter=str(caption_lora.run_dir), batch_size=4)
    texts = [r.text for r in captioner(images, max_new_tokens=GENERATE_MAX_NEW_TOKENS)]
    assert texts == best_predictions(caption_lora.run_dir)  # what the trained model said in its best evaluation
    processor = captioner.processor
    reloaded = logits_of(captioner.model, processor, images[:4], [""] * 4)
    trained = logits_of(caption_lora.model, processor, images[:4], [""] * 4)
    torch.testing.assert_close(reloaded, trained)
    base = lmt.ImageToText(model="blip2", weights="tiny")
    assert not torch.allclose(logits_of(base.model, processor, images[:4], [""] * 4), trained)  # the adapter counts


# ---- VQA, LoRA, through the CLI ------------------------------------------------------------------------------------
def test_vqa_cli_run(vqa_cli_run):
    info = json.loads((vqa_cli_run / "lmt_run.json").read_text())
    assert info["task"] == "blip2-vqa" and info["sdk_task"] == "visual-question-answering"
    assert info["metric_for_best"] == "exact_match" and info["question_template"] == "Question: {} Answer:"
    assert set(info["metrics"]) == METRIC_KEYS and 0.0 <= info["metrics"]["exact_match"] <= 1.0
    val = val_records(vqa_cli_run)
    assert len(val) == 2 and val[1]["loss"] < val[0]["loss"]


def test_vqa_adapter_reloads_through_the_sdk(vqa_cli_run, vqa_data):
    _, val_file = vqa_data
    questions = [r["question"] for r in val_rows(val_file)]
    vqa = lmt.VisualQuestionAnswering(model="blip2", weights="tiny", adapter=str(vqa_cli_run), batch_size=4)
    answers = vqa(val_images(val_file), question=questions, max_new_tokens=GENERATE_MAX_NEW_TOKENS)
    assert [a.text for a in answers] == best_predictions(vqa_cli_run)


# ---- full fine-tuning ------------------------------------------------------------------------------------------
def test_full_run_keeps_the_vision_encoder_and_reloads_as_a_model(caption_data, tmp_path):
    train_file, val_file = caption_data
    config = blip2_config("blip2-caption", train_file, val_file, tmp_path, method="full",
                          optim={"epochs": 1, "lr": 5e-3})
    result = train(config_from_dict(config))
    run = result.run_dir
    assert (run / "model.safetensors").is_file() and not (run / "adapter_model.safetensors").exists()
    trained = load_file(str(run / "model.safetensors"))
    base = load_file(str(Path(resolve("blip2", "tiny").source) / "model.safetensors"))
    vision = [k for k in base if k.startswith("vision_model.")]
    assert vision and all(torch.equal(trained[k], base[k]) for k in vision)  # frozen
    for prefix in ("qformer.", "language_projection.", "language_model."):
        assert any(not torch.equal(trained[k], base[k]) for k in base if k.startswith(prefix)), prefix
    captioner = lmt.ImageToText(model=str(run), batch_size=4)
    texts = [r.text for r in captioner(val_images(val_file), max_new_tokens=GENERATE_MAX_NEW_TOKENS)]
    assert texts == best_predictions(run)


# ---- refusals ----------------------------------------------------------------------------------------------------
def test_encoder_decoder_blip2_is_refused_before_its_weights_load(caption_data, tmp_path):
    from transformers import Blip2Config

    folder = tmp_path / "blip2-t5"
    Blip2Config(text_config={"model_type": "t5", "d_model": 32, "num_layers": 1, "num_heads": 2}).save_pretrained(folder)
    train_file, val_file = caption_data
    config = config_from_dict(blip2_config("blip2-caption", train_file, val_file, tmp_path / "runs",
                                           model=str(folder), weights="real"))
    with pytest.raises(InvalidInputError, match="encoder-decoder"):
        train(config)


def test_a_question_too_long_for_the_model_is_a_clear_error(tmp_path):
    train_file, val_file = write_split(tmp_path / "shapes", count=6, n_val=2)
    rows = [json.loads(line) for line in train_file.read_text().splitlines()]
    rows[0]["question"] = "is it " + "very " * 150 + "red?"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = config_from_dict(blip2_config("blip2-vqa", train_file, val_file, tmp_path / "runs",
                                           optim={"batch_size": 8}))
    with pytest.raises(InvalidInputError, match="Shorten the longest questions"):
        train(config)


# ---- metrics -----------------------------------------------------------------------------------------------------
def test_bleu_matches_torchmetrics_where_it_is_defined_and_scores_short_captions():
    from torchmetrics.functional.text import bleu_score

    predictions = ["the cat sat on the mat today", "a dog runs in the park fast"]
    references = ["the cat sat on a mat today", "a dog runs in a park very fast"]
    expected = float(bleu_score(predictions, [[r] for r in references], n_gram=4, smooth=True))
    assert corpus_bleu(predictions, references) == pytest.approx(expected, rel=1e-5)
    # 3-word captions have no 4-grams: torchmetrics says 0 for any model; the smoothed score still ranks them
    assert corpus_bleu(["a red circle"], ["a red circle"]) == pytest.approx(1.0)
    partly = corpus_bleu(["a red square"], ["a red circle"])
    assert 0.0 < partly < 1.0 and corpus_bleu(["blue"], ["a red circle"]) == 0.0
    assert corpus_bleu([""], ["a red circle"]) == 0.0


def test_exact_match_normalises_case_space_and_punctuation():
    assert normalize_answer("  A  Red circle. ") == "a red circle"
    metrics = text_metrics(["Circle.", "square", "red"], ["circle", "triangle", "red"])
    assert metrics["exact_match"] == pytest.approx(2 / 3)
    assert 0.0 < metrics["chrf"] < 1.0


# ---- learning ----------------------------------------------------------------------------------------------------
def untrained_scores(task: str, val_file: Path) -> dict[str, float]:
    """The untrained tiny model's answers through the SDK, scored like the run's evaluation."""
    rows, images = val_rows(val_file), val_images(val_file)
    if task == "blip2-caption":
        outputs = lmt.ImageToText(model="blip2", weights="tiny")(images, max_new_tokens=GENERATE_MAX_NEW_TOKENS)
        references = [r["caption"] for r in rows]
    else:
        outputs = lmt.VisualQuestionAnswering(model="blip2", weights="tiny")(
            images, question=[r["question"] for r in rows], max_new_tokens=GENERATE_MAX_NEW_TOKENS)
        references = [r["answer"] for r in rows]
    return text_metrics([o.text for o in outputs], references)


@pytest.mark.slow
@pytest.mark.parametrize(("task", "metric"), [("blip2-caption", "bleu"), ("blip2-vqa", "exact_match")])
def test_the_tiny_model_learns_shapes(task, metric, tmp_path):
    train_file, val_file = write_split(tmp_path / "shapes", count=64, n_val=16)
    config = blip2_config(task, train_file, val_file, tmp_path / "runs", method="full",
                          optim={"epochs": 6, "batch_size": 8, "lr": 1e-2})
    result = train(config_from_dict(config))
    before = untrained_scores(task, val_file)
    uniform_loss = math.log(len(lmt.ImageToText(model="blip2", weights="tiny").processor.tokenizer))
    # from a near-uniform next-token guess (~ln(vocabulary)) to a model that has memorised the caption language
    assert val_records(result.run_dir)[-1]["loss"] < 0.25 * uniform_loss
    assert result.metrics[metric] > before[metric] + 0.2, (before, result.metrics)
