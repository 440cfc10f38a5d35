"""SAM mask-decoder fine-tuning on the tiny SAM: batches of 4, prompts, runs, reload through the SDK, resume, refusals."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

import lmt
from lmt.errors import InvalidInputError
from lmt.train import config_from_dict, train

from .conftest import with_sections

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def one_thread():
    # The tiny SAM's small matmuls run several times faster on one thread than on two shared, busy cores.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict[str, Path]:
    """Synthetic shapes with exact masks: 32 training scenes and 8 validation scenes (another seed)."""
    from lmt.data.samples import write_shapes

    root = tmp_path_factory.mktemp("sam-shapes")
    return {
        "train": write_shapes(root / "train", count=32, seed=0) / "shapes.csv",
        "val": write_shapes(root / "val", count=8, seed=1) / "shapes.csv",
    }


def sam_config(shapes: dict[str, Path], output: Path, **sections) -> dict:
    config = {
        "task": "sam-mask-decoder",
        "model": "sam-vit-base",
        "weights": "tiny",
        "method": "full",
        "data": {"train": str(shapes["train"]), "val": str(shapes["val"])},
        "optim": {"epochs": 2, "batch_size": 4, "lr": 1e-2},
        "run": {"output_dir": str(output), "log_every_steps": 1},
    }
    return with_sections(config, **sections)


def _objective(values: dict):
    from lmt.loading import resolve
    from lmt.train.objectives import objective_class

    config = config_from_dict(values)
    objective = objective_class(config.task)(config, resolve(config.model, config.weights))
    return objective


def _examples(csv_path: Path, objective, count: int | None = None) -> list[dict]:
    from lmt.train.data import RecordDataset, read_records

    dataset = RecordDataset(read_records(csv_path, objective.columns()))
    return [dataset[i] for i in range(count or len(dataset))]


def _val_dice(objective, model, examples: list[dict], batch_size: int = 4) -> float:
    """The objective's own eval code (eval_step + compute_metrics) over ``examples``, in batches."""
    outputs: dict[str, list] = {}
    model.eval()
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            for key, value in objective.eval_step(model, objective.collate(examples[start:start + batch_size])).items():
                outputs.setdefault(key, []).append(value)
    metrics, _ = objective.compute_metrics({key: torch.cat(values) for key, values in outputs.items()})
    return metrics["dice"]


