"""Every registered model family builds a tiny variant that saves, reloads and runs through transformers.

Each family is built into a temporary folder (safetensors only), built again to check the build is
deterministic, reloaded with the class the registry names for each task, and run once per declared task
through the transformers pipeline for that task (SAM: a point-prompted forward, as its pipeline needs
torchvision's NMS). tests/conftest.py sets HF_HUB_OFFLINE=1 before transformers is imported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file

from lmt import registry

FAMILY_NAMES = sorted(registry.families())

#: Every checkpoint name the built-in families must register.
EXPECTED_NAMES = {
    "vit-b16", "vit-b16-384", "vit-l16",
    "resnet-50", "resnet-18", "resnet-101",
    "dinov2-small", "dinov2-base", "dinov2-large", "dinov2-giant", "dinov2-small-imagenet1k",
    "sam-vit-base", "sam-vit-large", "sam-vit-huge",
    "blip2-opt-2.7b", "blip2-opt-6.7b", "blip2-flan-t5-xl", "blip2-opt-2.7b-coco",
    "owlv2-b16", "owlv2-b16-finetuned", "owlv2-l14",
    "owlvit-b32", "owlvit-b16", "owlvit-l14",
}

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")


def assert_lora_targets_exist(model: torch.nn.Module, targets: tuple[str, ...]) -> None:
    """Each LoRA target names (as peft matches it: the full name or its last parts) a Linear or Conv2d."""
    for target in targets:
        matched = [
            module for name, module in model.named_modules() if name == target or name.endswith("." + target)
        ]
        assert matched, f"LoRA target {target!r} matches no module"
        assert all(isinstance(m, torch.nn.Linear | torch.nn.Conv2d) for m in matched), target


def saved_weights(folder: Path) -> dict[str, torch.Tensor]:
    weights: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(path))
    return weights


def assert_reloaded_equals_saved(
    model: torch.nn.Module, saved: dict[str, torch.Tensor], folder: Path, fresh: set[str]
) -> None:
    """Saving the reloaded ``model`` again gives back the saved tensors, so every weight was loaded.

    transformers 5 renames weights on load and back on save (``attention.attention.query`` on disk is
    ``attention.q_proj`` in the module), so tensors are compared in the on-disk naming.
    """
    model.save_pretrained(folder, safe_serialization=True)
    resaved = saved_weights(folder)
    prefix = f"{model.base_model_prefix}."
    assert resaved
    for key, tensor in resaved.items():
        if key in fresh:
            continue
        saved_key = key if key in saved else prefix + key
        assert saved_key in saved, f"{key} was not in the built weights"
        assert torch.equal(tensor, saved[saved_key]), f"{key} differs from the built weights"


@pytest.fixture(autouse=True)
def _quiet_transformers():
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    yield
    transformers.logging.set_verbosity(verbosity)


def run_task(task: str, folder: Path, family: registry.ModelFamily, image: Image.Image) -> None:
    """Run ``task`` once on ``image`` the way a user would, and check the result has the right shape."""
    if task == "image-classification":
        pipe = transformers.pipeline(task, model=str(folder))
        result = pipe(image, top_k=3)
        assert len(result) == 3
        assert {r["label"] for r in result} <= set(pipe.model.config.id2label.values())
    elif task == "image-feature-extraction":
        model_class = getattr(transformers, family.model_class_for(task))
        if hasattr(model_class, "get_image_features"):
            # A dual encoder (CLIP): the pipeline would call its text tower without input_ids.
            model = model_class.from_pretrained(folder).eval()
            processor = transformers.AutoProcessor.from_pretrained(folder)
            with torch.no_grad():
                inputs = processor(images=image, return_tensors="pt")
                features = model.get_image_features(**inputs).pooler_output
            assert features.shape == (1, model.config.projection_dim)
        else:
            pipe = transformers.pipeline(task, model=str(folder))
            features = np.asarray(pipe(image))
            assert features.ndim == 3 and features.shape[0] == 1
            assert features.shape[-1] == pipe.model.config.hidden_size
            assert np.isfinite(features).all() and features.std() > 0
    elif task == "zero-shot-image-classification":
        pipe = transformers.pipeline(task, model=str(folder))
        result = pipe(image, candidate_labels=["cat", "dog", "car"])
        assert sorted(r["label"] for r in result) == ["car", "cat", "dog"]
        assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-4)
    elif task == "zero-shot-object-detection":
        pipe = transformers.pipeline(task, model=str(folder))
        result = pipe(image, candidate_labels=["cat", "dog"], threshold=0.0)
        assert result, "no detections at threshold 0"
        assert {r["label"] for r in result} == {"cat", "dog"}
        boxes = np.array([[r["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")] for r in result])
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    elif task == "mask-generation":
        run_sam_point_prompt(folder, family, image)
    elif task == "image-text-to-text":
        pipe = transformers.pipeline(task, model=str(folder))
        messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "什么？"}]}]
        result = pipe(text=messages, max_new_tokens=5)
        assert isinstance(result[0]["generated_text"][-1]["content"], str)
    elif task == "image-to-text":
        pipe = transformers.pipeline("image-text-to-text", model=str(folder))
        result = pipe(images=image, text="", max_new_tokens=5)
        assert result[0]["generated_text"], "the caption is empty"
    elif task == "visual-question-answering":
        pipe = transformers.pipeline("image-text-to-text", model=str(folder))
        question = "Question: how many cats? Answer:"
        result = pipe(images=image, text=question, max_new_tokens=5)
        answer = result[0]["generated_text"]
        assert answer.startswith(question) and len(answer) > len(question), answer
    else:
        pytest.fail(f"no check written for task {task!r}")


def run_sam_point_prompt(folder: Path, family: registry.ModelFamily, image: Image.Image) -> None:
    """SAM's prompted path: embed the image once, then decode a point and a box prompt against it."""
    model = getattr(transformers, family.model_class_for("mask-generation")).from_pretrained(folder).eval()
    processor = transformers.AutoProcessor.from_pretrained(folder)
    points = processor(images=image, input_points=[[[40, 20]]], input_labels=[[1]], return_tensors="pt")
    boxes = processor(images=image, input_boxes=[[[5, 5, 40, 30]]], return_tensors="pt")
    with torch.no_grad():
        embeddings = model.get_image_embeddings(points["pixel_values"])
        by_point = model(
            image_embeddings=embeddings,
            input_points=points["input_points"],
            input_labels=points["input_labels"],
        )
        by_box = model(image_embeddings=embeddings, input_boxes=boxes["input_boxes"], multimask_output=False)
    masks = processor.image_processor.post_process_masks(
        by_point.pred_masks, points["original_sizes"], points["reshaped_input_sizes"]
    )
    assert masks[0].shape == (1, 3, image.height, image.width)
    assert 0.0 < masks[0].float().mean() < 1.0, "masks are all empty or all full"
    assert by_point.iou_scores.shape == (1, 1, 3)
    assert by_box.pred_masks.shape[:3] == (1, 1, 1)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_tiny_variant_builds_reloads_and_runs(name: str, tmp_path: Path, rgb_image: Image.Image) -> None:
    family = registry.get_family(name)
    folder, again = tmp_path / "tiny", tmp_path / "again"
    family.build_tiny(folder)

    written = [p.name for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIXES)]
    assert written and all(n.endswith(".safetensors") for n in written), f"weights written: {written}"
    saved = saved_weights(folder)

    family.build_tiny(again)
    rebuilt = saved_weights(again)
    assert saved.keys() == rebuilt.keys()
    assert all(torch.equal(saved[k], rebuilt[k]) for k in saved), "two builds gave different weights"

    for class_name in dict.fromkeys(family.model_classes.values()):
        model, info = getattr(transformers, class_name).from_pretrained(folder, output_loading_info=True)
        # A head-less class loaded from a classifier checkpoint gets a fresh pooler, as ViTModel does from
        # google/vit-base-patch16-224; the feature-extraction pipeline uses the hidden states, not the pooler.
        fresh = {key for key in info["missing_keys"] if key.startswith("pooler.")}
        assert info["missing_keys"] == fresh and not info["mismatched_keys"], info
        assert type(model).__name__ == class_name
        assert model.config.model_type in family.model_types
        assert_reloaded_equals_saved(model, saved, tmp_path / f"resaved-{class_name}", fresh)
        n_params = sum(p.numel() for p in model.parameters())
        assert 0 < n_params < 1_000_000, f"{class_name} has {n_params:,} parameters"
        assert_lora_targets_exist(model, family.lora_target_modules)

    if family.processor_class == "AutoImageProcessor":
        processor = transformers.AutoImageProcessor.from_pretrained(folder)
    else:
        processor = transformers.AutoProcessor.from_pretrained(folder)
        if family.processor_class != "AutoProcessor":  # a transformers class, or "our.module:Class"
            assert type(processor).__name__ == family.processor_class.rpartition(":")[2]

    for task in family.tasks:
        run_task(task, folder, family, rgb_image)