def _mixed_sizes(folder: Path) -> Path:
    """Four images of different sizes and aspect ratios, each with one rectangle of known place as its mask."""
    folder.mkdir(parents=True, exist_ok=True)
    specs = [((64, 64), (8, 10, 40, 30)), ((96, 48), (50, 5, 90, 40)), ((40, 80), (3, 44, 30, 70)),
             ((100, 100), (20, 20, 80, 90))]
    rng = np.random.default_rng(0)
    rows = []
    for index, ((width, height), (x0, y0, x1, y1)) in enumerate(specs):
        pixels = rng.integers(90, 170, size=(height, width, 3), dtype=np.uint8)
        pixels[y0:y1, x0:x1] = (220, 40, 40)
        mask = np.zeros((height, width), np.uint8)
        mask[y0:y1, x0:x1] = 255
        Image.fromarray(pixels).save(folder / f"{index}.png")
        Image.fromarray(mask).save(folder / f"{index}-mask.png")
        rows.append({"image": f"{index}.png", "mask": f"{index}-mask.png"})
    with (folder / "rows.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    return folder / "rows.csv"


# ---------------------------------------------------------------------------------------------- batches and prompts


def test_a_batch_of_four_different_images_keeps_each_image_with_its_own_box(tmp_path):
    rows = _mixed_sizes(tmp_path / "mixed")
    objective = _objective(sam_config({"train": rows, "val": rows}, tmp_path, data={"prompt": "box+point"}))
    model = objective.load_model()
    examples = _examples(rows, objective)
    batch = objective.collate(examples)

    assert batch["pixel_values"].shape == (4, 3, 64, 64)
    assert batch["input_boxes"].shape == (4, 1, 4)
    assert batch["input_points"].shape == (4, 1, 1, 2) and batch["input_labels"].shape == (4, 1, 1)
    assert batch["target"].shape == batch["valid"].shape == (4, 32, 32)
    expected_boxes = [(8, 10, 40, 30), (50, 5, 90, 40), (3, 44, 30, 70), (20, 20, 80, 90)]
    for index, example in enumerate(examples):
        width, height = example["image"].size
        scale = 64 / max(width, height)  # the longest edge goes to the tiny model's 64 px
        assert batch["input_boxes"][index, 0].tolist() == pytest.approx(
            [v * scale for v in expected_boxes[index]], abs=1e-6)
        x, y = batch["input_points"][index, 0, 0].tolist()
        x0, y0, x1, y1 = expected_boxes[index]
        assert x0 * scale <= x < x1 * scale and y0 * scale <= y < y1 * scale  # the point lies in the object
        # the valid grid covers the resized image, not the padding: 32 px longest edge on the 32 px grid
        valid_rows, valid_cols = batch["valid"][index].sum(0).max(), batch["valid"][index].sum(1).max()
        assert (int(valid_rows), int(valid_cols)) == (round(height * 32 / max(width, height)),
                                                      round(width * 32 / max(width, height)))
        target = batch["target"][index].nonzero()
        assert target[:, 1].min() == pytest.approx(x0 * scale / 2, abs=1) and target[:, 0].max() < y1 * scale / 2 + 1

    together = objective.eval_step(model, batch)
    assert set(together) == {"loss", "dice", "iou"} and all(v.shape == (4,) for v in together.values())
    for index, example in enumerate(examples):  # batching mixes nothing up: each row equals its own batch of one
        alone = objective.eval_step(model, objective.collate([example]))
        for key in together:
            assert together[key][index].item() == pytest.approx(alone[key][0].item(), rel=1e-4), (key, index)

    loss = objective.loss(model, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_training_prompts_are_jittered_from_the_global_rng_and_stay_in_the_object(shapes, tmp_path):
    objective = _objective(sam_config(shapes, tmp_path, data={"prompt": "box+point"}))
    objective.load_model()
    batch = objective.collate(_examples(shapes["train"], objective, count=4))
    torch.manual_seed(0)
    first = objective._training_prompts(batch)
    torch.manual_seed(0)
    again = objective._training_prompts(batch)
    second = objective._training_prompts(batch)
    assert torch.equal(first["input_boxes"], again["input_boxes"])
    assert torch.equal(first["input_points"], again["input_points"])
    assert not torch.equal(first["input_boxes"], second["input_boxes"])

    exact = batch["input_boxes"]
    sides = (exact[..., 2:] - exact[..., :2]).repeat(1, 1, 2)
    moved = (first["input_boxes"] - exact).abs()
    assert (moved > 0).any() and (moved <= 0.1 * sides + 1e-9).all()  # a few per cent of the box, never more
    assert (first["input_boxes"] >= 0).all() and (first["input_boxes"] <= 64).all()
    for index in range(4):
        x, y = (int(v) for v in first["input_points"][index, 0, 0].tolist())
        assert batch["object_pixels"][index, y, x]


def test_full_method_trains_only_the_mask_decoder(shapes, tmp_path):
    objective = _objective(sam_config(shapes, tmp_path))
    model = objective.load_model()
    for param in model.parameters():
        param.requires_grad_(True)
    objective.freeze_for_full(model)
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"mask_decoder"}
    objective.loss(model, objective.collate(_examples(shapes["train"], objective, count=4))).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)  # DDP needs every one used


# ---------------------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def full_run(shapes, tmp_path_factory):
    return train(config_from_dict(sam_config(shapes, tmp_path_factory.mktemp("runs"))))


def test_full_run_folder_and_metrics(full_run):
    run = full_run.run_dir
    assert run.name == "sam-vit-base-tiny_full_bs4_2ep_shapes"
    for name in ("README.md", "config.json", "model.safetensors", "processor_config.json", "train_config.yaml",
                 "metrics.jsonl", "lmt_run.json", "plots/loss.png", "plots/dice.png", "plots/iou.png"):
        assert (run / name).is_file(), name
    info = json.loads((run / "lmt_run.json").read_text())
    assert info["task"] == "sam-mask-decoder" and info["sdk_task"] == "mask-generation"
    assert info["metric_for_best"] == "dice" and info["prompt"] == "box" and info["mask_resolution"] == [32, 32]
    assert set(info["metrics"]) == {"loss", "dice", "iou"} and info["metrics"] == full_run.metrics
    assert 0.0 <= info["metrics"]["iou"] <= info["metrics"]["dice"] <= 1.0 and info["metrics"]["loss"] > 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["split"] == "val"] == [0, 1]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(losses) == 16 and np.mean(losses[-4:]) < np.mean(losses[:4])  # the loss goes down


def test_full_run_changes_only_the_decoder(full_run):
    base = lmt.load("sam-vit-base", weights="tiny", task="mask-generation").model.state_dict()
    trained = load_file(str(full_run.run_dir / "model.safetensors"))
    changed = {name.split(".")[0] for name, tensor in trained.items() if not torch.equal(tensor, base[name])}
    assert changed == {"mask_decoder"}


def test_full_run_reloads_through_the_sdk_with_the_same_predictions(full_run, shapes):
    segment = lmt.MaskGeneration(model=str(full_run.run_dir))
    assert segment.loaded.weights == "local"
    objective = _objective(sam_config(shapes, full_run.run_dir.parent))
    objective.load_model()
    examples = _examples(shapes["val"], objective)
    # the reloaded model scores exactly the best epoch's validation Dice the run recorded in memory
    assert _val_dice(objective, segment.model, examples) == pytest.approx(full_run.metrics["dice"], abs=1e-6)
    _assert_same_masks(segment, full_run.model, objective.processor, examples)


def _assert_same_masks(segment, trained, processor, examples) -> None:
    """SDK masks for a box prompt equal the trained in-memory model's, run through plain transformers."""
    from lmt.tasks.segment import mask_box

    for example in examples[:4]:
        box = list(mask_box(example["mask"]))
        got = segment(example["image"], boxes=[box]).masks[0].mask
        inputs = processor(images=example["image"], input_boxes=[[box]], return_tensors="pt")
        with torch.no_grad():
            out = trained(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"],
                          multimask_output=False)
        expected = processor.image_processor.post_process_masks(
            out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])[0][0, 0].numpy()
        assert got.shape == example["mask"].shape and np.array_equal(got, expected)