def test_list_models_lists_every_checkpoint() -> None:
    names = registry.list_models()
    assert set(names) >= EXPECTED_NAMES
    assert len(names) == len(set(names))
    assert registry.list_models("sam*") == ["sam-vit-base", "sam-vit-large", "sam-vit-huge"]


def test_list_models_filters_by_task() -> None:
    classifiers = registry.list_models(task="image-classification")
    assert "dinov2-small-imagenet1k" in classifiers
    assert not {"dinov2-small", "dinov2-base", "dinov2-large", "dinov2-giant"} & set(classifiers)
    assert {"vit-b16", "resnet-50"} <= set(classifiers)

    features = registry.list_models("dinov2*", task="image-feature-extraction")
    assert features == [
        "dinov2-small", "dinov2-base", "dinov2-large", "dinov2-giant", "dinov2-small-imagenet1k"
    ]

    assert registry.list_models(task="mask-generation") == ["sam-vit-base", "sam-vit-large", "sam-vit-huge"]
    assert set(registry.list_models(task="visual-question-answering")) == {
        "blip2-opt-2.7b", "blip2-opt-6.7b", "blip2-flan-t5-xl", "blip2-opt-2.7b-coco"
    }
    detectors = set(registry.list_models(task="zero-shot-object-detection"))
    owl = {"owlv2-b16", "owlv2-b16-finetuned", "owlv2-l14", "owlvit-b32", "owlvit-b16", "owlvit-l14"}
    assert detectors >= owl


def test_family_lookups() -> None:
    assert registry.family_for_model_type("blip-2").name == "blip2"
    assert registry.family_for_hub_id("facebook/dinov2-small-imagenet1k-1-layer").name == "dinov2"
    family, checkpoint = registry.lookup_checkpoint("owlv2-b16")
    assert (family.name, checkpoint.hub_id) == ("owlv2", "google/owlv2-base-patch16-ensemble")