def test_lora_run_through_the_cli_loads_as_an_adapter(shapes, tmp_path, capsys):
    """The example config, tiny weights, LoRA: adapters on the decoder's attention only; reload via adapter=."""
    from lmt.cli import main

    code = main(["train", str(REPO / "configs/train/sam-shapes.yaml"), "weights=tiny", "method=lora",
                 f"data.train={shapes['train']}", f"data.val={shapes['val']}", "optim.epochs=2", "optim.lr=1e-2",
                 f"run.output_dir={tmp_path}", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    run = Path(result["run_dir"])
    assert run.name == "sam-vit-base-tiny_lora-r16_bs4_2ep_shapes"
    assert (run / "adapter_model.safetensors").is_file() and not (run / "model.safetensors").exists()
    adapter = json.loads((run / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "out_proj"}
    assert not adapter["modules_to_save"]
    saved = load_file(str(run / "adapter_model.safetensors"))
    assert saved and all(".mask_decoder.transformer." in key and "lora_" in key for key in saved)
    assert set(result["metrics"]) == {"loss", "dice", "iou"}

    segment = lmt.MaskGeneration(model="sam", weights="tiny", adapter=str(run))
    objective = _objective(sam_config(shapes, tmp_path, method="lora"))
    objective.load_model()
    examples = _examples(shapes["val"], objective)
    assert _val_dice(objective, segment.model, examples) == pytest.approx(result["metrics"]["dice"], abs=1e-6)

    from peft import PeftModel
    from transformers import SamModel

    from lmt.tiny import tiny_model_path

    plain = PeftModel.from_pretrained(SamModel.from_pretrained(tiny_model_path("sam")), str(run)).eval()
    _assert_same_masks(segment, plain, objective.processor, examples)


def test_resume_mid_epoch_reaches_the_same_weights(shapes, tmp_path):
    """Box jitter and points come from the global RNG, which the checkpoint restores: a resumed run is bit-exact."""
    values = sam_config(shapes, tmp_path, data={"prompt": "box+point", "max_train_samples": 16},
                        run={"save_every_steps": 3, "keep_checkpoints": 10, "name": "resumable"})
    first = train(config_from_dict(values))
    reference = tmp_path / "reference"
    shutil.copytree(first.run_dir, reference)
    checkpoints = first.run_dir / "checkpoints"
    assert (checkpoints / "step-0000003").is_dir()  # mid-epoch: 4 steps an epoch
    for folder in checkpoints.glob("step-*"):
        if folder.name != "step-0000003":
            shutil.rmtree(folder)
    (first.run_dir / "lmt_run.json").unlink()
    resumed = train(config_from_dict(values, ["run.resume=true"]))
    for name in ("model.safetensors",):
        a, b = load_file(str(reference / name)), load_file(str(resumed.run_dir / name))
        assert all(torch.equal(a[k], b[k]) for k in a)
    val = [r for r in map(json.loads, (reference / "metrics.jsonl").read_text().splitlines()) if r["split"] == "val"]
    again = [r for r in map(json.loads, (resumed.run_dir / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "val"]
    assert val == again


# ---------------------------------------------------------------------------------------------- refusals


def test_bad_masks_are_reported_before_any_model_loads(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "a.png")
    Image.new("L", (32, 32)).save(folder / "empty.png")
    Image.new("L", (16, 32), 255).save(folder / "small.png")
    for mask, message in (("empty.png", "no foreground pixel"), ("small.png", "must have its image's size")):
        (folder / "rows.csv").write_text(f"image,mask\na.png,{mask}\na.png,{mask}\n")
        data = {"train": folder / "rows.csv", "val": folder / "rows.csv"}
        with pytest.raises(InvalidInputError, match=message) as info:
            train(config_from_dict(sam_config(data, tmp_path / "runs")))
        assert mask in str(info.value) and info.value.message_zh != info.value.message
    assert not (tmp_path / "runs").exists()
    (folder / "rows.csv").write_text("image,label\na.png,x\n")
    with pytest.raises(InvalidInputError, match="no 'mask'"):
        train(config_from_dict(sam_config({"train": folder / "rows.csv", "val": folder / "rows.csv"},
                                          tmp_path / "runs")))


def test_example_config_is_valid(tmp_path, shapes):
    values = yaml.safe_load((REPO / "configs/train/sam-shapes.yaml").read_text())
    config = config_from_dict(values, [f"data.train={shapes['train']}"])
    assert (config.task, config.model, config.method, config.data.prompt) == (
        "sam-mask-decoder", "sam-vit-base", "full", "box")


# ---------------------------------------------------------------------------------------------- learning check


@pytest.mark.slow
def test_decoder_fine_tuning_at_batch_4_improves_val_dice_by_02(tmp_path):
    """Issue #4: at batch size 4, decoder fine-tuning on synthetic shapes improves val Dice by >= 0.2."""
    from lmt.data.samples import write_shapes

    data = {"train": write_shapes(tmp_path / "train", count=128, seed=0) / "shapes.csv",
            "val": write_shapes(tmp_path / "val", count=32, seed=1) / "shapes.csv"}
    values = sam_config(data, tmp_path / "runs", optim={"epochs": 10, "batch_size": 4, "lr": 1e-2},
                        run={"log_every_steps": 10})
    objective = _objective(values)
    untrained = _val_dice(objective, objective.load_model(), _examples(data["val"], objective))
    result = train(config_from_dict(values))
    print(f"val dice: untrained {untrained:.4f} -> trained {result.metrics['dice']:.4f}")
    assert result.metrics["dice"] - untrained >= 0.2
